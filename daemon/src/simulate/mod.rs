//! The dry run: the engine on a virtual clock, over files, writing one JSON
//! line per planned action. Owns the event index (so unsorted files work
//! without loading every event), the global timeline that interleaves
//! events and timers of all accounts, and the simulated outbox that applies
//! consent and caps at each email's send time. Sends nothing.

mod output;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;

use crate::config::Config;
use crate::deliver::{self, CapLedger};
use crate::engine::{AccountState, Decision, Engine, Mode, PlannedAction};
use crate::model::event::Event;
use crate::source::jsonl::{self, LineError};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub from: Timestamp,
    pub to: Timestamp,
    pub accounts: PathBuf,
    pub events: Option<PathBuf>,
}

/// What the run noticed, for stderr.
#[derive(Debug, Default)]
pub struct Summary {
    pub accounts: usize,
    pub events: usize,
    pub actions: usize,
    pub duplicates: usize,
    pub unknown_accounts: usize,
    pub first_unknown: Vec<String>,
    /// Distinct problem messages with their count and first account.
    pub problems: BTreeMap<String, (usize, String)>,
}

impl Summary {
    /// Human-readable lines for stderr.
    pub fn report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.unknown_accounts > 0 {
            lines.push(format!(
                "warning: {} event(s) for unknown accounts skipped (first: {})",
                self.unknown_accounts,
                self.first_unknown.join(", ")
            ));
        }
        if self.duplicates > 0 {
            lines.push(format!(
                "note: {} duplicate event id(s) ignored",
                self.duplicates
            ));
        }
        for (msg, (count, account)) in self.problems.iter().take(50) {
            lines.push(format!(
                "warning: {msg} ({count} time(s), first for account {account})"
            ));
        }
        if self.problems.len() > 50 {
            lines.push(format!(
                "warning: ... and {} more distinct problems",
                self.problems.len() - 50
            ));
        }
        lines
    }
}

/// The dry run's failures: bad input, or output that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Input(#[from] LineError),
    #[error("--to ({to}) is before --from ({from})")]
    Range { from: Timestamp, to: Timestamp },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// One event's place in the file: its time, and where its line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    at: Timestamp,
    line: u32,
    offset: u64,
    len: u32,
    account: u32,
}

/// The sort key of output: at, account, moment, position, recipient, then
/// the order things happened.
type Key = (Timestamp, String, String, usize, String, u64);

/// Runs the dry run, writing JSON lines to `out`.
pub fn run(config: Arc<Config>, opts: &Options, out: &mut dyn Write) -> Result<Summary, SimError> {
    if opts.to < opts.from {
        return Err(SimError::Range {
            from: opts.from,
            to: opts.to,
        });
    }
    let public = config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let engine = Engine::new(
        config.clone(),
        Arc::new(move |addr: &str| {
            format!(
                "{public}/unsubscribe/{}",
                deliver::unsubscribe_token(b"touchpilot-dry-run", addr)
            )
        }),
    );
    let mut summary = Summary::default();

    let mut states: Vec<AccountState> = jsonl::read_accounts(&opts.accounts)?
        .into_iter()
        .map(|a| AccountState::new(a, opts.from))
        .collect();
    let index: HashMap<String, u32> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id().to_string(), i as u32))
        .collect();
    summary.accounts = states.len();

    let slots = match &opts.events {
        Some(path) => index_events(path, opts.from, &index, &mut summary)?,
        None => Vec::new(),
    };
    summary.events = slots.len();
    let file = match &opts.events {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| LineError {
            file: p.clone(),
            line: 0,
            message: e.to_string(),
        })?),
        None => None,
    };
    let read = |slot: &Slot| -> Result<Event, SimError> {
        let path = opts.events.as_deref().unwrap_or(Path::new(""));
        let mut buf = vec![0u8; slot.len as usize];
        file.as_ref()
            .expect("slots imply a file")
            .read_exact_at(&mut buf, slot.offset)
            .map_err(|e| LineError {
                file: path.to_path_buf(),
                line: slot.line as usize,
                message: format!("cannot re-read: {e}"),
            })?;
        let line = String::from_utf8_lossy(&buf);
        Ok(jsonl::parse_event(path, slot.line as usize, &line)?)
    };

    let mut sim = Sim {
        engine: &engine,
        summary: &mut summary,
        pending: BTreeMap::new(),
        seq: 0,
        ledger: CapLedger::default(),
        opts,
        written: 0,
    };
    let mut decisions = Vec::new();

    // Accounts present at the start enter silently; history before --from
    // builds state only; then everyone (re)starts at --from.
    for st in states.iter_mut() {
        engine.admit(st, opts.from, Mode::Silent, &mut decisions);
        sim.absorb(st.id(), &mut decisions);
    }
    let split = slots.partition_point(|s| s.at < opts.from);
    for slot in &slots[..split] {
        let ev = read(slot)?;
        let st = &mut states[slot.account as usize];
        engine.apply_event(st, &ev, slot.at, Mode::Silent, &mut decisions);
        sim.absorb(st.id(), &mut decisions);
    }
    let mut heap = BinaryHeap::new();
    let mut due: Vec<Option<Timestamp>> = vec![None; states.len()];
    for (i, st) in states.iter_mut().enumerate() {
        engine.restart_entry(st, opts.from);
        due[i] = engine.next_due(st);
        if let Some(t) = due[i] {
            heap.push(Reverse((t, i as u32)));
        }
    }

    let mut next_event = split;
    loop {
        // Drop heap entries that no longer match their account's due time.
        while let Some(Reverse((t, i))) = heap.peek().copied() {
            if due[i as usize] == Some(t) {
                break;
            }
            heap.pop();
        }
        let timer = heap.peek().map(|Reverse((t, i))| (*t, *i));
        let event = slots.get(next_event);
        let (t, account, is_event) = match (event, timer) {
            (Some(e), Some((tt, ti))) => {
                if e.at <= tt {
                    (e.at, e.account, true)
                } else {
                    (tt, ti, false)
                }
            }
            (Some(e), None) => (e.at, e.account, true),
            (None, Some((tt, ti))) => (tt, ti, false),
            (None, None) => break,
        };
        if t > opts.to {
            break;
        }
        sim.flush(t, false, &states, out)?;
        let st = &mut states[account as usize];
        if is_event {
            let ev = read(event.expect("is_event"))?;
            engine.apply_event(st, &ev, t, Mode::Live, &mut decisions);
            next_event += 1;
        } else {
            heap.pop();
            engine.advance(st, t, &mut decisions);
        }
        sim.absorb(st.id(), &mut decisions);
        let next = engine.next_due(st);
        if next != due[account as usize] {
            due[account as usize] = next;
            if let Some(n) = next {
                heap.push(Reverse((n, account)));
            }
        } else if !is_event {
            // Same due time as the entry just popped: put it back.
            if let Some(n) = next {
                heap.push(Reverse((n, account)));
            }
        }
    }
    sim.flush(opts.to, true, &states, out)?;
    let written = sim.written;
    summary.actions = written;
    Ok(summary)
}

