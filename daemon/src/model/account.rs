//! Accounts: a customer as a JSON object with a required `id`. Fields the
//! engine interprets (timezone, owner, contacts, date fields) are read on
//! demand, so any other field a CRM sends is kept and reachable from CEL
//! and templates.

use std::borrow::Cow;

use jiff::Timestamp;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::engine::small_map::SmallMap;

/// A customer account: a JSON object with a string `id`.
///
/// Held compactly: each top-level field stays the JSON text it arrived as
/// and is parsed when read. A hundred thousand accounts as `serde_json`
/// values took 4 KB each for 575 bytes of input; the engine reads a few
/// fields per step and the whole object only to render a template.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct Account {
    #[serde(skip)]
    id: Box<str>,
    #[serde(flatten)]
    fields: SmallMap<Box<RawValue>>,
}

impl PartialEq for Account {
    fn eq(&self, other: &Account) -> bool {
        self.id == other.id
            && self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(other.fields.iter())
                .all(|((k, v), (l, w))| k == l && v.get() == w.get())
    }
}

impl TryFrom<Map<String, Value>> for Account {
    type Error = String;
    fn try_from(map: Map<String, Value>) -> Result<Account, String> {
        Account::from_json(Value::Object(map))
    }
}

/// A contact of an account, as the engine reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub email: String,
    pub role: Option<String>,
    pub timezone: Option<String>,
    pub unsubscribed: bool,
    pub value: Value,
}

impl Account {
    /// Checks the shape and fills `mrr` from `arr` or the reverse.
    pub fn from_json(value: Value) -> Result<Account, String> {
        let Value::Object(mut map) = value else {
            return Err("an account must be a JSON object".to_string());
        };
        let id = match map.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err("field `id` must not be empty".to_string()),
            Some(_) => return Err("field `id` must be a string".to_string()),
            None => return Err("missing field `id`".to_string()),
        };
        if let Some(c) = map.get("contacts")
            && !c.is_array()
            && !c.is_null()
        {
            return Err("field `contacts` must be an array".to_string());
        }
        derive_revenue(&mut map, true, true);
        Ok(Account {
            id: id.into(),
            fields: encode(map),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// One field, parsed.
    pub fn get(&self, field: &str) -> Option<Value> {
        serde_json::from_str(self.fields.get(field)?.get()).ok()
    }

    /// Every field as written, unparsed.
    pub fn raw_fields(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.fields.iter().map(|(k, v)| (k, &**v))
    }

    /// The whole account as a JSON object (for templates).
    pub fn to_map(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), serde_json::from_str(v.get()).ok()?)))
            .collect()
    }

    /// A string field, borrowed from its JSON text when it has no escapes.
    fn str_field(&self, field: &str) -> Option<Cow<'_, str>> {
        serde_json::from_str::<Cow<'_, str>>(self.fields.get(field)?.get()).ok()
    }

    pub fn timezone(&self) -> Option<Cow<'_, str>> {
        self.str_field("timezone")
    }

    pub fn owner(&self) -> Option<Value> {
        self.get("owner").filter(Value::is_object)
    }

    pub fn owner_email(&self) -> Option<String> {
        let owner = self.owner()?;
        owner
            .get("email")?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Contacts with an email address, in the account's order.
    pub fn contacts(&self) -> Vec<Contact> {
        let Some(Value::Array(list)) = self.get("contacts") else {
            return Vec::new();
        };
        list.into_iter()
            .filter_map(|c| {
                let email = c
                    .get("email")?
                    .as_str()
                    .filter(|s| !s.is_empty())?
                    .to_string();
                Some(Contact {
                    email,
                    role: c.get("role").and_then(Value::as_str).map(str::to_string),
                    timezone: c
                        .get("timezone")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    unsubscribed: c
                        .get("unsubscribed")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    value: c,
                })
            })
            .collect()
    }

    /// The contact with this address, compared case-insensitively.
    pub fn contact(&self, email: &str) -> Option<Contact> {
        self.contacts()
            .into_iter()
            .find(|c| c.email.eq_ignore_ascii_case(email))
    }

    /// A field holding a timestamp or a `YYYY-MM-DD` date. A date is its
    /// start in `tz`. `None` when absent or null; an error when malformed.
    pub fn instant(
        &self,
        field: &str,
        tz: &jiff::tz::TimeZone,
    ) -> Option<Result<Timestamp, String>> {
        self.instant_with(field, || tz.clone())
    }

    /// As `instant`, asking for the timezone only when the field is a date.
    pub fn instant_with(
        &self,
        field: &str,
        tz: impl FnOnce() -> jiff::tz::TimeZone,
    ) -> Option<Result<Timestamp, String>> {
        let raw = self.fields.get(field)?.get();
        if raw == "null" {
            return None;
        }
        let Ok(s) = serde_json::from_str::<Cow<'_, str>>(raw) else {
            return Some(Err(format!("field `{field}` must be a timestamp string")));
        };
        if let Ok(t) = s.parse::<Timestamp>() {
            return Some(Ok(t));
        }
        Some(parse_instant(&s, &tz()).map_err(|e| format!("field `{field}`: {e}")))
    }

    /// The calendar date a date or timestamp field names, as written: the
    /// date part of `2027-01-05T00:00:00Z` is January 5 wherever the
    /// account is. `None` when absent or not a date.
    pub fn date_as_written(&self, field: &str) -> Option<jiff::civil::Date> {
        let s = serde_json::from_str::<Cow<'_, str>>(self.fields.get(field)?.get()).ok()?;
        if let Ok(d) = s.parse::<jiff::civil::Date>() {
            return Some(d);
        }
        // Only a well-formed timestamp lends its date part.
        s.parse::<Timestamp>().ok()?;
        s.get(..10)?.parse().ok()
    }

    /// Applies an RFC 7396 merge patch. The id cannot change.
    pub fn merge(&mut self, patch: &Value) -> Result<(), String> {
        let Value::Object(p) = patch else {
            return Err(
                "`data` of account.updated must be a JSON object (a merge patch)".to_string(),
            );
        };
        if let Some(id) = p.get("id")
            && id.as_str() != Some(self.id())
        {
            return Err("account.updated cannot change the account `id`".to_string());
        }
        if let Some(c) = p.get("contacts")
            && !c.is_array()
            && !c.is_null()
        {
            return Err("field `contacts` must be an array".to_string());
        }
        let mut whole = Value::Object(self.to_map());
        merge_patch(&mut whole, patch);
        let Value::Object(mut map) = whole else {
            unreachable!("merging an object patch into an object yields an object")
        };
        // Revenue set in the patch wins; its twin follows it.
        let mrr = p.contains_key("mrr");
        let arr = p.contains_key("arr");
        if mrr && !arr {
            map.remove("arr");
        } else if arr && !mrr {
            map.remove("mrr");
        }
        derive_revenue(&mut map, mrr || !arr, arr || !mrr);
        self.fields = encode(map);
        Ok(())
    }
}

