//! Word lists the sample data is made from: zones, company names, people,
//! the vendor's CSMs, ticket subjects, survey comments, releases.
//!
//! Only constants live here. Every email domain ends in `.example`
//! (RFC 2606), so no generated address can ever reach a real inbox.

/// A customer's region, which picks its company suffixes and CSMs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Region {
    NorthAmerica,
    Europe,
    Apac,
    Latam,
}

pub struct Zone {
    pub name: &'static str,
    pub region: Region,
    /// Relative share of customers in this zone.
    pub weight: u32,
    /// Legal suffixes seen there; "" (no suffix) is how most people write
    /// a company's name.
    pub suffixes: &'static [&'static str],
}

const US: &[&str] = &["", "", "", "Inc.", "LLC", "Co."];
const UK: &[&str] = &["", "", "Ltd"];
const DE: &[&str] = &["", "GmbH", "GmbH"];
const FR: &[&str] = &["", "SAS"];
const ES: &[&str] = &["", "S.L."];
const NL: &[&str] = &["", "B.V."];
const SE: &[&str] = &["", "AB"];
const PL: &[&str] = &["", "Sp. z o.o."];
const JP: &[&str] = &["", "K.K."];
const SG: &[&str] = &["", "Pte. Ltd."];
const AU: &[&str] = &["", "Pty Ltd"];
const IN: &[&str] = &["", "Pvt. Ltd."];
const BR: &[&str] = &["", "Ltda."];
const MX: &[&str] = &["", "S.A. de C.V."];
const SA: &[&str] = &["", "S.A."];
const NONE: &[&str] = &[""];

/// Roughly the customer mix of a US-founded B2B SaaS vendor: 43% North
/// America, 33% Europe, 16% Asia-Pacific, 10% Latin America.
pub const ZONES: &[Zone] = &[
    Zone { name: "America/New_York", region: Region::NorthAmerica, weight: 14, suffixes: US },
    Zone { name: "America/Chicago", region: Region::NorthAmerica, weight: 9, suffixes: US },
    Zone { name: "America/Denver", region: Region::NorthAmerica, weight: 4, suffixes: US },
    Zone { name: "America/Phoenix", region: Region::NorthAmerica, weight: 1, suffixes: US },
    Zone { name: "America/Los_Angeles", region: Region::NorthAmerica, weight: 11, suffixes: US },
    Zone { name: "America/Toronto", region: Region::NorthAmerica, weight: 3, suffixes: US },
    Zone { name: "America/Vancouver", region: Region::NorthAmerica, weight: 1, suffixes: US },
    Zone { name: "Europe/London", region: Region::Europe, weight: 9, suffixes: UK },
    Zone { name: "Europe/Dublin", region: Region::Europe, weight: 2, suffixes: UK },
    Zone { name: "Europe/Berlin", region: Region::Europe, weight: 6, suffixes: DE },
    Zone { name: "Europe/Zurich", region: Region::Europe, weight: 1, suffixes: DE },
    Zone { name: "Europe/Paris", region: Region::Europe, weight: 5, suffixes: FR },
    Zone { name: "Europe/Madrid", region: Region::Europe, weight: 3, suffixes: ES },
    Zone { name: "Europe/Amsterdam", region: Region::Europe, weight: 3, suffixes: NL },
    Zone { name: "Europe/Stockholm", region: Region::Europe, weight: 2, suffixes: SE },
    Zone { name: "Europe/Warsaw", region: Region::Europe, weight: 2, suffixes: PL },
    Zone { name: "Asia/Tokyo", region: Region::Apac, weight: 3, suffixes: JP },
    Zone { name: "Asia/Singapore", region: Region::Apac, weight: 3, suffixes: SG },
    Zone { name: "Asia/Hong_Kong", region: Region::Apac, weight: 1, suffixes: NONE },
    Zone { name: "Asia/Seoul", region: Region::Apac, weight: 1, suffixes: NONE },
    Zone { name: "Asia/Kolkata", region: Region::Apac, weight: 3, suffixes: IN },
    Zone { name: "Australia/Sydney", region: Region::Apac, weight: 4, suffixes: AU },
    Zone { name: "Pacific/Auckland", region: Region::Apac, weight: 1, suffixes: AU },
    Zone { name: "America/Sao_Paulo", region: Region::Latam, weight: 4, suffixes: BR },
    Zone { name: "America/Mexico_City", region: Region::Latam, weight: 3, suffixes: MX },
    Zone { name: "America/Bogota", region: Region::Latam, weight: 1, suffixes: SA },
    Zone { name: "America/Argentina/Buenos_Aires", region: Region::Latam, weight: 1, suffixes: SA },
    Zone { name: "America/Santiago", region: Region::Latam, weight: 1, suffixes: SA },
];

