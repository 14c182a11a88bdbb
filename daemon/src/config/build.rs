//! Validation and building: from parsed spec types to the engine's model,
//! collecting every problem. Pure apart from reading the files it is told
//! to read (the configuration, playbooks and templates).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;

use super::daemon::DaemonSpec;
use super::diag::{Diagnostic, Pos, suggestion};
use super::duration::{self, Duration};
use super::playbook::{ActionSpec, EventMatchSpec, MomentSpec, PlaybookSpec, TriggerSpec};
use super::spanned::{Scalar, Sp};
use super::{
    Cap, Config, Connector, Delivery, Email, FileSources, Http, Inbound, Loaded, Log, Webhook,
    parse, resolve,
};
use crate::evaluate::cel::Cond;
use crate::model::playbook::{
    Action, Drop, EventMatch, Milestone, Moment, Onboarding, PhaseFilter, Playbook, Recipients,
    Trigger,
};
use crate::render::{Kind, Templates};
use crate::schedule::cron::Schedule;
use crate::schedule::window::SendWindow;

const SEGMENT_VARS: &[&str] = &["account", "now"];
const EVENT_VARS: &[&str] = &["account", "event", "now"];
/// Engine events: moments and milestones may listen for them.
pub const ENGINE_EVENTS: &[&str] = &[
    "segment.entered",
    "segment.exited",
    "milestone.reached",
    "milestone.late",
    "onboarding.completed",
];

/// Collects diagnostics for one file.
struct Sink<'a> {
    file: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    fn error(&mut self, at: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.file, at, msg));
    }
    fn warn(&mut self, at: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(self.file, at, msg));
    }
}

