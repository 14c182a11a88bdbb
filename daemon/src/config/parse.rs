//! The one place YAML is parsed, so that the parser can be swapped, and
//! where its errors become located, self-fixing diagnostics.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::diag::{Diagnostic, Pos, suggestion};

/// Parses `text` (read from `path`) into `T`, or one located diagnostic.
pub fn yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Diagnostic> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| Pos::new(l.line(), l.column()))
            .unwrap_or(Pos::START);
        Diagnostic::error(path, at, describe_yaml_error(&e))
    })
}

/// The error's message without its location suffix (we print our own),
/// with unknown keys turned into suggestions.
pub fn describe_yaml_error(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    match e.without_snippet() {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            format!("unknown key `{field}`, {}", suggestion(field, expected))
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            format!("unknown `{variant}`, {}", suggestion(variant, expected))
        }
        E::SerdeMissingField { field, .. } => format!("missing key `{field}`"),
        other => {
            let text = other.to_string();
            let text = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            if text.starts_with("duplicate mapping key") {
                let key = text
                    .trim_start_matches("duplicate mapping key: ")
                    .split(',')
                    .next()
                    .unwrap_or("");
                return format!("duplicate key `{key}`");
            }
            text
        }
    }
}
