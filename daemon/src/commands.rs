//! The command-line verbs as library functions: `validate`, `simulate`,
//! `render`, `schema`. `main.rs` parses arguments and calls these; tests
//! call them in-process. Each writes to the writers it is given and
//! returns the process exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;

use crate::config::diag::Diagnostic;
use crate::config::{self, Config};
use crate::engine::AccountState;
use crate::model::event::Event;
use crate::simulate;
use crate::source::jsonl;

/// Loads a configuration, printing diagnostics; `None` when invalid.
pub fn load(path: &Path, err: &mut dyn Write) -> Option<Arc<Config>> {
    match config::load(path, &config::process_env) {
        Ok((c, warnings)) => {
            print_diags(&warnings, err);
            Some(Arc::new(c))
        }
        Err(diags) => {
            print_diags(&diags, err);
            None
        }
    }
}

fn print_diags(diags: &[Diagnostic], err: &mut dyn Write) {
    for d in diags {
        let _ = writeln!(err, "{d}");
    }
}

/// `touchpilot validate`: 0 when everything is valid, 1 otherwise.
pub fn validate(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let loaded = config::load(path, &config::process_env).and_then(|(c, mut warnings)| {
        // Building never opens a plugin; validating does.
        warnings.extend(crate::plugin_host::validate(&c));
        if warnings.iter().any(Diagnostic::is_error) {
            Err(warnings)
        } else {
            Ok((c, warnings))
        }
    });
    match loaded {
        Ok((c, warnings)) => {
            print_diags(&warnings, err);
            let moments: usize = c.playbooks.iter().map(|p| p.moments.len()).sum();
            let _ = writeln!(
                out,
                "{}: valid ({} playbooks, {} moments)",
                path.display(),
                c.playbooks.len(),
                moments
            );
            0
        }
        Err(diags) => {
            // Problems go to stdout: they are the command's output.
            print_diags(&diags, out);
            let errors = diags.iter().filter(|d| d.is_error()).count();
            let _ = writeln!(err, "{errors} error(s)");
            1
        }
    }
}

/// Arguments of `touchpilot simulate`.
pub struct SimulateArgs {
    pub config: PathBuf,
    pub from: Timestamp,
    pub to: Timestamp,
    pub accounts: Option<PathBuf>,
    pub events: Option<PathBuf>,
    /// Worker threads (0: one per core). The output does not depend on it.
    pub jobs: usize,
}

