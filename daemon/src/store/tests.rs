//! The store's contract, as one suite every implementation runs against a
//! real database (SQLite in a temporary folder; PostgreSQL in a database of
//! its own on the machine's server, created and dropped by each test), plus
//! each store's own guarantees.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::postgres::{PgStore, Scratch};
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
    assert_eq!(
        s.suppressed_among(&["ANN@acme.example", "bob@acme.example"])
            .await
            .unwrap(),
        std::collections::HashSet::from(["ann@acme.example".to_string()])
    );
    assert!(s.suppressed_among(&[]).await.unwrap().is_empty());

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

    // An event another writer applied meanwhile makes a step stale, even
    // with a current version: nothing of it is written.
    let seq = s.pending_events(1).await.unwrap()[0].seq;
    let v = s.load_account("a").await.unwrap().unwrap().version;
    let apply = |version, key: &str| Step {
        state: state("a"),
        expected_version: Some(version),
        next_due: None,
        applied: vec![seq],
        outbox: vec![email(key, "c@acme.example", "2026-01-05T00:00:00Z")],
        trace: vec![],
    };
    s.commit_step(&apply(v, "k20")).await.unwrap();
    let again = s.commit_step(&apply(v + 1, "k21")).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyApplied(ref id)) if id == "a"),
        "{again:?}"
    );
    assert_eq!(s.outbox_state("k21").await.unwrap(), None);
    assert_eq!(s.load_account("a").await.unwrap().unwrap().version, v + 1);

    // The secret is generated once.
    assert_eq!(s.secret().await.unwrap(), s.secret().await.unwrap());

    // The cap, reserved: a place taken is counted until its row ends
    // other than sent; the same row never takes two places.
    let since = t("2026-01-01T00:00:00Z");
    let at = t("2026-03-01T00:00:00Z");
    assert!(
        s.reserve_send("r1", "Cap@x.io", since, 1, at)
            .await
            .unwrap()
    );
    assert!(
        !s.reserve_send("r2", "cap@x.io", since, 1, at)
            .await
            .unwrap()
    );
    assert!(
        s.reserve_send("r1", "cap@x.io", since, 1, at)
            .await
            .unwrap()
    );
    assert_eq!(s.sends_since("cap@x.io", since).await.unwrap(), 1);
    let v = s.load_account("a").await.unwrap().unwrap().version;
    s.commit_step(&Step {
        state: state("a"),
        expected_version: Some(v),
        next_due: None,
        applied: vec![],
        outbox: vec![
            email("c1", "cap2@x.io", "2026-03-01T00:00:00Z"),
            email("c2", "cap2@x.io", "2026-03-01T00:00:00Z"),
        ],
        trace: vec![],
    })
    .await
    .unwrap();
    let claims = s.claim(&["email"], at, lease, 10).await.unwrap();
    let c = |k: &str| claims.iter().find(|c| c.key == k).unwrap().clone();
    let (c1, c2) = (c("c1"), c("c2"));
    assert!(
        s.reserve_send(&c1.id, "cap2@x.io", since, 1, at)
            .await
            .unwrap()
    );
    assert!(
        !s.reserve_send(&c2.id, "cap2@x.io", since, 1, at)
            .await
            .unwrap()
    );
    let retry = Outcome::Retry {
        next_attempt: at + SignedDuration::from_hours(1),
        error: "smtp 451".into(),
    };
    assert!(s.finish(&c1.id, c1.token, &retry, at).await.unwrap());
    assert!(
        s.reserve_send(&c2.id, "cap2@x.io", since, 1, at)
            .await
            .unwrap(),
        "a retried send gives its place back"
    );
    assert!(
        s.finish(&c2.id, c2.token, &Outcome::Sent, at)
            .await
            .unwrap()
    );
    assert_eq!(
        s.sends_since("cap2@x.io", since).await.unwrap(),
        1,
        "a reserved send is counted once"
    );
}

