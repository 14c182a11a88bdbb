//! Rows to values, the same for both databases: the stores differ in
//! their SQL (placeholders, locking, batching), not in what a row means.
//! Instants are integer microseconds in both; JSON is text in both.

use jiff::Timestamp;
use serde::de::DeserializeOwned;

use super::{
    Claimed, DisabledEndpoint, Listed, Loaded, OutboxRow, OutboxState, Result, StoreError,
    StoredEvent, TraceEntry,
};
use crate::model::event::Event;

/// A row of either database, read by column name.
pub(crate) trait StoreRow {
    fn text(&self, column: &str) -> String;
    fn maybe_text(&self, column: &str) -> Option<String>;
    fn int(&self, column: &str) -> i64;
}

impl StoreRow for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> String {
        self.get(column)
            .unwrap_or_else(|e| panic!("column `{column}`: {e}"))
    }
    fn maybe_text(&self, column: &str) -> Option<String> {
        self.get(column)
            .unwrap_or_else(|e| panic!("column `{column}`: {e}"))
    }
    fn int(&self, column: &str) -> i64 {
        self.get(column)
            .unwrap_or_else(|e| panic!("column `{column}`: {e}"))
    }
}

impl StoreRow for sqlx::postgres::PgRow {
    fn text(&self, column: &str) -> String {
        sqlx::Row::get(self, column)
    }
    fn maybe_text(&self, column: &str) -> Option<String> {
        sqlx::Row::get(self, column)
    }
    fn int(&self, column: &str) -> i64 {
        sqlx::Row::get(self, column)
    }
}

/// Instants as integer microseconds: they order and compare in SQL.
pub(crate) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

/// When a claim made at `now` under `lease` ends, in microseconds (as
/// `lease_until` is stored).
pub(crate) fn lease_end(now: Timestamp, lease: jiff::SignedDuration) -> i64 {
    micros(now.checked_add(lease).unwrap_or(Timestamp::MAX))
}

pub(crate) fn instant(us: i64) -> Result<Timestamp> {
    Timestamp::from_microsecond(us).map_err(|e| StoreError::Corrupt(format!("timestamp {us}: {e}")))
}

fn json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn state(text: &str) -> Result<OutboxState> {
    OutboxState::parse(text).ok_or_else(|| StoreError::Corrupt(format!("outbox state `{text}`")))
}

/// `state, version` of `accounts`.
pub(crate) fn loaded(r: &impl StoreRow, id: &str) -> Result<Loaded> {
    Ok(Loaded {
        state: json(&r.text("state"), &format!("state of account `{id}`"))?,
        version: r.int("version"),
    })
}

/// `seq, id, account, type, at, data` of `events`.
pub(crate) fn stored_event(r: &impl StoreRow) -> Result<StoredEvent> {
    let at = instant(r.int("at"))?;
    Ok(StoredEvent {
        seq: r.int("seq"),
        at,
        event: Event {
            id: r.maybe_text("id"),
            account: r.text("account"),
            kind: r.text("type"),
            at: Some(at),
            data: json(&r.text("data"), "event data")?,
        },
    })
}

/// A claimed row (`id, token, key, account, kind, payload, attempts,
/// next_attempt`), with its due time for `in_due_order`.
pub(crate) fn claimed_row(r: &impl StoreRow) -> Result<(i64, Claimed)> {
    Ok((
        r.int("next_attempt"),
        Claimed {
            id: r.text("id"),
            token: r.int("token"),
            key: r.text("key"),
            account: r.text("account"),
            kind: r.text("kind"),
            payload: json(&r.text("payload"), "outbox payload")?,
            attempts: r.int("attempts"),
        },
    ))
}

/// Claims in the order they go out: due time, then key (one step's
/// actions in playbook order). `RETURNING` keeps no order.
pub(crate) fn in_due_order(mut claimed: Vec<(i64, Claimed)>) -> Vec<Claimed> {
    claimed.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
    claimed.into_iter().map(|(_, c)| c).collect()
}

/// Claimed rows of a result set, in due order.
pub(crate) fn claimed<R: StoreRow>(rows: &[R]) -> Result<Vec<Claimed>> {
    let claimed = rows.iter().map(claimed_row).collect::<Result<Vec<_>>>()?;
    Ok(in_due_order(claimed))
}

/// The columns `outbox_row` and `listed` read.
pub(crate) const LISTED: &str =
    "SELECT id, key, account, kind, payload, at, state, attempts, last_error, updated FROM outbox";

pub(crate) fn outbox_row(r: &impl StoreRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        key: r.text("key"),
        account: r.text("account"),
        kind: r.text("kind"),
        payload: json(&r.text("payload"), "outbox payload")?,
        at: instant(r.int("at"))?,
        state: state(&r.text("state"))?,
        attempts: r.int("attempts"),
        last_error: r.maybe_text("last_error"),
    })
}

pub(crate) fn listed(r: &impl StoreRow) -> Result<Listed> {
    Ok(Listed {
        id: r.text("id"),
        updated: instant(r.int("updated"))?,
        row: outbox_row(r)?,
    })
}

/// `at, kind, detail` of `trace`.
pub(crate) fn trace_entry(r: &impl StoreRow) -> Result<TraceEntry> {
    Ok(TraceEntry {
        at: instant(r.int("at"))?,
        kind: r.text("kind"),
        detail: json(&r.text("detail"), "trace detail")?,
    })
}

/// `name, reason, at` of `disabled_endpoints`.
pub(crate) fn disabled_endpoint(r: &impl StoreRow) -> Result<DisabledEndpoint> {
    Ok(DisabledEndpoint {
        name: r.text("name"),
        reason: r.text("reason"),
        at: instant(r.int("at"))?,
    })
}
