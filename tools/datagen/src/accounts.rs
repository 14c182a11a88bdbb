//! Customer accounts: drawing them, the state that changes during the
//! simulated period (MRR, sponsor, unsubscribes), and their JSON form.
//!
//! Every account and contact always has every field the shipped templates
//! read (templates are strict), so an optional field here is one no
//! template may name: `arr`, a contact's `timezone` and `unsubscribed`.
//! Contacts are not stored: they are recomputed from the account's seed,
//! which keeps 100,000 accounts in a few tens of megabytes.

use std::collections::HashSet;

use jiff::ToSpan as _;
use jiff::tz::TimeZone;

use crate::json::Obj;
use crate::rng::{Rng, derive};
use crate::words::{self, Csm, Region, ZONES};

pub const DAY: i64 = 86_400;
pub const HOUR: i64 = 3_600;

/// Purposes of the account's random streams (see `rng::derive`).
pub mod stream {
    pub const ACCOUNT: u64 = 1;
    pub const CONTACT: u64 = 2;
    pub const OWNER: u64 = 3;
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

/// The segment an account falls in under the shipped playbooks. This
/// mirrors their `segment.when` only to shape the data (who gets a
/// sponsor, a kickoff meeting, which CSM); the engine decides for real.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tier {
    High,
    Low,
    Tech,
}

pub fn tier(mrr: u32, growth: Level) -> Tier {
    if mrr >= 5000 || growth == Level::High {
        Tier::High
    } else if mrr >= 1000 {
        Tier::Low
    } else {
        Tier::Tech
    }
}

pub const PLANS: [&str; 4] = ["starter", "team", "business", "enterprise"];

/// The plan's rank in `PLANS`.
pub fn plan_rank(mrr: u32) -> usize {
    match mrr {
        0..250 => 0,
        250..1500 => 1,
        1500..6000 => 2,
        _ => 3,
    }
}

pub fn plan(mrr: u32) -> &'static str {
    PLANS[plan_rank(mrr)]
}

/// Roles by number of contacts: an admin always (the playbooks email
/// `contacts[role=admin]`), a sponsor from four contacts on, at slot 2.
fn roles(count: u8) -> &'static [&'static str] {
    const ALL: [&str; 6] = ["admin", "champion", "sponsor", "billing", "user", "user"];
    match count {
        1 => &["admin"],
        2 => &["admin", "user"],
        3 => &["admin", "champion", "billing"],
        n => &ALL[..usize::from(n.min(6))],
    }
}

pub const SPONSOR_SLOT: u8 = 2;

pub struct Contact {
    pub name: String,
    pub email: String,
    pub role: &'static str,
    pub timezone: Option<&'static str>,
    pub unsubscribed: bool,
}

/// A sharp fall in active users (an outage, a team moving to a rival, a
/// reorganisation), for the playbooks' usage-drop moments.
#[derive(Clone, Copy)]
pub struct Drop {
    pub start: i64,
    /// How long the fall takes, in days.
    pub days: f64,
    /// Fraction of the usual value reached at the bottom.
    pub floor: f64,
    /// When usage comes back to 85% of usual, if it does.
    pub recovery: Option<i64>,
}

/// Active users over time: a base, a trend, a ramp-up for new customers
/// (some stall below their potential) and an optional drop.
pub struct Usage {
    pub users: f64,
    pub daily_growth: f64,
    /// Days from signing to full use; 0 for customers long past that.
    pub ramp_days: f64,
    /// Share of `users` a stalled new customer never gets past.
    pub plateau: f64,
    pub drop: Option<Drop>,
}

