//! The binary as a process: exit codes, where output goes, and bad input
//! reported by file and line without losing what was valid.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{bin, repo};

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("TOUCHPILOT_CONFIG")
        .output()
        .expect("run touchpilot")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A small valid setup in a temporary folder, which tests then break.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("playbooks")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(
        p.join("touchpilot.yaml"),
        "playbooks: playbooks\ntemplates: templates\nsources:\n  file: { accounts: accounts.jsonl, events: events.jsonl }\nwebhooks:\n  alerts: { url: \"https://hooks.example.com/x\" }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("playbooks/main.yaml"),
        "segment:\n  when: account.mrr >= 0\nmoments:\n  - id: urgent\n    on: { event: ticket.created, when: 'event.data.priority == \"urgent\"' }\n    actions:\n      - email: { to: contacts, template: ack }\n      - webhook: { endpoint: alerts, template: alert }\n",
    )
    .unwrap();
    std::fs::write(p.join("templates/ack.hbs"), "---\nsubject: \"We are on it, {{account.name}}\"\n---\nHi {{contact.name}},\nticket {{event.data.subject}}\n{{unsubscribe_url}}\n").unwrap();
    std::fs::write(
        p.join("templates/alert.json.hbs"),
        "{\"text\": \"{{account.name}}: {{event.data.subject}}\"}",
    )
    .unwrap();
    std::fs::write(
        p.join("accounts.jsonl"),
        "{\"id\": \"a1\", \"name\": \"Acme\", \"mrr\": 10, \"contacts\": [{\"email\": \"ann@acme.example\", \"name\": \"Ann\"}]}\n{\"id\": \"a2\", \"name\": \"Bolt\", \"mrr\": 20, \"contacts\": [{\"email\": \"bo@bolt.example\"}]}\n",
    )
    .unwrap();
    std::fs::write(
        p.join("events.jsonl"),
        "{\"id\": \"e1\", \"account\": \"a1\", \"type\": \"ticket.created\", \"at\": \"2026-01-05T10:00:00Z\", \"data\": {\"priority\": \"urgent\", \"subject\": \"Down\"}}\n{\"id\": \"e2\", \"account\": \"ghost\", \"type\": \"ticket.created\", \"at\": \"2026-01-05T11:00:00Z\", \"data\": {\"priority\": \"urgent\", \"subject\": \"?\"}}\n{\"id\": \"e3\", \"account\": \"a2\", \"type\": \"ticket.created\", \"at\": \"2026-01-06T10:00:00Z\", \"data\": {\"priority\": \"urgent\", \"subject\": \"Slow\"}}\n",
    )
    .unwrap();
    dir
}

const RANGE: [&str; 4] = [
    "--from",
    "2026-01-01T00:00:00Z",
    "--to",
    "2026-02-01T00:00:00Z",
];

#[test]
fn the_shipped_example_validates_and_simulates() {
    let root = repo();
    let v = run(&["validate", "--config", "touchpilot.yaml"], &root);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    let s = run(
        &[
            "simulate",
            "--config",
            "touchpilot.yaml",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-07-01T00:00:00Z",
        ],
        &root,
    );
    assert_eq!(s.status.code(), Some(0), "{}", text(&s.stderr));
    let lines: Vec<serde_json::Value> = text(&s.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() > 100,
        "the sample data should keep the example busy: {}",
        lines.len()
    );
    // Every kind of trigger the examples use shows up, and nothing fails to render.
    for trigger in ["schedule", "event", "late", "metric", "date"] {
        assert!(
            lines.iter().any(|l| l["trigger"] == trigger),
            "no `{trigger}` action in the example's dry run"
        );
    }
    let failed: Vec<_> = lines.iter().filter(|l| l["status"] == "failed").collect();
    assert!(
        failed.is_empty(),
        "templates failed to render: {:?}",
        &failed[..failed.len().min(3)]
    );
    assert!(lines.iter().any(|l| l["status"] == "suppressed"));
}