pub const BRAND_HEADS: &[&str] = &[
    "North", "Blue", "Bright", "Silver", "Red", "Green", "Iron", "Clear", "Swift", "Stone",
    "Oak", "Pine", "Maple", "Cedar", "River", "Harbor", "Summit", "Sun", "Star", "Cloud",
    "True", "Open", "Prime", "Key", "Wild", "Golden", "High", "Lake", "Ever", "Fair",
    "Copper", "Granite", "Quick", "Bold", "Deep", "Hazel", "Lumen", "Nova", "Terra", "Vista",
];

pub const BRAND_TAILS: &[&str] = &[
    "wind", "peak", "field", "wave", "stone", "bridge", "gate", "line", "point", "works",
    "path", "light", "ridge", "brook", "crest", "forge", "leaf", "mark", "view", "well",
    "spring", "craft", "haven", "wood", "port", "way", "lane", "shore", "vale", "rock",
];

pub struct Industry {
    pub name: &'static str,
    pub weight: u32,
    /// Words a company in this industry puts after its brand.
    pub nouns: &'static [&'static str],
}

pub const INDUSTRIES: &[Industry] = &[
    Industry { name: "saas", weight: 16, nouns: &["Software", "Cloud", "Labs", "Systems", "Analytics"] },
    Industry { name: "fintech", weight: 10, nouns: &["Capital", "Pay", "Finance", "Ledger", "Money"] },
    Industry { name: "retail", weight: 10, nouns: &["Goods", "Outfitters", "Market", "Stores", "Home"] },
    Industry { name: "healthcare", weight: 9, nouns: &["Health", "Care", "Clinics", "Medical", "Bio"] },
    Industry { name: "logistics", weight: 8, nouns: &["Logistics", "Freight", "Shipping", "Transport", "Supply"] },
    Industry { name: "manufacturing", weight: 8, nouns: &["Manufacturing", "Industries", "Components", "Robotics", "Tools"] },
    Industry { name: "education", weight: 7, nouns: &["Learning", "Academy", "Education", "Schools", "Tutors"] },
    Industry { name: "media", weight: 6, nouns: &["Media", "Studios", "Publishing", "Radio", "Creative"] },
    Industry { name: "real-estate", weight: 5, nouns: &["Properties", "Realty", "Homes", "Estates", "Living"] },
    Industry { name: "hospitality", weight: 5, nouns: &["Hotels", "Hospitality", "Kitchens", "Resorts", "Dining"] },
    Industry { name: "legal", weight: 4, nouns: &["Legal", "Law Group", "Partners", "Advisors", "Compliance"] },
    Industry { name: "energy", weight: 4, nouns: &["Energy", "Solar", "Power", "Renewables", "Grid"] },
    Industry { name: "nonprofit", weight: 3, nouns: &["Foundation", "Alliance", "Trust", "Network", "Institute"] },
    Industry { name: "insurance", weight: 3, nouns: &["Insurance", "Assurance", "Mutual", "Underwriters", "Cover"] },
    Industry { name: "construction", weight: 3, nouns: &["Construction", "Builders", "Engineering", "Contractors", "Projects"] },
    Industry { name: "travel", weight: 3, nouns: &["Travel", "Journeys", "Tours", "Trips", "Voyages"] },
];

pub const FIRST_NAMES: &[&str] = &[
    "Ann", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hiro", "Isabel", "James",
    "Kavya", "Liam", "Maya", "Noah", "Olivia", "Pedro", "Quinn", "Rosa", "Samir", "Tara",
    "Umar", "Valentina", "Wei", "Ximena", "Yuki", "Zoë", "Aaliyah", "Bruno", "Chloé", "Diego",
    "Emeka", "Fatou", "Gustav", "Hana", "Ingrid", "Jonas", "Keiko", "Lucas", "Mei", "Nadia",
    "Oscar", "Pooja", "Rafael", "Sara", "Thomas", "Uma", "Victor", "Wanjiru", "Yara", "Zain",
    "Amelia", "Arjun", "Camille", "Daniel", "Emma", "Finn", "Hannah", "Ivan", "José", "Kenji",
    "Laura", "Mateo", "Nina", "Omar", "Priya", "Ryan", "Sofia", "Tomasz", "Vera", "William",
];

pub const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Garcia", "Müller", "Rossi", "Tanaka", "Kim", "Nguyen", "Silva", "Patel",
    "Okafor", "Novak", "Jensen", "Dubois", "Kowalski", "Ivanova", "Santos", "Cohen", "Haddad", "Larsen",
    "O'Brien", "Fischer", "Moreau", "Ferreira", "Sato", "Chen", "Wang", "Singh", "Mendoza", "Andersson",
    "Brown", "Wilson", "Taylor", "Martin", "Lopez", "Schmidt", "Romano", "Yamamoto", "Park", "Tran",
    "Costa", "Shah", "Adeyemi", "Horvat", "Nielsen", "Lambert", "Nowak", "Petrov", "Almeida", "Levi",
    "Ahmed", "Becker", "Bianchi", "Ito", "Lee", "Pham", "Rocha", "Gupta", "Mensah", "Kaya",
];