pub struct Account {
    pub index: u32,
    pub seed: u64,
    pub name: String,
    pub domain: String,
    pub zone: &'static words::Zone,
    /// UTC offset of the zone in the middle of the period, in seconds:
    /// enough to put events in local business hours.
    pub offset: i64,
    pub mrr: u32,
    pub with_arr: bool,
    pub signed_at: i64,
    pub renewal_at: i64,
    pub owner: &'static Csm,
    pub industry: &'static str,
    pub growth: Level,
    pub risk: Level,
    pub contacts: u8,
    /// Bumped each time the sponsor is replaced; part of the sponsor's seed.
    pub sponsor_gen: u8,
    /// One bit per contact slot.
    pub unsubscribed: u8,
    pub usage: Usage,
    /// Relative number of events the account produces.
    pub activity: f64,
    /// Metric samples planned for the account, spread over
    /// [`samples_from`, end of period).
    pub samples: u32,
    pub samples_from: i64,
}

/// What drawing accounts needs to know about the period.
pub struct Period {
    pub from: i64,
    pub days: u32,
}

/// Draws accounts one at a time; `domains` keeps email domains unique.
pub struct AccountFactory {
    seed: u64,
    period: Period,
    offsets: Vec<i64>,
    zone_weights: Vec<(usize, u32)>,
    industry_weights: Vec<(usize, u32)>,
    domains: HashSet<String>,
}

impl AccountFactory {
    pub fn new(seed: u64, period: Period) -> Self {
        let middle = jiff::Timestamp::from_second(period.from + i64::from(period.days) * DAY / 2)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let offsets = ZONES
            .iter()
            .map(|z| match TimeZone::get(z.name) {
                Ok(tz) => i64::from(tz.to_offset(middle).seconds()),
                // Without a tz database only the hour of day shifts.
                Err(_) => 0,
            })
            .collect();
        AccountFactory {
            seed,
            period,
            offsets,
            zone_weights: ZONES
                .iter()
                .enumerate()
                .map(|(i, z)| (i, z.weight))
                .collect(),
            industry_weights: words::INDUSTRIES
                .iter()
                .enumerate()
                .map(|(i, x)| (i, x.weight))
                .collect(),
            domains: HashSet::new(),
        }
    }

    pub fn draw(&mut self, index: u32) -> Account {
        let seed = derive(self.seed, stream::ACCOUNT, u64::from(index));
        let mut rng = Rng::new(seed);
        let zone_ix = *rng.weighted(&self.zone_weights);
        let zone = &ZONES[zone_ix];
        let industry = &words::INDUSTRIES[*rng.weighted(&self.industry_weights)];
        let (name, domain) = self.company(&mut rng, zone, industry);

        // Most customers signed in the 18 months before the period, more of
        // them recently (the vendor grows); about 10% sign during it and
        // are onboarded in the dry run.
        let offset = self.offsets[zone_ix];
        let from = self.period.from;
        let signed_day = if rng.chance(0.10) {
            from + rng.below(u64::from(self.period.days.saturating_sub(1).max(1))) as i64 * DAY
        } else {
            from - (rng.unit().powf(0.8) * 548.0) as i64 * DAY - DAY
        };
        let signed_at = local_business_time(&mut rng, signed_day, offset);
        let renewal_at = next_anniversary(signed_at, zone.name, from);

        // The vendor is moving upmarket: recent signings have a fatter tail,
        // which also puts high- and low-touch onboardings in the dry run.
        let recent = signed_at >= from - 90 * DAY;
        let mrr = draw_mrr(&mut rng, if recent { 0.42 } else { 0.65 });
        let growth = if mrr >= 1000 {
            *rng.weighted(&[(Level::High, 18), (Level::Medium, 52), (Level::Low, 30)])
        } else {
            *rng.weighted(&[(Level::High, 3), (Level::Medium, 55), (Level::Low, 42)])
        };
        let risk = *rng.weighted(match growth {
            Level::High => &[(Level::Low, 70), (Level::Medium, 25), (Level::High, 5)],
            Level::Medium => &[(Level::Low, 55), (Level::Medium, 32), (Level::High, 13)],
            Level::Low => &[(Level::Low, 35), (Level::Medium, 37), (Level::High, 28)],
        });
        let tier = tier(mrr, growth);

        let contacts = match tier {
            Tier::Tech => *rng.weighted(&[(1u8, 40), (2, 35), (3, 25)]),
            Tier::Low => rng.int(3, 5) as u8,
            Tier::High if mrr >= 5000 => rng.int(4, 6) as u8,
            Tier::High => rng.int(4, 5) as u8,
        };
        let mut unsubscribed = 0u8;
        for slot in 0..contacts {
            if rng.chance(0.03) {
                unsubscribed |= 1 << slot;
            }
        }

        let usage = draw_usage(&mut rng, mrr, growth, signed_at, from);
        let activity = f64::from(mrr).sqrt()
            * match risk {
                Level::Low => 1.1,
                Level::Medium => 1.0,
                Level::High => 0.7,
            }
            * match growth {
                Level::High => 1.3,
                Level::Medium => 1.0,
                Level::Low => 0.8,
            };

        Account {
            index,
            seed,
            name,
            domain,
            zone,
            offset,
            mrr,
            with_arr: rng.chance(0.25),
            signed_at,
            renewal_at,
            owner: pick_owner(&mut Rng::stream(seed, stream::OWNER, 0), tier, zone.region),
            industry: industry.name,
            growth,
            risk,
            contacts,
            sponsor_gen: 0,
            unsubscribed,
            usage,
            activity,
            samples: 0,
            samples_from: 0,
        }
    }

