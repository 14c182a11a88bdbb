//! The SQLite store: one file, WAL journal. A write acknowledged to someone
//! outside commits with `synchronous=FULL`, so it survives power loss; the
//! daemon's own progress commits with NORMAL (see `Durability`).
//!
//! SQLite is called in place through rusqlite, on two connections: one
//! writer (every write, one transaction at a time, behind an async mutex)
//! and one reader (WAL readers never wait for the writer). A call is a few
//! microseconds of C; handing each statement to a connection thread and
//! back, as an async driver does, cost more than the statement itself and
//! was most of the daemon's CPU under load. Only a FULL commit, which
//! waits for the disk, leaves the async worker thread (`block_in_place`).

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::Mutex;

use super::rows::{self as decode, instant, micros};
use super::{
    Applied, Claimed, DayCount, DisabledEndpoint, Ingested, Listed, Loaded, Maintained,
    OutboxState, Outcome, Ready, Result, Sorting, Stats, Step, Store, StoreError, StoredEvent,
    TraceEntry,
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
    // Indexes that hold only the rows their queries look for (as the
    // PostgreSQL schema's): applying an event or sending a row takes it
    // out of an index instead of moving it within one. Queries on them
    // repeat the index's condition, which is how SQLite knows to use it.
    r#"
DROP INDEX events_pending;
CREATE INDEX events_pending ON events (at, seq) WHERE applied = 0;
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (state, next_attempt) WHERE state IN ('pending', 'sending');
DROP INDEX outbox_by_state;
CREATE INDEX outbox_by_state ON outbox (state, updated) WHERE state IN ('dead', 'suppressed', 'missed');
"#,
    // Whether an account has an event waiting, asked before its new events
    // are applied in the commit that stores them (`ingest_applying`).
    r#"
CREATE INDEX events_pending_by_account ON events (account, at) WHERE applied = 0;
"#,
    // The claim and the worker's next wake-up read these in index order and
    // stop at the first rows they need: a backlog of due rows no longer
    // costs a sort of all of them on every claim. Rows claimed as they are
    // created (`sending`) never enter the index of pending rows.
    r#"
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (next_attempt, key) WHERE state = 'pending';
CREATE INDEX outbox_leased ON outbox (lease_until) WHERE state = 'sending';
"#,
];

/// Rows compacted per maintenance transaction.
const COMPACT_BATCH: i64 = 10_000;

/// How long a connection waits for another process's lock (the ops
/// commands, a second daemon by mistake) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a write transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Events, unsubscribes, cursors, operator actions: anything
    /// acknowledged outside. On disk before the call returns.
    Full,
    /// The daemon's own progress (engine steps, claims, claims' ends).
    /// WAL frames are written in commit order, so the next FULL commit
    /// makes them durable too; a power loss (never a process crash) can
    /// only undo the last few, which are recomputed (steps: the same
    /// outbox keys) or retried with the same Message-ID and webhook-id
    /// (sends). An fsync per internal commit bounded throughput.
    Normal,
}

/// The write connection and the `synchronous` level it is set to.
struct Writer {
    conn: Connection,
    durability: Durability,
}

impl Writer {
    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: all of it or, on any
    /// error, none of it.
    fn write<T>(
        &mut self,
        durability: Durability,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        if self.durability != durability {
            // Switched between transactions, often: a cached statement.
            self.conn
                .prepare_cached(match durability {
                    Durability::Full => "PRAGMA synchronous = FULL",
                    Durability::Normal => "PRAGMA synchronous = NORMAL",
                })?
                .execute([])?;
            self.durability = durability;
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let done = f(&self.conn).and_then(|v| {
            let conn = &self.conn;
            let commit = || conn.prepare_cached("COMMIT")?.execute([]);
            match durability {
                Durability::Full => off_the_runtime(commit)?,
                Durability::Normal => commit()?,
            };
            Ok(v)
        });
        if done.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        done
    }
}

/// Runs `f`, which waits for the disk, without holding up the other tasks
/// of this async worker thread (they move to another one meanwhile). On a
/// single-threaded runtime (tests) it simply runs.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

pub struct SqliteStore {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
}

/// The file of a `sqlite:PATH` (or `sqlite://PATH`) store URL.
fn path_of(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| StoreError::Connect(format!("`{url}` is not a `sqlite:PATH` store")))?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return Err(StoreError::Connect(format!("`{url}` names no file")));
    }
    Ok(path)
}