fn encode(map: Map<String, Value>) -> SmallMap<Box<RawValue>> {
    let mut fields = SmallMap::new();
    for (k, v) in map {
        let raw = serde_json::value::to_raw_value(&v).expect("JSON values always serialize");
        fields.insert(&k, raw);
    }
    fields
}

fn derive_revenue(map: &mut Map<String, Value>, from_mrr: bool, from_arr: bool) {
    let num = |v: Option<&Value>| v.and_then(Value::as_f64);
    match (num(map.get("mrr")), num(map.get("arr"))) {
        (Some(m), None) if from_mrr => {
            map.insert("arr".into(), number(m * 12.0));
        }
        (None, Some(a)) if from_arr => {
            map.insert("mrr".into(), number(a / 12.0));
        }
        _ => {}
    }
}

/// A whole number when the value is integral, so `arr` stays an `int` in CEL.
fn number(x: f64) -> Value {
    // Exact, not rounded: rounding 4999.999 to 5000.00 would change which
    // segment `mrr >= 5000` puts the account in.
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x)
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
        assert_eq!(a.get("arr"), Some(json!(1200)));
        let b = Account::from_json(json!({"id": "b", "arr": 1200})).unwrap();
        assert_eq!(b.get("mrr"), Some(json!(100)));
    }

    #[test]
    fn a_patch_that_changes_mrr_recomputes_arr() {
        let mut a = Account::from_json(
            json!({"id": "a", "mrr": 100, "attributes": {"risk": "low", "x": 1}}),
        )
        .unwrap();
        a.merge(&json!({"mrr": 900, "attributes": {"risk": "high", "x": null}}))
            .unwrap();
        assert_eq!(a.get("arr"), Some(json!(10800)));
        assert_eq!(a.get("attributes"), Some(json!({"risk": "high"})));
        assert!(a.merge(&json!({"id": "other"})).is_err());
    }

    #[test]
    fn round_trips_through_serde_as_a_plain_object() {
        let a = Account::from_json(
            json!({"id": "a", "name": "Zoë \"Q\"", "contacts": [{"email": "x@y.io"}]}),
        )
        .unwrap();
        let text = serde_json::to_string(&a).unwrap();
        let back: Account = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.id(), "a");
        assert_eq!(back.contacts()[0].email, "x@y.io");
        assert!(serde_json::from_str::<Account>(r#"{"name": "no id"}"#).is_err());
    }

    #[test]
    fn derived_revenue_is_exact_so_segments_do_not_shift() {
        let a = Account::from_json(json!({"id": "a", "arr": 59999.99})).unwrap();
        assert!(a.get("mrr").unwrap().as_f64().unwrap() < 5000.0);
        let b = Account::from_json(json!({"id": "b", "contacts": null})).unwrap();
        assert!(b.contacts().is_empty());
    }

    #[test]
    fn dates_are_read_as_written() {
        let a = Account::from_json(
            json!({"id": "a", "r": "2027-01-05T00:00:00Z", "d": "2027-02-01", "x": "soon"}),
        )
        .unwrap();
        assert_eq!(a.date_as_written("r"), Some(jiff::civil::date(2027, 1, 5)));
        assert_eq!(a.date_as_written("d"), Some(jiff::civil::date(2027, 2, 1)));
        assert_eq!(a.date_as_written("x"), None);
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
