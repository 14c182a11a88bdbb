//! Field mapping from a vendor's object to Touchpilot's account model,
//! written as YAML in a connector's configuration: each key is a dotted
//! path in the account (`attributes.industry`, `owner.email`), each value
//! a dotted path in the vendor's object (`properties.industry`,
//! `organization_fields.tier`; a number selects an array element). A
//! connector starts from its defaults and the configuration overrides or
//! adds entries (`null` removes one).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The mapping in force: defaults, then the configuration's entries.
pub fn merged(
    defaults: &[(&str, &str)],
    configured: &BTreeMap<String, Option<String>>,
) -> Vec<(String, String)> {
    let mut m: BTreeMap<String, String> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in configured {
        match v {
            Some(v) => m.insert(k.clone(), v.clone()),
            None => m.remove(k),
        };
    }
    m.into_iter().collect()
}

/// The value at a dotted path.
pub fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, part| match cur {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Sets a dotted path, creating objects on the way.
pub fn set(target: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = target;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let next = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        cur = next.as_object_mut().expect("made an object above");
    }
}

/// Applies a mapping to a vendor object. Absent and null source values
/// are left out (the account keeps what it had).
pub fn apply(mapping: &[(String, String)], src: &Value, into: &mut Map<String, Value>) {
    for (to, from) in mapping {
        if let Some(v) = get(src, from).filter(|v| !v.is_null()) {
            set(into, to, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configured_entries_override_add_and_remove_defaults() {
        let configured = BTreeMap::from([
            (
                "name".to_string(),
                Some("properties.legal_name".to_string()),
            ),
            (
                "attributes.tier".to_string(),
                Some("properties.tier".to_string()),
            ),
            ("attributes.domain".to_string(), None),
        ]);
        let m = merged(
            &[
                ("name", "properties.name"),
                ("attributes.domain", "properties.domain"),
            ],
            &configured,
        );
        let src = json!({"properties": {"name": "A", "legal_name": "Acme Ltd", "tier": "gold", "domain": "a.io"}, "ids": [7, 8]});
        let mut out = Map::new();
        apply(&m, &src, &mut out);
        assert_eq!(
            Value::Object(out),
            json!({"name": "Acme Ltd", "attributes": {"tier": "gold"}})
        );
        assert_eq!(get(&src, "ids.1"), Some(&json!(8)));
    }
}