    /// "Northwind Logistics GmbH" and `northwind-logistics.example`.
    fn company(
        &mut self,
        rng: &mut Rng,
        zone: &words::Zone,
        industry: &words::Industry,
    ) -> (String, String) {
        let mut attempt = 0;
        loop {
            let brand = format!(
                "{}{}",
                rng.pick(words::BRAND_HEADS),
                rng.pick(words::BRAND_TAILS)
            );
            let noun = rng.pick(industry.nouns);
            let suffix = rng.pick(zone.suffixes);
            let name = if suffix.is_empty() {
                format!("{brand} {noun}")
            } else {
                format!("{brand} {noun} {suffix}")
            };
            let base = slug(&format!("{brand} {noun}"));
            if self.domains.insert(format!("{base}.example")) {
                return (name, format!("{base}.example"));
            }
            attempt += 1;
            // Past a few collisions (only with tens of thousands of
            // accounts) a number keeps the domain unique, as real
            // companies do.
            if attempt >= 8 {
                let mut n = 2;
                loop {
                    let domain = format!("{base}-{n}.example");
                    if self.domains.insert(domain.clone()) {
                        return (name, domain);
                    }
                    n += 1;
                }
            }
        }
    }
}

/// Truncated Pareto on [50, 60000]. With shape 0.65, 83% of accounts are
/// under 800 and 5% at 5,000 or more; with 0.42, 69% and 14%.
fn draw_mrr(rng: &mut Rng, shape: f64) -> u32 {
    let (low, high) = (50.0_f64, 60_000.0_f64);
    let u = rng.unit();
    let x = low / (1.0 - u * (1.0 - (low / high).powf(shape))).powf(1.0 / shape);
    let step = match x {
        x if x < 1000.0 => 10.0,
        x if x < 10_000.0 => 50.0,
        _ => 100.0,
    };
    ((x / step).round() * step).clamp(low, high) as u32
}

fn draw_usage(rng: &mut Rng, mrr: u32, growth: Level, signed_at: i64, from: i64) -> Usage {
    // Roughly one seat per $20 of MRR plus a core team.
    let users = (4.0 + f64::from(mrr) / 20.0) * rng.between(0.7, 1.3);
    let daily_growth = match growth {
        Level::High => rng.between(0.0015, 0.004),
        Level::Medium => rng.between(-0.0005, 0.0015),
        Level::Low => rng.between(-0.003, 0.0003),
    };
    let new = signed_at > from - 120 * DAY;
    Usage {
        users,
        daily_growth,
        ramp_days: if new { rng.between(15.0, 60.0) } else { 0.0 },
        plateau: if new && rng.chance(0.18) {
            rng.between(0.25, 0.55)
        } else {
            1.0
        },
        drop: None,
    }
}

