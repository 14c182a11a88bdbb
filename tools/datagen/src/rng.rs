//! A small deterministic PRNG: xoshiro256** seeded through splitmix64.
//!
//! The generator must give the same files for the same arguments on every
//! machine and every release, so it owns its randomness instead of
//! depending on a crate whose algorithms may change between versions.
//! Nothing here reads the clock or the operating system.

/// The splitmix64 finaliser: a strong 64-bit mix, used to seed and to
/// derive independent streams from (seed, purpose, index).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives the seed of one independent stream, such as "the contacts of
/// account 42", so that drawing more numbers in one stream never shifts
/// another.
pub fn derive(seed: u64, purpose: u64, index: u64) -> u64 {
    mix(mix(seed ^ mix(purpose)) ^ index)
}

/// xoshiro256** (Blackman and Vigna): fast, small state, good statistics.
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        // splitmix64 itself: `mix` adds the increment before finalising.
        let mut next = || {
            let z = state;
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix(z)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn stream(seed: u64, purpose: u64, index: u64) -> Self {
        Rng::new(derive(seed, purpose, index))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); Lemire's multiply-shift, bias below 2^-64 * n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [lo, hi], both included.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Picks a copy of an item (word lists of `&'static str`).
    pub fn pick_copy<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick(items)
    }

    /// Picks an item in proportion to its weight.
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut ticket = self.below(total);
        for (item, weight) in items {
            if ticket < u64::from(*weight) {
                return item;
            }
            ticket -= u64::from(*weight);
        }
        unreachable!("ticket is below the total weight")
    }

    /// Standard normal deviate (Box-Muller; one of the pair is discarded to
    /// keep the generator stateless beyond its four words).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
