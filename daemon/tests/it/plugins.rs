//! Connector plugins through the daemon's front doors: `touchpilot
//! validate` loads each library, checks its ABI and has the connector
//! check its configuration, reporting each problem at its line.

use std::path::{Path, PathBuf};

/// A plugin library built next to this test binary (`scripts/test`
/// builds the plugin crates before the tests).
pub fn library(stem: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (./scripts/test does)",
        path.display()
    );
    path
}

#[test]
fn validate_loads_every_connector_and_reports_each_problem_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let yaml = format!(
        "playbooks: playbooks\ntemplates: templates\nconnectors:\n  good: {{ library: {good}, config: {{ mode: ok }} }}\n  old: {{ library: {old} }}\n  picky: {{ library: {good}, config: {{ mode: sideways }} }}\n  none: {{ library: {none} }}\n  later: {{ library: not-built-yet.so }}\n",
        good = library("touchpilot_test_misbehave").display(),
        old = library("touchpilot_test_bad_abi").display(),
        none = library("touchpilot_test_no_symbol").display(),
    );
    let config = dir.path().join("touchpilot.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = touchpilot::commands::validate(&config, &mut out, &mut err);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 1, "{out}");
    let at = |line: u32| format!("{}:{line}:", config.display());
    let lines: Vec<&str> = out.lines().collect();
    let has = |line: u32, needle: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(&at(line)) && l.contains(needle))
    };
    assert!(
        has(5, "connector `old`: ") && has(5, "built for plugin ABI 99.0"),
        "{out}"
    );
    assert!(
        has(
            6,
            "connector `picky` (open): config: unknown mode `sideways`"
        ),
        "{out}"
    );
    assert!(
        has(7, "connector `none`: ") && has(7, "does not export the symbol"),
        "{out}"
    );
    assert!(
        has(8, "warning") && has(8, "connector `later`: library"),
        "{out}"
    );
    assert!(!out.contains("`good`"), "{out}");
    let about_connectors = lines.iter().filter(|l| l.contains("connector `")).count();
    assert_eq!(about_connectors, 4, "{out}");
}