/// Maintenance: expired leases made pending again; finished rows and
/// applied events older than the horizon folded into per-day counts, the
/// rest untouched; send records pruned; all idempotent.
async fn maintenance_suite<S: Store>(s: &S) {
    let day = |d: u32| t(&format!("2026-03-{d:02}T12:00:00Z"));
    let lease = SignedDuration::from_secs(60);
    s.ingest(
        &[
            event(Some("old1"), "a", "2026-03-01T10:00:00Z"),
            event(Some("old2"), "a", "2026-03-01T11:00:00Z"),
            event(Some("new"), "a", "2026-03-09T10:00:00Z"),
        ],
        day(1),
    )
    .await
    .unwrap();
    let seqs: Vec<i64> = s
        .pending_events(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let rows: Vec<NewOutbox> = (1..=4)
        .map(|i| {
            email(
                &format!("m{i}"),
                &format!("c{i}@x.io"),
                "2026-03-01T00:00:00Z",
            )
        })
        .collect();
    s.commit_step(&Step {
        state: state("a"),
        expected_version: None,
        next_due: None,
        applied: seqs[..2].to_vec(),
        outbox: rows,
        trace: vec![TraceEntry {
            at: day(1),
            kind: "fired".into(),
            detail: json!({"moment": "m"}),
        }],
    })
    .await
    .unwrap();
    // m1, m2 sent on day 1; m3 sent on day 9; m4 claimed and abandoned.
    let claims = s.claim(ALL, day(1), lease, 10).await.unwrap();
    assert_eq!(claims.len(), 4);
    let by_key = |k: &str| claims.iter().find(|c| c.key == k).unwrap().clone();
    for k in ["m1", "m2"] {
        let c = by_key(k);
        assert!(
            s.finish(&c.id, c.token, &Outcome::Sent, day(1))
                .await
                .unwrap()
        );
    }
    let m3 = by_key("m3");
    assert!(
        s.finish(&m3.id, m3.token, &Outcome::Sent, day(9))
            .await
            .unwrap()
    );

    // Not yet past m4's lease: nothing to rescue.
    let m = s.maintain(day(1), day(1)).await.unwrap();
    assert!(m.ran && m.rescued == 0, "{m:?}");
    assert_eq!(
        s.outbox_state("m4").await.unwrap(),
        Some(OutboxState::Sending)
    );

    let m = s.maintain(day(10), day(5)).await.unwrap();
    assert_eq!(
        (
            m.rescued,
            m.outbox_compacted,
            m.events_compacted,
            m.sends_pruned,
            m.more
        ),
        (1, 2, 2, 2, false),
        "{m:?}"
    );
    assert_eq!(m.traces_pruned, 1, "{m:?}");
    assert!(s.trace("a", 10).await.unwrap().is_empty());
    assert_eq!(
        s.outbox_state("m4").await.unwrap(),
        Some(OutboxState::Pending)
    );
    let m4 = by_key("m4");
    assert!(
        !s.finish(&m4.id, m4.token, &Outcome::Sent, day(10))
            .await
            .unwrap(),
        "a rescued claim's old token changes nothing"
    );
    assert_eq!(s.outbox_state("m1").await.unwrap(), None, "compacted");
    assert_eq!(s.outbox_state("m3").await.unwrap(), Some(OutboxState::Sent));
    assert_eq!(
        s.pending_events(10).await.unwrap().len(),
        1,
        "pending events are kept"
    );
    assert_eq!(s.sends_since("c1@x.io", Timestamp::MIN).await.unwrap(), 0);
    assert_eq!(s.sends_since("c3@x.io", Timestamp::MIN).await.unwrap(), 1);
    let counts = s.daily_counts().await.unwrap();
    let march1 = jiff::civil::date(2026, 3, 1);
    assert_eq!(
        counts,
        vec![
            DayCount {
                what: "events".into(),
                day: march1,
                name: "ticket.created".into(),
                count: 2
            },
            DayCount {
                what: "outbox".into(),
                day: march1,
                name: "email/sent".into(),
                count: 2
            },
        ]
    );
    // Again: nothing more to do, counts unchanged.
    let m = s.maintain(day(10), day(5)).await.unwrap();
    assert_eq!(
        (m.outbox_compacted, m.events_compacted, m.rescued),
        (0, 0, 0)
    );
    assert_eq!(s.daily_counts().await.unwrap(), counts);
    // Later history adds to the same day's counts.
    let c = s.claim(ALL, day(10), lease, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    assert!(
        s.finish(
            &c[0].id,
            c[0].token,
            &Outcome::Dead {
                error: "550".into()
            },
            day(10)
        )
        .await
        .unwrap()
    );
    s.maintain(day(30), day(20)).await.unwrap();
    let counts = s.daily_counts().await.unwrap();
    let names: Vec<_> = counts
        .iter()
        .map(|c| (c.day.day(), c.name.as_str(), c.count))
        .collect();
    assert_eq!(
        names,
        [
            (1, "ticket.created", 2),
            (1, "email/sent", 2),
            (9, "email/sent", 1),
            (10, "email/dead", 1)
        ]
    );
}

/// A step's rows already due are either claimed by the step itself or
/// left for `claim`, never both and never neither; rows not yet due, rows
/// that failed to render and keys written before are not claimed by it.
/// Returns how many the steps claimed themselves.
async fn steps_claim_what_is_due_once<S: Store>(s: &S) -> usize {
    let now = t("2026-01-05T00:00:00Z");
    let lease = SignedDuration::from_secs(60);
    let mut failed = email("k-failed", "f@x.io", "2026-01-05T00:00:00Z");
    failed.failure = Some("template `x`: missing variable".into());
    let step = |version, outbox| Step {
        state: state("a"),
        expected_version: version,
        next_due: None,
        applied: vec![],
        outbox,
        trace: vec![],
    };
    let first = vec![
        email("k-due", "d@x.io", "2026-01-05T00:00:00Z"),
        email("k-past", "p@x.io", "2026-01-04T00:00:00Z"),
        email("k-later", "l@x.io", "2026-01-06T00:00:00Z"),
        failed,
    ];
    let by_step = s
        .commit_steps_claiming(&[step(None, first)], now, lease)
        .await
        .unwrap();
    // The same keys again (a step computed twice) and one new due row.
    let again = vec![
        email("k-due", "d@x.io", "2026-01-05T00:00:00Z"),
        email("k-new", "n@x.io", "2026-01-05T00:00:00Z"),
    ];
    let by_step_again = s
        .commit_steps_claiming(&[step(Some(1), again)], now, lease)
        .await
        .unwrap();
    let by_claim = s.claim(ALL, now, lease, 100).await.unwrap();
    let mut keys: Vec<&str> = by_step
        .iter()
        .chain(&by_step_again)
        .chain(&by_claim)
        .map(|c| c.key.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["k-due", "k-new", "k-past"],
        "each due row claimed once"
    );
    for c in by_step.iter().chain(&by_step_again) {
        assert_eq!((c.token, c.attempts), (1, 1), "{}: a first claim", c.key);
        assert_eq!(
            s.outbox_state(&c.key).await.unwrap(),
            Some(OutboxState::Sending)
        );
    }
    if !by_step.is_empty() {
        assert_eq!(
            by_step.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            ["k-past", "k-due"],
            "in due order"
        );
        assert!(
            by_step_again.iter().all(|c| c.key != "k-due"),
            "a key written before is not new"
        );
    }
    assert_eq!(
        s.outbox_state("k-later").await.unwrap(),
        Some(OutboxState::Pending)
    );
    assert_eq!(
        s.outbox_state("k-failed").await.unwrap(),
        Some(OutboxState::Dead)
    );
    // Nothing claimed by the step is claimable again before its lease ends.
    assert!(s.claim(ALL, now, lease, 100).await.unwrap().is_empty());
    by_step.len() + by_step_again.len()
}

/// `ingest_applying`: the events it hands to `plan` are stored applied,
/// with the steps (and, if the store claims at step time, `claims`, their
/// claims) in one commit; every other accepted event waits for the engine.
async fn ingest_applies_what_is_ready<S: Store>(s: &S, claims: bool) {
    let now = t("2026-01-05T00:00:00Z");
    let lease = SignedDuration::from_secs(60);
    let new_account = |id: &str| Step {
        state: state(id),
        expected_version: None,
        next_due: None,
        applied: vec![],
        outbox: vec![],
        trace: vec![],
    };
    s.commit_steps(&[new_account("a"), new_account("b")])
        .await
        .unwrap();
    // `b` has an event waiting: its new one must wait behind it.
    s.ingest(&[event(Some("b0"), "b", "2026-01-02T00:00:00Z")], now)
        .await
        .unwrap();
    let mut no_at = event(None, "a", "2026-01-01T00:00:00Z");
    no_at.at = None;
    let batches = vec![
        vec![
            event(Some("a1"), "a", "2026-01-04T00:00:00Z"),
            event(Some("a1"), "a", "2026-01-04T00:00:00Z"),
            event(Some("b1"), "b", "2026-01-04T00:00:00Z"),
            event(Some("c1"), "c", "2026-01-04T00:00:00Z"),
            event(Some("a-later"), "a", "2026-01-09T00:00:00Z"),
        ],
        vec![no_at],
    ];
    // A plan whose step is stale: nothing of the group is stored.
    let stale = s
        .ingest_applying(&batches, now, Some(lease), |ready: Vec<Ready<'_>>| {
            ready
                .into_iter()
                .map(|r| Step {
                    expected_version: Some(r.loaded.version + 7),
                    ..new_account(r.loaded.state.id())
                })
                .collect()
        })
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(s.pending_events(100).await.unwrap().len(), 1);
    let mut seen: Vec<(String, Vec<Option<String>>)> = Vec::new();
    let done = s
        .ingest_applying(&batches, now, Some(lease), |ready: Vec<Ready<'_>>| {
            ready
                .into_iter()
                .map(|r| {
                    let id = r.loaded.state.id().to_string();
                    seen.push((
                        id.clone(),
                        r.events.iter().map(|a| a.event.id.clone()).collect(),
                    ));
                    let outbox = r
                        .events
                        .iter()
                        .map(|a| NewOutbox {
                            account: id.clone(),
                            ..email(&format!("k-{}", a.seq), "x@x.io", "2026-01-05T00:00:00Z")
                        })
                        .collect();
                    Step {
                        state: r.loaded.state,
                        expected_version: Some(r.loaded.version),
                        next_due: None,
                        applied: vec![],
                        outbox,
                        trace: vec![],
                    }
                })
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(
        done.ingested,
        [
            Ingested {
                accepted: 4,
                duplicates: 1
            },
            Ingested {
                accepted: 1,
                duplicates: 0
            }
        ]
    );
    assert_eq!(
        seen,
        [("a".to_string(), vec![Some("a1".to_string()), None])],
        "only `a`'s due events: `b` has one waiting, `c` is unknown, `a-later` is not due"
    );
    assert_eq!(done.unapplied, 3);
    if claims {
        assert_eq!(done.claimed.len(), 2);
        assert!(done.claimed.iter().all(|c| c.token == 1 && c.attempts == 1));
    } else {
        assert!(done.claimed.is_empty());
        assert_eq!(s.claim(ALL, now, lease, 100).await.unwrap().len(), 2);
    }
    let pending: Vec<Option<String>> = s
        .pending_events(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(
        pending,
        [Some("b0"), Some("b1"), Some("c1"), Some("a-later")].map(|i| i.map(str::to_string))
    );
    assert_eq!(s.load_account("a").await.unwrap().unwrap().version, 2);
    assert_eq!(s.load_account("b").await.unwrap().unwrap().version, 1);
    // The claims are the worker's: not claimable again under their lease.
    assert!(s.claim(ALL, now, lease, 100).await.unwrap().is_empty());
}

/// Two handles, as two processes would have, claim disjoint sets.
async fn claims_are_disjoint<S: Store>(a: &S, b: &S) {
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
async fn sqlite_steps_claim_what_is_due_once() {
    let dir = tempfile::tempdir().unwrap();
    let by_steps = steps_claim_what_is_due_once(&open(&dir).await).await;
    assert_eq!(by_steps, 3, "SQLite claims due rows in the step's commit");
}

#[tokio::test]
async fn postgres_steps_claim_what_is_due_once() {
    on_postgres(|url| async move {
        steps_claim_what_is_due_once(&PgStore::open(&url).await.unwrap()).await;
    })
    .await;
}

#[tokio::test]
async fn sqlite_applies_ready_events_in_the_commit_that_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    ingest_applies_what_is_ready(&open(&dir).await, true).await;
}

#[tokio::test]
async fn postgres_applies_ready_events_in_the_transaction_that_stores_them() {
    on_postgres(|url| async move {
        ingest_applies_what_is_ready(&PgStore::open(&url).await.unwrap(), false).await;
    })
    .await;
}

#[tokio::test]
async fn two_handles_on_one_file_never_claim_the_same_row() {
    let dir = tempfile::tempdir().unwrap();
    claims_are_disjoint(&open(&dir).await, &open(&dir).await).await;
}

#[tokio::test]
async fn sqlite_maintenance_rescues_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    maintenance_suite(&open(&dir).await).await;
}

#[tokio::test]
async fn a_newer_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir).await);
    let url = format!("sqlite:{}", dir.path().join("touchpilot.db").display());
    rusqlite::Connection::open(dir.path().join("touchpilot.db"))
        .unwrap()
        .execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    let err = SqliteStore::open(&url).await.err().expect("refused");
    assert!(
        err.to_string().contains("schema version 99 is newer"),
        "{err}"
    );
}