#[test]
fn simulate_reports_unknown_accounts_and_still_runs_the_rest() {
    let dir = setup();
    let o = run(
        &["simulate", RANGE[0], RANGE[1], RANGE[2], RANGE[3]],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0]["to"], "ann@acme.example");
    assert_eq!(lines[0]["status"], "planned");
    // Bolt's contact has no name: the template would render a blank, so it fails, named.
    let bolt = lines
        .iter()
        .find(|l| l["account"] == "a2" && l["kind"] == "email")
        .unwrap();
    assert_eq!(bolt["status"], "failed");
    assert!(
        bolt["error"]
            .as_str()
            .unwrap()
            .contains("missing variable `contact.name`"),
        "{bolt}"
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("1 event(s) for unknown accounts skipped (first: ghost)"),
        "{err}"
    );
}

#[test]
fn a_malformed_event_line_is_named_and_nothing_is_printed() {
    let dir = setup();
    let mut events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    events.push_str("{\"account\": \"a1\", \"at\": \"2026-01-07T00:00:00Z\"}\n{not json\n");
    std::fs::write(dir.path().join("events.jsonl"), events).unwrap();
    let o = run(
        &["simulate", RANGE[0], RANGE[1], RANGE[2], RANGE[3]],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "", "no partial dry run");
    let err = text(&o.stderr);
    assert!(
        err.contains("events.jsonl:4: missing field `type`"),
        "{err}"
    );
}

