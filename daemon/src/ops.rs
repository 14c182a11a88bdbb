//! The operations commands: `status`, `dead-letters`, `trace` and
//! `endpoints`. They read (and, for a retry or an enable, write) the
//! daemon's store directly, so they work whether the daemon runs or not,
//! and for every instance sharing the store.

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde_json::Value;

use crate::store::sqlite::SqliteStore;
use crate::store::{OutboxState, Store};

/// What to do.
#[derive(Debug, Clone)]
pub enum Op {
    Status,
    DeadLetters { retry: Vec<String>, limit: i64 },
    Trace { account: String, limit: i64 },
    EnableEndpoint { name: String },
}

/// Runs `op` against the store of the configuration at `path`: exit code 0
/// when done, 1 on an error (printed), 2 when there was nothing to do
/// (an unknown id or account).
pub fn run(path: &Path, op: &Op, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(config) = crate::commands::load(path, err) else {
        return 1;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        if !config.store.starts_with("sqlite:") {
            anyhow::bail!("store `{}`: not supported by this version", config.store);
        }
        let store = SqliteStore::open(&config.store)
            .await
            .map_err(|e| anyhow::anyhow!("while opening the store `{}`: {e}", config.store))?;
        exec(&store, &config.store, op, out).await
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e:#}");
            1
        }
    }
}

fn ago(now: Timestamp, t: Timestamp) -> String {
    let secs = now.duration_since(t).as_secs();
    let (n, unit) = match secs.abs() {
        s if s < 120 => (secs, "s"),
        s if s < 7_200 => (secs / 60, "m"),
        s if s < 172_800 => (secs / 3_600, "h"),
        _ => (secs / 86_400, "d"),
    };
    if n >= 0 {
        format!("{n}{unit} ago")
    } else {
        format!("in {}{unit}", -n)
    }
}

/// Where a delivery went: the address, endpoint or connector action.
fn target(kind: &str, payload: &Value) -> String {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("?");
    match kind {
        "email" => format!("email to {}", s("to")),
        "webhook" => format!("webhook {}", s("endpoint")),
        _ => format!("{} {}", s("connector"), s("action")),
    }
}