pub const SPONSOR_TITLES: &[&str] = &[
    "VP Operations", "Chief Operating Officer", "Head of Customer Experience", "Director of IT",
    "VP Sales", "Chief Technology Officer", "Head of Finance", "VP People",
];

/// The vendor's CSM team: four per tier so that an account's owner fits
/// the way its segment is served.
pub struct Csm {
    pub name: &'static str,
    pub email: &'static str,
    pub timezone: &'static str,
    pub region: Region,
}

pub const CSMS_HIGH: &[Csm] = &[
    Csm { name: "Dana Lee", email: "dana.lee@acme.example", timezone: "America/New_York", region: Region::NorthAmerica },
    Csm { name: "Priya Raman", email: "priya.raman@acme.example", timezone: "Asia/Singapore", region: Region::Apac },
    Csm { name: "Marcus Oyelaran", email: "marcus.oyelaran@acme.example", timezone: "Europe/London", region: Region::Europe },
    Csm { name: "Sofia Marchetti", email: "sofia.marchetti@acme.example", timezone: "America/Sao_Paulo", region: Region::Latam },
];

pub const CSMS_LOW: &[Csm] = &[
    Csm { name: "Tom Becker", email: "tom.becker@acme.example", timezone: "America/Chicago", region: Region::NorthAmerica },
    Csm { name: "Luis Ortega", email: "luis.ortega@acme.example", timezone: "America/Mexico_City", region: Region::Latam },
    Csm { name: "Hannah Kowalski", email: "hannah.kowalski@acme.example", timezone: "Europe/Warsaw", region: Region::Europe },
    Csm { name: "Aiko Tanaka", email: "aiko.tanaka@acme.example", timezone: "Asia/Tokyo", region: Region::Apac },
];

pub const CSMS_TECH: &[Csm] = &[
    Csm { name: "Jordan Miles", email: "jordan.miles@acme.example", timezone: "America/Denver", region: Region::NorthAmerica },
    Csm { name: "Fatima Haddad", email: "fatima.haddad@acme.example", timezone: "Europe/Paris", region: Region::Europe },
    Csm { name: "Chris Nguyen", email: "chris.nguyen@acme.example", timezone: "Australia/Sydney", region: Region::Apac },
    Csm { name: "Camila Reyes", email: "camila.reyes@acme.example", timezone: "America/Bogota", region: Region::Latam },
];

pub const TICKETS_LOW: &[&str] = &[
    "Question about exporting reports to CSV",
    "How do I change my notification settings?",
    "Feature request: dark mode",
    "Typo in the invoice template",
    "Can we rename a workspace?",
];

pub const TICKETS_NORMAL: &[&str] = &[
    "Invite emails not arriving for new users",
    "Dashboard loads slowly in the afternoon",
    "Need help setting up SSO groups",
    "CSV import skips rows with accented names",
    "Webhook deliveries look duplicated",
];

pub const TICKETS_HIGH: &[&str] = &[
    "Scheduled reports did not send this morning",
    "API returning 429 for our integration",
    "Several users locked out after a password reset",
    "Data sync delayed by more than an hour",
];

pub const TICKETS_URGENT: &[&str] = &[
    "Production outage: app not loading for all users",
    "SSO login failing for the whole company",
    "Data sync stopped: orders not flowing",
    "Payment run blocked by an error",
    "Security concern: unexpected admin account added",
];

pub const COURSES: &[&str] = &[
    "Admin essentials",
    "Building your first workflow",
    "Reporting and dashboards",
    "Integrations 101",
    "Advanced automation",
];

pub const NPS_DETRACTOR: &[&str] = &[
    "Too many bugs since the last update.",
    "Support takes days to answer.",
    "Hard to get my team to use it.",
    "Pricing went up and we use less of it.",
    "Missing the integrations we need.",
    "",
];

pub const NPS_PASSIVE: &[&str] = &[
    "Does the job, reporting could be better.",
    "Good product, onboarding was slow.",
    "Fine overall.",
    "",
];

pub const NPS_PROMOTER: &[&str] = &[
    "Saves my team hours every week.",
    "Great support, fast answers.",
    "Easy to roll out to new people.",
    "The new dashboards are excellent.",
    "",
];

/// Product releases announced during the period, in order: title,
/// summary, and the lowest plan that gets the feature (rank in
/// `accounts::PLANS`: 0 starter, 1 team, 2 business, 3 enterprise).
pub const RELEASES: &[(&str, &str, usize)] = &[
    ("Workflow builder", "Build multi-step workflows with a drag-and-drop editor.", 0),
    ("Scheduled exports", "Send any report as CSV or PDF on a schedule you choose.", 1),
    ("Audit log", "See who changed what, with twelve months of history.", 2),
    ("Usage insights", "A new dashboard showing adoption by team and by feature.", 0),
    ("SCIM provisioning", "Create and remove users automatically from your identity provider.", 3),
    ("Mobile app 2.0", "A faster mobile app for iOS and Android that works offline.", 0),
];
