//! SplitMix64: the crate's one pseudo-random generator. Tiny, seedable and reproducible,
//! which is all arrival jitter, chaos rates and the mock's injected failures need.

/// A SplitMix64 stream. `Copy`, so a caller may keep it in a `Cell`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A stream for `seed` and `salt`. Hashing (rather than offsetting) the start state keeps
    /// streams of different salts (shards, say) from being shifted copies of each other.
    pub fn new(seed: u64, salt: u64) -> Self {
        SplitMix64(mix64(seed ^ mix64(salt)))
    }

    /// A stream whose state starts at `state` as it is (no hashing).
    pub fn from_state(state: u64) -> Self {
        SplitMix64(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Exp(1); finite because 1 - unit() is in (0, 1].
    pub fn exp(&mut self) -> f64 {
        -(-self.unit()).ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sequence() {
        // SplitMix64 from state 0 (Steele, Lea and Flood's reference output).
        let mut r = SplitMix64::from_state(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn unit_and_below_stay_in_range() {
        let mut r = SplitMix64::new(7, 1);
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(10) < 10);
            assert!(r.exp().is_finite());
        }
        assert_eq!(r.below(0), 0);
    }
}
