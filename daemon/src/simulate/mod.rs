//! The dry run: the engine on a virtual clock, over files, writing one JSON
//! line per planned action. Owns the event index (so unsorted files work
//! without loading every event), the global timeline that interleaves
//! events and timers of all accounts, and the simulated outbox that applies
//! consent and caps at each email's send time. Sends nothing.

mod output;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::hash::BuildHasher;
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
    /// Worker threads; the output is the same for any number.
    pub jobs: usize,
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

    /// Counts one occurrence of a problem, keeping the first account.
    fn note(&mut self, message: String, account: &str) {
        self.problems
            .entry(message)
            .or_insert((0, account.to_string()))
            .0 += 1;
    }

    fn absorb(&mut self, other: Summary) {
        self.actions += other.actions;
        for (msg, (count, account)) in other.problems {
            let e = self.problems.entry(msg).or_insert((0, account.clone()));
            e.0 += count;
            // Keep the smallest account id, whichever worker saw it.
            if account < e.1 {
                e.1 = account;
            }
        }
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
/// the order things happened. Accounts are held sorted by id and moment
/// ids are interned in sorted order, so indexes compare like the strings
/// they stand for.
type Key = (Timestamp, u32, u32, usize, String, u64);

/// Where a worker's output lines go: with their time and global account
/// index, which order them across workers.
type Emit<'a> = dyn FnMut(Timestamp, u32, &[u8]) -> std::io::Result<()> + 'a;

/// Output lines with what orders them across workers: time, then account.
type Batch = Vec<(Timestamp, u32, Vec<u8>)>;

/// Runs the dry run, writing JSON lines to `out`.
pub fn run(config: Arc<Config>, opts: &Options, out: &mut dyn Write) -> Result<Summary, SimError> {
    if opts.to < opts.from {
        return Err(SimError::Range {
            from: opts.from,
            to: opts.to,
        });
    }
    let engine = dry_run_engine(config.clone());
    let mut summary = Summary::default();

    let mut states: Vec<AccountState> = jsonl::read_accounts(&opts.accounts)?
        .into_iter()
        .map(|a| AccountState::new(a, opts.from))
        .collect();
    states.sort_by(|a, b| a.id().cmp(b.id()));
    let index: HashMap<String, u32> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id().to_string(), i as u32))
        .collect();
    summary.accounts = states.len();

    // Accounts that share a contact address share a frequency cap, the one
    // thing that couples accounts; apart from that each is independent.
    let mut groups = Groups::new(states.len());
    for (i, st) in states.iter().enumerate() {
        for c in st.account.contacts() {
            groups.address(i as u32, &c.email);
        }
    }
    let slots = match &opts.events {
        Some(path) => index_events(path, opts.from, &index, &mut groups, &mut summary)?,
        None => Vec::new(),
    };
    summary.events = slots.len();
    drop(index);

    let parts = groups.partition(opts.jobs.max(1));
    let ctx = Shared {
        engine: &engine,
        opts,
        moment_ids: moment_ids(&config),
    };
    if parts.len() <= 1 {
        let mut emit = |_: Timestamp, _: u32, line: &[u8]| out.write_all(line);
        let s = run_part(
            &ctx,
            states,
            (0..summary.accounts as u32).collect(),
            slots,
            &mut emit,
        )?;
        summary.absorb(s);
        return Ok(summary);
    }

    // Split accounts and events by partition, keeping each in order.
    let mut which = vec![0usize; states.len()];
    for (p, members) in parts.iter().enumerate() {
        for &i in members {
            which[i as usize] = p;
        }
    }
    let mut part_states: Vec<Vec<AccountState>> =
        parts.iter().map(|m| Vec::with_capacity(m.len())).collect();
    let mut local = vec![0u32; states.len()];
    for (i, st) in states.into_iter().enumerate() {
        let p = which[i];
        local[i] = part_states[p].len() as u32;
        part_states[p].push(st);
    }
    let mut part_slots: Vec<Vec<Slot>> = vec![Vec::new(); parts.len()];
    for mut slot in slots {
        let p = which[slot.account as usize];
        slot.account = local[slot.account as usize];
        part_slots[p].push(slot);
    }

    std::thread::scope(|scope| -> Result<(), SimError> {
        let mut workers = Vec::new();
        let mut receivers = Vec::new();
        for ((members, st), sl) in parts.into_iter().zip(part_states).zip(part_slots) {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
            receivers.push(rx);
            let ctx = &ctx;
            workers.push(scope.spawn(move || {
                let mut batch: Batch = Vec::with_capacity(1024);
                let mut emit = |at: Timestamp, account: u32, line: &[u8]| {
                    batch.push((at, account, line.to_vec()));
                    if batch.len() == 1024 {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(1024));
                        // The reader only goes away when writing failed.
                        tx.send(full)
                            .map_err(|_| std::io::Error::other("output closed"))?;
                    }
                    Ok(())
                };
                let result = run_part(ctx, st, members, sl, &mut emit);
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                result
            }));
        }
        let merged = merge(receivers, out);
        for w in workers {
            let s = w
                .join()
                .map_err(|_| std::io::Error::other("a dry-run worker panicked"))??;
            summary.absorb(s);
        }
        merged
    })?;
    Ok(summary)
}

