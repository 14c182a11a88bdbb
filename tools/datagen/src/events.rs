//! Events: planning the structured ones, filling up with everyday
//! activity, and writing them sorted by `at`, one UTC day at a time.
//!
//! Exactly `--events` lines come out. Structured events (onboarding steps,
//! metric samples, account changes, sponsor changes, product releases) are
//! planned first, each kind capped at a share of the total; everyday
//! activity (logins, tickets, surveys, meetings, trainings) fills the rest.
//! Memory holds the accounts and the planned events, never the output:
//! each day is generated, sorted and written before the next one starts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::io::{self, Write};

use crate::accounts::{
    Account, DAY, Drop, HOUR, Level, SPONSOR_SLOT, Tier, local_business_time, pick_owner, plan,
    plan_rank, stream,
};
use crate::json::Obj;
use crate::rng::{Rng, derive};
use crate::words;

/// Streams of the planner's own randomness (accounts use theirs).
mod purpose {
    pub const UPDATES: u64 = 101;
    pub const RELEASES: u64 = 102;
    pub const ONBOARDING: u64 = 103;
    pub const METRICS: u64 = 104;
    pub const EVERYDAY: u64 = 105;
    pub const SAMPLE: u64 = 106;
    pub const EMIT: u64 = 107;
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Step {
    Kickoff,
    FirstLogin,
    Login,
    Training,
    Review,
}

/// One planned event; what it says is decided when it is emitted, from
/// the account's state at that time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Planned {
    Metric {
        sample: u32,
    },
    Onboarding(Step),
    Mrr {
        to: u32,
    },
    Renewal {
        to: i64,
    },
    Unsubscribe {
        slot: u8,
    },
    Risk(Level),
    /// `account.updated` replacing the sponsor in `contacts`; the
    /// `sponsor.changed` event follows minutes later.
    NewSponsor,
    SponsorAnnounced,
    Release {
        release: u8,
    },
}

/// Min-heap by time, then by planning order (so ties keep it).
type Queue = BinaryHeap<Reverse<(i64, u64, u32, Planned)>>;

pub struct Settings {
    pub seed: u64,
    pub from: i64,
    pub days: u32,
    pub events: u64,
}

impl Settings {
    fn end(&self) -> i64 {
        self.from + i64::from(self.days) * DAY
    }

    /// A share of the total number of events, rounded down.
    fn share(&self, fraction: f64) -> u64 {
        (self.events as f64 * fraction) as u64
    }

    /// How many of `population` see something in the period, at `per_half_year`.
    fn rate(&self, population: usize, per_half_year: f64) -> u64 {
        (population as f64 * per_half_year * f64::from(self.days) / 182.0).ceil() as u64
    }
}

struct Planner<'a> {
    settings: &'a Settings,
    queue: Queue,
    order: u64,
}

impl Planner<'_> {
    fn push(&mut self, at: i64, account: u32, what: Planned) {
        self.queue.push(Reverse((at, self.order, account, what)));
        self.order += 1;
    }

    fn planned(&self) -> u64 {
        self.queue.len() as u64
    }

    fn in_period(&self, at: i64, account: &Account) -> bool {
        at >= self.settings.from.max(account.signed_at) && at < self.settings.end()
    }
}

/// A uniformly random instant in [lo, hi) on a business day, local time.
fn business_between(rng: &mut Rng, account: &Account, lo: i64, hi: i64) -> i64 {
    let day = lo + rng.below((hi - lo).max(1) as u64) as i64;
    local_business_time(rng, day, account.offset)
}