/// Loads `touchpilot.yaml`, its playbooks and templates. `env` resolves
/// `${VAR}` (the process environment in production, a map in tests).
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Loaded {
    let mut diags = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diagnostic::error(
                path,
                Pos::START,
                format!("cannot read configuration: {e}"),
            )]);
        }
    };
    let spec: DaemonSpec = match parse::yaml(path, &text) {
        Ok(s) => s,
        Err(d) => return Err(vec![d]),
    };
    // A configuration in the working directory has an empty parent: paths
    // then stay as written (`playbooks/x.yaml`, not `./playbooks/x.yaml`).
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut sink = Sink {
        file: path,
        diags: &mut diags,
    };

    let interp = |s: &Sp<String>, sink: &mut Sink<'_>| -> String {
        interpolate(s.get(), content_start(&text, s.pos()), env, sink)
    };

    // `${VAR}` may stand in any string of this file.
    let expand = |v: &Option<Sp<String>>, sink: &mut Sink<'_>| -> Option<Sp<String>> {
        v.as_ref().map(|s| s.with_value(interp(s, sink)))
    };
    let timezone = match expand(&spec.timezone, &mut sink) {
        Some(tz) => timezone(&tz, &mut sink).unwrap_or(TimeZone::UTC),
        None => TimeZone::UTC,
    };
    let store = spec
        .store
        .as_ref()
        .map(|s| {
            let v = interp(s, &mut sink);
            if !(v.starts_with("sqlite:")
                || v.starts_with("postgres://")
                || v.starts_with("postgresql://"))
            {
                sink.error(
                    s.pos(),
                    format!("invalid store `{v}`: expected `sqlite:PATH` or `postgres://...`"),
                );
            }
            v
        })
        .unwrap_or_else(|| "sqlite:touchpilot.db".to_string());
    let mut http = Http::default();
    if let Some(h) = &spec.http {
        if let Some(l) = &h.listen {
            let v = interp(l, &mut sink);
            if v.parse::<std::net::SocketAddr>().is_err() {
                sink.error(
                    l.pos(),
                    format!(
                        "invalid listen address `{v}`: expected HOST:PORT such as 127.0.0.1:8080"
                    ),
                );
            }
            http.listen = Some(v);
        }
        if let Some(u) = &h.public_url {
            let v = interp(u, &mut sink);
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                sink.error(
                    u.pos(),
                    format!("invalid public_url `{v}`: must start with http:// or https://"),
                );
            }
            http.public_url = Some(v.trim_end_matches('/').to_string());
        }
        http.token = h.token.as_ref().map(|t| interp(t, &mut sink));
    }
    let mut sources = FileSources::default();
    if let Some(f) = spec.sources.as_ref().and_then(|s| s.file.as_ref()) {
        sources.accounts = expand(&f.accounts, &mut sink).map(|p| resolve(&base, &p));
        sources.events = expand(&f.events, &mut sink).map(|p| resolve(&base, &p));
    }
    let mut email = Email {
        from: None,
        transport: "file:outbox".to_string(),
    };
    if let Some(e) = &spec.email {
        email.from = e.from.as_ref().map(|f| interp(f, &mut sink));
        if let Some(t) = &e.transport {
            let v = interp(t, &mut sink);
            if !(v.starts_with("file:") || v.starts_with("smtp://") || v.starts_with("smtps://")) {
                sink.error(t.pos(), format!("invalid transport `{v}`: expected `file:DIR`, `smtp://HOST:PORT` or `smtps://HOST:PORT`"));
            }
            email.transport = v;
        }
    }
    let mut webhooks = BTreeMap::new();
    for (name, w) in &spec.webhooks {
        let url = interp(&w.url, &mut sink);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            sink.error(
                w.url.pos(),
                format!(
                    "invalid url `{url}` for webhook `{name}`: must start with http:// or https://"
                ),
            );
        }
        let secret = w.secret.as_ref().map(|s| interp(s, &mut sink));
        webhooks.insert(
            name.clone(),
            Webhook {
                url,
                secret,
                allow_private: w.allow_private,
            },
        );
    }
    let mut connectors = BTreeMap::new();
    for (name, c) in &spec.connectors {
        let library = resolve(&base, &interp(&c.library, &mut sink));
        let config = match &c.config {
            Some(v) => interpolate_json(v.get(), v.pos(), env, &mut sink),
            None => serde_json::Value::Object(Default::default()),
        };
        let mut limits = crate::plugin_host::Limits::default();
        for (field, value) in [
            (&mut limits.http_timeout, &c.http_timeout_ms),
            (&mut limits.call_timeout, &c.call_timeout_ms),
        ] {
            match value {
                Some(ms) if *ms.get() == 0 => {
                    sink.error(ms.pos(), "a timeout must be at least 1 ms")
                }
                Some(ms) => *field = std::time::Duration::from_millis(*ms.get()),
                None => {}
            }
        }
        connectors.insert(
            name.clone(),
            Connector {
                library,
                config,
                limits,
                at: c.library.pos(),
            },
        );
    }
    let cap = spec
        .limits
        .as_ref()
        .and_then(|l| l.per_contact.as_ref())
        .and_then(|c| {
            let per = duration_of(&c.per, &mut sink)?;
            if *c.max.get() == 0 {
                sink.error(
                    c.max.pos(),
                    "`max` must be at least 1 (remove the limit to send nothing is not a cap)",
                );
            }
            Some(Cap {
                max: *c.max.get(),
                per,
            })
        });

    let mut inbound = BTreeMap::new();
    for (name, i) in &spec.inbound {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !ok {
            sink.error(
                i.account.pos(),
                format!("inbound name `{name}` must be letters, digits, `-` or `_` (it is a URL path segment)"),
            );
        }
        inbound.insert(
            name.clone(),
            Inbound {
                account: i.account.get().clone(),
                kind: i
                    .kind
                    .as_ref()
                    .map_or("type".to_string(), |k| k.get().clone()),
                id: i.id.as_ref().map(|v| v.get().clone()),
                at: i.at.as_ref().map(|v| v.get().clone()),
            },
        );
    }
    let mut retention = crate::maintain::DEFAULT_RETENTION;
    if let Some(v) = &spec.retention {
        match duration::interval(v.get()) {
            Ok(i) if i >= jiff::SignedDuration::from_hours(24) => retention = i,
            Ok(_) => sink.error(
                v.pos(),
                "`retention` must be at least `1d`: history younger than a day is never compacted",
            ),
            Err(e) => sink.error(v.pos(), e),
        }
    }
    let mut delivery = Delivery::default();
    if let Some(d) = &spec.delivery {
        for (field, slot) in [
            (&d.grace, &mut delivery.grace),
            (&d.give_up_after, &mut delivery.give_up_after),
            (&d.first_retry, &mut delivery.first_retry),
            (&d.max_retry, &mut delivery.max_retry),
            (&d.timeout, &mut delivery.timeout),
            (&d.lease, &mut delivery.lease),
            (&d.shutdown_grace, &mut delivery.shutdown_grace),
        ] {
            if let Some(v) = field {
                match duration::interval(v.get()) {
                    Ok(i) => *slot = i,
                    Err(e) => sink.error(v.pos(), e),
                }
            }
        }
        if let Some(c) = &d.concurrency {
            if *c.get() == 0 {
                sink.error(c.pos(), "`concurrency` must be at least 1");
            }
            delivery.concurrency = (*c.get()).max(1) as usize;
        }
        if delivery.first_retry > delivery.max_retry
            && let Some(v) = &d.first_retry
        {
            sink.error(
                v.pos(),
                "`first_retry` is longer than `max_retry`: retries would never grow",
            );
        }
    }
    let mut log = Log::default();
    if let Some(l) = &spec.log {
        if let Some(f) = &l.format {
            match f.get().parse() {
                Ok(v) => log.format = v,
                Err(e) => sink.error(f.pos(), e),
            }
        }
        log.level = l.level.as_ref().map(|v| v.get().clone());
    }

    // Templates before playbooks: actions are checked against them.
    // A directory named by an unset `${VAR}` is reported once, as the
    // variable, not again as a missing directory.
    let errors = |sink: &Sink<'_>| sink.diags.iter().filter(|d| d.is_error()).count();
    let before = errors(&sink);
    let templates_spec = spec
        .templates
        .with_value(interp(&spec.templates, &mut sink));
    let templates_unset = errors(&sink) > before;
    let before = errors(&sink);
    let playbooks_spec = spec
        .playbooks
        .with_value(interp(&spec.playbooks, &mut sink));
    let playbooks_unset = errors(&sink) > before;
    let templates_dir = resolve(&base, &templates_spec);
    let playbooks_dir = resolve(&base, &playbooks_spec);
    let templates = if templates_unset {
        Templates::empty()
    } else if templates_dir.is_dir() {
        let (t, d) = Templates::load(&templates_dir);
        sink.diags.extend(d);
        t
    } else {
        sink.error(
            templates_spec.pos(),
            format!(
                "templates directory `{}` does not exist",
                templates_dir.display()
            ),
        );
        Templates::empty()
    };

    let mut playbooks = Vec::new();
    if playbooks_unset {
        // Reported above.
    } else if playbooks_dir.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&playbooks_dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
        files.sort();
        if files.is_empty() {
            sink.warn(
                playbooks_spec.pos(),
                format!(
                    "no playbook files (*.yaml) in `{}`",
                    playbooks_dir.display()
                ),
            );
        }
        let known = Known {
            templates: &templates,
            webhooks: &webhooks,
            connectors: &connectors,
        };
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    sink.diags.push(Diagnostic::error(
                        &file,
                        Pos::START,
                        format!("cannot read playbook: {e}"),
                    ));
                    continue;
                }
            };
            match parse::yaml::<PlaybookSpec>(&file, &text) {
                Ok(spec) => {
                    let mut s = Sink {
                        file: &file,
                        diags: sink.diags,
                    };
                    if let Some(p) = build_playbook(&file, spec, &known, &mut s) {
                        playbooks.push((file.clone(), p));
                    }
                }
                Err(d) => sink.diags.push(d),
            }
        }
    } else {
        sink.error(
            playbooks_spec.pos(),
            format!(
                "playbooks directory `{}` does not exist",
                playbooks_dir.display()
            ),
        );
    }

    // Across playbooks: unique ids, distinct priorities.
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (file, p) in &playbooks {
        if let Some(first) = seen.get(&p.id) {
            diags.push(Diagnostic::error(
                file,
                Pos::START,
                format!(
                    "duplicate playbook id `{}` (also in {})",
                    p.id,
                    first.display()
                ),
            ));
        } else {
            seen.insert(p.id.clone(), file.clone());
        }
    }
    let mut playbooks: Vec<Playbook> = playbooks.into_iter().map(|(_, p)| p).collect();
    playbooks.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    for pair in playbooks.windows(2) {
        if pair[0].priority == pair[1].priority {
            diags.push(Diagnostic::warning(
                &pair[1].file,
                Pos::START,
                format!(
                    "playbooks `{}` and `{}` share priority {}; `{}` is tried first (by id). Give each a distinct `segment.priority`",
                    pair[0].id, pair[1].id, pair[0].priority, pair[0].id
                ),
            ));
        }
    }

    diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    Ok((
        Config {
            path: path.to_path_buf(),
            timezone,
            playbooks: playbooks.into_iter().map(Arc::new).collect(),
            templates,
            store,
            http,
            sources,
            email,
            webhooks,
            connectors,
            inbound,
            cap,
            delivery,
            log,
            retention,
        },
        diags,
    ))
}