pub fn pick_owner(rng: &mut Rng, tier: Tier, region: Region) -> &'static Csm {
    let team = match tier {
        Tier::High => words::CSMS_HIGH,
        Tier::Low => words::CSMS_LOW,
        // The scaled team works one shared pool, whatever the region.
        Tier::Tech => return rng.pick(words::CSMS_TECH),
    };
    // Mostly the CSM covering the customer's region; sometimes another,
    // as when a book of business is rebalanced.
    match team.iter().find(|c| c.region == region) {
        Some(local) if rng.chance(0.8) => local,
        _ => rng.pick(team),
    }
}

/// An instant on the local date of `day` (any instant of it), between
/// 09:00 and 17:00 local, moved off weekends.
pub fn local_business_time(rng: &mut Rng, day: i64, offset: i64) -> i64 {
    let mut local_day = (day + offset).div_euclid(DAY);
    // 1970-01-01 was a Thursday: weekday 0 is Monday.
    match (local_day + 3).rem_euclid(7) {
        5 => local_day += 2,
        6 => local_day += 1,
        _ => {}
    }
    local_day * DAY - offset + rng.int(9 * HOUR, 17 * HOUR - 1)
}

/// The first anniversary of signing after `after`: a customer who signed
/// 15 months ago has renewed once and renews next in 9 months.
fn next_anniversary(signed_at: i64, zone: &str, after: i64) -> i64 {
    let Ok(tz) = TimeZone::get(zone) else {
        let mut at = signed_at + 365 * DAY;
        while at <= after {
            at += 365 * DAY;
        }
        return at;
    };
    let signed = jiff::Timestamp::from_second(signed_at)
        .expect("in range")
        .to_zoned(tz);
    let mut years = 1;
    loop {
        let at = signed
            .checked_add(years.years())
            .expect("in range")
            .timestamp()
            .as_second();
        if at > after {
            return at;
        }
        years += 1;
    }
}

/// Lower-case ASCII for addresses: "Zoë O'Brien" gives "zoe" and "obrien".
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            'á' | 'à' | 'ä' | 'â' | 'å' | 'ã' => out.push('a'),
            'é' | 'è' | 'ë' | 'ê' => out.push('e'),
            'í' | 'ì' | 'ï' => out.push('i'),
            'ó' | 'ò' | 'ö' | 'ô' | 'ø' | 'õ' => out.push('o'),
            'ú' | 'ù' | 'ü' => out.push('u'),
            'ñ' => out.push('n'),
            'ç' => out.push('c'),
            'ł' => out.push('l'),
            'ß' => out.push_str("ss"),
            _ => {}
        }
    }
    out
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&fold(word));
    }
    out
}

impl Account {
    pub fn id(&self) -> String {
        format!("acc-{:06}", self.index)
    }

    pub fn tier(&self) -> Tier {
        tier(self.mrr, self.growth)
    }

    /// Name indices (first, last) of every slot, distinct within the
    /// account so that two contacts never share an address.
    fn names(&self) -> [(usize, usize); 6] {
        let mut names = [(0, 0); 6];
        for slot in 0..usize::from(self.contacts) {
            // A sponsor's identity changes with each replacement.
            let generation = if slot == usize::from(SPONSOR_SLOT) {
                u64::from(self.sponsor_gen)
            } else {
                0
            };
            let mut rng = Rng::stream(self.seed, stream::CONTACT, slot as u64 | generation << 8);
            let mut name = (
                rng.below(words::FIRST_NAMES.len() as u64) as usize,
                rng.below(words::LAST_NAMES.len() as u64) as usize,
            );
            while names[..slot].contains(&name) {
                name.1 = (name.1 + 1) % words::LAST_NAMES.len();
            }
            names[slot] = name;
        }
        names
    }

    pub fn contact(&self, slot: u8) -> Contact {
        self.contact_with(slot, &self.names())
    }