fn plan_updates(p: &mut Planner<'_>, accounts: &[Account]) {
    let s = p.settings;
    let (from, end) = (s.from, s.end());
    let mut rng = Rng::stream(s.seed, purpose::UPDATES, 0);
    let n = accounts.len();
    // One change of each kind per account at most: a new MRR is computed
    // from the MRR at planning time, which must still hold when it is
    // emitted. Changes of different kinds touch different fields, or
    // (sponsor, unsubscribe) render the contacts from the state at emission.
    let mut touched: HashSet<(u32, u8)> = HashSet::new();
    let mut pick = |rng: &mut Rng, kind: u8, ok: &dyn Fn(&Account) -> bool| -> Option<usize> {
        for _ in 0..64 {
            let i = rng.below(n as u64) as usize;
            let a = &accounts[i];
            if a.signed_at < end - 14 * DAY && ok(a) && touched.insert((a.index, kind)) {
                return Some(i);
            }
        }
        None
    };

    // MRR changes: most of them expansions or contractions that cross a
    // segment boundary, so that the dry run shows accounts changing
    // playbooks (segment.exited, segment.entered, a new owner).
    let count = s.rate(n, 0.04).min(s.share(0.02));
    for k in 0..count {
        let crossing = k % 10 < 7;
        let band = |a: &Account| {
            a.growth != Level::High
                && matches!(a.mrr, 600..1000 | 1000..1500 | 3000..5000 | 5000..8000)
        };
        let Some(i) = pick(&mut rng, 0, &|a| !crossing || band(a)) else {
            continue;
        };
        let a = &accounts[i];
        let to = match a.mrr {
            _ if !crossing || !band(a) => {
                let factor = if rng.chance(0.6) {
                    rng.between(1.05, 1.3)
                } else {
                    rng.between(0.75, 0.95)
                };
                (f64::from(a.mrr) * factor / 10.0).round() as u32 * 10
            }
            600..1000 => rng.int(105, 180) as u32 * 10,
            1000..1500 => rng.int(50, 95) as u32 * 10,
            3000..5000 => rng.int(100, 180) as u32 * 50,
            _ => rng.int(50, 98) as u32 * 50,
        };
        let at = business_between(&mut rng, a, from.max(a.signed_at + 7 * DAY), end);
        if p.in_period(at, a) {
            p.push(at, a.index, Planned::Mrr { to: to.max(50) });
        }
    }

    // Renewal dates moved: an early multi-year renewal, or a co-termed
    // contract moving the date by a month or three.
    let count = s.rate(n, 0.015).min(s.share(0.005));
    for _ in 0..count {
        let Some(i) = pick(&mut rng, 1, &|a| a.renewal_at < end + 180 * DAY) else {
            continue;
        };
        let a = &accounts[i];
        let to = if rng.chance(0.5) {
            a.renewal_at + 365 * DAY
        } else {
            a.renewal_at + rng.int(-60, 90) * DAY
        };
        let at = business_between(
            &mut rng,
            a,
            from.max(a.renewal_at - 150 * DAY),
            end.min(a.renewal_at - 20 * DAY),
        );
        if p.in_period(at, a) && to > at {
            p.push(at, a.index, Planned::Renewal { to });
        }
    }

    // Contacts unsubscribing: the whole `contacts` array is sent, as a
    // JSON merge patch replaces arrays.
    let count = s.rate(n, 0.02).min(s.share(0.005));
    for _ in 0..count {
        let Some(i) = pick(&mut rng, 2, &|a| a.contacts >= 2) else {
            continue;
        };
        let a = &accounts[i];
        let slot = rng.below(u64::from(a.contacts)) as u8;
        let at = business_between(&mut rng, a, from, end);
        if p.in_period(at, a) && a.unsubscribed & (1 << slot) == 0 {
            p.push(at, a.index, Planned::Unsubscribe { slot });
        }
    }

    // Sponsor changes, only where there is a sponsor.
    let with_sponsor = accounts.iter().filter(|a| a.has_sponsor()).count();
    let count = s.rate(with_sponsor, 0.12).min(s.share(0.005));
    for _ in 0..count {
        let Some(i) = pick(&mut rng, 3, &|a| a.has_sponsor()) else {
            continue;
        };
        let a = &accounts[i];
        let at = business_between(&mut rng, a, from, end);
        let announced = at + rng.int(5 * 60, 2 * HOUR);
        if p.in_period(at, a) && announced < end {
            p.push(at, a.index, Planned::NewSponsor);
            p.push(announced, a.index, Planned::SponsorAnnounced);
        }
    }

    // Health scores revised by the CSM team; the usage drops are assigned
    // later, so these are independent of them.
    let count = s.rate(n, 0.03).min(s.share(0.01));
    for _ in 0..count {
        let Some(i) = pick(&mut rng, 4, &|_| true) else {
            continue;
        };
        let a = &accounts[i];
        let to = match a.risk {
            Level::High => Level::Medium,
            Level::Medium => *rng.pick(&[Level::Low, Level::High]),
            Level::Low => Level::Medium,
        };
        let at = business_between(&mut rng, a, from, end);
        if p.in_period(at, a) {
            p.push(at, a.index, Planned::Risk(to));
        }
    }
}

