//! CEL conditions: compiled once at load, evaluated against `account`,
//! `event` and `now`. JSON numbers become CEL `int` when integral (so that
//! `account.mrr - 200` works with the `int` literal) and `double` otherwise.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use jiff::Timestamp;

/// The one standard-library environment every condition shares: building
/// it is the expensive part of a CEL context (tens of microseconds).
fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

/// A compiled condition and its source.
pub struct Cond {
    pub source: String,
    program: cel::Program,
    /// The top-level `account` fields the expression reads, when that can
    /// be told from its text (`None`: it uses `account` as a whole).
    fields: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for Cond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cond({:?})", self.source)
    }
}

/// The variables one evaluation sees.
pub struct Vars<'a> {
    pub account: &'a cel::Value,
    pub event: Option<&'a cel::Value>,
    pub now: Timestamp,
}

impl Cond {
    /// Compiles `source`, refusing variables outside `allowed`.
    pub fn compile(source: &str, allowed: &[&str]) -> Result<Cond, String> {
        let program = env().compile(source).map_err(|e| {
            let first = e.errors.first();
            match first {
                Some(p) => format!(
                    "invalid CEL expression `{source}`: {} (at column {} of the expression)",
                    p.msg.to_lowercase(),
                    p.pos.1 + 1
                ),
                None => format!("invalid CEL expression `{source}`"),
            }
        })?;
        let refs = program.references();
        let mut vars = refs.variables();
        vars.sort_unstable();
        for v in vars {
            if !allowed.contains(&v) {
                let hint = crate::config::diag::suggestion(v, allowed);
                return Err(format!(
                    "unknown variable `{v}` in CEL expression `{source}`: {hint}"
                ));
            }
        }
        Ok(Cond {
            source: source.to_string(),
            program,
            fields: account_fields(source),
        })
    }

    /// The top-level account fields this condition reads; `None` for all.
    pub fn fields(&self) -> Option<&BTreeSet<String>> {
        self.fields.as_ref()
    }

    /// Evaluates to a boolean; anything else, or an evaluation error (a
    /// missing key, a type mismatch), is an error for the caller to report.
    pub fn eval(&self, vars: &Vars<'_>) -> Result<bool, String> {
        self.eval_in(&Scope::new(vars))
    }

    /// Evaluates in a scope shared by several conditions.
    pub fn eval_in(&self, scope: &Scope<'_>) -> Result<bool, String> {
        match self.program.execute(&scope.ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "`{}` is not a boolean (got {other:?})",
                self.source
            )),
            Err(e) => Err(format!("`{}`: {e}", self.source)),
        }
    }
}

/// The fields read as `account.NAME`, or `None` when `account` appears
/// any other way (`account["x"]`, `size(account)`), which needs them all.
/// A name inside a string literal only widens the set, which is harmless.
fn account_fields(source: &str) -> Option<BTreeSet<String>> {
    let bytes = source.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = source[i..].find("account") {
        let start = i + found;
        let end = start + "account".len();
        i = end;
        let before_ok = start == 0 || !(ident(bytes[start - 1]) || bytes[start - 1] == b'.');
        let after_ident = end < bytes.len() && ident(bytes[end]);
        if !before_ok || after_ident {
            continue;
        }
        let rest = source[end..].trim_start();
        let field = rest.strip_prefix('.')?;
        let field = field.trim_start();
        let name: String = field
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            return None;
        }
        out.insert(name);
    }
    Some(out)
}

/// Variables bound once for several evaluations (a segment check runs
/// every playbook's condition against the same account).
pub struct Scope<'a> {
    ctx: cel::Context<'a, 'a>,
}

impl Scope<'_> {
    pub fn new(vars: &Vars<'_>) -> Scope<'static> {
        let mut ctx = cel::Context::with_env(env().clone());
        ctx.add_variable_from_value("account", vars.account.clone());
        if let Some(e) = vars.event {
            ctx.add_variable_from_value("event", e.clone());
        }
        ctx.add_variable_from_value("now", timestamp(vars.now));
        Scope { ctx }
    }
}

/// A timestamp as CEL sees it.
pub fn timestamp(t: Timestamp) -> cel::Value {
    let dt = chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default();
    cel::Value::Timestamp(dt.fixed_offset())
}

/// Converts JSON into a CEL value.
pub fn to_cel(v: &serde_json::Value) -> cel::Value {
    match v {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        serde_json::Value::Object(o) => map(o.iter().map(|(k, v)| (k.as_str(), to_cel(v)))),
    }
}

/// Builds a CEL map from string keys.
pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, cel::Value)>) -> cel::Value {
    let map: HashMap<cel::objects::Key, cel::Value> = entries
        .into_iter()
        .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.to_string())), v))
        .collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, account: serde_json::Value) -> Result<bool, String> {
        let c = Cond::compile(src, &["account", "now"]).unwrap();
        let a = to_cel(&account);
        c.eval(&Vars {
            account: &a,
            event: None,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
        })
    }

    #[test]
    fn integers_mix_with_literals() {
        let a = serde_json::json!({"mrr": 5200, "f": 12.5});
        assert_eq!(eval("account.mrr >= 5000", a.clone()), Ok(true));
        assert_eq!(eval("account.mrr - 200 == 5000", a.clone()), Ok(true));
        assert_eq!(eval("account.mrr * 12 > 60000", a.clone()), Ok(true));
        assert_eq!(eval("account.f > 12", a), Ok(true));
    }

    #[test]
    fn missing_keys_are_errors_not_false() {
        let a = serde_json::json!({"attributes": {}});
        assert!(eval("account.attributes.growth == 'high'", a.clone()).is_err());
        assert_eq!(eval("has(account.attributes.growth)", a), Ok(false));
    }

    #[test]
    fn timestamps_compare_with_now() {
        let a = serde_json::json!({"signed_at": "2025-06-01T00:00:00Z"});
        assert_eq!(eval("timestamp(account.signed_at) < now", a), Ok(true));
    }

    #[test]
    fn reads_which_account_fields_an_expression_needs() {
        let f = |s: &str| account_fields(s).map(|f| f.into_iter().collect::<Vec<_>>());
        assert_eq!(
            f("account.mrr >= 5 || account.attributes.growth == 'high'"),
            Some(vec!["attributes".into(), "mrr".into()])
        );
        assert_eq!(
            f("has(account . metrics.x) && myaccount.y == 1"),
            Some(vec!["metrics".into()])
        );
        assert_eq!(f("account['mrr'] > 1"), None);
        assert_eq!(f("size(account) > 1"), None);
        assert_eq!(f("true"), Some(vec![]));
    }

    #[test]
    fn unknown_variables_are_refused_at_compile_time() {
        let e = Cond::compile("acount.mrr > 1", &["account", "now"]).unwrap_err();
        assert!(
            e.contains("unknown variable `acount`") && e.contains("did you mean `account`"),
            "{e}"
        );
        assert!(Cond::compile("event.data.x == 1", &["account", "now"]).is_err());
        assert!(
            Cond::compile("account.mrr >", &["account"])
                .unwrap_err()
                .contains("invalid CEL")
        );
    }
}