/// What actions may refer to.
struct Known<'a> {
    templates: &'a Templates,
    webhooks: &'a BTreeMap<String, Webhook>,
    connectors: &'a BTreeMap<String, Connector>,
}

fn build_playbook(
    file: &Path,
    spec: PlaybookSpec,
    known: &Known<'_>,
    s: &mut Sink<'_>,
) -> Option<Playbook> {
    let errors_before = s.diags.iter().filter(|d| d.is_error()).count();
    let stem = file
        .file_stem()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let id = match &spec.id {
        Some(id) => {
            check_id(id, "playbook", s);
            id.get().clone()
        }
        None => stem,
    };
    let (segment, priority) = match &spec.segment {
        Some(seg) => (
            cond(&seg.when, SEGMENT_VARS, s),
            seg.priority.as_ref().map(|p| *p.get()).unwrap_or(100),
        ),
        None => (None, 100),
    };
    let timezone = spec.timezone.as_ref().and_then(|tz| timezone(tz, s));
    let send_window = spec.send_window.as_ref().and_then(|w| {
        let days: Option<Vec<String>> = w
            .days
            .as_ref()
            .map(|d| d.get().iter().map(|x| x.get().clone()).collect());
        for d in w.days.iter().flat_map(|d| d.get().iter()) {
            if let Err(e) = SendWindow::parse(Some(std::slice::from_ref(d.get())), None) {
                s.error(d.pos(), e);
            }
        }
        let hours = w.hours.as_ref().map(|h| h.get().as_str());
        match SendWindow::parse(days.as_deref(), hours) {
            Ok(win) => Some(win),
            Err(e) => {
                // Bad day names were reported one by one above.
                if e.contains("hours") {
                    s.error(w.hours.as_ref().map(Sp::pos).unwrap_or(Pos::START), e);
                } else if e.contains("no day") {
                    let at = w.days.as_ref().map(Sp::pos).unwrap_or(Pos::START);
                    s.error(at, format!("{e}: list the days emails may go out, such as [mon, tue, wed, thu, fri]"));
                }
                None
            }
        }
    });

    let mut ids: BTreeMap<String, Pos> = BTreeMap::new();
    let mut claim = |id: &Sp<String>, what: &str, s: &mut Sink<'_>| {
        check_id(id, what, s);
        if let Some(first) = ids.get(id.get()) {
            s.error(
                id.pos(),
                format!(
                    "duplicate id `{}`: already used at line {} (moment and milestone ids share one namespace)",
                    id.get(),
                    first.line
                ),
            );
        } else {
            ids.insert(id.get().clone(), id.pos());
        }
    };

    let onboarding = spec.onboarding.as_ref().map(|o| {
        let ends_after = o.ends_after.as_ref().and_then(|d| duration_of(d, s));
        let milestones = o
            .milestones
            .iter()
            .map(|m| {
                claim(&m.id, "milestone", s);
                if m.reached_on.is_none() && m.reached_when.is_none() {
                    s.error(
                        m.id.pos(),
                        format!(
                            "milestone `{}` needs `reached_on` or `reached_when`",
                            m.id.get()
                        ),
                    );
                }
                let due = m.due.as_ref().and_then(|d| duration_of(d, s));
                if m.due.is_none() && !m.on_late.is_empty() {
                    s.error(
                        m.id.pos(),
                        format!(
                            "milestone `{}` has `on_late` actions but no `due`",
                            m.id.get()
                        ),
                    );
                }
                Milestone {
                    id: m.id.get().clone(),
                    owner: m.owner.clone(),
                    objective: m.objective.clone(),
                    reached_on: m.reached_on.as_ref().map(|r| event_match(r, s)),
                    reached_when: m
                        .reached_when
                        .as_ref()
                        .and_then(|c| cond(c, SEGMENT_VARS, s)),
                    due,
                    on_late: actions(&m.on_late, false, true, known, s),
                }
            })
            .collect();
        if o.start.get().trim().is_empty() {
            s.error(
                o.start.pos(),
                "`start` must name an account field, such as `signed_at`",
            );
        }
        Onboarding {
            start_field: o.start.get().trim().to_string(),
            ends_after,
            milestones,
        }
    });

    let mut moments = Vec::new();
    for m in &spec.moments {
        claim(&m.id, "moment", s);
        if let Some(moment) = moment(m, known, s) {
            moments.push(moment);
        }
    }
    let errors_after = s.diags.iter().filter(|d| d.is_error()).count();
    (errors_after == errors_before).then(|| Playbook {
        name: spec.name.clone().unwrap_or_else(|| id.clone()),
        id,
        file: file.to_path_buf(),
        priority,
        segment,
        timezone,
        send_window,
        onboarding,
        moments,
    })
}