/// Releases spread over the period, each announced to the customers on
/// the plans that get the feature and signed by then (a random subset of
/// them when there are more than the budget allows).
fn plan_releases(p: &mut Planner<'_>, accounts: &[Account]) {
    let s = p.settings;
    let releases = (s.days / 45).clamp(1, words::RELEASES.len() as u32);
    let per_release = s.share(0.06) / u64::from(releases);
    let mut rng = Rng::stream(s.seed, purpose::RELEASES, 0);
    for r in 0..releases {
        let day =
            s.from + ((f64::from(r) + 0.5) * f64::from(s.days) / f64::from(releases)) as i64 * DAY;
        let at = day - day.rem_euclid(DAY) + 16 * HOUR;
        let min_plan = words::RELEASES[r as usize].2;
        let gets = |a: &&Account| a.signed_at < at && plan_rank(a.mrr) >= min_plan;
        let eligible = accounts.iter().filter(gets).count() as u64;
        let mut wanted = per_release.min(eligible);
        let mut left = eligible;
        // Selection sampling (Knuth's algorithm S): exactly `wanted`, in
        // one pass, without a list of candidates.
        for a in accounts.iter().filter(gets) {
            if rng.below(left) < wanted {
                // A broadcast goes out over a few minutes.
                let t = at + rng.int(0, 599);
                if t < s.end() && t >= s.from {
                    p.push(t, a.index, Planned::Release { release: r as u8 });
                }
                wanted -= 1;
            }
            left -= 1;
        }
    }
}

/// Onboarding of customers who signed shortly before or during the period:
/// kickoff, first logins, training, first review. Some are late and a few
/// never happen, so the playbooks' `on_late` escalations show up.
fn plan_onboarding(p: &mut Planner<'_>, accounts: &[Account]) {
    let s = p.settings;
    let cap = p.planned() + s.share(0.2);
    let mut steps = Vec::new();
    for a in accounts {
        if a.signed_at < s.from - 75 * DAY {
            continue;
        }
        let mut rng = Rng::stream(s.seed, purpose::ONBOARDING, u64::from(a.index));
        let after = |rng: &mut Rng,
                     never: f64,
                     late: f64,
                     on_time: (f64, f64),
                     late_by: (f64, f64)|
         -> Option<f64> {
            let r = rng.unit();
            if r < never {
                None
            } else if r < never + late {
                Some(rng.between(late_by.0, late_by.1))
            } else {
                Some(rng.between(on_time.0, on_time.1))
            }
        };
        steps.clear();
        let guided = a.tier() != Tier::Tech;
        if guided {
            steps.push((
                after(&mut rng, 0.05, 0.25, (2.0, 9.0), (15.0, 30.0)),
                Step::Kickoff,
            ));
        }
        steps.push((
            after(&mut rng, 0.04, 0.12, (0.1, 3.0), (8.0, 20.0)),
            Step::FirstLogin,
        ));
        steps.push((
            after(&mut rng, 0.0, 0.0, (1.0, 25.0), (0.0, 0.0)),
            Step::Login,
        ));
        steps.push((
            after(&mut rng, 0.0, 0.0, (3.0, 30.0), (0.0, 0.0)),
            Step::Login,
        ));
        steps.push((
            after(&mut rng, 0.10, 0.25, (5.0, 20.0), (32.0, 50.0)),
            Step::Training,
        ));
        if guided {
            steps.push((
                after(&mut rng, 0.10, 0.25, (20.0, 40.0), (50.0, 70.0)),
                Step::Review,
            ));
        }
        let mut timed: Vec<(i64, Step)> = steps
            .iter()
            .filter_map(|&(days, step)| {
                let at = days.map(|d| a.signed_at + (d * DAY as f64) as i64)?;
                // Meetings and trainings happen in business hours; logins
                // whenever.
                let at = if step == Step::Login || step == Step::FirstLogin {
                    at
                } else {
                    local_business_time(&mut rng, at, a.offset).max(a.signed_at + HOUR)
                };
                p.in_period(at, a).then_some((at, step))
            })
            .collect();
        if p.planned() + timed.len() as u64 > cap {
            break;
        }
        timed.sort();
        for (at, step) in timed {
            p.push(at, a.index, Planned::Onboarding(step));
        }
    }
}

