//! The store's contract, as one suite every implementation runs (SQLite
//! here; PostgreSQL runs the same `suite`), plus SQLite's own settings.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::sqlite::SqliteStore;
use super::*;
use crate::model::account::Account;

const ALL: &[&str] = &["email", "webhook", "connector"];

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn event(id: Option<&str>, account: &str, at: &str) -> Event {
    Event {
        id: id.map(str::to_string),
        account: account.into(),
        kind: "ticket.created".into(),
        at: Some(t(at)),
        data: json!({"priority": "urgent"}),
    }
}

fn state(id: &str) -> AccountState {
    AccountState::new(
        Account::from_json(json!({"id": id, "name": "Acme"})).unwrap(),
        t("2026-01-01T00:00:00Z"),
    )
}

fn email(key: &str, to: &str, at: &str) -> NewOutbox {
    NewOutbox {
        key: key.into(),
        account: "a".into(),
        kind: "email".into(),
        payload: json!({"to": to, "subject": "Hi"}),
        at: t(at),
        failure: None,
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&format!(
        "sqlite:{}",
        dir.path().join("touchpilot.db").display()
    ))
    .await
    .unwrap()
}

/// The behaviour every store must have.
async fn suite<S: Store>(s: &S) {
    // Ingest: all-or-nothing, idempotent by id; events without id are new.
    let got = s
        .ingest(
            &[
                event(Some("e1"), "a", "2026-01-02T00:00:00Z"),
                event(Some("e2"), "a", "2026-01-01T00:00:00Z"),
                event(Some("e1"), "a", "2026-01-03T00:00:00Z"),
            ],
            t("2026-01-05T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        Ingested {
            accepted: 2,
            duplicates: 1
        }
    );
    let got = s
        .ingest(
            &[
                event(Some("e1"), "a", "2026-01-02T00:00:00Z"),
                event(None, "a", "2026-01-04T00:00:00Z"),
                event(None, "a", "2026-01-04T00:00:00Z"),
            ],
            t("2026-01-05T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        Ingested {
            accepted: 2,
            duplicates: 1
        }
    );
    let pending = s.pending_events(10).await.unwrap();
    let order: Vec<_> = pending.iter().map(|p| (p.event.id.clone(), p.at)).collect();
    assert_eq!(
        order[0].0.as_deref(),
        Some("e2"),
        "oldest `at` first: {order:?}"
    );
    assert_eq!(pending.len(), 4);
    assert_eq!(pending[0].event.data, json!({"priority": "urgent"}));

    // A step: state, due time, applied events and outbox rows together.
    assert!(s.load_account("a").await.unwrap().is_none());
    let mut step = Step {
        state: state("a"),
        expected_version: None,
        next_due: Some(t("2026-01-10T00:00:00Z")),
        applied: vec![pending[0].seq],
        outbox: vec![
            email("k1", "Ann@acme.example", "2026-01-05T00:00:00Z"),
            email("k1", "ann@acme.example", "2026-01-05T00:00:00Z"),
        ],
        trace: vec![],
    };
    s.commit_step(&step).await.unwrap();
    assert_eq!(
        s.pending_events(10).await.unwrap().len(),
        3,
        "the applied event is done"
    );
    let loaded = s.load_account("a").await.unwrap().unwrap();
    assert_eq!(loaded.state.id(), "a");
    assert_eq!(
        s.outbox_state("k1").await.unwrap(),
        Some(OutboxState::Pending),
        "one row per key"
    );

    // A stale version writes nothing at all.
    step.expected_version = Some(loaded.version);
    step.outbox = vec![email("k2", "bob@acme.example", "2026-01-05T00:00:00Z")];
    step.applied = vec![];
    s.commit_step(&step).await.unwrap();
    let stale = s
        .commit_step(&Step {
            outbox: vec![email("k3", "x@acme.example", "2026-01-05T00:00:00Z")],
            ..step.clone()
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(ref id)) if id == "a"),
        "{stale:?}"
    );
    assert_eq!(
        s.outbox_state("k3").await.unwrap(),
        None,
        "a conflicting step leaves no outbox row"
    );

    // Due accounts.
    assert_eq!(s.next_due().await.unwrap(), Some(t("2026-01-10T00:00:00Z")));
    assert!(
        s.due_accounts(t("2026-01-09T23:59:59Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.due_accounts(t("2026-01-10T00:00:00Z"), 10).await.unwrap(),
        ["a"]
    );

    // Claims: leased, fenced, rescued when the lease expires.
    let now = t("2026-01-05T00:00:00Z");
    let lease = SignedDuration::from_secs(30);
    let first = s.claim(ALL, now, lease, 10).await.unwrap();
    assert_eq!(first.len(), 2);
    let k1 = first.iter().find(|c| c.key == "k1").unwrap().clone();
    assert!(
        s.claim(ALL, now + SignedDuration::from_secs(10), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not claimed twice"
    );
    let rescued = s
        .claim(ALL, now + SignedDuration::from_secs(31), lease, 10)
        .await
        .unwrap();
    let k1b = rescued.iter().find(|c| c.key == "k1").unwrap().clone();
    assert!(k1b.token > k1.token && k1b.attempts == 2);
    assert!(
        !s.finish(&k1.id, k1.token, &Outcome::Sent, now)
            .await
            .unwrap(),
        "an expired claim changes nothing"
    );
    assert_eq!(
        s.outbox_state("k1").await.unwrap(),
        Some(OutboxState::Sending)
    );
    assert!(
        s.finish(
            &k1b.id,
            k1b.token,
            &Outcome::Sent,
            t("2026-01-05T00:01:00Z")
        )
        .await
        .unwrap()
    );
    assert!(
        !s.finish(&k1b.id, k1b.token, &Outcome::Sent, now)
            .await
            .unwrap(),
        "finishing twice changes nothing"
    );
    assert_eq!(s.outbox_state("k1").await.unwrap(), Some(OutboxState::Sent));
    assert_eq!(
        s.sends_since("ANN@acme.example", t("2026-01-01T00:00:00Z"))
            .await
            .unwrap(),
        1,
        "a sent email counts toward the cap"
    );
    assert_eq!(
        s.sends_since("ann@acme.example", t("2026-01-05T00:01:00Z"))
            .await
            .unwrap(),
        0
    );

    // Retry later, then dead-letter with the reason.
    let k2 = rescued.iter().find(|c| c.key == "k2").unwrap().clone();
    let later = t("2026-01-05T01:00:00Z");
    assert!(
        s.finish(
            &k2.id,
            k2.token,
            &Outcome::Retry {
                next_attempt: later,
                error: "smtp 451".into()
            },
            now
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.outbox_state("k2").await.unwrap(),
        Some(OutboxState::Pending)
    );
    assert!(
        s.claim(ALL, t("2026-01-05T00:59:59Z"), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before its next attempt"
    );
    let again = s.claim(ALL, later, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 3);
    assert!(
        s.finish(
            &again[0].id,
            again[0].token,
            &Outcome::Dead {
                error: "smtp 550 no such user".into()
            },
            later
        )
        .await
        .unwrap()
    );
    assert_eq!(s.outbox_state("k2").await.unwrap(), Some(OutboxState::Dead));
    assert_eq!(
        s.sends_since("bob@acme.example", t("2026-01-01T00:00:00Z"))
            .await
            .unwrap(),
        0,
        "a dead email was not sent"
    );

    // A failed action is recorded dead at once, with its reason.
    let failed = NewOutbox {
        failure: Some("template `hi`: missing variable `contact.name`".into()),
        ..email("k9", "z@acme.example", "2026-01-05T00:00:00Z")
    };
    let v = s.load_account("a").await.unwrap().unwrap().version;
    s.commit_step(&Step {
        state: state("a"),
        expected_version: Some(v),
        next_due: None,
        applied: vec![],
        outbox: vec![failed],
        trace: vec![],
    })
    .await
    .unwrap();
    let rows = s.list_outbox(100).await.unwrap();
    let dead = rows.iter().find(|r| r.key == "k9").unwrap();
    assert_eq!(dead.state, OutboxState::Dead);
    assert!(dead.last_error.as_deref().unwrap().contains("contact.name"));
    assert!(
        s.claim(ALL, t("2026-02-01T00:00:00Z"), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "dead rows are never claimed"
    );

    // Only the kinds asked for are claimed.
    let hook = NewOutbox {
        kind: "connector".into(),
        ..email("k10", "-", "2026-01-05T00:00:00Z")
    };
    let v = s.load_account("a").await.unwrap().unwrap().version;
    s.commit_step(&Step {
        state: state("a"),
        expected_version: Some(v),
        next_due: None,
        applied: vec![],
        outbox: vec![hook],
        trace: vec![],
    })
    .await
    .unwrap();
    assert!(
        s.claim(&["email", "webhook"], t("2026-02-01T00:00:00Z"), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim(&["connector"], t("2026-02-01T00:00:00Z"), lease, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Suppressions: idempotent, case-insensitive.
    assert!(!s.is_suppressed("ann@acme.example").await.unwrap());
    s.suppress("Ann@Acme.example", "link", now).await.unwrap();
    s.suppress("ann@acme.example", "link", now).await.unwrap();
    assert!(s.is_suppressed("ANN@acme.example").await.unwrap());

    // Connector cursors: absent, then the last one set, per source.
    assert_eq!(s.cursor("zendesk").await.unwrap(), None);
    s.set_cursor("zendesk", &json!({"after": "a1"}))
        .await
        .unwrap();
    s.set_cursor("zendesk", &json!({"after": "a2"}))
        .await
        .unwrap();
    s.set_cursor("hubspot", &json!(17)).await.unwrap();
    assert_eq!(
        s.cursor("zendesk").await.unwrap(),
        Some(json!({"after": "a2"}))
    );
    assert_eq!(s.cursor("hubspot").await.unwrap(), Some(json!(17)));
}

#[tokio::test]
async fn sqlite_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&open(&dir).await).await;
}

#[tokio::test]
async fn sqlite_commits_survive_power_loss_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).await;
    // FULL (2) with WAL: a commit is on disk before it returns.
    assert_eq!(s.pragma("synchronous").await.unwrap(), "2");
    assert_eq!(s.pragma("journal_mode").await.unwrap(), "wal");
    s.ingest(
        &[event(Some("e1"), "a", "2026-01-02T00:00:00Z")],
        t("2026-01-05T00:00:00Z"),
    )
    .await
    .unwrap();
    drop(s);
    let s = open(&dir).await;
    assert_eq!(
        s.pending_events(10).await.unwrap().len(),
        1,
        "reopened: nothing acknowledged is lost"
    );
    let dup = s
        .ingest(
            &[event(Some("e1"), "a", "2026-01-02T00:00:00Z")],
            t("2026-01-06T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(dup.duplicates, 1, "idempotency survives a restart");
}

#[tokio::test]
async fn two_handles_on_one_file_never_claim_the_same_row() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir).await, open(&dir).await);
    let outbox: Vec<NewOutbox> = (0..200)
        .map(|i| {
            email(
                &format!("k{i}"),
                &format!("c{i}@x.io"),
                "2026-01-05T00:00:00Z",
            )
        })
        .collect();
    a.commit_step(&Step {
        state: state("a"),
        expected_version: None,
        next_due: None,
        applied: vec![],
        outbox,
        trace: vec![],
    })
    .await
    .unwrap();
    let now = t("2026-01-05T00:00:00Z");
    let lease = SignedDuration::from_secs(60);
    let (mut seen, mut total) = (std::collections::HashSet::new(), 0);
    loop {
        let (x, y) = tokio::join!(a.claim(ALL, now, lease, 7), b.claim(ALL, now, lease, 7));
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.is_empty() && y.is_empty() {
            break;
        }
        for c in x.into_iter().chain(y) {
            assert!(seen.insert(c.key.clone()), "{} claimed twice", c.key);
            total += 1;
        }
    }
    assert_eq!(total, 200);
}

#[tokio::test]
async fn a_newer_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir).await);
    let url = format!("sqlite:{}", dir.path().join("touchpilot.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let err = SqliteStore::open(&url).await.err().expect("refused");
    assert!(
        err.to_string().contains("schema version 99 is newer"),
        "{err}"
    );
}

/// The batch, operations and source methods every store must have.
pub(super) async fn ops_suite<S: Store>(s: &S) {
    let now = t("2026-03-01T00:00:00Z");
    // Group commit: per batch answers, ids repeated across batches are duplicates.
    let got = s
        .ingest_many(
            &[
                vec![event(Some("g1"), "a", "2026-03-01T00:00:00Z")],
                vec![
                    event(Some("g1"), "a", "2026-03-01T00:00:00Z"),
                    event(Some("g2"), "b", "2026-03-01T00:00:00Z"),
                ],
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            Ingested {
                accepted: 1,
                duplicates: 0
            },
            Ingested {
                accepted: 1,
                duplicates: 1
            }
        ]
    );
    // A cursor moves with the events it covers.
    assert_eq!(s.cursor("file:e").await.unwrap(), None);
    let n = s
        .ingest_at_cursor(
            &[event(None, "a", "2026-03-01T00:00:00Z")],
            now,
            "file:e",
            &json!("10:1"),
        )
        .await
        .unwrap();
    assert_eq!(n.accepted, 1);
    assert_eq!(s.cursor("file:e").await.unwrap(), Some(json!("10:1")));

    // Several steps in one commit: a stale one writes nothing of any.
    let trace = vec![TraceEntry {
        at: now,
        kind: "fired".into(),
        detail: json!({"playbook": "p", "moment": "m"}),
    }];
    let step = |id: &str, key: &str, version: Option<i64>| Step {
        state: state(id),
        expected_version: version,
        next_due: Some(t("2026-03-02T00:00:00Z")),
        applied: vec![],
        outbox: vec![NewOutbox {
            account: id.into(),
            ..email(key, &format!("{id}@x.io"), "2026-03-01T00:00:00Z")
        }],
        trace: trace.clone(),
    };
    s.commit_steps(&[step("a", "o1", None), step("b", "o2", None)])
        .await
        .unwrap();
    let stale = s
        .commit_steps(&[step("c", "o3", None), step("a", "o4", Some(99))])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(s.outbox_state("o3").await.unwrap(), None, "all or nothing");
    assert!(s.load_account("c").await.unwrap().is_none());
    assert_eq!(
        s.missing_accounts(&["a", "c", "b", "d"])
            .await
            .unwrap()
            .len(),
        2
    );
    let mut missing = s.missing_accounts(&["a", "c", "d"]).await.unwrap();
    missing.sort();
    assert_eq!(missing, ["c", "d"]);
    assert_eq!(s.account_ids(None, 1).await.unwrap(), ["a"]);
    assert_eq!(s.account_ids(Some("a"), 10).await.unwrap(), ["b"]);
    let got = s.trace("a", 10).await.unwrap();
    assert_eq!(got, trace);

    // Several claims ended in one commit, fenced one by one.
    let claims = s
        .claim(ALL, now, SignedDuration::from_mins(1), 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 2);
    let ended = s
        .finish_many(
            &[
                (claims[0].id.clone(), claims[0].token, Outcome::Sent),
                (
                    claims[1].id.clone(),
                    claims[1].token + 1,
                    Outcome::Dead { error: "x".into() },
                ),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(ended, [true, false], "a stale token changes nothing");
    s.finish(
        &claims[1].id,
        claims[1].token,
        &Outcome::Dead {
            error: "HTTP 400".into(),
        },
        now,
    )
    .await
    .unwrap();

    // Status figures (after making everything durable, which changes none).
    s.durable().await.unwrap();
    let st = s.stats(now).await.unwrap();
    assert_eq!((st.sent, st.dead, st.pending, st.accounts), (1, 1, 0, 2));
    assert_eq!(st.events_pending, 3);
    assert_eq!(st.due_accounts, 0);
    assert_eq!(st.next_due, Some(t("2026-03-02T00:00:00Z")));

    // Dead letters: listed with their reason, queued again by id.
    let dead = s.list_state(OutboxState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].row.last_error.as_deref(), Some("HTTP 400"));
    assert!(s.retry_dead(&dead[0].id, now).await.unwrap());
    assert!(
        !s.retry_dead(&dead[0].id, now).await.unwrap(),
        "only dead rows"
    );
    let st = s.stats(now).await.unwrap();
    assert_eq!((st.dead, st.pending, st.oldest_pending), (0, 1, Some(now)));
    let again = s
        .claim(ALL, now, SignedDuration::from_mins(1), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1, "attempts start over");
    assert_eq!(s.account_outbox("a", 10).await.unwrap().len(), 1);

    // Endpoints disabled by a 410, until enabled.
    s.disable_endpoint("hooks", "410 gone", now).await.unwrap();
    s.disable_endpoint("hooks", "again", now).await.unwrap();
    let d = s.disabled_endpoints().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, "410 gone", "the first reason is kept");
    assert!(s.enable_endpoint("hooks").await.unwrap());
    assert!(!s.enable_endpoint("hooks").await.unwrap());
    assert!(s.disabled_endpoints().await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_passes_the_operations_suite() {
    let dir = tempfile::tempdir().unwrap();
    ops_suite(&open(&dir).await).await;
}