    fn contact_with(&self, slot: u8, names: &[(usize, usize); 6]) -> Contact {
        let (first, last) = names[usize::from(slot)];
        let (first, last) = (words::FIRST_NAMES[first], words::LAST_NAMES[last]);
        let generation = if slot == SPONSOR_SLOT {
            u64::from(self.sponsor_gen)
        } else {
            0
        };
        let mut rng = Rng::stream(
            self.seed,
            stream::CONTACT,
            u64::from(slot) | generation << 8 | 1 << 16,
        );
        // One contact in five works from another time zone than the
        // company's (a remote admin, a sponsor at headquarters).
        let timezone = if rng.chance(0.2) {
            Some(rng.pick(ZONES).name)
        } else {
            None
        };
        Contact {
            name: format!("{first} {last}"),
            email: format!("{}.{}@{}", fold(first), fold(last), self.domain),
            role: roles(self.contacts)[usize::from(slot)],
            timezone,
            unsubscribed: self.unsubscribed & (1 << slot) != 0,
        }
    }

    /// The email of the contact in `slot`, for event data.
    pub fn contact_email(&self, slot: u8) -> String {
        self.contact(slot).email
    }

    pub fn has_sponsor(&self) -> bool {
        self.contacts > SPONSOR_SLOT + 1
    }

    /// The sponsor's title, fixed per sponsor.
    pub fn sponsor_title(&self) -> &'static str {
        let mut rng = Rng::stream(
            self.seed,
            stream::CONTACT,
            u64::from(self.sponsor_gen) << 8 | 2 << 16,
        );
        rng.pick_copy(words::SPONSOR_TITLES)
    }

    /// Active users at `t`; `noise` is a standard normal deviate.
    pub fn active_users(&self, t: i64, noise: f64) -> i64 {
        let u = &self.usage;
        let age = (t - self.signed_at) as f64 / DAY as f64;
        let ramp = if u.ramp_days > 0.0 {
            (0.15 + age / u.ramp_days).min(1.0)
        } else {
            1.0
        };
        let trend = (u.daily_growth * (t - self.samples_from.min(t)) as f64 / DAY as f64).exp();
        let drop = match u.drop {
            Some(d) if t >= d.start => {
                let fall = ((t - d.start) as f64 / DAY as f64 / d.days).min(1.0);
                let bottom = 1.0 - (1.0 - d.floor) * fall;
                match d.recovery {
                    Some(r) if t >= r => bottom.max(0.85),
                    _ => bottom,
                }
            }
            _ => 1.0,
        };
        let value = u.users * ramp.min(u.plateau) * trend * drop * (1.0 + 0.04 * noise);
        value.round().max(1.0) as i64
    }

    pub fn write_contacts(&self, obj: &mut Obj<'_>) {
        let names = self.names();
        obj.arr("contacts", |arr| {
            for slot in 0..self.contacts {
                let c = self.contact_with(slot, &names);
                arr.obj(|o| {
                    o.str("name", &c.name)
                        .str("email", &c.email)
                        .str("role", c.role);
                    if let Some(tz) = c.timezone {
                        o.str("timezone", tz);
                    }
                    if c.unsubscribed {
                        o.bool("unsubscribed", true);
                    }
                });
            }
        });
    }

    pub fn write_owner(&self, obj: &mut Obj<'_>) {
        obj.obj("owner", |o| {
            o.str("name", self.owner.name)
                .str("email", self.owner.email)
                .str("timezone", self.owner.timezone);
        });
    }

    /// The account as one JSON line (without the newline).
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        let mut o = Obj::new(buf);
        o.str("id", &self.id())
            .str("name", &self.name)
            .int("mrr", i64::from(self.mrr));
        if self.with_arr {
            o.int("arr", i64::from(self.mrr) * 12);
        }
        o.str("timezone", self.zone.name)
            .time("signed_at", self.signed_at)
            .time("renewal_at", self.renewal_at);
        self.write_owner(&mut o);
        o.obj("attributes", |a| {
            a.str("industry", self.industry)
                .str("growth", self.growth.as_str())
                .str("risk", self.risk.as_str())
                .str("plan", plan(self.mrr));
        });
        self.write_contacts(&mut o);
        o.end();
    }
}