#[test]
fn a_bad_timestamp_is_named_with_its_line() {
    let dir = setup();
    std::fs::write(
        dir.path().join("events.jsonl"),
        "{\"account\": \"a1\", \"type\": \"x\", \"at\": \"2026-13-01\"}\n",
    )
    .unwrap();
    let o = run(
        &["simulate", RANGE[0], RANGE[1], RANGE[2], RANGE[3]],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr)
            .contains("events.jsonl:1: field `at`: `2026-13-01` is not an RFC 3339 timestamp"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn validate_prints_every_problem_as_file_line_column() {
    let dir = setup();
    std::fs::write(
        dir.path().join("playbooks/main.yaml"),
        "segment:\n  when: acount.mrr >= 0\nmoments:\n  - id: urgent\n    cooldown: 3x\n    on: { event: ticket.created }\n    actions:\n      - email: { to: contacts, template: nope }\n      - webhook: { endpoint: alrts, template: alert }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("playbooks/other.yaml"),
        "id: other\nmoments:\n  - id: m\n    shedule: \"0 9 * * *\"\n",
    )
    .unwrap();
    let o = run(&["validate"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    let expect = [
        "playbooks/main.yaml:2:9: unknown variable `acount`",
        "playbooks/main.yaml:5:15: invalid duration `3x`",
        "playbooks/main.yaml:8:42: template `nope` not found",
        "playbooks/main.yaml:9:30: unknown webhook endpoint `alrts`: did you mean `alerts`?",
        "playbooks/other.yaml:4:5: unknown key `shedule`, did you mean `schedule`?",
    ];
    for e in expect {
        assert!(
            out.lines().any(|l| l.contains(e)),
            "missing `{e}` in:\n{out}"
        );
    }
    assert!(
        text(&o.stderr).contains("5 error(s)"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn validate_names_a_missing_environment_variable() {
    let dir = setup();
    let cfg = dir.path().join("touchpilot.yaml");
    let mut c = std::fs::read_to_string(&cfg).unwrap();
    c = c.replace(
        "\"https://hooks.example.com/x\"",
        "\"https://hooks.example.com/x\", secret: \"${TP_TEST_UNSET_SECRET}\"",
    );
    std::fs::write(&cfg, c).unwrap();
    let o = run(&["validate"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains(
            "touchpilot.yaml:6:58: environment variable `TP_TEST_UNSET_SECRET` is not set"
        ),
        "{}",
        text(&o.stdout)
    );
    let ok = Command::new(bin())
        .arg("validate")
        .current_dir(dir.path())
        .env("TP_TEST_UNSET_SECRET", "s3cret")
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
}

#[test]
fn render_prints_the_email_or_names_the_missing_variable() {
    let dir = setup();
    let ev = r#"{"type": "ticket.created", "data": {"subject": "Down"}}"#;
    let o = run(
        &[
            "render",
            "--template",
            "ack",
            "--account",
            "a1",
            "--event",
            ev,
            "--now",
            "2026-01-01T00:00:00Z",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("To: ann@acme.example\nSubject: We are on it, Acme\n\nHi Ann,\nticket Down\nhttp://127.0.0.1:8080/unsubscribe/"), "{out}");
    let o = run(
        &["render", "--template", "ack", "--account", "a1"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("template `ack`: missing variable `event.data.subject`"),
        "{}",
        text(&o.stderr)
    );
    let o = run(
        &[
            "render",
            "--template",
            "alert",
            "--account",
            "a2",
            "--event",
            ev,
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("\"text\": \"Bolt: Down\""));
}

#[test]
fn the_shipped_schema_is_the_one_the_types_generate() {
    let o = run(&["schema"], &repo());
    assert_eq!(o.status.code(), Some(0));
    let shipped = std::fs::read_to_string(repo().join("schema/playbook.schema.json")).unwrap();
    assert_eq!(
        text(&o.stdout),
        shipped,
        "run `touchpilot schema > schema/playbook.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    assert!(v["properties"]["moments"].is_object());
    assert_eq!(
        v["additionalProperties"], false,
        "unknown keys must be flagged by editors too"
    );
}

#[test]
fn the_dry_run_prints_the_same_lines_whatever_the_number_of_workers() {
    let root = repo();
    let run_with = |jobs: &str| {
        let o = run(
            &[
                "simulate",
                "--jobs",
                jobs,
                "--from",
                "2026-01-01T00:00:00Z",
                "--to",
                "2026-07-01T00:00:00Z",
            ],
            &root,
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        (text(&o.stdout), text(&o.stderr))
    };
    let (one, one_err) = run_with("1");
    assert!(one.lines().count() > 1000);
    for jobs in ["2", "3", "7"] {
        let (many, many_err) = run_with(jobs);
        assert!(one == many, "--jobs {jobs} changed the output");
        assert_eq!(one_err, many_err, "--jobs {jobs} changed the report");
    }
}

#[test]
fn environment_variables_work_in_every_path_of_the_configuration() {
    let dir = setup();
    let cfg = dir.path().join("touchpilot.yaml");
    let c = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("playbooks: playbooks", "playbooks: \"${TP_TEST_PB}\"");
    std::fs::write(&cfg, c).unwrap();
    let ok = Command::new(bin())
        .arg("validate")
        .current_dir(dir.path())
        .env("TP_TEST_PB", "playbooks")
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let unset = run(&["validate"], dir.path());
    assert_eq!(unset.status.code(), Some(1));
    let out = text(&unset.stdout);
    assert!(
        out.contains("touchpilot.yaml:1:13: environment variable `TP_TEST_PB` is not set"),
        "{out}"
    );
    assert!(!out.contains("does not exist"), "no follow-on error: {out}");
}

#[test]
fn a_send_window_without_days_or_lists_without_values_are_handled() {
    let dir = setup();
    let pb = dir.path().join("playbooks/main.yaml");
    std::fs::write(
        &pb,
        "send_window:\n  days: []\n  hours: \"09:00-17:00\"\nmoments:\n",
    )
    .unwrap();
    let o = run(&["validate"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("playbooks/main.yaml:2:9: send window allows no day at all"),
        "{}",
        text(&o.stdout)
    );
    std::fs::write(&pb, "moments:\n").unwrap();
    let o = run(&["validate"], dir.path());
    assert_eq!(
        o.status.code(),
        Some(0),
        "an empty `moments:` is an empty list: {}",
        text(&o.stdout)
    );
}

/// Regression: the CLI held the stderr lock for its whole life, so the
/// daemon's first message from another thread (the signal handler's
/// "stopping") deadlocked and SIGTERM was ignored.
#[test]
fn run_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("playbooks")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(p.join("playbooks/main.yaml"), "moments: []\n").unwrap();
    std::fs::write(
        p.join("touchpilot.yaml"),
        format!("playbooks: playbooks\ntemplates: templates\nstore: \"sqlite:{}\"\nhttp: {{ listen: \"127.0.0.1:0\" }}\n", p.join("t.db").display()),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(p.join("touchpilot.yaml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("serving"));
    assert!(serving.is_some(), "the daemon did not start");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopping")) && rest.iter().any(|l| l.contains("stopped")),
        "{rest:?}"
    );
}