/// Merges the workers' sorted streams into one sorted output.
fn merge(
    receivers: Vec<std::sync::mpsc::Receiver<Batch>>,
    out: &mut dyn Write,
) -> Result<(), SimError> {
    let mut heads: Vec<std::collections::VecDeque<(Timestamp, u32, Vec<u8>)>> =
        receivers.iter().map(|_| Default::default()).collect();
    let mut open = vec![true; receivers.len()];
    loop {
        for (i, rx) in receivers.iter().enumerate() {
            while open[i] && heads[i].is_empty() {
                match rx.recv() {
                    Ok(batch) => heads[i].extend(batch),
                    Err(_) => open[i] = false,
                }
            }
        }
        let best = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.front().map(|(t, a, _)| ((*t, *a), i)))
            .min();
        let Some((_, i)) = best else { return Ok(()) };
        let (_, _, line) = heads[i].pop_front().expect("non-empty");
        out.write_all(&line)?;
    }
}

/// The engine as the dry run (and `render`) use it: unsubscribe links to
/// the configured public URL, signed with the dry-run key.
pub fn dry_run_engine(config: Arc<Config>) -> Engine {
    let public = config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    Engine::new(
        config,
        deliver::unsubscribe_links(public, deliver::DRY_RUN_SECRET.to_vec()),
    )
}

/// What every worker shares.
struct Shared<'a> {
    engine: &'a Engine,
    opts: &'a Options,
    moment_ids: Vec<String>,
}

