//! What the outbox and delivery benchmarks share: their options, the
//! median they report, and the PostgreSQL server they run on.

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `TOUCHPILOT_BENCH_POSTGRES`, or the machine's PostgreSQL.
pub fn admin() -> String {
    std::env::var("TOUCHPILOT_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Writes `outbox` as engine steps of `state`'s account, 1,000 rows a
/// step, after the version the store holds (if any).
pub async fn commit_rows<S: touchpilot::store::Store>(
    s: &S,
    state: &touchpilot::engine::AccountState,
    outbox: impl Iterator<Item = touchpilot::store::NewOutbox>,
) {
    let mut version = s.load_account(state.id()).await.unwrap().map(|l| l.version);
    let mut outbox = outbox.peekable();
    while outbox.peek().is_some() {
        s.commit_step(&touchpilot::store::Step {
            state: state.clone(),
            expected_version: version,
            next_due: None,
            applied: vec![],
            outbox: outbox.by_ref().take(1000).collect(),
            trace: vec![],
        })
        .await
        .unwrap();
        version = Some(version.unwrap_or(0) + 1);
    }
}
