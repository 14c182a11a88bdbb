//! Segment evaluation: 1,000,000 accounts against 4 playbooks, on one core.
//! Target: under 5 s. Prints the median of several runs, and beside it the
//! cost of the account-to-CEL conversion alone, measured in the same run.
//!
//! `cargo bench --bench segment` (`-- --accounts N --runs R` to change sizes).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use serde_json::json;
use touchpilot::engine::{AccountState, Engine};
use touchpilot::model::account::Account;

const PLAYBOOKS: [(&str, &str); 4] = [
    (
        "enterprise",
        "account.mrr >= 20000 && account.attributes.plan == \"enterprise\"",
    ),
    (
        "high-touch",
        "account.mrr >= 5000 || account.attributes.growth == \"high\"",
    ),
    (
        "low-touch",
        "account.mrr >= 1000 && account.attributes.risk != \"high\"",
    ),
    ("tech-touch", "true"),
];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = arg("--accounts", 1_000_000);
    let runs = arg("--runs", 3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("touchpilot.yaml"),
        "playbooks: playbooks\ntemplates: templates\n",
    )
    .unwrap();
    for (i, (id, when)) in PLAYBOOKS.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("playbooks/{id}.yaml")),
            format!("segment:\n  when: '{when}'\n  priority: {}\n", (i + 1) * 10),
        )
        .unwrap();
    }
    let (config, _) =
        touchpilot::config::load(&dir.path().join("touchpilot.yaml"), &|_| None).expect("valid");
    let engine = Engine::new(Arc::new(config), Arc::new(|_: &str| String::new()));
    let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();

    // A long tail: a Pareto-like MRR from a fixed-seed generator.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let plans = ["starter", "growth", "enterprise"];
    let levels = ["low", "medium", "high"];
    let states: Vec<AccountState> = (0..n)
        .map(|i| {
            let mrr = (80.0 / (1.0 - rand()).powf(1.0 / 1.16)).min(200_000.0) as i64;
            let a = json!({
                "id": format!("acc-{i:07}"), "name": format!("Company {i}"), "mrr": mrr,
                "timezone": "America/New_York", "signed_at": "2025-01-05T15:00:00Z",
                "owner": {"name": "Dana Lee", "email": "dana@vendor.example"},
                "attributes": {"plan": plans[(rand() * 3.0) as usize], "growth": levels[(rand() * 3.0) as usize], "risk": levels[(rand() * 3.0) as usize], "industry": "fintech"},
                "contacts": [{"email": format!("c{i}@example.com"), "name": "Ann", "role": "admin"}],
            });
            AccountState::new(Account::from_json(a).unwrap(), now)
        })
        .collect();

    let mut convert = Vec::new();
    let mut evaluate = Vec::new();
    let mut counts = [0usize; 4];
    for _ in 0..runs {
        let t = Instant::now();
        for st in &states {
            black_box(engine.account_json(st, now));
        }
        convert.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut out = Vec::new();
        counts = [0; 4];
        for st in &states {
            let pb = engine
                .segment_of(st, now, &mut out)
                .expect("tech-touch catches all");
            counts[PLAYBOOKS.iter().position(|(id, _)| *id == pb.id).unwrap()] += 1;
        }
        assert!(
            out.is_empty(),
            "no evaluation errors expected: {:?}",
            out.first()
        );
        evaluate.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (e, c) = (median(&mut evaluate), median(&mut convert));
    println!(
        "segment evaluation: {n} accounts x {} playbooks, {runs} runs",
        PLAYBOOKS.len()
    );
    println!(
        "  segments: {:?}",
        PLAYBOOKS
            .iter()
            .map(|p| p.0)
            .zip(counts)
            .collect::<Vec<_>>()
    );
    println!(
        "  evaluate (median): {e:.3} s  = {:.2} us/account",
        e * 1e6 / n as f64
    );
    println!(
        "  account_json alone (median, for scale): {c:.3} s = {:.2} us/account",
        c * 1e6 / n as f64
    );
    println!(
        "  target: < 5 s -> {}",
        if e < 5.0 { "met" } else { "MISSED" }
    );
}
