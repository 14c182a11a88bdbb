//! `Sp<T>`: a parsed value with the line and column it came from, so that
//! validation, which runs after parsing, can point at the offending value.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::diag::Pos;

/// A value and where it was written. Deserializes exactly like `T`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Sp<T>(serde_saphyr::Spanned<T>);

impl<T> Sp<T> {
    /// A value that was not written anywhere (a default, a test value).
    pub fn synthetic(value: T) -> Sp<T> {
        let unknown = serde_saphyr::Location::UNKNOWN;
        Sp(serde_saphyr::Spanned::new(value, unknown, unknown))
    }

    pub fn pos(&self) -> Pos {
        let loc = self.0.referenced;
        Pos::new(loc.line(), loc.column())
    }

    pub fn get(&self) -> &T {
        &self.0.value
    }

    /// Another value at the same place (after `${VAR}` expansion).
    pub fn with_value<U>(&self, value: U) -> Sp<U> {
        Sp(serde_saphyr::Spanned::new(
            value,
            self.0.referenced,
            self.0.defined,
        ))
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Sp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.value.fmt(f)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Any YAML scalar kept as its text: `drop: 30%` and `drop: 5`,
/// `at: "09:00"`, `due: 7` (reported as a missing unit, not a type error).
#[derive(Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Deref for Scalar {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Scalar {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({ "type": ["string", "number"] })
    }
}

/// For lists written with no value (`moments:`): an empty list, as a CS
/// lead means it, rather than a type error.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}