/// Metric samples (`active_users`) from a nightly sync, spaced evenly per
/// account, more of them for bigger and newer accounts; then the usage
/// drops, among accounts sampled often enough to show one.
fn plan_metrics(p: &mut Planner<'_>, accounts: &mut [Account]) {
    let s = p.settings;
    let budget = s.share(0.3).min(s.events.saturating_sub(p.planned()));
    let (from, end) = (s.from, s.end());
    let spans: Vec<i64> = accounts
        .iter()
        .map(|a| (end - from.max(a.signed_at + 2 * DAY)).max(0))
        .collect();
    // New customers are watched closely: three times the samples.
    let weights: Vec<f64> = accounts
        .iter()
        .zip(&spans)
        .map(|(a, &span)| {
            a.activity
                * span as f64
                * if a.signed_at >= from - 120 * DAY {
                    3.0
                } else {
                    1.0
                }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    if total <= 0.0 || budget == 0 {
        return;
    }
    // Systematic rounding: the counts add up to the budget exactly (less
    // what the one-sample-per-two-days cap takes off).
    let mut cumulative = 0.0;
    let mut given = 0u64;
    let mut rng = Rng::stream(s.seed, purpose::METRICS, 0);
    for (i, a) in accounts.iter_mut().enumerate() {
        cumulative += weights[i];
        let upto = if i + 1 == weights.len() {
            budget
        } else {
            (budget as f64 * cumulative / total).round() as u64
        };
        let count = (upto - given).min((spans[i] / (2 * DAY)) as u64);
        given = upto;
        a.samples = count as u32;
        a.samples_from = end - spans[i];
        if count > 0 {
            p.push(sample_time(s, a, 0), a.index, Planned::Metric { sample: 0 });
        }
        // About 9% of the accounts sampled at least four times lose a
        // large share of their users at some point (more often among risky
        // ones).
        let p_drop = match a.risk {
            Level::High => 0.18,
            Level::Medium => 0.10,
            Level::Low => 0.06,
        };
        // Accounts of a handful of users are left out: one person on leave
        // is not the churn signal a usage-drop moment looks for.
        if count >= 4 && a.usage.users >= 8.0 && s.days > 40 && rng.chance(p_drop) {
            let start = from + rng.int(21, i64::from(s.days) - 10) * DAY + rng.int(0, DAY - 1);
            a.usage.drop = Some(Drop {
                start,
                days: rng.between(2.0, 6.0),
                floor: rng.between(0.3, 0.62),
                recovery: rng.chance(0.5).then(|| start + rng.int(30, 60) * DAY),
            });
        }
    }
}

/// Sample `k` of an account: evenly spaced with some jitter, taken by a
/// nightly sync at about 02:00 UTC. Spacing of two days or more and a
/// quarter-spacing jitter put successive samples on different days.
fn sample_time(s: &Settings, a: &Account, k: u32) -> i64 {
    let spacing = (s.end() - a.samples_from) as f64 / f64::from(a.samples);
    let jitter = Rng::stream(a.seed, purpose::SAMPLE, u64::from(k)).between(-0.25, 0.25);
    let raw = a.samples_from as f64 + (f64::from(k) + 0.5 + jitter) * spacing;
    let day = ((raw as i64 - s.from).max(0)) / DAY;
    s.from + day * DAY + 2 * HOUR + (a.seed % 3600) as i64
}

/// One event of a day, rendered except for its id (given once sorted).
struct Line {
    at: i64,
    order: u64,
    account: u32,
    kind: &'static str,
    data: Vec<u8>,
}

pub struct Totals {
    pub by_kind: Vec<(&'static str, u64)>,
    pub written: u64,
}

impl Totals {
    fn count(&mut self, kind: &'static str) {
        match self.by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.by_kind.push((kind, 1)),
        }
        self.written += 1;
    }
}

pub fn generate(
    settings: &Settings,
    accounts: &mut [Account],
    out: &mut impl Write,
) -> io::Result<Totals> {
    let mut planner = Planner {
        settings,
        queue: BinaryHeap::new(),
        order: 0,
    };
    if !accounts.is_empty() && settings.events > 0 {
        plan_updates(&mut planner, accounts);
        plan_releases(&mut planner, accounts);
        plan_onboarding(&mut planner, accounts);
        plan_metrics(&mut planner, accounts);
    }
    let planned_metrics: u64 = accounts.iter().map(|a| u64::from(a.samples)).sum();
    // The queue holds one pending sample per account, not all of them.
    let structured = planner.planned() + planned_metrics
        - accounts.iter().filter(|a| a.samples > 0).count() as u64;
    let everyday = settings.events.saturating_sub(structured);
    let quotas = day_quotas(settings, everyday);

    let cumulative: Vec<f64> = accounts
        .iter()
        .scan(0.0, |sum, a| {
            *sum += a.activity;
            Some(*sum)
        })
        .collect();
    let earliest = accounts.iter().min_by_key(|a| a.signed_at).map(|a| a.index);

    let mut rng = Rng::stream(settings.seed, purpose::EVERYDAY, 0);
    let mut emit = Rng::stream(settings.seed, purpose::EMIT, 0);
    let mut totals = Totals {
        by_kind: Vec::new(),
        written: 0,
    };
    let mut lines: Vec<Line> = Vec::new();
    let mut order = 0u64;
    let width = settings.events.to_string().len().max(7);
    let mut buf = Vec::with_capacity(1 << 16);
    for (day, &quota) in quotas.iter().enumerate() {
        let start = settings.from + day as i64 * DAY;
        let next = start + DAY;
        lines.clear();
        while let Some(Reverse((at, _, account, what))) = planner.queue.peek().copied() {
            if at >= next {
                break;
            }
            planner.queue.pop();
            let a = &mut accounts[account as usize - 1];
            let (kind, data) = emit_planned(settings, a, at, what, &mut emit, &mut planner);
            lines.push(Line {
                at,
                order,
                account,
                kind,
                data,
            });
            order += 1;
        }
        for _ in 0..quota {
            let (at, a) = everyday_slot(&mut rng, accounts, &cumulative, earliest, start);
            let (kind, data) = everyday_event(&mut rng, a, at);
            lines.push(Line {
                at,
                order,
                account: a.index,
                kind,
                data,
            });
            order += 1;
        }
        lines.sort_unstable_by_key(|l| (l.at, l.order));
        buf.clear();
        for line in &lines {
            totals.count(line.kind);
            let mut o = Obj::new(&mut buf);
            o.str("id", &format!("evt-{:0width$}", totals.written))
                .str("account", &format!("acc-{:06}", line.account))
                .str("type", line.kind)
                .time("at", line.at);
            o.end();
            // Splice the pre-rendered data in before the closing brace.
            buf.pop();
            buf.extend_from_slice(b",\"data\":");
            buf.extend_from_slice(&line.data);
            buf.extend_from_slice(b"}\n");
        }
        out.write_all(&buf)?;
    }
    Ok(totals)
}

/// Everyday events per UTC day: fewer at weekends, slowly more over the
/// period as the customer base grows; adds up to `total` exactly.
fn day_quotas(s: &Settings, total: u64) -> Vec<u64> {
    let weights: Vec<f64> = (0..s.days)
        .map(|d| {
            let day = (s.from + i64::from(d) * DAY).div_euclid(DAY);
            let weekend = matches!((day + 3).rem_euclid(7), 5 | 6);
            (if weekend { 0.3 } else { 1.0 }) * (1.0 + 0.15 * f64::from(d) / f64::from(s.days))
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut cumulative = 0.0;
    let mut given = 0;
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            cumulative += w;
            let upto = if i + 1 == weights.len() {
                total
            } else {
                (total as f64 * cumulative / sum).round() as u64
            };
            let n = upto - given;
            given = upto;
            n
        })
        .collect()
}

/// An account in proportion to its activity, and an instant of the UTC day
/// `start` in its local working hours (some at night), after it signed.
fn everyday_slot<'a>(
    rng: &mut Rng,
    accounts: &'a [Account],
    cumulative: &[f64],
    earliest: Option<u32>,
    start: i64,
) -> (i64, &'a Account) {
    let total = *cumulative.last().expect("at least one account");
    let at_for = |rng: &mut Rng, a: &Account| {
        let local = if rng.chance(0.85) {
            rng.int(8 * HOUR, 18 * HOUR - 1)
        } else {
            rng.int(0, DAY - 1)
        };
        start + (local - a.offset).rem_euclid(DAY)
    };
    for _ in 0..16 {
        let ticket = rng.unit() * total;
        let i = cumulative
            .partition_point(|&c| c <= ticket)
            .min(accounts.len() - 1);
        let a = &accounts[i];
        let at = at_for(rng, a);
        if at >= a.signed_at + HOUR {
            return (at, a);
        }
    }
    // Almost nobody has signed yet (only with odd arguments): the customer
    // who signed first, even if that means activity just before signing.
    let a = &accounts[earliest.expect("at least one account") as usize - 1];
    (at_for(rng, a), a)
}

fn everyday_event(rng: &mut Rng, a: &Account, at: i64) -> (&'static str, Vec<u8>) {
    #[derive(Clone, Copy)]
    enum Kind {
        Login,
        Ticket,
        Training,
        Survey,
        Meeting,
    }
    let kind = *rng.weighted(&[
        (Kind::Login, 58),
        (Kind::Ticket, 15),
        (Kind::Training, 5),
        (Kind::Survey, 6),
        (Kind::Meeting, 7),
    ]);
    let mut data = Vec::with_capacity(96);
    let mut o = Obj::new(&mut data);
    let contact = a.contact_email(rng.below(u64::from(a.contacts)) as u8);
    let kind = match kind {
        // Only accounts with a CSM have meetings.
        Kind::Meeting if a.tier() != Tier::Tech => {
            if rng.chance(0.75) {
                o.str("kind", "review").str("title", "Monthly check-in");
            } else {
                o.str("kind", "training").str("title", "Admin workshop");
            }
            "meeting.completed"
        }
        Kind::Login | Kind::Meeting => {
            o.str("user", &contact);
            "user.login"
        }
        Kind::Ticket => {
            let priority =
                *rng.weighted(&[("low", 30), ("normal", 48), ("high", 16), ("urgent", 6)]);
            let subjects = match priority {
                "low" => words::TICKETS_LOW,
                "normal" => words::TICKETS_NORMAL,
                "high" => words::TICKETS_HIGH,
                _ => words::TICKETS_URGENT,
            };
            o.str("ticket_id", &format!("T-{}", 10_000 + rng.below(90_000)))
                .str("priority", priority)
                .str("subject", rng.pick_copy(subjects))
                .str("requester", &contact);
            "ticket.created"
        }
        Kind::Training => {
            o.str("course", rng.pick_copy(words::COURSES))
                .str("user", &contact);
            "training.completed"
        }
        Kind::Survey => {
            let mean = match a.risk {
                Level::Low => 8.6,
                Level::Medium => 7.4,
                Level::High => 5.6,
            } - if a.usage.drop.is_some_and(|d| at >= d.start) {
                2.0
            } else {
                0.0
            };
            let score = (mean + 2.0 * rng.normal()).round().clamp(0.0, 10.0) as i64;
            let comments = match score {
                0..=6 => words::NPS_DETRACTOR,
                7..=8 => words::NPS_PASSIVE,
                _ => words::NPS_PROMOTER,
            };
            o.str("survey", "nps")
                .int("score", score)
                .str("comment", rng.pick_copy(comments))
                .str("respondent", &contact);
            "survey.answered"
        }
    };
    o.end();
    (kind, data)
}

fn emit_planned(
    s: &Settings,
    a: &mut Account,
    at: i64,
    what: Planned,
    rng: &mut Rng,
    planner: &mut Planner<'_>,
) -> (&'static str, Vec<u8>) {
    let mut data = Vec::with_capacity(128);
    let mut o = Obj::new(&mut data);
    let kind = match what {
        Planned::Metric { sample } => {
            let noise = Rng::stream(a.seed, purpose::SAMPLE, u64::from(sample) | 1 << 32).normal();
            o.str("name", "active_users")
                .int("value", a.active_users(at, noise));
            if sample + 1 < a.samples {
                planner.push(
                    sample_time(s, a, sample + 1),
                    a.index,
                    Planned::Metric { sample: sample + 1 },
                );
            }
            "metric"
        }
        Planned::Onboarding(step) => match step {
            Step::Kickoff => {
                o.str("kind", "kickoff").str("title", "Kickoff call");
                "meeting.completed"
            }
            Step::FirstLogin => {
                o.str("user", &a.contact_email(0));
                "user.login"
            }
            Step::Login => {
                o.str(
                    "user",
                    &a.contact_email(rng.below(u64::from(a.contacts)) as u8),
                );
                "user.login"
            }
            Step::Training => {
                o.str("course", words::COURSES[0])
                    .str("user", &a.contact_email(0));
                "training.completed"
            }
            Step::Review => {
                o.str("kind", "review").str("title", "First metrics review");
                "meeting.completed"
            }
        },
        Planned::Mrr { to } => {
            let before = a.tier();
            let old_plan = plan(a.mrr);
            a.mrr = to;
            o.int("mrr", i64::from(to));
            if plan(to) != old_plan {
                o.obj("attributes", |x| {
                    x.str("plan", plan(to));
                });
            }
            // A move between segments hands the account to a CSM of the
            // new team, as a real book-of-business change would.
            if a.tier() != before {
                let mut owner_rng = Rng::new(derive(a.seed, stream::OWNER, 1 + u64::from(to)));
                a.owner = pick_owner(&mut owner_rng, a.tier(), a.zone.region);
                a.write_owner(&mut o);
            }
            "account.updated"
        }
        Planned::Renewal { to } => {
            a.renewal_at = to;
            o.time("renewal_at", to);
            "account.updated"
        }
        Planned::Unsubscribe { slot } => {
            a.unsubscribed |= 1 << slot;
            a.write_contacts(&mut o);
            "account.updated"
        }
        Planned::Risk(level) => {
            a.risk = level;
            o.obj("attributes", |x| {
                x.str("risk", level.as_str());
            });
            "account.updated"
        }
        Planned::NewSponsor => {
            a.sponsor_gen = a.sponsor_gen.wrapping_add(1);
            // The new person has not unsubscribed from anything yet.
            a.unsubscribed &= !(1 << SPONSOR_SLOT);
            a.write_contacts(&mut o);
            "account.updated"
        }
        Planned::SponsorAnnounced => {
            let sponsor = a.contact(SPONSOR_SLOT);
            let title = a.sponsor_title();
            a.sponsor_gen = a.sponsor_gen.wrapping_sub(1);
            let previous = a.contact(SPONSOR_SLOT);
            a.sponsor_gen = a.sponsor_gen.wrapping_add(1);
            o.str("name", &sponsor.name)
                .str("email", &sponsor.email)
                .str("title", title)
                .obj("previous", |x| {
                    x.str("name", &previous.name).str("email", &previous.email);
                });
            "sponsor.changed"
        }
        Planned::Release { release } => {
            let (title, summary, _) = words::RELEASES[usize::from(release)];
            let version = format!("4.{}", 3 + release);
            o.str("version", &version)
                .str("title", title)
                .str("summary", summary)
                .str("url", &format!("https://acme.example/releases/{version}"));
            "product.released"
        }
    };
    o.end();
    (kind, data)
}
