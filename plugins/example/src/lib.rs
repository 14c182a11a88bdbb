use serde_json::{Value, json};
use touchpilot_plugin::{Connector, Error, Host, HttpRequest, caps, declare_connector};

pub struct Acme {
    host: Host,
    base: String,
    token: String,
}

impl Connector for Acme {
    const NAME: &'static str = "acme";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CAPABILITIES: u64 = caps::ACTIONS;

    /// Refuse a configuration you cannot use, naming the field.
    fn open(host: Host, config: Value) -> Result<Self, Error> {
        let field = |f: &str| {
            config[f]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::fatal(format!("config: `{f}` is required")))
        };
        Ok(Acme {
            host,
            base: field("base_url")?,
            token: field("token")?,
        })
    }

    fn call(&self, op: &str, input: Value) -> Result<Value, Error> {
        match (op, input["action"].as_str()) {
            ("check", _) => Ok(json!({})),
            ("act", Some("create_ticket")) => {
                let resp = self.host.http(
                    &HttpRequest::new("POST", format!("{}/tickets", self.base))
                        .header("Authorization", format!("Bearer {}", self.token))
                        // The key is the same on every retry of this action.
                        .header("Idempotency-Key", input["key"].as_str().unwrap_or(""))
                        .json(&input["content"]),
                )?;
                resp.check("create ticket")?; // 429/5xx retryable, other 4xx fatal
                Ok(json!({"id": resp.json()?["id"], "created": true}))
            }
            ("act", other) => Err(Error::fatal(format!(
                "acme has no action `{other:?}`; it offers create_ticket"
            ))),
            _ => Err(Error::fatal(format!("unsupported operation `{op}`"))),
        }
    }
}

declare_connector!(Acme);
