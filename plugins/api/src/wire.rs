//! The JSON shapes of the host's HTTP callback, and the error
//! classification every connector applies to a vendor's answer.

use serde::{Deserialize, Serialize};

use crate::Error;

/// A request a plugin asks the host to make. `body` is sent as is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
}

impl HttpRequest {
    pub fn new(method: &str, url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// A JSON body, with its content type.
    pub fn json(mut self, body: &serde_json::Value) -> HttpRequest {
        self.body = body.to_string();
        self.header("Content-Type", "application/json")
    }
}

/// The vendor's answer, whatever its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
}

impl HttpResponse {
    /// A header's value, names compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_str(&self.body).map_err(|e| {
            Error::fatal(format!(
                "HTTP {}: the body is not JSON ({e}): {}",
                self.status,
                excerpt(&self.body)
            ))
        })
    }

    /// `Ok` for 2xx; otherwise the error, classified: 408, 429 and 5xx
    /// are retryable (honouring `Retry-After` in seconds), anything else
    /// fatal. `what` names the request in the message. A connector that
    /// can refresh its token handles 401 before calling this.
    pub fn check(&self, what: &str) -> Result<&HttpResponse, Error> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let message = format!("{what}: HTTP {}: {}", self.status, excerpt(&self.body));
        let retryable = self.status == 429 || self.status >= 500 || self.status == 408;
        Err(Error {
            message,
            retryable,
            retry_after: if retryable { self.retry_after() } else { None },
        })
    }

    /// `Retry-After` as seconds (the HTTP-date form is not used by any of
    /// the vendors served here and is treated as absent).
    pub fn retry_after(&self) -> Option<u64> {
        self.header("retry-after")?.trim().parse().ok()
    }
}

/// At most 300 characters of a body, for error messages.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: "{\"error\":\"x\"}".into(),
        }
    }

    #[test]
    fn statuses_are_classified_and_retry_after_is_read() {
        assert!(resp(201, &[]).check("create").is_ok());
        let e = resp(429, &[("Retry-After", "7")])
            .check("search")
            .unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(7));
        assert!(e.message.starts_with("search: HTTP 429"));
        assert!(resp(503, &[]).check("x").unwrap_err().retryable);
        let e = resp(422, &[("retry-after", "7")]).check("x").unwrap_err();
        assert!(!e.retryable);
        assert_eq!(e.retry_after, None);
        assert!(!resp(401, &[]).check("x").unwrap_err().retryable);
    }
}