fn moment_ids(config: &Config) -> Vec<String> {
    let mut ids: Vec<String> = config
        .playbooks
        .iter()
        .flat_map(|p| {
            let milestones = p
                .onboarding
                .iter()
                .flat_map(|o| &o.milestones)
                .map(|m| m.id.clone());
            p.moments.iter().map(|m| m.id.clone()).chain(milestones)
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Simulates one partition: its accounts (sorted by id, `global` giving
/// each one's index among all accounts) and their events (in order).
fn run_part(
    ctx: &Shared<'_>,
    mut states: Vec<AccountState>,
    global: Vec<u32>,
    slots: Vec<Slot>,
    emit: &mut Emit<'_>,
) -> Result<Summary, SimError> {
    let (engine, opts) = (ctx.engine, ctx.opts);
    let file = match &opts.events {
        Some(p) if !slots.is_empty() => Some(std::fs::File::open(p).map_err(|e| LineError {
            file: p.clone(),
            line: 0,
            message: e.to_string(),
        })?),
        _ => None,
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

    let mut summary = Summary::default();
    let mut sim = Sim {
        engine,
        summary: &mut summary,
        pending: BTreeMap::new(),
        seq: 0,
        ledger: CapLedger::default(),
        moment_ids: &ctx.moment_ids,
        global: &global,
        opts,
        line: Vec::with_capacity(512),
        printed_before: opts.from,
    };
    let mut decisions = Vec::new();

    // Accounts present at the start enter silently; history before --from
    // builds state only; then everyone (re)starts at --from.
    for (i, st) in states.iter_mut().enumerate() {
        engine.admit(st, opts.from, Mode::Silent, &mut decisions);
        sim.absorb(i as u32, st.id(), &mut decisions);
    }
    let split = slots.partition_point(|s| s.at < opts.from);
    for slot in &slots[..split] {
        let ev = read(slot)?;
        let st = &mut states[slot.account as usize];
        engine.apply_event(st, &ev, slot.at, Mode::Silent, &mut decisions);
        sim.absorb(slot.account, st.id(), &mut decisions);
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
        // Events before timers at the same instant.
        let (t, account, is_event) = match (event, timer) {
            (Some(e), Some((tt, _))) if e.at <= tt => (e.at, e.account, true),
            (Some(e), None) => (e.at, e.account, true),
            (_, Some((tt, ti))) => (tt, ti, false),
            (None, None) => break,
        };
        if t > opts.to {
            break;
        }
        sim.flush(t, false, &states, emit)?;
        let st = &mut states[account as usize];
        if is_event {
            let ev = read(event.expect("is_event"))?;
            engine.apply_event(st, &ev, t, Mode::Live, &mut decisions);
            next_event += 1;
        } else {
            heap.pop();
            engine.advance(st, t, &mut decisions);
        }
        sim.absorb(account, st.id(), &mut decisions);
        let next = engine.next_due(st);
        // Re-queue when the due time changed, or when the entry just popped
        // is still the account's due time.
        if next != due[account as usize] || !is_event {
            due[account as usize] = next;
            if let Some(n) = next {
                heap.push(Reverse((n, account)));
            }
        }
    }
    sim.flush(opts.to, true, &states, emit)?;
    drop(sim);
    Ok(summary)
}

struct Sim<'a> {
    engine: &'a Engine,
    summary: &'a mut Summary,
    /// Planned actions waiting for their send time, with their account's index.
    pending: BTreeMap<Key, (u32, PlannedAction)>,
    seq: u64,
    ledger: CapLedger,
    moment_ids: &'a [String],
    global: &'a [u32],
    opts: &'a Options,
    line: Vec<u8>,
    /// Everything before this instant has been printed.
    printed_before: Timestamp,
}

impl Sim<'_> {
    /// Takes the decisions of one step: planned actions wait in the
    /// outbox for their send time; problems are counted.
    fn absorb(&mut self, index: u32, account: &str, decisions: &mut Vec<Decision>) {
        for d in decisions.drain(..) {
            match d {
                Decision::Fired { actions, .. } => {
                    for mut a in actions {
                        if a.at < self.opts.from || a.at > self.opts.to {
                            continue;
                        }
                        // The dry run prints whether rendering worked, not what
                        // it produced: holding rendered mail until its send
                        // window opens would cost gigabytes on a weekend.
                        if a.content.is_ok() {
                            a.content = Ok(crate::engine::plan::Content::Empty);
                        }
                        // The engine plans nothing for a time already past;
                        // should it ever, say so rather than print out of order.
                        if a.at < self.printed_before {
                            let message = format!(
                                "internal: moment `{}` planned an action at {} after the dry run had passed it (printed out of order)",
                                a.moment, a.at
                            );
                            self.summary.note(message, account);
                        }
                        self.seq += 1;
                        let moment = self
                            .moment_ids
                            .binary_search(&a.moment)
                            .unwrap_or(usize::MAX) as u32;
                        let key = (
                            a.at,
                            index,
                            moment,
                            a.position,
                            a.recipient().to_string(),
                            self.seq,
                        );
                        self.pending.insert(key, (index, a));
                    }
                }
                Decision::Problem { message, .. } => self.summary.note(message, account),
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
        emit: &mut Emit<'_>,
    ) -> Result<(), SimError> {
        let no_global_list = |_: &str| false;
        self.printed_before = self.printed_before.max(limit);
        while let Some(entry) = self.pending.first_entry() {
            let at = entry.key().0;
            if at > limit || (at == limit && !inclusive) {
                break;
            }
            let (index, action) = entry.remove();
            let verdict = deliver::verdict(
                &action,
                &states[index as usize].account,
                self.engine.config.cap.as_ref(),
                &mut self.ledger,
                &no_global_list,
            );
            self.line.clear();
            output::write(&mut self.line, &action, verdict)?;
            emit(at, self.global[index as usize], &self.line)?;
            self.summary.actions += 1;
        }
        Ok(())
    }
}

/// Union-find over accounts: those sharing a contact address end up in
/// one group, and groups are dealt out to workers.
struct Groups {
    parent: Vec<u32>,
    by_address: HashMap<String, u32>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n as u32).collect(),
            by_address: HashMap::new(),
        }
    }

    fn root(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let up = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = up;
            i = up;
        }
        i
    }

    fn address(&mut self, account: u32, email: &str) {
        let key = email.to_ascii_lowercase();
        match self.by_address.get(&key) {
            Some(&other) => {
                let (a, b) = (self.root(account), self.root(other));
                if a != b {
                    self.parent[a.max(b) as usize] = a.min(b);
                }
            }
            None => {
                self.by_address.insert(key, account);
            }
        }
    }

    /// Up to `n` partitions of similar size, members in ascending order.
    fn partition(mut self, n: usize) -> Vec<Vec<u32>> {
        let count = self.parent.len();
        if n <= 1 || count < 2 {
            return vec![(0..count as u32).collect()];
        }
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..count as u32 {
            let r = self.root(i);
            groups.entry(r).or_default().push(i);
        }
        let mut groups: Vec<Vec<u32>> = groups.into_values().collect();
        groups.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n.min(groups.len())];
        for g in groups {
            let smallest = parts
                .iter_mut()
                .min_by_key(|p| p.len())
                .expect("at least one part");
            smallest.extend(g);
        }
        for p in &mut parts {
            p.sort_unstable();
        }
        parts.retain(|p| !p.is_empty());
        parts
    }
}

