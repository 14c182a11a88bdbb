//! A connector that misbehaves as its configuration says, for the host's
//! tests: `{"mode": "panic"}` panics in every call, `"panic-open"` in
//! `open`, `"hang"` never returns from a call, `"ok"` behaves (an `act`
//! with a `url` in its content POSTs it through the host's HTTP callback,
//! so the callback is tested too).

use serde_json::{Value, json};
use touchpilot_plugin::{Connector, Error, Host, HttpRequest, Level, caps, declare_connector};

pub struct Misbehave {
    host: Host,
    mode: String,
}

impl Connector for Misbehave {
    const NAME: &'static str = "misbehave";
    const VERSION: &'static str = "0.1.0";
    const CAPABILITIES: u64 = caps::ACTIONS | caps::SOURCE;

    fn open(host: Host, config: Value) -> Result<Self, Error> {
        let mode = config
            .get("mode")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::fatal("config: `mode` is required (ok, panic, panic-open, hang)")
            })?
            .to_string();
        match mode.as_str() {
            "panic-open" => panic!("misbehave: asked to panic in open"),
            "ok" | "panic" | "hang" => Ok(Misbehave { host, mode }),
            other => Err(Error::fatal(format!(
                "config: unknown mode `{other}`, expected ok, panic, panic-open or hang"
            ))),
        }
    }

    fn call(&self, op: &str, input: Value) -> Result<Value, Error> {
        match self.mode.as_str() {
            "panic" => panic!("misbehave: asked to panic in {op}"),
            "hang" => loop {
                std::thread::park();
            },
            _ => {}
        }
        self.host.log(Level::Info, &format!("misbehave: {op}"));
        self.host.metric("misbehave_calls", 1.0);
        match op {
            "check" => Ok(json!({})),
            "act" => {
                let Some(url) = input.pointer("/content/url").and_then(Value::as_str) else {
                    return Ok(json!({"id": input["key"], "created": true}));
                };
                let resp = self.host.http(
                    &HttpRequest::new("POST", url)
                        .header("Idempotency-Key", input["key"].as_str().unwrap_or(""))
                        .json(&input),
                )?;
                resp.check("misbehave act")?;
                Ok(json!({"id": resp.json()?["id"], "created": true}))
            }
            other => Err(Error::fatal(format!("unsupported operation `{other}`"))),
        }
    }
}

declare_connector!(Misbehave);