fn moment(m: &MomentSpec, known: &Known<'_>, s: &mut Sink<'_>) -> Option<Moment> {
    let phase = match m.phase.as_ref().map(|p| p.get().as_str()) {
        None | Some("any") => PhaseFilter::Any,
        Some("onboarding") => PhaseFilter::Onboarding,
        Some("ongoing") => PhaseFilter::Ongoing,
        Some(other) => {
            let p = m.phase.as_ref().expect("matched Some");
            s.error(
                p.pos(),
                format!(
                    "unknown phase `{other}`, {}",
                    suggestion(other, &["onboarding", "ongoing", "any"])
                ),
            );
            PhaseFilter::Any
        }
    };
    let cooldown = m.cooldown.as_ref().and_then(|c| duration_of(c, s));
    let trigger = match (&m.schedule, &m.on) {
        (Some(_), Some(_)) => {
            s.error(
                m.id.pos(),
                format!(
                    "moment `{}` has both `schedule` and `on`; give it one trigger",
                    m.id.get()
                ),
            );
            None
        }
        (None, None) => {
            s.error(
                m.id.pos(),
                format!(
                    "moment `{}` has no trigger: add `schedule` or `on`",
                    m.id.get()
                ),
            );
            None
        }
        (Some(cron), None) => match Schedule::parse(cron.get()) {
            Ok(sch) => {
                if sch.never_fires() {
                    s.warn(
                        cron.pos(),
                        format!(
                            "cron expression `{}` never fires: no date matches it",
                            sch.source()
                        ),
                    );
                }
                Some(Trigger::Schedule(sch))
            }
            Err(e) => {
                s.error(cron.pos(), e);
                None
            }
        },
        (None, Some(on)) => trigger(&m.id, on, s),
    };
    if m.actions.is_empty() {
        s.warn(
            m.id.pos(),
            format!("moment `{}` has no actions", m.id.get()),
        );
    }
    let has_event = trigger.as_ref().is_some_and(Trigger::has_event);
    let actions = actions(&m.actions, has_event, false, known, s);
    Some(Moment {
        id: m.id.get().clone(),
        owner: m.owner.clone(),
        objective: m.objective.clone(),
        phase,
        trigger: trigger?,
        cooldown,
        bypass_limits: m.bypass_limits,
        actions,
    })
}