/// `touchpilot simulate`: JSON lines on `out`, notes on `err`.
pub fn simulate(args: &SimulateArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(config) = load(&args.config, err) else {
        return 1;
    };
    let accounts = match args
        .accounts
        .clone()
        .or_else(|| config.sources.accounts.clone())
    {
        Some(a) => a,
        None => {
            let _ = writeln!(
                err,
                "error: no accounts: pass --accounts or set sources.file.accounts in {}",
                args.config.display()
            );
            return 1;
        }
    };
    let opts = simulate::Options {
        from: args.from,
        to: args.to,
        accounts,
        events: args
            .events
            .clone()
            .or_else(|| config.sources.events.clone()),
        jobs: match args.jobs {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
    };
    let mut buffered = std::io::BufWriter::with_capacity(1 << 16, out);
    let result = simulate::run(config, &opts, &mut buffered);
    let flushed = buffered.flush();
    match (result, flushed) {
        (Ok(summary), Ok(())) => {
            for line in summary.report() {
                let _ = writeln!(err, "{line}");
            }
            0
        }
        (Err(e), _) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
        (_, Err(e)) => {
            let _ = writeln!(err, "error: writing output: {e}");
            1
        }
    }
}

/// Arguments of `touchpilot render`.
pub struct RenderArgs {
    pub config: PathBuf,
    pub template: String,
    pub account: String,
    pub contact: Option<String>,
    pub event: Option<String>,
    pub accounts: Option<PathBuf>,
    pub now: Option<Timestamp>,
}

/// `touchpilot render`: prints a rendered email (headers and body) or JSON.
pub fn render(args: &RenderArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(config) = load(&args.config, err) else {
        return 1;
    };
    let fail = |err: &mut dyn Write, msg: String| {
        let _ = writeln!(err, "error: {msg}");
        1
    };
    let Some(path) = args
        .accounts
        .clone()
        .or_else(|| config.sources.accounts.clone())
    else {
        return fail(
            err,
            "no accounts: pass --accounts or set sources.file.accounts".into(),
        );
    };
    let accounts = match jsonl::read_accounts(&path) {
        Ok(a) => a,
        Err(e) => return fail(err, e.to_string()),
    };
    let Some(account) = accounts.into_iter().find(|a| a.id() == args.account) else {
        return fail(
            err,
            format!("account `{}` not found in {}", args.account, path.display()),
        );
    };
    let now = args.now.unwrap_or_else(Timestamp::now);
    let engine = simulate::dry_run_engine(config.clone());
    let mut st = AccountState::new(account, now);
    let mut ignored = Vec::new();
    engine.admit(&mut st, now, crate::engine::Mode::Silent, &mut ignored);
    let mut ctx = serde_json::Map::new();
    ctx.insert("account".into(), engine.account_json(&st, now));
    let pb = st.playbook.as_deref().and_then(|p| config.playbook(p));
    ctx.insert(
        "playbook".into(),
        pb.map(|p| serde_json::json!({"id": p.id, "name": p.name}))
            .unwrap_or(serde_json::Value::Null),
    );
    ctx.insert(
        "moment".into(),
        serde_json::json!({"id": "render", "owner": null, "objective": null}),
    );
    ctx.insert("now".into(), serde_json::Value::String(now.to_string()));
    if let Some(e) = &args.event {
        let parsed = serde_json::from_str::<serde_json::Value>(e)
            .map_err(|x| x.to_string())
            .and_then(|v| {
                let mut v = v;
                if let Some(o) = v.as_object_mut() {
                    o.entry("account")
                        .or_insert(serde_json::Value::String(args.account.clone()));
                }
                Event::from_json(&v)
            });
        match parsed {
            Ok(ev) => {
                ctx.insert("event".into(), ev.to_json(ev.at.unwrap_or(now)));
            }
            Err(m) => return fail(err, format!("--event: {m}")),
        }
    }
    let templates = &config.templates;
    if templates.has(&args.template, crate::render::Kind::Email) {
        let contact = match &args.contact {
            Some(addr) => match st.account.contact(addr) {
                Some(c) => c.value,
                None if st
                    .account
                    .owner_email()
                    .is_some_and(|o| o.eq_ignore_ascii_case(addr)) =>
                {
                    st.account.owner().unwrap_or_default()
                }
                None => {
                    return fail(
                        err,
                        format!(
                            "`{addr}` is neither a contact nor the owner of account `{}`",
                            args.account
                        ),
                    );
                }
            },
            None => match st.account.contacts().into_iter().next() {
                Some(c) => c.value,
                None => {
                    return fail(
                        err,
                        format!(
                            "account `{}` has no contact with an email: pass --contact",
                            args.account
                        ),
                    );
                }
            },
        };
        let to = contact
            .get("email")
            .and_then(|e| e.as_str())
            .unwrap_or("")
            .to_string();
        ctx.insert("contact".into(), contact);
        ctx.insert(
            "unsubscribe_url".into(),
            serde_json::Value::String((engine.unsubscribe_url)(&to)),
        );
        match templates.render_email(
            &args.template,
            &crate::render::Ctx::new(serde_json::Value::Object(ctx)),
        ) {
            Ok(mail) => {
                let from = mail
                    .from
                    .clone()
                    .or_else(|| config.email.from.clone())
                    .unwrap_or_default();
                let _ = writeln!(out, "From: {from}");
                let _ = writeln!(out, "To: {to}");
                if let Some(r) = &mail.reply_to {
                    let _ = writeln!(out, "Reply-To: {r}");
                }
                let _ = writeln!(out, "Subject: {}", mail.subject);
                let _ = writeln!(out);
                let _ = write!(out, "{}", mail.text);
                if let Some(html) = &mail.html {
                    let _ = writeln!(out, "\n--- text/html ---");
                    let _ = write!(out, "{html}");
                }
                0
            }
            Err(e) => fail(err, e.to_string()),
        }
    } else if templates.has(&args.template, crate::render::Kind::Json) {
        match templates.render_json(
            &args.template,
            &crate::render::Ctx::new(serde_json::Value::Object(ctx)),
        ) {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
                0
            }
            Err(e) => fail(err, e.to_string()),
        }
    } else {
        fail(
            err,
            format!(
                "no template `{}`: expected templates/{0}.hbs or templates/{0}.json.hbs",
                args.template
            ),
        )
    }
}

/// `touchpilot schema`: the JSON Schema of playbooks (or of touchpilot.yaml).
pub fn schema(daemon: bool) -> String {
    let schema = if daemon {
        schemars::schema_for!(config::daemon::DaemonSpec)
    } else {
        schemars::schema_for!(config::playbook::PlaybookSpec)
    };
    serde_json::to_string_pretty(&schema).expect("schemas serialize") + "\n"
}
