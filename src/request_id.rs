//! Request ids: unique per isolate and unguessable enough to tell requests apart in logs.
//!
//! Contract: [`RequestIds::next`] returns 32 lower-case hex digits, never the same twice for one
//! generator. The seed is an input (the adapter draws it from the platform's random source once
//! per isolate), so the core stays deterministic under test.

/// A request id generator. See the module docs.
#[derive(Debug, Clone)]
pub struct RequestIds {
    seed: u64,
    counter: u64,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RequestIds {
    /// A generator seeded with 128 random bits.
    pub fn new(seed: [u8; 16]) -> Self {
        let (a, b) = seed.split_at(8);
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(a);
        lo.copy_from_slice(b);
        RequestIds {
            seed: u64::from_le_bytes(hi),
            counter: u64::from_le_bytes(lo),
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        // A bijection of the counter: distinct counters give distinct low halves.
        let low = splitmix64(self.counter ^ self.seed);
        let high = splitmix64(low ^ self.seed.rotate_left(32));
        format!("{high:016x}{low:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let mut ids = RequestIds::new([7; 16]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next_id();
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(seen.insert(id));
        }
        assert_ne!(
            RequestIds::new([1; 16]).next_id(),
            RequestIds::new([2; 16]).next_id()
        );
    }
}