/// The server the PostgreSQL tests use: `TOUCHPILOT_TEST_POSTGRES`, or the
/// machine's own (127.0.0.1:5432, trust authentication).
fn pg_admin() -> String {
    std::env::var("TOUCHPILOT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Runs `test` against a database of its own, dropped afterwards even
/// when the test fails.
async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let db = Scratch::create(&pg_admin())
        .await
        .unwrap_or_else(|e| panic!("creating a test database on {}: {e}", pg_admin()));
    let result = tokio::spawn(test(db.url.clone())).await;
    db.drop_database().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn postgres_passes_the_store_suite() {
    on_postgres(|url| async move { suite(&PgStore::open(&url).await.unwrap()).await }).await;
}

#[tokio::test]
async fn postgres_maintenance_rescues_and_compacts() {
    on_postgres(|url| async move { maintenance_suite(&PgStore::open(&url).await.unwrap()).await })
        .await;
}

#[tokio::test]
async fn two_postgres_instances_never_claim_the_same_row() {
    on_postgres(|url| async move {
        let (a, b) = (
            PgStore::open(&url).await.unwrap(),
            PgStore::open(&url).await.unwrap(),
        );
        claims_are_disjoint(&a, &b).await;
    })
    .await;
}

#[tokio::test]
async fn postgres_instances_starting_together_migrate_once() {
    on_postgres(|url| async move {
        let opened = futures_join(&url).await;
        assert!(
            opened.iter().all(Result::is_ok),
            "{opened:?}",
            opened = opened
                .iter()
                .map(|r| r.as_ref().err().map(ToString::to_string))
                .collect::<Vec<_>>()
        );
        let s = PgStore::open(&url).await.unwrap();
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'schema_version'")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(v, super::postgres::MIGRATIONS.len().to_string());
    })
    .await;
}

async fn futures_join(url: &str) -> Vec<Result<PgStore>> {
    let (a, b, c) = tokio::join!(PgStore::open(url), PgStore::open(url), PgStore::open(url));
    vec![a, b, c]
}

#[tokio::test]
async fn postgres_maintenance_runs_on_one_instance_at_a_time() {
    on_postgres(|url| async move {
        let (a, b) = (
            PgStore::open(&url).await.unwrap(),
            PgStore::open(&url).await.unwrap(),
        );
        // `a` holds the maintenance lock as another instance would mid-pass.
        let mut held = a.pool().begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(0x7470_0002_i64)
            .execute(&mut *held)
            .await
            .unwrap();
        let now = t("2026-01-05T00:00:00Z");
        let m = b.maintain(now, now).await.unwrap();
        assert!(!m.ran, "{m:?}");
        held.rollback().await.unwrap();
        assert!(b.maintain(now, now).await.unwrap().ran);
    })
    .await;
}

#[tokio::test]
async fn postgres_notifies_other_instances() {
    on_postgres(|url| async move {
        let (a, b) = (PgStore::open(&url).await.unwrap(), PgStore::open(&url).await.unwrap());
        let wakers = Wakers::default();
        b.watch(wakers.clone()).await.unwrap();
        // Listening wakes both loops once (anything missed before).
        let wait = |n: std::sync::Arc<tokio::sync::Notify>| async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), n.notified())
                .await
                .is_ok()
        };
        assert!(wait(wakers.engine.clone()).await && wait(wakers.outbox.clone()).await);
        a.ingest(&[event(Some("e1"), "a", "2026-01-02T00:00:00Z")], t("2026-01-05T00:00:00Z"))
            .await
            .unwrap();
        assert!(wait(wakers.engine.clone()).await, "an event wakes the engines");
        a.commit_step(&Step {
            state: state("a"),
            expected_version: None,
            next_due: None,
            applied: vec![],
            outbox: vec![email("k1", "a@x.io", "2026-01-05T00:00:00Z")],
            trace: vec![],
        })
        .await
        .unwrap();
        assert!(wait(wakers.outbox.clone()).await, "outbox rows wake the workers");
        // A server-side disconnect of the listener (as a restart does):
        // it reconnects and wakes both loops, which then look for themselves.
        let killed = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
            .fetch_all(a.pool())
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "the listener's connection");
        assert!(wait(wakers.engine.clone()).await && wait(wakers.outbox.clone()).await, "woken after reconnecting");
        a.ingest(&[event(Some("e2"), "a", "2026-01-02T00:00:00Z")], t("2026-01-05T00:00:00Z"))
            .await
            .unwrap();
        assert!(wait(wakers.engine.clone()).await, "listening again after the reconnect");
    })
    .await;
}

