//! The SQLite store: one file, WAL journal, `synchronous=FULL` so that a
//! committed write survives power loss, writes serialised by SQLite itself
//! (`BEGIN IMMEDIATE` where a read decides a write).

use std::str::FromStr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::rows::{self as decode, instant, micros};
use super::{
    Claimed, DayCount, DisabledEndpoint, Ingested, Listed, Loaded, Maintained, OutboxState,
    Outcome, Result, Stats, Step, Store, StoreError, StoredEvent, TraceEntry,
};
use crate::model::event::Event;

/// Schema versions, applied in order, each in one transaction.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE,
    account TEXT NOT NULL,
    type TEXT NOT NULL,
    at INTEGER NOT NULL,
    received INTEGER NOT NULL,
    data TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_pending ON events (applied, at, seq);
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    next_due INTEGER
);
CREATE INDEX accounts_due ON accounts (next_due) WHERE next_due IS NOT NULL;
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    lease_until INTEGER,
    token INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt);
CREATE TABLE suppressions (
    address TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE sends (
    address TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX sends_by_address ON sends (address, at);
"#,
    r#"
CREATE TABLE trace (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX trace_by_account ON trace (account, seq);
CREATE TABLE disabled_endpoints (
    name TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX outbox_by_account ON outbox (account, at);
CREATE INDEX outbox_by_state ON outbox (state, updated);
"#,
    r#"
CREATE INDEX outbox_done ON outbox (updated) WHERE state IN ('sent', 'dead', 'suppressed', 'missed');
CREATE INDEX events_done ON events (received) WHERE applied <> 0;
CREATE INDEX sends_by_time ON sends (at);
CREATE TABLE outbox_daily (
    day INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, kind, state)
);
CREATE TABLE events_daily (
    day INTEGER NOT NULL,
    type TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, type)
);
ALTER TABLE sends ADD COLUMN outbox_id TEXT;
CREATE UNIQUE INDEX sends_by_outbox ON sends (outbox_id);
CREATE INDEX trace_by_time ON trace (at);
"#,
];

/// Rows compacted per maintenance transaction.
const COMPACT_BATCH: i64 = 10_000;

pub struct SqliteStore {
    /// `synchronous=FULL`: reads, and every write acknowledged to someone
    /// outside (events, unsubscribes, cursors...): durable at commit.
    pool: SqlitePool,
    /// `synchronous=NORMAL`: the daemon's own progress (engine steps,
    /// claims, claims' ends). WAL frames are written in commit order, so
    /// the next FULL commit makes them durable too; a power loss (never a
    /// process crash) can only undo the last few, which are recomputed
    /// (steps: the same outbox keys) or retried with the same Message-ID
    /// and webhook-id (sends). An fsync per internal commit was the cost
    /// that bounded throughput (0.5 ms each here).
    progress: SqlitePool,
    /// One writer at a time inside the process. SQLite serialises writers
    /// anyway, but a connection that finds the database locked sleeps in
    /// its busy handler (1, 2, 5, ... 100 ms steps) instead of waking when
    /// the lock is free: under load that was most of the latency. Other
    /// processes (the ops commands) still meet the busy timeout.
    writer: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite:PATH`, as in `touchpilot.yaml`).
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let progress = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await?;
        let store = SqliteStore {
            pool,
            progress,
            writer: tokio::sync::Mutex::new(()),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 = sqlx::query("SELECT value FROM meta WHERE key = 'schema_version'")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get::<String, _>(0).parse().unwrap_or(0))
            .unwrap_or(0);
        if current as usize > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {current} is newer than this touchpilot ({}); upgrade touchpilot",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[current as usize..] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(MIGRATIONS.len().to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A pragma's value, for tests of the durability settings.
    pub async fn pragma(&self, name: &'static str) -> Result<String> {
        let sql = match name {
            "synchronous" => "PRAGMA synchronous",
            "journal_mode" => "PRAGMA journal_mode",
            _ => return Err(StoreError::Corrupt(format!("unknown pragma {name}"))),
        };
        let row = sqlx::query(sql).fetch_one(&self.pool).await?;
        Ok(row
            .try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))?)
    }
}

impl Store for SqliteStore {
    async fn ingest(&self, events: &[Event], received: Timestamp) -> Result<Ingested> {
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let out = ingest_in(&mut tx, events, received).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn ingest_many(
        &self,
        batches: &[Vec<Event>],
        received: Timestamp,
    ) -> Result<Vec<Ingested>> {
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            out.push(ingest_in(&mut tx, b, received).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, id, account, type, at, data FROM events WHERE applied = 0 ORDER BY at, seq LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode::stored_event).collect()
    }

    async fn load_account(&self, id: &str) -> Result<Option<Loaded>> {
        let Some(row) = sqlx::query("SELECT state, version FROM accounts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        decode::loaded(&row, id).map(Some)
    }

    async fn commit_step(&self, step: &Step) -> Result<()> {
        self.commit_steps(std::slice::from_ref(step)).await
    }

    async fn commit_steps(&self, steps: &[Step]) -> Result<()> {
        let now = micros(Timestamp::now());
        let _writing = self.writer.lock().await;
        let mut tx = self.progress.begin_with("BEGIN IMMEDIATE").await?;
        for step in steps {
            // An error drops the transaction, which rolls it back: all or nothing.
            step_in(&mut tx, step, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn due_accounts(&self, now: Timestamp, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= ? ORDER BY next_due LIMIT ?")
            .bind(micros(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get("id")).collect())
    }

    async fn next_due(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT MIN(next_due) FROM accounts")
            .fetch_one(&self.pool)
            .await?;
        row.get::<Option<i64>, _>(0).map(instant).transpose()
    }

    async fn claim(
        &self,
        kinds: &[&str],
        now: Timestamp,
        lease: SignedDuration,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let kinds = serde_json::to_string(kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        let _writing = self.writer.lock().await;
        let mut tx = self.progress.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "UPDATE outbox SET state = 'sending', lease_until = ?1, token = token + 1, attempts = attempts + 1, updated = ?2
             WHERE id IN (
                 SELECT id FROM outbox
                 WHERE ((state = 'pending' AND next_attempt <= ?2) OR (state = 'sending' AND lease_until <= ?2))
                   AND kind IN (SELECT value FROM json_each(?4))
                 ORDER BY next_attempt, key LIMIT ?3)
             RETURNING id, token, key, account, kind, payload, attempts, next_attempt",
        )
        .bind(micros(until))
        .bind(micros(now))
        .bind(limit)
        .bind(kinds)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        decode::claimed(&rows)
    }

    async fn finish(
        &self,
        id: &str,
        token: i64,
        outcome: &Outcome,
        now: Timestamp,
    ) -> Result<bool> {
        let done = self
            .finish_many(&[(id.to_string(), token, outcome.clone())], now)
            .await?;
        Ok(done[0])
    }

    async fn finish_many(
        &self,
        done: &[(String, i64, Outcome)],
        now: Timestamp,
    ) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        // One UPDATE for the whole batch, fenced row by row by its token.
        let rows: Vec<serde_json::Value> = done
            .iter()
            .map(|(id, token, outcome)| {
                let (state, next, error) = super::finish_columns(outcome);
                serde_json::json!([
                    id,
                    token,
                    state.as_str(),
                    next.map(micros),
                    error,
                    i64::from(*outcome == Outcome::Released)
                ])
            })
            .collect();
        let _writing = self.writer.lock().await;
        let mut tx = self.progress.begin_with("BEGIN IMMEDIATE").await?;
        let ended = sqlx::query(
            "UPDATE outbox SET state = j.state, next_attempt = COALESCE(j.next, next_attempt),
                 last_error = COALESCE(j.error, last_error), attempts = attempts - j.uncount,
                 lease_until = NULL, updated = ?2
             FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token,
                          json_extract(value, '$[2]') AS state, json_extract(value, '$[3]') AS next,
                          json_extract(value, '$[4]') AS error, json_extract(value, '$[5]') AS uncount
                   FROM json_each(?1)) AS j
             WHERE outbox.id = j.id AND outbox.token = j.token AND outbox.state = 'sending'
             RETURNING outbox.id,
                 CASE WHEN outbox.kind = 'email' AND outbox.state = 'sent'
                      THEN lower(json_extract(outbox.payload, '$.to')) END AS address",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(micros(now))
        .fetch_all(&mut *tx)
        .await?;
        // A sent email counts toward its address's cap, in the same commit
        // (already, when its send was reserved: one row per outbox id).
        let sent: Vec<serde_json::Value> = ended
            .iter()
            .filter_map(|r| {
                r.get::<Option<String>, _>("address")
                    .map(|a| serde_json::json!([a, r.get::<String, _>("id")]))
            })
            .collect();
        if !sent.is_empty() {
            sqlx::query(
                "INSERT INTO sends (address, at, outbox_id)
                 SELECT json_extract(value, '$[0]'), ?2, json_extract(value, '$[1]')
                 FROM json_each(?1) WHERE true
                 ON CONFLICT (outbox_id) DO NOTHING",
            )
            .bind(serde_json::Value::Array(sent).to_string())
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        }
        let ended: std::collections::HashSet<String> =
            ended.iter().map(|r| r.get::<String, _>("id")).collect();
        // Any other end gives a reservation back.
        let unsent: Vec<&str> = done
            .iter()
            .filter(|(id, _, outcome)| *outcome != Outcome::Sent && ended.contains(id))
            .map(|(id, ..)| id.as_str())
            .collect();
        if !unsent.is_empty() {
            sqlx::query("DELETE FROM sends WHERE outbox_id IN (SELECT value FROM json_each(?))")
                .bind(serde_json::to_string(&unsent).expect("strings serialize"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.iter().map(|(id, ..)| ended.contains(id)).collect())
    }

    async fn outbox_state(&self, key: &str) -> Result<Option<OutboxState>> {
        let row = sqlx::query("SELECT state FROM outbox WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let s: String = r.get(0);
            OutboxState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("outbox state `{s}`")))
        })
        .transpose()
    }

    async fn list_outbox(&self, limit: i64) -> Result<Vec<super::OutboxRow>> {
        let rows = sqlx::query(
            "SELECT key, account, kind, payload, at, state, attempts, last_error FROM outbox ORDER BY at, key LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode::outbox_row).collect()
    }

    async fn set_aside(&self, seqs: &[i64]) -> Result<()> {
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for seq in seqs {
            sqlx::query("UPDATE events SET applied = 2 WHERE seq = ? AND applied = 0")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_outbox_at(&self, kinds: &[&str]) -> Result<Option<Timestamp>> {
        let kinds = serde_json::to_string(kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN state = 'pending' THEN next_attempt ELSE lease_until END) FROM outbox
             WHERE state IN ('pending', 'sending') AND kind IN (SELECT value FROM json_each(?))",
        )
        .bind(kinds)
        .fetch_one(&self.pool)
        .await?;
        row.get::<Option<i64>, _>(0).map(instant).transpose()
    }

    async fn secret(&self) -> Result<Vec<u8>> {
        let fresh = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('secret', ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&fresh)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'secret'")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.get::<String, _>(0).into_bytes())
    }

    // Cursors live in `meta` under `cursor:NAME`: one small row per
    // source, no table of their own.
    async fn cursor(&self, source: &str) -> Result<Option<Value>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(format!("cursor:{source}"))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            serde_json::from_str(&r.get::<String, _>(0))
                .map_err(|e| StoreError::Corrupt(format!("cursor of `{source}`: {e}")))
        })
        .transpose()
    }

    async fn set_cursor(&self, source: &str, cursor: &Value) -> Result<()> {
        let _writing = self.writer.lock().await;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(format!("cursor:{source}"))
            .bind(cursor.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn suppress(&self, address: &str, source: &str, at: Timestamp) -> Result<()> {
        let _writing = self.writer.lock().await;
        sqlx::query("INSERT INTO suppressions (address, source, at) VALUES (?, ?, ?) ON CONFLICT (address) DO NOTHING")
            .bind(address.to_ascii_lowercase())
            .bind(source)
            .bind(micros(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn is_suppressed(&self, address: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM suppressions WHERE address = ?")
            .bind(address.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn reserve_send(
        &self,
        id: &str,
        address: &str,
        since: Timestamp,
        max: i64,
        at: Timestamp,
    ) -> Result<bool> {
        // One writer at a time: the count and the reservation cannot interleave.
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let address = address.to_ascii_lowercase();
        let counted: i64 = sqlx::query(
            "SELECT COUNT(*) FROM sends WHERE address = ? AND at > ? AND outbox_id IS NOT ?",
        )
        .bind(&address)
        .bind(micros(since))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        if counted >= max {
            // Ends the transaction (and its lock) now, not when the
            // connection is next used.
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO sends (address, at, outbox_id) VALUES (?, ?, ?) ON CONFLICT (outbox_id) DO NOTHING")
            .bind(&address)
            .bind(micros(at))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn sends_since(&self, address: &str, since: Timestamp) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM sends WHERE address = ? AND at > ?")
            .bind(address.to_ascii_lowercase())
            .bind(micros(since))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    async fn maintain(&self, now: Timestamp, before: Timestamp) -> Result<Maintained> {
        // One process per SQLite file: the write lock is the maintenance lock.
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rescued = sqlx::query(
            "UPDATE outbox SET state = 'pending', lease_until = NULL, updated = ?1
             WHERE state = 'sending' AND lease_until <= ?1",
        )
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // The same bounded batch is counted, then deleted, in one transaction.
        let done = "SELECT id FROM outbox WHERE state IN ('sent', 'dead', 'suppressed', 'missed') AND updated < ?1 ORDER BY updated, id LIMIT ?2";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO outbox_daily (day, kind, state, count)
             SELECT updated / 86400000000, kind, state, COUNT(*) FROM outbox WHERE id IN ({done})
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
             ON CONFLICT (day, kind, state) DO UPDATE SET count = count + excluded.count"
        )))
        .bind(micros(before))
        .bind(COMPACT_BATCH)
        .execute(&mut *tx)
        .await?;
        let outbox = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM outbox WHERE id IN ({done})"
        )))
        .bind(micros(before))
        .bind(COMPACT_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let applied = "SELECT seq FROM events WHERE applied <> 0 AND received < ?1 ORDER BY received, seq LIMIT ?2";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO events_daily (day, type, count)
             SELECT at / 86400000000, type, COUNT(*) FROM events WHERE seq IN ({applied})
             GROUP BY 1, 2 ORDER BY 1, 2
             ON CONFLICT (day, type) DO UPDATE SET count = count + excluded.count"
        )))
        .bind(micros(before))
        .bind(COMPACT_BATCH)
        .execute(&mut *tx)
        .await?;
        let events = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM events WHERE seq IN ({applied})"
        )))
        .bind(micros(before))
        .bind(COMPACT_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let sends = sqlx::query(
            "DELETE FROM sends WHERE rowid IN (SELECT rowid FROM sends WHERE at < ? LIMIT ?)",
        )
        .bind(micros(before))
        .bind(COMPACT_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let traces = sqlx::query(
            "DELETE FROM trace WHERE seq IN (SELECT seq FROM trace WHERE at < ? ORDER BY seq LIMIT ?)",
        )
        .bind(micros(before))
        .bind(COMPACT_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        let full = COMPACT_BATCH as u64;
        Ok(Maintained {
            ran: true,
            rescued: rescued as usize,
            outbox_compacted: outbox as usize,
            events_compacted: events as usize,
            sends_pruned: sends as usize,
            traces_pruned: traces as usize,
            more: outbox >= full || events >= full || sends >= full || traces >= full,
        })
    }

    async fn daily_counts(&self) -> Result<Vec<DayCount>> {
        let rows = sqlx::query(
            "SELECT 'outbox' AS what, day, kind || '/' || state AS name, count FROM outbox_daily
             UNION ALL SELECT 'events', day, type, count FROM events_daily
             ORDER BY what, day, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| super::day_count(r.get("what"), r.get("day"), r.get("name"), r.get("count")))
            .collect()
    }

    async fn ingest_at_cursor(
        &self,
        events: &[Event],
        received: Timestamp,
        source: &str,
        cursor: &Value,
    ) -> Result<Ingested> {
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let out = ingest_in(&mut tx, events, received).await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(format!("cursor:{source}"))
            .bind(cursor.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn durable(&self) -> Result<()> {
        // A FULL commit syncs the WAL, and with it every frame before it.
        let _writing = self.writer.lock().await;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('synced', '1') ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn missing_accounts(&self, ids: &[&str]) -> Result<Vec<String>> {
        let list = serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT DISTINCT j.value FROM json_each(?) j WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = j.value)",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn account_ids(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM accounts WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn disable_endpoint(&self, name: &str, reason: &str, at: Timestamp) -> Result<()> {
        let _writing = self.writer.lock().await;
        sqlx::query("INSERT INTO disabled_endpoints (name, reason, at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(reason)
            .bind(micros(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn enable_endpoint(&self, name: &str) -> Result<bool> {
        let _writing = self.writer.lock().await;
        let done = sqlx::query("DELETE FROM disabled_endpoints WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        let rows = sqlx::query("SELECT name, reason, at FROM disabled_endpoints ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode::disabled_endpoint).collect()
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats> {
        let mut st = Stats::default();
        for r in sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            st.count(&r.get::<String, _>(0), r.get(1));
        }
        let r = sqlx::query("SELECT MIN(next_attempt) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        st.oldest_pending = r.get::<Option<i64>, _>(0).map(instant).transpose()?;
        let r = sqlx::query(
            "SELECT COUNT(*), COUNT(CASE WHEN next_due <= ? THEN 1 END), MIN(next_due) FROM accounts",
        )
        .bind(micros(now))
        .fetch_one(&self.pool)
        .await?;
        st.accounts = r.get(0);
        st.due_accounts = r.get(1);
        st.next_due = r.get::<Option<i64>, _>(2).map(instant).transpose()?;
        let r = sqlx::query("SELECT COUNT(*) FROM events WHERE applied = 0")
            .fetch_one(&self.pool)
            .await?;
        st.events_pending = r.get(0);
        Ok(st)
    }

    async fn list_state(&self, state: OutboxState, limit: i64) -> Result<Vec<Listed>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} WHERE state = ? ORDER BY updated DESC, id LIMIT ?",
            decode::LISTED
        )))
        .bind(state.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode::listed).collect()
    }

    async fn account_outbox(&self, account: &str, limit: i64) -> Result<Vec<Listed>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} WHERE account = ? ORDER BY at, key LIMIT ?",
            decode::LISTED
        )))
        .bind(account)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode::listed).collect()
    }

    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<bool> {
        let _writing = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt = ?, last_error = NULL, updated = ? WHERE id = ? AND state = 'dead'",
        )
        .bind(micros(now))
        .bind(micros(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn trace(&self, account: &str, limit: i64) -> Result<Vec<TraceEntry>> {
        let rows = sqlx::query(
            "SELECT at, kind, detail FROM (SELECT seq, at, kind, detail FROM trace WHERE account = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
        )
        .bind(account)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode::trace_entry).collect()
    }
}

/// Events in one statement: one round trip to SQLite's thread, however
/// many events (a statement per event was most of the cost of a batch).
async fn ingest_in(
    c: &mut SqliteConnection,
    events: &[Event],
    received: Timestamp,
) -> Result<Ingested> {
    if events.is_empty() {
        return Ok(Ingested {
            accepted: 0,
            duplicates: 0,
        });
    }
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!([
                e.id,
                e.account,
                e.kind,
                micros(e.at.unwrap_or(received)),
                e.data
            ])
        })
        .collect();
    // Array order is arrival order: `seq` keeps it.
    let inserted = sqlx::query(
        "INSERT INTO events (id, account, type, at, received, data)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]'), ?2, json_extract(value, '$[4]')
         FROM json_each(?1) WHERE true ORDER BY key
         ON CONFLICT (id) DO NOTHING RETURNING seq",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(micros(received))
    .fetch_all(&mut *c)
    .await?
    .len();
    Ok(Ingested {
        accepted: inserted,
        duplicates: events.len() - inserted,
    })
}

async fn step_in(c: &mut SqliteConnection, step: &Step, now: i64) -> Result<()> {
    let id = step.state.id().to_string();
    let state =
        serde_json::to_string(&step.state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let next_due = step.next_due.map(micros);
    // The events first: one another writer applied makes this step stale
    // whatever the account's version says.
    for seq in &step.applied {
        let marked = sqlx::query("UPDATE events SET applied = 1 WHERE seq = ? AND applied = 0")
            .bind(seq)
            .execute(&mut *c)
            .await?
            .rows_affected();
        if marked != 1 {
            return Err(StoreError::AlreadyApplied(id));
        }
    }
    let written = match step.expected_version {
        Some(v) => sqlx::query("UPDATE accounts SET state = ?, version = version + 1, next_due = ? WHERE id = ? AND version = ?")
            .bind(&state)
            .bind(next_due)
            .bind(&id)
            .bind(v)
            .execute(&mut *c)
            .await?
            .rows_affected(),
        None => sqlx::query("INSERT INTO accounts (id, state, version, next_due) VALUES (?, ?, 1, ?) ON CONFLICT (id) DO NOTHING")
            .bind(&id)
            .bind(&state)
            .bind(next_due)
            .execute(&mut *c)
            .await?
            .rows_affected(),
    };
    if written != 1 {
        return Err(StoreError::Conflict(id));
    }
    // Outbox rows and trace entries: a statement each (the applied events
    // were marked first, above).
    if !step.outbox.is_empty() {
        let rows: Vec<serde_json::Value> = step
            .outbox
            .iter()
            .map(|o| {
                serde_json::json!([
                    uuid::Uuid::now_v7().to_string(),
                    o.key,
                    o.account,
                    o.kind,
                    o.payload,
                    micros(o.at),
                    if o.failure.is_some() {
                        "dead"
                    } else {
                        "pending"
                    },
                    o.failure
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO outbox (id, key, account, kind, payload, at, state, next_attempt, last_error, updated)
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                    json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                    json_extract(value, '$[6]'), json_extract(value, '$[5]'), json_extract(value, '$[7]'), ?2
             FROM json_each(?1) WHERE true ORDER BY key
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    if !step.trace.is_empty() {
        let rows: Vec<serde_json::Value> = step
            .trace
            .iter()
            .map(|t| serde_json::json!([micros(t.at), t.kind, t.detail]))
            .collect();
        sqlx::query(
            "INSERT INTO trace (account, at, kind, detail)
             SELECT ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
             FROM json_each(?1) ORDER BY key",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(&id)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