struct Sim<'a> {
    engine: &'a Engine,
    summary: &'a mut Summary,
    pending: BTreeMap<Key, PlannedAction>,
    seq: u64,
    ledger: CapLedger,
    opts: &'a Options,
    written: usize,
}

impl Sim<'_> {
    /// Takes the decisions of one step: planned actions wait in the
    /// outbox for their send time; problems are counted.
    fn absorb(&mut self, account: &str, decisions: &mut Vec<Decision>) {
        for d in decisions.drain(..) {
            match d {
                Decision::Fired { actions, .. } => {
                    for a in actions {
                        if a.at < self.opts.from || a.at > self.opts.to {
                            continue;
                        }
                        self.seq += 1;
                        let key = (
                            a.at,
                            a.account.clone(),
                            a.moment.clone(),
                            a.position,
                            a.recipient().to_string(),
                            self.seq,
                        );
                        self.pending.insert(key, a);
                    }
                }
                Decision::Problem { message, .. } => {
                    let e = self
                        .summary
                        .problems
                        .entry(message)
                        .or_insert((0, account.to_string()));
                    e.0 += 1;
                }
                _ => {}
            }
        }
    }

    /// Sends (prints) every pending action due before `limit` (or at it,
    /// when `inclusive`), in output order, deciding consent and caps then.
    fn flush(
        &mut self,
        limit: Timestamp,
        inclusive: bool,
        states: &[AccountState],
        out: &mut dyn Write,
    ) -> Result<(), SimError> {
        let no_global_list = |_: &str| false;
        while let Some(entry) = self.pending.first_entry() {
            let at = entry.key().0;
            if at > limit || (at == limit && !inclusive) {
                break;
            }
            let action = entry.remove();
            let account = states
                .iter()
                .find(|s| s.id() == action.account)
                .map(|s| &s.account);
            let verdict = match account {
                Some(acc) => deliver::verdict(
                    &action,
                    acc,
                    self.engine.config.cap.as_ref(),
                    &mut self.ledger,
                    &no_global_list,
                ),
                None => None,
            };
            output::write(out, &action, verdict)?;
            self.written += 1;
        }
        Ok(())
    }
}

/// Reads and checks every event line, returning the ones to run, sorted.
fn index_events(
    path: &Path,
    from: Timestamp,
    accounts: &HashMap<String, u32>,
    summary: &mut Summary,
) -> Result<Vec<Slot>, SimError> {
    let mut slots = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut offset = 0u64;
    let mut line_no = 0u32;
    let text_file = std::fs::File::open(path).map_err(|e| LineError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot open: {e}"),
    })?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, text_file);
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut buf).map_err(|e| LineError {
            file: path.to_path_buf(),
            line: line_no as usize + 1,
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let start = offset;
        offset += n as u64;
        let line = buf.trim();
        if line.is_empty() {
            continue;
        }
        let ev = jsonl::parse_event(path, line_no as usize, line)?;
        if let Some(id) = &ev.id {
            if !ids.insert(id.clone()) {
                summary.duplicates += 1;
                continue;
            }
        }
        let Some(&account) = accounts.get(&ev.account) else {
            summary.unknown_accounts += 1;
            if summary.first_unknown.len() < 5 && !summary.first_unknown.contains(&ev.account) {
                summary.first_unknown.push(ev.account.clone());
            }
            continue;
        };
        slots.push(Slot {
            at: ev.at.unwrap_or(from),
            line: line_no,
            offset: start,
            len: n as u32,
            account,
        });
    }
    // Stable by time, then file order: ties keep the order they were written.
    if !slots.windows(2).all(|w| w[0].at <= w[1].at) {
        slots.sort_by_key(|s| (s.at, s.line));
    }
    Ok(slots)
}