/// Instances checking the cap for one address at the same moment: no
/// more places are taken than the cap allows.
#[tokio::test]
async fn postgres_instances_never_exceed_the_cap_together() {
    on_postgres(|url| async move {
        let (a, b) = (
            PgStore::open(&url).await.unwrap(),
            PgStore::open(&url).await.unwrap(),
        );
        let since = t("2026-01-01T00:00:00Z");
        let at = t("2026-03-01T00:00:00Z");
        let tries = (0..20).map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            let id = format!("row{i}");
            async move { s.reserve_send(&id, "hot@x.io", since, 3, at).await.unwrap() }
        });
        let taken = futures_all(tries)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        assert_eq!(taken, 3);
        assert_eq!(a.sends_since("hot@x.io", since).await.unwrap(), 3);
    })
    .await;
}

async fn futures_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.collect();
    let mut out = Vec::new();
    // Polled together on this task: the store calls interleave.
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, d) in pinned.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *d = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().map(Option::unwrap));
    out
}

#[tokio::test]
async fn a_newer_postgres_schema_is_refused_by_name() {
    on_postgres(|url| async move {
        let s = PgStore::open(&url).await.unwrap();
        sqlx::query("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            .execute(s.pool())
            .await
            .unwrap();
        let err = PgStore::open(&url).await.err().expect("refused");
        assert!(
            err.to_string().contains("schema version 99 is newer"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_with_the_reason() {
    let err = PgStore::open("postgres://postgres@127.0.0.1:5432/touchpilot_no_such_db")
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "cannot connect to PostgreSQL at 127.0.0.1:5432 (database `touchpilot_no_such_db`, user `postgres`): database \"touchpilot_no_such_db\" does not exist"
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
    let st = s.stats(now).await.unwrap();
    assert_eq!((st.pending, st.sending, st.sent), (0, 2, 0));
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
    s.finish(
        &again[0].id,
        again[0].token,
        &Outcome::Suppressed {
            reason: "unsubscribed".into(),
        },
        now,
    )
    .await
    .unwrap();
    let st = s.stats(now).await.unwrap();
    assert_eq!(
        (st.sent, st.dead, st.suppressed, st.pending, st.sending),
        (1, 0, 1, 0, 0)
    );
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

#[tokio::test]
async fn postgres_passes_the_operations_suite() {
    on_postgres(|url| async move { ops_suite(&PgStore::open(&url).await.unwrap()).await }).await;
}