fn trigger(id: &Sp<String>, on: &TriggerSpec, s: &mut Sink<'_>) -> Option<Trigger> {
    let kinds = [
        on.event.as_ref().map(|_| "event"),
        on.absent.as_ref().map(|_| "absent"),
        on.metric.as_ref().map(|_| "metric"),
        on.date.as_ref().map(|_| "date"),
    ];
    let named: Vec<&str> = kinds.iter().flatten().copied().collect();
    if named.len() != 1 {
        s.error(
            id.pos(),
            format!(
                "moment `{}`: `on` needs exactly one of `event`, `absent`, `metric`, `date` (found {})",
                id.get(),
                if named.is_empty() { "none".to_string() } else { named.join(", ") }
            ),
        );
        return None;
    }
    // Keys that belong to another trigger kind are mistakes, not extras.
    let stray = |key: &str, present: bool, allowed: &[&str], s: &mut Sink<'_>| {
        if present && !allowed.contains(&key) {
            s.error(
                id.pos(),
                format!(
                    "moment `{}`: `{key}` does not apply to `on.{}`",
                    id.get(),
                    named[0]
                ),
            );
        }
    };
    let allowed: &[&str] = match named[0] {
        "event" => &["when"],
        "absent" => &["for"],
        "metric" => &["drop", "over"],
        _ => &["offset", "at"],
    };
    stray("when", on.when.is_some(), allowed, s);
    stray("for", on.for_.is_some(), allowed, s);
    stray("drop", on.drop.is_some(), allowed, s);
    stray("over", on.over.is_some(), allowed, s);
    stray("offset", on.offset.is_some(), allowed, s);
    stray("at", on.at.is_some(), allowed, s);
    let need = |v: &Option<Sp<Scalar>>, key: &str, s: &mut Sink<'_>| -> Option<Duration> {
        match v {
            Some(d) => duration_of(d, s),
            None => {
                s.error(
                    id.pos(),
                    format!("moment `{}`: `on.{}` needs `{key}`", id.get(), named[0]),
                );
                None
            }
        }
    };
    match named[0] {
        "event" => Some(Trigger::Event(event_match(
            &EventMatchSpec {
                event: on.event.clone().expect("event"),
                when: on.when.clone(),
            },
            s,
        ))),
        "absent" => {
            let ev = on.absent.as_ref().expect("absent");
            check_event_type(ev, s);
            let silence = need(&on.for_, "for", s)?;
            if silence.minutes() <= 0 {
                s.error(
                    on.for_.as_ref().map(Sp::pos).unwrap_or(id.pos()),
                    "`for` must be longer than zero",
                );
            }
            Some(Trigger::Absent {
                event: ev.get().clone(),
                silence,
            })
        }
        "metric" => {
            let metric = on.metric.as_ref().expect("metric");
            let over = need(&on.over, "over", s);
            let drop = match &on.drop {
                Some(d) => parse_drop(d.get()).map_err(|e| s.error(d.pos(), e)).ok(),
                None => {
                    s.error(
                        id.pos(),
                        format!("moment `{}`: `on.metric` needs `drop`", id.get()),
                    );
                    None
                }
            };
            Some(Trigger::Metric {
                metric: metric.get().clone(),
                drop: drop?,
                over: over?,
            })
        }
        _ => {
            let field = on.date.as_ref().expect("date");
            let offset = match &on.offset {
                Some(o) => match duration::parse_signed(o.get()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        s.error(o.pos(), e.to_string());
                        None
                    }
                },
                None => Some(Duration::ZERO),
            };
            let (hour, minute) = match &on.at {
                Some(a) => match crate::schedule::parse_hhmm(a.get()) {
                    Some(hm) => hm,
                    None => {
                        s.error(
                            a.pos(),
                            format!(
                                "invalid time `{}`: expected HH:MM, such as \"09:00\"",
                                a.get().0
                            ),
                        );
                        (9, 0)
                    }
                },
                None => (9, 0),
            };
            Some(Trigger::Date {
                field: field.get().clone(),
                offset: offset?,
                hour,
                minute,
            })
        }
    }
}

