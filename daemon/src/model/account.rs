//! Accounts: a customer as a JSON object with a required `id`. Fields the
//! engine interprets (timezone, owner, contacts, date fields) are read on
//! demand, so any other field a CRM sends is kept and reachable from CEL
//! and templates.

use jiff::Timestamp;
use serde_json::{Map, Value};

/// A customer account. Always a JSON object with a string `id`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Account(Map<String, Value>);

/// A contact of an account, as the engine reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact<'a> {
    pub email: &'a str,
    pub role: Option<&'a str>,
    pub timezone: Option<&'a str>,
    pub unsubscribed: bool,
    pub value: &'a Value,
}

impl Account {
    /// Checks the shape and fills `mrr` from `arr` or the reverse.
    pub fn from_json(value: Value) -> Result<Account, String> {
        let Value::Object(map) = value else {
            return Err("an account must be a JSON object".to_string());
        };
        match map.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) => return Err("field `id` must not be empty".to_string()),
            Some(_) => return Err("field `id` must be a string".to_string()),
            None => return Err("missing field `id`".to_string()),
        }
        if let Some(c) = map.get("contacts") {
            if !c.is_array() {
                return Err("field `contacts` must be an array".to_string());
            }
        }
        let mut account = Account(map);
        account.derive_revenue(true, true);
        Ok(account)
    }

    pub fn id(&self) -> &str {
        self.0.get("id").and_then(Value::as_str).unwrap_or("")
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn timezone(&self) -> Option<&str> {
        self.0.get("timezone").and_then(Value::as_str)
    }

    pub fn owner(&self) -> Option<&Value> {
        self.0.get("owner").filter(|o| o.is_object())
    }

    pub fn owner_email(&self) -> Option<&str> {
        self.owner()?
            .get("email")?
            .as_str()
            .filter(|s| !s.is_empty())
    }

    /// Contacts with an email address, in the account's order.
    pub fn contacts(&self) -> impl Iterator<Item = Contact<'_>> {
        self.0
            .get("contacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let email = c.get("email")?.as_str().filter(|s| !s.is_empty())?;
                Some(Contact {
                    email,
                    role: c.get("role").and_then(Value::as_str),
                    timezone: c.get("timezone").and_then(Value::as_str),
                    unsubscribed: c
                        .get("unsubscribed")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    value: c,
                })
            })
    }

    /// The contact with this address, compared case-insensitively.
    pub fn contact(&self, email: &str) -> Option<Contact<'_>> {
        self.contacts()
            .find(|c| c.email.eq_ignore_ascii_case(email))
    }

    /// A field holding a timestamp or a `YYYY-MM-DD` date. A date is its
    /// start in `tz`. `None` when absent or null; an error when malformed.
    pub fn instant(
        &self,
        field: &str,
        tz: &jiff::tz::TimeZone,
    ) -> Option<Result<Timestamp, String>> {
        let v = self.0.get(field)?;
        if v.is_null() {
            return None;
        }
        let Some(s) = v.as_str() else {
            return Some(Err(format!("field `{field}` must be a timestamp string")));
        };
        Some(parse_instant(s, tz).map_err(|e| format!("field `{field}`: {e}")))
    }

    /// Applies an RFC 7396 merge patch. The id cannot change.
    pub fn merge(&mut self, patch: &Value) -> Result<(), String> {
        let Value::Object(p) = patch else {
            return Err(
                "`data` of account.updated must be a JSON object (a merge patch)".to_string(),
            );
        };
        if let Some(id) = p.get("id") {
            if id.as_str() != Some(self.id()) {
                return Err("account.updated cannot change the account `id`".to_string());
            }
        }
        if let Some(c) = p.get("contacts") {
            if !c.is_array() && !c.is_null() {
                return Err("field `contacts` must be an array".to_string());
            }
        }
        let mut whole = Value::Object(std::mem::take(&mut self.0));
        merge_patch(&mut whole, patch);
        let Value::Object(map) = whole else {
            unreachable!("merging an object patch into an object yields an object")
        };
        self.0 = map;
        // Revenue set in the patch wins; its twin follows it.
        let mrr = p.contains_key("mrr");
        let arr = p.contains_key("arr");
        if mrr && !arr {
            self.0.remove("arr");
        } else if arr && !mrr {
            self.0.remove("mrr");
        }
        self.derive_revenue(mrr || !arr, arr || !mrr);
        Ok(())
    }

    fn derive_revenue(&mut self, from_mrr: bool, from_arr: bool) {
        let num = |v: Option<&Value>| v.and_then(Value::as_f64);
        match (num(self.0.get("mrr")), num(self.0.get("arr"))) {
            (Some(m), None) if from_mrr => {
                self.0.insert("arr".into(), number(m * 12.0));
            }
            (None, Some(a)) if from_arr => {
                self.0.insert("mrr".into(), number(a / 12.0));
            }
            _ => {}
        }
    }
}

/// A whole number when the value is integral, so `arr` stays an `int` in CEL.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64((x * 100.0).round() / 100.0)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// An RFC 3339 timestamp, or a date taken at its start in `tz`.
pub fn parse_instant(s: &str, tz: &jiff::tz::TimeZone) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return Ok(crate::schedule::local_instant(
            tz,
            d.to_datetime(jiff::civil::Time::midnight()),
        ));
    }
    Err(format!(
        "`{s}` is not an RFC 3339 timestamp (like 2026-01-05T15:00:00Z) or a date (like 2026-01-05)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revenue_fills_its_twin() {
        let a = Account::from_json(json!({"id": "a", "mrr": 100})).unwrap();
        assert_eq!(a.get("arr"), Some(&json!(1200)));
        let b = Account::from_json(json!({"id": "b", "arr": 1200})).unwrap();
        assert_eq!(b.get("mrr"), Some(&json!(100)));
    }

    #[test]
    fn a_patch_that_changes_mrr_recomputes_arr() {
        let mut a = Account::from_json(
            json!({"id": "a", "mrr": 100, "attributes": {"risk": "low", "x": 1}}),
        )
        .unwrap();
        a.merge(&json!({"mrr": 900, "attributes": {"risk": "high", "x": null}}))
            .unwrap();
        assert_eq!(a.get("arr"), Some(&json!(10800)));
        assert_eq!(a.get("attributes"), Some(&json!({"risk": "high"})));
        assert!(a.merge(&json!({"id": "other"})).is_err());
    }

    #[test]
    fn rejects_accounts_without_id() {
        assert!(
            Account::from_json(json!({"name": "x"}))
                .unwrap_err()
                .contains("`id`")
        );
        assert!(Account::from_json(json!({"id": 3})).is_err());
        assert!(Account::from_json(json!([])).is_err());
    }
}
