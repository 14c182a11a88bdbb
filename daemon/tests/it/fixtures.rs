//! Data-driven fixtures: each folder under `tests/fixtures/simulate` holds a
//! configuration, accounts, events, the dry-run arguments and the expected
//! output; each under `tests/fixtures/validate` a broken configuration and
//! the problems `validate` must report. Written from the contract alone.
//! `UPDATE_FIXTURES=1` rewrites `expected.jsonl` (review the diff!).

use std::path::Path;

use serde_json::Value;

use crate::support::cases;

fn arg(args: &str, name: &str) -> String {
    let mut it = args.split_whitespace();
    while let Some(a) = it.next() {
        if a == name {
            return it.next().unwrap_or_default().to_string();
        }
    }
    panic!("args lacks {name}: {args}")
}

/// Runs one simulate fixture; returns a description of the mismatch.
fn check_simulate(dir: &Path) -> Result<(), String> {
    let args = std::fs::read_to_string(dir.join("args")).map_err(|e| format!("args: {e}"))?;
    let events = dir.join("events.jsonl");
    let sim = touchpilot::commands::SimulateArgs {
        config: dir.join("touchpilot.yaml"),
        from: arg(&args, "--from")
            .parse()
            .map_err(|e| format!("--from: {e}"))?,
        to: arg(&args, "--to")
            .parse()
            .map_err(|e| format!("--to: {e}"))?,
        accounts: Some(dir.join("accounts.jsonl")),
        events: events.exists().then_some(events),
        jobs: 1,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = touchpilot::commands::simulate(&sim, &mut out, &mut err);
    let stderr = String::from_utf8_lossy(&err).to_string();
    if code != 0 {
        return Err(format!("exit {code}: {stderr}"));
    }
    let got = String::from_utf8(out).expect("utf-8 output");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(dir.join("expected.jsonl"), &got).expect("write expected");
        return Ok(());
    }
    let expected = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap_or_default();
    let parse = |s: &str| -> Vec<Value> {
        s.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    let (g, e) = (parse(&got), parse(&expected));
    if g == e {
        return Ok(());
    }
    let mut report = format!("stderr: {stderr}\n");
    for i in 0..g.len().max(e.len()) {
        let (gl, el) = (g.get(i), e.get(i));
        if gl != el {
            report += &format!(
                "  line {}:\n    expected {}\n    got      {}\n",
                i + 1,
                el.map(Value::to_string).unwrap_or("(nothing)".into()),
                gl.map(Value::to_string).unwrap_or("(nothing)".into())
            );
        }
    }
    Err(report)
}

#[test]
fn every_simulate_fixture_matches_its_expected_output() {
    let mut failures = Vec::new();
    let all = cases("simulate");
    assert!(all.len() > 40, "fixtures missing");
    for dir in &all {
        if let Err(e) = check_simulate(dir) {
            failures.push(format!(
                "{}:\n{e}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Runs one validate fixture: every expected problem is reported at its
/// place with its words, and the exit code says whether any was expected.
fn check_validate(dir: &Path) -> Result<(), String> {
    let expected = std::fs::read_to_string(dir.join("expected.txt"))
        .map_err(|e| format!("expected.txt: {e}"))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = touchpilot::commands::validate(&dir.join("touchpilot.yaml"), &mut out, &mut err);
    let printed = String::from_utf8_lossy(&out).to_string();
    let prefix = format!("{}/", dir.display());
    let lines: Vec<String> = printed
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_string())
        .collect();
    let wanted: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let want_code = if wanted.is_empty() { 0 } else { 1 };
    let mut problems = Vec::new();
    if code != want_code {
        problems.push(format!("exit {code}, expected {want_code}"));
    }
    for w in &wanted {
        // FILE:LINE:COLUMN: SUBSTRING, or FILE:-: SUBSTRING.
        let (file, rest) = w.split_once(':').expect("FILE:...");
        let (place, needle) = if let Some(r) = rest.strip_prefix("-:") {
            (None, r.trim())
        } else {
            let mut parts = rest.splitn(3, ':');
            let (l, c, n) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap_or(""),
            );
            (Some(format!("{file}:{l}:{c}:")), n.trim())
        };
        let found = lines.iter().any(|line| {
            let at = match &place {
                Some(p) => line.starts_with(p.as_str()),
                None => line.starts_with(&format!("{file}:")),
            };
            at && line.to_lowercase().contains(&needle.to_lowercase())
        });
        if !found {
            problems.push(format!("missing `{w}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n  printed:\n    {}",
            problems.join("\n  "),
            lines.join("\n    ")
        ))
    }
}

#[test]
fn every_validate_fixture_reports_its_problems_where_they_are() {
    let mut failures = Vec::new();
    let all = cases("validate");
    assert!(all.len() > 10, "fixtures missing");
    for dir in &all {
        if let Err(e) = check_validate(dir) {
            failures.push(format!(
                "{}:\n  {e}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