fn parse_drop(text: &str) -> Result<Drop, String> {
    let t = text.trim();
    let bad =
        || format!("invalid drop `{t}`: expected a percentage like `30%` or an amount like `5`");
    if let Some(p) = t.strip_suffix('%') {
        let f: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(f > 0.0 && f <= 100.0) {
            return Err(format!(
                "invalid drop `{t}`: a percentage must be above 0% and at most 100%"
            ));
        }
        Ok(Drop::Relative(f / 100.0))
    } else {
        let a: f64 = t.parse().map_err(|_| bad())?;
        if a <= 0.0 || !a.is_finite() {
            return Err(format!("invalid drop `{t}`: must be above zero"));
        }
        Ok(Drop::Absolute(a))
    }
}

fn event_match(spec: &EventMatchSpec, s: &mut Sink<'_>) -> EventMatch {
    check_event_type(&spec.event, s);
    EventMatch {
        event: spec.event.get().clone(),
        when: spec.when.as_ref().and_then(|w| cond(w, EVENT_VARS, s)),
    }
}

fn check_event_type(ev: &Sp<String>, s: &mut Sink<'_>) {
    let t = ev.get();
    if t.trim().is_empty() || t.chars().any(char::is_whitespace) {
        s.error(
            ev.pos(),
            format!("invalid event type `{t}`: expected a name such as `ticket.created`"),
        );
    }
    // A near miss inside the engine's own namespaces is almost surely a
    // typo (`segment.enterd`); elsewhere a similar name is just a name.
    let engine_namespace = ["segment.", "milestone.", "onboarding."]
        .iter()
        .any(|ns| t.starts_with(ns));
    if engine_namespace && !ENGINE_EVENTS.contains(&t.as_str()) {
        s.warn(
            ev.pos(),
            format!(
                "`{t}` is not an engine event: {}",
                suggestion(t, ENGINE_EVENTS)
            ),
        );
    }
}