fn connect(path: &str, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Connect(format!("cannot open the SQLite file `{path}`: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Connect(format!(
            "`{path}` cannot use a WAL journal (it stays `{mode}`)"
        )));
    }
    // Statement journals and sorts in memory, not in temporary files.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY",
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite:PATH`, as in `touchpilot.yaml`).
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let path = path_of(url)?;
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut writer = Writer {
            conn: connect(path, rw)?,
            durability: Durability::Full,
        };
        migrate(&mut writer)?;
        let reader = connect(path, rw)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    /// A pragma's value, for tests of the durability settings.
    pub async fn pragma(&self, name: &'static str) -> Result<String> {
        let sql = match name {
            "synchronous" => "PRAGMA synchronous",
            "journal_mode" => "PRAGMA journal_mode",
            _ => return Err(StoreError::Corrupt(format!("unknown pragma {name}"))),
        };
        let conn = self.reader.lock().await;
        Ok(conn.query_row(sql, [], |r| {
            let v: rusqlite::types::Value = r.get(0)?;
            Ok(match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
        })?)
    }

    async fn write<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.writer.lock().await.write(durability, f)
    }

    async fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&*self.reader.lock().await)
    }
}

fn migrate(w: &mut Writer) -> Result<()> {
    w.write(Durability::Full, |c| {
        c.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
        let current: i64 = c
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|v| v.parse().unwrap_or(0))
            .unwrap_or(0);
        if current as usize > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {current} is newer than this touchpilot ({}); upgrade touchpilot",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[current as usize..] {
            c.execute_batch(sql)?;
        }
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [MIGRATIONS.len().to_string()],
        )?;
        Ok(())
    })
}

/// Rows of `sql` with `params`, each read by `f`.
fn rows<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn set_meta(c: &Connection, key: &str, value: &str) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

impl Store for SqliteStore {
    async fn ingest(&self, events: &[Event], received: Timestamp) -> Result<Ingested> {
        self.write(Durability::Full, |c| ingest_in(c, events, received))
            .await
    }

    async fn ingest_many(
        &self,
        batches: &[Vec<Event>],
        received: Timestamp,
    ) -> Result<Vec<Ingested>> {
        self.write(Durability::Full, |c| {
            batches.iter().map(|b| ingest_in(c, b, received)).collect()
        })
        .await
    }

    async fn ingest_applying<F>(
        &self,
        batches: &[Vec<Event>],
        received: Timestamp,
        lease: Option<SignedDuration>,
        plan: F,
    ) -> Result<Applied>
    where
        F: for<'b> FnOnce(Vec<Ready<'b>>) -> Vec<Step> + Send,
    {
        let now = micros(received);
        let until = lease.map(|l| decode::lease_end(received, l));
        self.write(Durability::Full, |c| {
            let (ready, mut applied) = ingest_ready_in(c, batches, now)?.finish();
            let mut claimed = Vec::new();
            if !ready.is_empty() {
                for step in plan(ready) {
                    claimed.extend(step_in(c, &step, now, until)?);
                }
            }
            applied.claimed = decode::in_due_order(claimed);
            Ok(applied)
        })
        .await
    }

    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>> {
        self.read(|c| {
            rows(
                c,
                "SELECT seq, id, account, type, at, data FROM events WHERE applied = 0 ORDER BY at, seq LIMIT ?1",
                [limit],
                |r| decode::stored_event(r),
            )
        })
        .await
    }

    async fn load_account(&self, id: &str) -> Result<Option<Loaded>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT state, version FROM accounts WHERE id = ?1")?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(r) => decode::loaded(r, id).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn commit_step(&self, step: &Step) -> Result<()> {
        self.commit_steps(std::slice::from_ref(step)).await
    }

    async fn commit_steps(&self, steps: &[Step]) -> Result<()> {
        let now = micros(Timestamp::now());
        self.write(Durability::Normal, |c| {
            steps
                .iter()
                .try_for_each(|step| step_in(c, step, now, None).map(drop))
        })
        .await
    }

    async fn commit_steps_claiming(
        &self,
        steps: &[Step],
        now: Timestamp,
        lease: SignedDuration,
    ) -> Result<Vec<Claimed>> {
        let until = decode::lease_end(now, lease);
        let now = micros(now);
        let claimed = self
            .write(Durability::Normal, |c| {
                let mut claimed = Vec::new();
                for step in steps {
                    claimed.extend(step_in(c, step, now, Some(until))?);
                }
                Ok(claimed)
            })
            .await?;
        Ok(decode::in_due_order(claimed))
    }

    async fn due_accounts(&self, now: Timestamp, limit: i64) -> Result<Vec<String>> {
        self.read(|c| {
            rows(
                c,
                "SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= ?1 ORDER BY next_due LIMIT ?2",
                [micros(now), limit],
                |r| Ok(r.get(0)?),
            )
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>> {
        self.read(|c| {
            let min: Option<i64> = c
                .prepare_cached("SELECT MIN(next_due) FROM accounts")?
                .query_row([], |r| r.get(0))?;
            min.map(instant).transpose()
        })
        .await
    }

    async fn claim(
        &self,
        kinds: &[&str],
        now: Timestamp,
        lease: SignedDuration,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let kinds = json_text(&kinds)?;
        let until = decode::lease_end(now, lease);
        let claimed = self
            .write(Durability::Normal, |c| {
                rows(
                    c,
                    // The first due rows of each index, merged: pending rows
                    // in `outbox_pending` order, expired leases (few: the
                    // rows in flight when a worker died) from `outbox_leased`.
                    "UPDATE outbox SET state = 'sending', lease_until = ?1, token = token + 1, attempts = attempts + 1, updated = ?2
                     WHERE id IN (
                         SELECT id FROM (
                             SELECT id, next_attempt, key FROM (
                                 SELECT id, next_attempt, key FROM outbox
                                 WHERE state = 'pending' AND next_attempt <= ?2
                                   AND kind IN (SELECT value FROM json_each(?4))
                                 ORDER BY next_attempt, key LIMIT ?3)
                             UNION ALL
                             SELECT id, next_attempt, key FROM (
                                 SELECT id, next_attempt, key FROM outbox
                                 WHERE state = 'sending' AND lease_until <= ?2
                                   AND kind IN (SELECT value FROM json_each(?4))
                                 ORDER BY next_attempt, key LIMIT ?3))
                         ORDER BY next_attempt, key LIMIT ?3)
                     RETURNING id, token, key, account, kind, payload, attempts, next_attempt",
                    params![until, micros(now), limit, kinds],
                    |r| decode::claimed_row(r),
                )
            })
            .await?;
        Ok(decode::in_due_order(claimed))
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
        let now = micros(now);
        self.write(Durability::Normal, |c| {
            // No `RETURNING` here: SQLite builds an ephemeral table (with a
            // pager of its own) for each statement that returns rows, which
            // cost more than the update.
            let mut end = c.prepare_cached(
                "UPDATE outbox SET state = ?3, next_attempt = COALESCE(?4, next_attempt),
                     last_error = COALESCE(?5, last_error), attempts = attempts - ?6,
                     lease_until = NULL, updated = ?7
                 WHERE id = ?1 AND token = ?2 AND state = 'sending'",
            )?;
            // A sent email counts toward its address's cap, in the same
            // commit (already, when its send was reserved: one row per
            // outbox id); any other end gives a reservation back.
            let mut count = c.prepare_cached(
                "INSERT INTO sends (address, at, outbox_id)
                 SELECT lower(json_extract(payload, '$.to')), ?2, id FROM outbox
                 WHERE id = ?1 AND kind = 'email' AND json_extract(payload, '$.to') IS NOT NULL
                 ON CONFLICT (outbox_id) DO NOTHING",
            )?;
            let mut give_back = c.prepare_cached("DELETE FROM sends WHERE outbox_id = ?1")?;
            let mut ended = Vec::with_capacity(done.len());
            for (id, token, outcome) in done {
                let (state, next, error) = super::finish_columns(outcome);
                let uncount = i64::from(*outcome == Outcome::Released);
                let changed = end.execute(params![
                    id,
                    token,
                    state.as_str(),
                    next.map(micros),
                    error,
                    uncount,
                    now
                ])?;
                ended.push(changed == 1);
                if changed == 1 {
                    if *outcome == Outcome::Sent {
                        count.execute(params![id, now])?;
                    } else {
                        give_back.execute([id])?;
                    }
                }
            }
            Ok(ended)
        })
        .await
    }

    async fn outbox_state(&self, key: &str) -> Result<Option<OutboxState>> {
        self.read(|c| {
            let state: Option<String> = c
                .prepare_cached("SELECT state FROM outbox WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            state
                .map(|s| {
                    OutboxState::parse(&s)
                        .ok_or_else(|| StoreError::Corrupt(format!("outbox state `{s}`")))
                })
                .transpose()
        })
        .await
    }

    async fn list_outbox(&self, limit: i64) -> Result<Vec<super::OutboxRow>> {
        self.read(|c| {
            rows(
                c,
                "SELECT key, account, kind, payload, at, state, attempts, last_error FROM outbox ORDER BY at, key LIMIT ?1",
                [limit],
                |r| decode::outbox_row(r),
            )
        })
        .await
    }

    async fn set_aside(&self, seqs: &[i64]) -> Result<()> {
        self.write(Durability::Full, |c| {
            let mut stmt =
                c.prepare_cached("UPDATE events SET applied = 2 WHERE seq = ?1 AND applied = 0")?;
            for seq in seqs {
                stmt.execute([seq])?;
            }
            Ok(())
        })
        .await
    }

    async fn next_outbox_at(&self, kinds: &[&str]) -> Result<Option<Timestamp>> {
        let kinds = json_text(&kinds)?;
        self.read(|c| {
            let min: Option<i64> = c
                .prepare_cached(
                    "SELECT MIN(t) FROM (
                         SELECT (SELECT next_attempt FROM outbox
                                 WHERE state = 'pending' AND kind IN (SELECT value FROM json_each(?1))
                                 ORDER BY next_attempt, key LIMIT 1) AS t
                         UNION ALL
                         SELECT (SELECT lease_until FROM outbox
                                 WHERE state = 'sending' AND kind IN (SELECT value FROM json_each(?1))
                                 ORDER BY lease_until LIMIT 1))",
                )?
                .query_row([kinds], |r| r.get(0))?;
            min.map(instant).transpose()
        })
        .await
    }

    async fn secret(&self) -> Result<Vec<u8>> {
        let fresh = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.write(Durability::Full, |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('secret', ?1) ON CONFLICT (key) DO NOTHING",
                [&fresh],
            )?;
            let secret: String =
                c.query_row("SELECT value FROM meta WHERE key = 'secret'", [], |r| {
                    r.get(0)
                })?;
            Ok(secret.into_bytes())
        })
        .await
    }

    // Cursors live in `meta` under `cursor:NAME`: one small row per
    // source, no table of their own.
    async fn cursor(&self, source: &str) -> Result<Option<Value>> {
        self.read(|c| {
            let text: Option<String> = c
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([format!("cursor:{source}")], |r| r.get(0))
                .optional()?;
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(format!("cursor of `{source}`: {e}")))
            })
            .transpose()
        })
        .await
    }

    async fn set_cursor(&self, source: &str, cursor: &Value) -> Result<()> {
        self.write(Durability::Full, |c| {
            set_meta(c, &format!("cursor:{source}"), &cursor.to_string())
        })
        .await
    }

    async fn suppress(&self, address: &str, source: &str, at: Timestamp) -> Result<()> {
        self.write(Durability::Full, |c| {
            c.prepare_cached("INSERT INTO suppressions (address, source, at) VALUES (?1, ?2, ?3) ON CONFLICT (address) DO NOTHING")?
                .execute(params![address.to_ascii_lowercase(), source, micros(at)])?;
            Ok(())
        })
        .await
    }

    async fn is_suppressed(&self, address: &str) -> Result<bool> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM suppressions WHERE address = ?1")?
                    .exists([address.to_ascii_lowercase()])?,
            )
        })
        .await
    }

    async fn suppressed_among(
        &self,
        addresses: &[&str],
    ) -> Result<std::collections::HashSet<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM suppressions WHERE address = ?1")?;
            let mut out = std::collections::HashSet::new();
            for a in addresses {
                let a = a.to_ascii_lowercase();
                if !out.contains(&a) && stmt.exists([&a])? {
                    out.insert(a);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn reserve_send(
        &self,
        id: &str,
        address: &str,
        since: Timestamp,
        max: i64,
        at: Timestamp,
    ) -> Result<bool> {
        let address = address.to_ascii_lowercase();
        // One write transaction: the count and the reservation cannot
        // interleave with another's.
        self.write(Durability::Normal, |c| {
            let counted: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM sends WHERE address = ?1 AND at > ?2 AND outbox_id IS NOT ?3",
                )?
                .query_row(params![address, micros(since), id], |r| r.get(0))?;
            if counted >= max {
                return Ok(false);
            }
            c.prepare_cached("INSERT INTO sends (address, at, outbox_id) VALUES (?1, ?2, ?3) ON CONFLICT (outbox_id) DO NOTHING")?
                .execute(params![address, micros(at), id])?;
            Ok(true)
        })
        .await
    }

    async fn sends_since(&self, address: &str, since: Timestamp) -> Result<i64> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT COUNT(*) FROM sends WHERE address = ?1 AND at > ?2")?
                    .query_row(params![address.to_ascii_lowercase(), micros(since)], |r| {
                        r.get(0)
                    })?,
            )
        })
        .await
    }

    async fn maintain(&self, now: Timestamp, before: Timestamp) -> Result<Maintained> {
        // One process per SQLite file: the write lock is the maintenance lock.
        let (now, before) = (micros(now), micros(before));
        self.write(Durability::Full, |c| {
            let rescued = c.execute(
                "UPDATE outbox SET state = 'pending', lease_until = NULL, updated = ?1
                 WHERE state = 'sending' AND lease_until <= ?1",
                [now],
            )?;
            // The same bounded batch is counted, then deleted, in one transaction.
            let done = "SELECT id FROM outbox WHERE state IN ('sent', 'dead', 'suppressed', 'missed') AND updated < ?1 ORDER BY updated, id LIMIT ?2";
            c.execute(
                &format!(
                    "INSERT INTO outbox_daily (day, kind, state, count)
                     SELECT updated / 86400000000, kind, state, COUNT(*) FROM outbox WHERE id IN ({done})
                     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                     ON CONFLICT (day, kind, state) DO UPDATE SET count = count + excluded.count"
                ),
                [before, COMPACT_BATCH],
            )?;
            let outbox = c.execute(
                &format!("DELETE FROM outbox WHERE id IN ({done})"),
                [before, COMPACT_BATCH],
            )?;
            let applied = "SELECT seq FROM events WHERE applied <> 0 AND received < ?1 ORDER BY received, seq LIMIT ?2";
            c.execute(
                &format!(
                    "INSERT INTO events_daily (day, type, count)
                     SELECT at / 86400000000, type, COUNT(*) FROM events WHERE seq IN ({applied})
                     GROUP BY 1, 2 ORDER BY 1, 2
                     ON CONFLICT (day, type) DO UPDATE SET count = count + excluded.count"
                ),
                [before, COMPACT_BATCH],
            )?;
            let events = c.execute(
                &format!("DELETE FROM events WHERE seq IN ({applied})"),
                [before, COMPACT_BATCH],
            )?;
            let sends = c.execute(
                "DELETE FROM sends WHERE rowid IN (SELECT rowid FROM sends WHERE at < ?1 LIMIT ?2)",
                [before, COMPACT_BATCH],
            )?;
            let traces = c.execute(
                "DELETE FROM trace WHERE seq IN (SELECT seq FROM trace WHERE at < ?1 ORDER BY seq LIMIT ?2)",
                [before, COMPACT_BATCH],
            )?;
            let full = COMPACT_BATCH as usize;
            Ok(Maintained {
                ran: true,
                rescued,
                outbox_compacted: outbox,
                events_compacted: events,
                sends_pruned: sends,
                traces_pruned: traces,
                more: outbox >= full || events >= full || sends >= full || traces >= full,
            })
        })
        .await
    }

    async fn daily_counts(&self) -> Result<Vec<DayCount>> {
        self.read(|c| {
            rows(
                c,
                "SELECT 'outbox' AS what, day, kind || '/' || state AS name, count FROM outbox_daily
                 UNION ALL SELECT 'events', day, type, count FROM events_daily
                 ORDER BY what, day, name",
                [],
                |r| super::day_count(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
            )
        })
        .await
    }

    async fn ingest_at_cursor(
        &self,
        events: &[Event],
        received: Timestamp,
        source: &str,
        cursor: &Value,
    ) -> Result<Ingested> {
        self.write(Durability::Full, |c| {
            let out = ingest_in(c, events, received)?;
            set_meta(c, &format!("cursor:{source}"), &cursor.to_string())?;
            Ok(out)
        })
        .await
    }

    async fn durable(&self) -> Result<()> {
        // A FULL commit syncs the WAL, and with it every frame before it.
        self.write(Durability::Full, |c| set_meta(c, "synced", "1"))
            .await
    }

    async fn missing_accounts(&self, ids: &[&str]) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?;
            let mut missing: Vec<String> = Vec::new();
            for id in ids {
                if !missing.iter().any(|m| m == id) && !stmt.exists([id])? {
                    missing.push(id.to_string());
                }
            }
            Ok(missing)
        })
        .await
    }

    async fn account_ids(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        self.read(|c| {
            rows(
                c,
                "SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2",
                params![after.unwrap_or(""), limit],
                |r| Ok(r.get(0)?),
            )
        })
        .await
    }

    async fn disable_endpoint(&self, name: &str, reason: &str, at: Timestamp) -> Result<()> {
        self.write(Durability::Full, |c| {
            c.execute(
                "INSERT INTO disabled_endpoints (name, reason, at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![name, reason, micros(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn enable_endpoint(&self, name: &str) -> Result<bool> {
        self.write(Durability::Full, |c| {
            Ok(c.execute("DELETE FROM disabled_endpoints WHERE name = ?1", [name])? == 1)
        })
        .await
    }

    async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        self.read(|c| {
            rows(
                c,
                "SELECT name, reason, at FROM disabled_endpoints ORDER BY name",
                [],
                |r| decode::disabled_endpoint(r),
            )
        })
        .await
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats> {
        // Scraped every few seconds, on the one reader the worker and the
        // engine share: every count reads an index (a partial one where it
        // can), never the table, whose rows carry their payloads. One read
        // transaction, so that the counts agree with each other.
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let count = |sql: &str| -> Result<i64> { Ok(tx.query_row(sql, [], |r| r.get(0))?) };
            let mut st = Stats::default();
            for (state, n) in rows(
                &tx,
                "SELECT state, COUNT(*) FROM outbox WHERE state IN ('dead', 'suppressed', 'missed') GROUP BY state",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )? {
                st.count(&state, n);
            }
            st.pending = count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")?;
            st.sending = count("SELECT COUNT(*) FROM outbox WHERE state = 'sending'")?;
            let done = count(
                "SELECT COUNT(*) FROM outbox WHERE state IN ('sent', 'dead', 'suppressed', 'missed')",
            )?;
            st.sent = done - st.dead - st.suppressed - st.missed;
            let oldest: Option<i64> = tx.query_row(
                "SELECT MIN(next_attempt) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            st.oldest_pending = oldest.map(instant).transpose()?;
            st.accounts = count("SELECT COUNT(*) FROM accounts")?;
            st.due_accounts = tx.query_row(
                "SELECT COUNT(*) FROM accounts WHERE next_due <= ?1",
                [micros(now)],
                |r| r.get(0),
            )?;
            let next: Option<i64> = tx.query_row(
                "SELECT MIN(next_due) FROM accounts WHERE next_due IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            st.next_due = next.map(instant).transpose()?;
            st.events_pending = count("SELECT COUNT(*) FROM events WHERE applied = 0")?;
            drop(tx);
            Ok(st)
        })
        .await
    }

    async fn list_state(&self, state: OutboxState, limit: i64) -> Result<Vec<Listed>> {
        self.read(|c| {
            rows(
                c,
                &format!(
                    "{} WHERE state = ?1 {} ORDER BY updated DESC, id LIMIT ?2",
                    decode::LISTED,
                    // The index holds the states that stay; `sent` rows
                    // are only ever counted.
                    match state {
                        OutboxState::Dead | OutboxState::Suppressed | OutboxState::Missed =>
                            "AND state IN ('dead', 'suppressed', 'missed')",
                        _ => "",
                    }
                ),
                params![state.as_str(), limit],
                |r| decode::listed(r),
            )
        })
        .await
    }

    async fn account_outbox(&self, account: &str, limit: i64) -> Result<Vec<Listed>> {
        self.read(|c| {
            rows(
                c,
                &format!(
                    "{} WHERE account = ?1 ORDER BY at, key LIMIT ?2",
                    decode::LISTED
                ),
                params![account, limit],
                |r| decode::listed(r),
            )
        })
        .await
    }

    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<bool> {
        self.write(Durability::Full, |c| {
            Ok(c.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt = ?1, last_error = NULL, updated = ?1 WHERE id = ?2 AND state = 'dead'",
                params![micros(now), id],
            )? == 1)
        })
        .await
    }

    async fn trace(&self, account: &str, limit: i64) -> Result<Vec<TraceEntry>> {
        self.read(|c| {
            rows(
                c,
                "SELECT at, kind, detail FROM (SELECT seq, at, kind, detail FROM trace WHERE account = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
                params![account, limit],
                |r| decode::trace_entry(r),
            )
        })
        .await
    }
}

/// Events in arrival order (`seq` keeps it); one with an id accepted
/// before is a duplicate.
fn ingest_in(c: &Connection, events: &[Event], received: Timestamp) -> Result<Ingested> {
    let received = micros(received);
    let mut insert = c.prepare_cached(INSERT_EVENT)?;
    let mut accepted = 0;
    for e in events {
        accepted += insert_event(&mut insert, e, received, false)?;
    }
    Ok(Ingested {
        accepted,
        duplicates: events.len() - accepted,
    })
}

const INSERT_EVENT: &str = "INSERT INTO events (id, account, type, at, received, data, applied) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (id) DO NOTHING";

/// One event received at `received` (its `at` when it has none), stored
/// applied or waiting; 0 for a duplicate.
fn insert_event(
    insert: &mut rusqlite::CachedStatement<'_>,
    e: &Event,
    received: i64,
    applied: bool,
) -> Result<usize> {
    Ok(insert.execute(params![
        e.id,
        e.account,
        e.kind,
        e.at.map(micros).unwrap_or(received),
        received,
        json_text(&e.data)?,
        i64::from(applied),
    ])?)
}

/// Stores a group's events (as `ingest_in`, batch by batch) and sorts
/// out those that can be applied in this same transaction: due at `now`,
/// of a stored account with no event waiting before them. Those are
/// stored applied and listed per account, with the account's state; the
/// others wait.
fn ingest_ready_in<'a>(c: &Connection, batches: &'a [Vec<Event>], now: i64) -> Result<Sorting<'a>> {
    let mut sorting = Sorting::new(Vec::new(), batches.len());
    // Per account of the group: its place in `ready`, or none when its
    // events must wait.
    let mut place: HashMap<&'a str, Option<usize>> = HashMap::new();
    let mut load = c.prepare_cached("SELECT state, version FROM accounts WHERE id = ?1")?;
    let mut waiting = c.prepare_cached(
        "SELECT 1 FROM events WHERE account = ?1 AND applied = 0 AND at <= ?2 LIMIT 1",
    )?;
    let mut insert = c.prepare_cached(INSERT_EVENT)?;
    for batch in batches {
        for e in batch {
            let at = e.at.map(micros).unwrap_or(now);
            let slot = match place.get(e.account.as_str()) {
                _ if at > now => None,
                Some(slot) => *slot,
                None => {
                    let mut rows = load.query([&e.account])?;
                    let slot = match rows.next()? {
                        Some(r) if !waiting.exists(params![e.account, now])? => {
                            sorting.ready.push(Ready {
                                loaded: decode::loaded(r, &e.account)?,
                                events: Vec::new(),
                            });
                            Some(sorting.ready.len() - 1)
                        }
                        _ => None,
                    };
                    place.insert(&e.account, slot);
                    slot
                }
            };
            let stored = insert_event(&mut insert, e, now, slot.is_some())? == 1;
            let seq = stored.then(|| c.last_insert_rowid());
            sorting.event(e, instant(at)?, slot, seq);
        }
        sorting.end_batch(batch.len());
    }
    Ok(sorting)
}

/// Writes one step. With `claim_until`, its new outbox rows already due
/// at `now` are written claimed (`sending` under a lease until then, token
/// 1, first attempt) and returned with their due time.
fn step_in(
    c: &Connection,
    step: &Step,
    now: i64,
    claim_until: Option<i64>,
) -> Result<Vec<(i64, Claimed)>> {
    let id = step.state.id();
    // The events first: one another writer applied makes this step stale
    // whatever the account's version says.
    let mut mark =
        c.prepare_cached("UPDATE events SET applied = 1 WHERE seq = ?1 AND applied = 0")?;
    for seq in &step.applied {
        if mark.execute([seq])? != 1 {
            return Err(StoreError::AlreadyApplied(id.to_string()));
        }
    }
    let state = json_text(&step.state)?;
    let next_due = step.next_due.map(micros);
    let written = match step.expected_version {
        Some(v) => c
            .prepare_cached(
                "UPDATE accounts SET state = ?1, version = version + 1, next_due = ?2 WHERE id = ?3 AND version = ?4",
            )?
            .execute(params![state, next_due, id, v])?,
        None => c
            .prepare_cached(
                "INSERT INTO accounts (id, state, version, next_due) VALUES (?1, ?2, 1, ?3) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id, state, next_due])?,
    };
    if written != 1 {
        return Err(StoreError::Conflict(id.to_string()));
    }
    let mut claimed = Vec::new();
    if !step.outbox.is_empty() {
        let mut insert = c.prepare_cached(
            "INSERT INTO outbox (id, key, account, kind, payload, at, state, next_attempt, last_error, updated,
                                 lease_until, token, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6, ?8, ?9, ?10, ?11, ?11)
             ON CONFLICT (key) DO NOTHING",
        )?;
        for o in &step.outbox {
            let at = micros(o.at);
            let lease = claim_until.filter(|_| o.failure.is_none() && at <= now);
            let state = match (&o.failure, lease) {
                (Some(_), _) => "dead",
                (None, Some(_)) => "sending",
                (None, None) => "pending",
            };
            let row_id = uuid::Uuid::now_v7().to_string();
            let token = i64::from(lease.is_some());
            let inserted = insert.execute(params![
                row_id,
                o.key,
                o.account,
                o.kind,
                json_text(&o.payload)?,
                at,
                state,
                o.failure,
                now,
                lease,
                token,
            ])?;
            // A key written before (the step computed again) is not new.
            if inserted == 1 && lease.is_some() {
                claimed.push((
                    at,
                    Claimed {
                        id: row_id,
                        token,
                        key: o.key.clone(),
                        account: o.account.clone(),
                        kind: o.kind.clone(),
                        payload: o.payload.clone(),
                        attempts: 1,
                    },
                ));
            }
        }
    }
    if !step.trace.is_empty() {
        let mut insert = c.prepare_cached(
            "INSERT INTO trace (account, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for t in &step.trace {
            insert.execute(params![id, micros(t.at), t.kind, json_text(&t.detail)?])?;
        }
    }
    Ok(claimed)
}
