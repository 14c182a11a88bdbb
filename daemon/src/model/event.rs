//! Events: something that happened to an account, with a type, a time and
//! data. Parsing names the field at fault, so that a bad line in a file or
//! a request can be reported precisely.

use jiff::Timestamp;
use serde_json::Value;

/// An event as accepted by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub account: String,
    pub kind: String,
    /// `None`: happens when it is received.
    pub at: Option<Timestamp>,
    pub data: Value,
}

impl Event {
    /// Validates one event object.
    pub fn from_json(value: &Value) -> Result<Event, String> {
        let Value::Object(map) = value else {
            return Err("an event must be a JSON object".to_string());
        };
        let string = |field: &str, required: bool| -> Result<Option<String>, String> {
            match map.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(Value::String(_)) => Err(format!("field `{field}` must not be empty")),
                Some(Value::Null) | None if !required => Ok(None),
                None | Some(Value::Null) => Err(format!("missing field `{field}`")),
                Some(_) => Err(format!("field `{field}` must be a string")),
            }
        };
        let account = string("account", true)?.unwrap_or_default();
        let kind = string("type", true)?.unwrap_or_default();
        let id = match map.get("id") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => string("id", false)?,
        };
        let at = match string("at", false)? {
            Some(s) => Some(s.parse::<Timestamp>().map_err(|_| {
                format!(
                    "field `at`: `{s}` is not an RFC 3339 timestamp (like 2026-02-01T10:00:00Z)"
                )
            })?),
            None => None,
        };
        let data = map
            .get("data")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        if !data.is_object() {
            return Err("field `data` must be a JSON object".to_string());
        }
        match kind.as_str() {
            "metric" => {
                if !data.get("name").is_some_and(Value::is_string) {
                    return Err("a `metric` event needs `data.name` (a string)".to_string());
                }
                if !data.get("value").is_some_and(Value::is_number) {
                    return Err("a `metric` event needs `data.value` (a number)".to_string());
                }
            }
            "account.updated" if data.get("id").is_some_and(|i| i.as_str() != Some(&account)) => {
                return Err("account.updated cannot change the account `id`".to_string());
            }
            _ => {}
        }
        Ok(Event {
            id,
            account,
            kind,
            at,
            data,
        })
    }

    /// The event as templates and CEL see it.
    pub fn to_json(&self, at: Timestamp) -> Value {
        serde_json::json!({
            "id": self.id,
            "account": self.account,
            "type": self.kind,
            "at": at.to_string(),
            "data": self.data,
        })
    }

    /// For `metric` events: the metric's name and value.
    pub fn metric(&self) -> Option<(&str, f64)> {
        if self.kind != "metric" {
            return None;
        }
        Some((
            self.data.get("name")?.as_str()?,
            self.data.get("value")?.as_f64()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_field_at_fault() {
        let e = |v| Event::from_json(&v).unwrap_err();
        assert_eq!(e(json!({"type": "x"})), "missing field `account`");
        assert_eq!(e(json!({"account": "a"})), "missing field `type`");
        assert!(e(json!({"account": "a", "type": "x", "at": "yesterday"})).contains("field `at`"));
        assert!(
            e(json!({"account": "a", "type": "metric", "data": {"name": "u"}}))
                .contains("data.value")
        );
        assert!(e(json!({"account": "a", "type": "x", "data": 3})).contains("`data`"));
    }
}