fn actions(
    specs: &[ActionSpec],
    has_event: bool,
    is_late: bool,
    known: &Known<'_>,
    s: &mut Sink<'_>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for a in specs {
        match a {
            ActionSpec::Email(e) => {
                let to = match Recipients::parse(e.to.get()) {
                    Ok(r) => Some(r),
                    Err(msg) => {
                        s.error(e.to.pos(), msg);
                        None
                    }
                };
                template_ref(&e.template, Kind::Email, has_event, is_late, known, s);
                if let Some(to) = to {
                    out.push(Action::Email {
                        to,
                        template: e.template.get().clone(),
                    });
                }
            }
            ActionSpec::Webhook(w) => {
                if !known.webhooks.contains_key(w.endpoint.get()) {
                    let names: Vec<&str> = known.webhooks.keys().map(String::as_str).collect();
                    s.error(
                        w.endpoint.pos(),
                        format!("unknown webhook endpoint `{}`: {} (endpoints are declared under `webhooks:` in touchpilot.yaml)", w.endpoint.get(), suggestion(w.endpoint.get(), &names)),
                    );
                }
                template_ref(&w.template, Kind::Json, has_event, is_late, known, s);
                out.push(Action::Webhook {
                    endpoint: w.endpoint.get().clone(),
                    template: w.template.get().clone(),
                });
            }
            ActionSpec::Connector(c) => {
                if !known.connectors.contains_key(c.name.get()) {
                    let names: Vec<&str> = known.connectors.keys().map(String::as_str).collect();
                    s.error(
                        c.name.pos(),
                        format!("unknown connector `{}`: {} (connectors are declared under `connectors:` in touchpilot.yaml)", c.name.get(), suggestion(c.name.get(), &names)),
                    );
                }
                if c.action.get().trim().is_empty() {
                    s.error(
                        c.action.pos(),
                        "`action` must name a connector action, such as `create_task`",
                    );
                }
                if let Some(t) = &c.template {
                    template_ref(t, Kind::Json, has_event, is_late, known, s);
                }
                out.push(Action::Connector {
                    name: c.name.get().clone(),
                    action: c.action.get().clone(),
                    template: c.template.as_ref().map(|t| t.get().clone()),
                });
            }
        }
    }
    out
}