pub async fn exec<S: Store>(
    store: &S,
    url: &str,
    op: &Op,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let now = Timestamp::now();
    match op {
        Op::Status => {
            let s = store.stats(now).await?;
            writeln!(out, "store        {url}")?;
            let next = s
                .next_due
                .map(|t| format!("; next due {t} ({})", ago(now, t)))
                .unwrap_or_default();
            writeln!(
                out,
                "accounts     {} ({} due now{next})",
                s.accounts, s.due_accounts
            )?;
            writeln!(
                out,
                "events       {} accepted, not yet applied",
                s.events_pending
            )?;
            let oldest = s
                .oldest_pending
                .map(|t| format!(" (oldest due {})", ago(now, t)))
                .unwrap_or_default();
            writeln!(
                out,
                "outbox       {} pending{oldest}, {} sending, {} sent, {} dead, {} suppressed, {} missed",
                s.pending, s.sending, s.sent, s.dead, s.suppressed, s.missed
            )?;
            for d in store.disabled_endpoints().await? {
                writeln!(
                    out,
                    "endpoint     {} DISABLED since {} ({}): {}",
                    d.name,
                    d.at,
                    ago(now, d.at),
                    d.reason
                )?;
            }
            let dead = store.list_state(OutboxState::Dead, 5).await?;
            if !dead.is_empty() {
                writeln!(out, "last errors")?;
                for l in dead {
                    writeln!(
                        out,
                        "  {}  {}  {} ({})  {}",
                        l.updated,
                        l.id,
                        target(&l.row.kind, &l.row.payload),
                        l.row.account,
                        l.row.last_error.as_deref().unwrap_or("")
                    )?;
                }
            }
            Ok(0)
        }
        Op::DeadLetters { retry, limit } if retry.is_empty() => {
            let dead = store.list_state(OutboxState::Dead, *limit).await?;
            if dead.is_empty() {
                writeln!(out, "no dead letters")?;
            }
            for l in dead {
                let p = &l.row.payload;
                writeln!(
                    out,
                    "{}  {}  account {}  {}/{}  {}  attempts {}\n    {}",
                    l.id,
                    l.updated,
                    l.row.account,
                    p.get("playbook").and_then(Value::as_str).unwrap_or("?"),
                    p.get("moment").and_then(Value::as_str).unwrap_or("?"),
                    target(&l.row.kind, p),
                    l.row.attempts,
                    l.row.last_error.as_deref().unwrap_or("")
                )?;
            }
            Ok(0)
        }
        Op::DeadLetters { retry, .. } => {
            let mut code = 0;
            for id in retry {
                if store.retry_dead(id, now).await? {
                    writeln!(out, "{id}: queued again")?;
                } else {
                    writeln!(out, "{id}: no dead letter has this id")?;
                    code = 2;
                }
            }
            Ok(code)
        }
        Op::EnableEndpoint { name } => {
            if store.enable_endpoint(name).await? {
                writeln!(
                    out,
                    "{name}: enabled; retry its dead letters with `touchpilot dead-letters --retry ID`"
                )?;
                Ok(0)
            } else {
                writeln!(out, "{name}: was not disabled")?;
                Ok(2)
            }
        }
        Op::Trace { account, limit } => {
            let Some(loaded) = store.load_account(account).await? else {
                writeln!(out, "no account `{account}`")?;
                return Ok(2);
            };
            let st = &loaded.state;
            writeln!(
                out,
                "account {account}: segment {}{}",
                st.playbook.as_deref().unwrap_or("(none)"),
                st.entered_at
                    .map(|t| format!(" since {t}"))
                    .unwrap_or_default()
            )?;
            for (id, at) in st.reached.iter() {
                writeln!(out, "  milestone {id} reached {at}")?;
            }
            writeln!(out, "decisions")?;
            for t in store.trace(account, *limit).await? {
                let d = &t.detail;
                let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
                let line = match t.kind.as_str() {
                    "fired" => {
                        let actions: Vec<String> = d
                            .get("actions")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .map(|x| {
                                        let kind =
                                            x.get("kind").and_then(Value::as_str).unwrap_or("");
                                        let mut t = target(kind, x);
                                        if let Some(e) = x.get("error").and_then(Value::as_str) {
                                            t.push_str(&format!(" [cannot render: {e}]"));
                                        }
                                        t
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        format!(
                            "fired {}/{} ({}): {}",
                            s("playbook"),
                            s("moment"),
                            s("trigger"),
                            if actions.is_empty() {
                                "no actions".into()
                            } else {
                                actions.join(", ")
                            }
                        )
                    }
                    "skipped" => {
                        format!("skipped {}/{}: {}", s("playbook"), s("moment"), s("reason"))
                    }
                    "entered" => format!(
                        "entered segment {}{}",
                        s("playbook"),
                        if d.get("silent").and_then(Value::as_bool) == Some(true) {
                            " (silently, at first load)"
                        } else {
                            ""
                        }
                    ),
                    "exited" => format!("left segment {}", s("playbook")),
                    "reached" => format!("milestone {}/{} reached", s("playbook"), s("milestone")),
                    "problem" => format!("problem: {}", s("message")),
                    other => format!("{other} {d}"),
                };
                writeln!(out, "  {}  {line}", t.at)?;
            }
            writeln!(out, "deliveries")?;
            for l in store.account_outbox(account, *limit).await? {
                let p = &l.row.payload;
                writeln!(
                    out,
                    "  {}  {}/{}  {}  {} (attempts {}){}",
                    l.row.at,
                    p.get("playbook").and_then(Value::as_str).unwrap_or("?"),
                    p.get("moment").and_then(Value::as_str).unwrap_or("?"),
                    target(&l.row.kind, p),
                    l.row.state.as_str(),
                    l.row.attempts,
                    l.row
                        .last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )?;
            }
            Ok(0)
        }
    }
}
