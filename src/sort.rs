//! A stable sort that compiles to a few hundred bytes per use. The standard library's stable sort
//! is about 3.4 KB of Wasm for each element type and comparison; the lists sorted with this one
//! are short and sized by the config, never by a request: the servers of a pool, config entries.
//! (A request's cache-key parameters, whose count a client chooses, keep the standard sort.)

use std::cmp::Ordering;

/// Sorts `v` stably by `compare`, as `slice::sort_by` does: insertion sort, O(n²) comparisons,
/// for lists of at most a few thousand elements whose length no request sets.
pub(crate) fn stable_sort_by<T>(v: &mut [T], mut compare: impl FnMut(&T, &T) -> Ordering) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && compare(&v[j - 1], &v[j]) == Ordering::Greater {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Sorts `v` stably in its natural order, as `slice::sort` does.
pub(crate) fn stable_sort<T: Ord>(v: &mut [T]) {
    stable_sort_by(v, T::cmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_stable_sort() {
        // Pairs compared by their first element only: equal keys must keep their order.
        let mut seed = 0x2545_f491_u32;
        for len in 0..40 {
            let mut v: Vec<(u8, u32)> = (0..len)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    ((seed % 5) as u8, i)
                })
                .collect();
            let mut want = v.clone();
            want.sort_by_key(|a| a.0);
            stable_sort_by(&mut v, |a, b| a.0.cmp(&b.0));
            assert_eq!(v, want, "length {len}");
        }
        let mut words = vec!["b", "a", "c", "a"];
        stable_sort(&mut words);
        assert_eq!(words, ["a", "a", "b", "c"]);
    }
}