/// Reads and checks every event line, returning the ones to run, sorted.
fn index_events(
    path: &Path,
    from: Timestamp,
    accounts: &HashMap<String, u32>,
    groups: &mut Groups,
    summary: &mut Summary,
) -> Result<Vec<Slot>, SimError> {
    let mut slots = Vec::new();
    // Ids as 128-bit keyed hashes: a million ids as strings cost ~40 MB
    // more, and a collision is about as likely as 10^-27.
    let mut ids: HashSet<u128> = HashSet::new();
    let keys = (std::hash::RandomState::new(), std::hash::RandomState::new());
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
        if let Some(id) = &ev.id
            && !ids.insert(u128::from(keys.0.hash_one(id)) << 64 | u128::from(keys.1.hash_one(id)))
        {
            summary.duplicates += 1;
            continue;
        }
        let Some(&account) = accounts.get(&ev.account) else {
            summary.unknown_accounts += 1;
            if summary.first_unknown.len() < 5 && !summary.first_unknown.contains(&ev.account) {
                summary.first_unknown.push(ev.account.clone());
            }
            continue;
        };
        // A patch that brings contacts can join accounts through an address.
        if ev.kind == "account.updated"
            && let Some(contacts) = ev.data.get("contacts").and_then(|c| c.as_array())
        {
            for email in contacts.iter().filter_map(|c| c.get("email")?.as_str()) {
                groups.address(account, email);
            }
        }
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
