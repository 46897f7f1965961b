//! CPython's `random.Random` (MT19937) — just the calls the Spark harness's corpus generator uses
//! (`seed(int)`, `randint`, `choice`, `choices`, `random`), reproduced bit for bit so that
//! `spate gen words` writes byte-identical corpora to `../shared/bench/spark/common.py`.
//!
//! Sources: CPython `Modules/_randommodule.c` (`init_genrand`, `init_by_array`, `genrand_uint32`,
//! `random_random`, `getrandbits` for k ≤ 32) and `Lib/random.py` 3.11 (`_randbelow_with_getrandbits`,
//! `randrange`, `choice`, `choices` without weights: `population[floor(random() * n)]`).

const N: usize = 624;
const M: usize = 397;

/// A CPython-compatible Mersenne Twister.
pub(crate) struct PyRandom {
    mt: [u32; N],
    mti: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom").field("mti", &self.mti).finish()
    }
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub(crate) fn new(seed: u64) -> Self {
        // CPython: key = 32-bit words of abs(seed), least significant first; [0] for 0.
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut r = PyRandom {
            mt: [0; N],
            mti: N + 1,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(self.mt[i - 1] ^ (self.mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        self.mti = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        let mut k = N.max(key.len());
        while k > 0 {
            self.mt[i] = (self.mt[i]
                ^ (self.mt[i - 1] ^ (self.mt[i - 1] >> 30)).wrapping_mul(1_664_525))
            .wrapping_add(key[j])
            .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = N - 1;
        while k > 0 {
            self.mt[i] = (self.mt[i]
                ^ (self.mt[i - 1] ^ (self.mt[i - 1] >> 30)).wrapping_mul(1_566_083_941))
            .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            k -= 1;
        }
        self.mt[0] = 0x8000_0000;
    }

    /// `genrand_uint32`.
    pub(crate) fn next_u32(&mut self) -> u32 {
        const MAG01: [u32; 2] = [0, 0x9908_b0df];
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        if self.mti >= N {
            for kk in 0..N - M {
                let y = (self.mt[kk] & UPPER) | (self.mt[kk + 1] & LOWER);
                self.mt[kk] = self.mt[kk + M] ^ (y >> 1) ^ MAG01[(y & 1) as usize];
            }
            for kk in N - M..N - 1 {
                let y = (self.mt[kk] & UPPER) | (self.mt[kk + 1] & LOWER);
                self.mt[kk] = self.mt[kk + M - N] ^ (y >> 1) ^ MAG01[(y & 1) as usize];
            }
            let y = (self.mt[N - 1] & UPPER) | (self.mt[0] & LOWER);
            self.mt[N - 1] = self.mt[M - 1] ^ (y >> 1) ^ MAG01[(y & 1) as usize];
            self.mti = 0;
        }
        let mut y = self.mt[self.mti];
        self.mti += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `random()`: a float in [0, 1) with 53 random bits.
    pub(crate) fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for 1 ≤ k ≤ 32.
    fn getrandbits(&mut self, k: u32) -> u32 {
        debug_assert!((1..=32).contains(&k));
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow_with_getrandbits(n)` for 1 ≤ n < 2^32.
    pub(crate) fn randbelow(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros(); // n.bit_length()
        let mut r = self.getrandbits(k.max(1));
        while r >= n {
            r = self.getrandbits(k.max(1));
        }
        r
    }

    /// `randint(a, b)` (inclusive), for small ranges.
    pub(crate) fn randint(&mut self, a: u32, b: u32) -> u32 {
        a + self.randbelow(b - a + 1)
    }

    /// One element index of `choices(population, k=…)` without weights.
    pub(crate) fn choices_index(&mut self, n: usize) -> usize {
        (self.random() * n as f64).floor() as usize
    }
}

/// `common.vocabulary(size, seed)`: `size` distinct words of 3–10 lowercase letters drawn with
/// `randint` / `randbelow` (the Spark harness's vocabulary is `vocabulary(10_000, 20_240_601)`).
pub(crate) fn vocabulary(size: usize, seed: u64) -> Vec<String> {
    let mut rng = PyRandom::new(seed);
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut seen = std::collections::HashSet::with_capacity(size);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let len = rng.randint(3, 10);
        let w: String = (0..len)
            .map(|_| letters[rng.randbelow(26) as usize] as char)
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython() {
        // python3 -c "import random; r=random.Random(1); print([r.getrandbits(32) for _ in range(3)])"
        let mut r = PyRandom::new(1);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [PY_SEED1_U32[0], PY_SEED1_U32[1], PY_SEED1_U32[2]]
        );
        // python3 -c "import random; r=random.Random(20240601); print(repr(r.random()))"
        let mut r = PyRandom::new(20_240_601);
        assert_eq!(r.random().to_bits(), PY_SEED_VOCAB_RANDOM.to_bits());
    }

    const PY_SEED1_U32: [u32; 3] = [577_090_037, 2_444_712_010, 3_639_700_191];
    const PY_SEED_VOCAB_RANDOM: f64 = 0.117_996_487_434_596_45;
}