/// Checks that a template exists and that every variable it uses exists
/// for the moments that use it.
fn template_ref(
    name: &Sp<String>,
    kind: Kind,
    has_event: bool,
    is_late: bool,
    known: &Known<'_>,
    s: &mut Sink<'_>,
) {
    let n = name.get();
    if !known.templates.has(n, kind) {
        let file = match kind {
            Kind::Email => format!("{n}.hbs"),
            Kind::Json => format!("{n}.json.hbs"),
        };
        s.error(
            name.pos(),
            format!("template `{n}` not found: expected the file `templates/{file}`"),
        );
        return;
    }
    let Some((_, vars)) = known.templates.vars(n, kind) else {
        return;
    };
    let mut allowed = vec!["account", "moment", "playbook", "now"];
    if kind == Kind::Email {
        allowed.extend(["contact", "unsubscribe_url"]);
    }
    if has_event {
        allowed.push("event");
    }
    for root in &vars.roots {
        if allowed.contains(&root.as_str()) {
            continue;
        }
        let msg = if root == "event" {
            format!(
                "template `{n}` uses `event`, but {} has no event (only moments triggered by `on.event` or `on.metric` do)",
                if is_late {
                    "a milestone's on_late"
                } else {
                    "this moment"
                }
            )
        } else if matches!(root.as_str(), "contact" | "unsubscribe_url") {
            format!("template `{n}` uses `{root}`, which only email templates have")
        } else {
            format!(
                "template `{n}` uses unknown variable `{root}`: {}",
                suggestion(root, &allowed)
            )
        };
        s.error(name.pos(), msg);
    }
}

fn cond(src: &Sp<String>, vars: &[&str], s: &mut Sink<'_>) -> Option<Cond> {
    match Cond::compile(src.get(), vars) {
        Ok(c) => Some(c),
        Err(e) => {
            s.error(src.pos(), e);
            None
        }
    }
}

fn duration_of(d: &Sp<Scalar>, s: &mut Sink<'_>) -> Option<Duration> {
    match d.get().parse::<Duration>() {
        Ok(v) => Some(v),
        Err(e) => {
            s.error(d.pos(), e.to_string());
            None
        }
    }
}

fn timezone(tz: &Sp<String>, s: &mut Sink<'_>) -> Option<TimeZone> {
    match TimeZone::get(tz.get()) {
        Ok(z) => Some(z),
        Err(_) => {
            s.error(tz.pos(), format!("unknown timezone `{}`: expected an IANA name such as `America/New_York` or `UTC`", tz.get()));
            None
        }
    }
}

fn check_id(id: &Sp<String>, what: &str, s: &mut Sink<'_>) {
    let v = id.get();
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        s.error(
            id.pos(),
            format!("invalid {what} id `{v}`: use letters, digits, `-`, `_` and `.`"),
        );
    }
}

/// Where a scalar's text begins: after the opening quote of a quoted one.
fn content_start(text: &str, at: Pos) -> Pos {
    let quoted = text
        .lines()
        .nth(at.line.saturating_sub(1) as usize)
        .and_then(|l| l.chars().nth(at.column.saturating_sub(1) as usize))
        .is_some_and(|c| c == '"' || c == '\'');
    if quoted { at.shifted(1) } else { at }
}

/// Replaces `${NAME}` with the environment's value; a missing one is an
/// error located at the variable itself.
fn interpolate(
    text: &str,
    at: Pos,
    env: &dyn Fn(&str) -> Option<String>,
    s: &mut Sink<'_>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            s.error(
                at.shifted(consumed + i),
                format!("unterminated `${{` in `{text}`"),
            );
            out.push_str(&rest[i..]);
            return out;
        };
        let name = &after[..end];
        match env(name) {
            Some(v) => out.push_str(&v),
            None => s.error(
                at.shifted(consumed + i),
                format!("environment variable `{name}` is not set (referenced as `${{{name}}}`)"),
            ),
        }
        consumed += i + 3 + end;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn interpolate_json(
    v: &serde_json::Value,
    at: Pos,
    env: &dyn Fn(&str) -> Option<String>,
    s: &mut Sink<'_>,
) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(t) => Value::String(interpolate(t, at, env, s)),
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| interpolate_json(x, at, env, s)).collect())
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), interpolate_json(x, at, env, s)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every event type a configuration listens for (for reports and sources).
pub fn event_types(config: &Config) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in &config.playbooks {
        for m in &p.moments {
            match &m.trigger {
                Trigger::Event(e) => {
                    out.insert(e.event.clone());
                }
                Trigger::Absent { event, .. } => {
                    out.insert(event.clone());
                }
                _ => {}
            }
        }
        for m in p.onboarding.iter().flat_map(|o| &o.milestones) {
            if let Some(r) = &m.reached_on {
                out.insert(r.event.clone());
            }
        }
    }
    out
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Config>();
    is::<Arc<Playbook>>();
}
