use std::net::Ipv4Addr;

use super::*;
use crate::model::Proto;

fn backends(n: u8) -> Vec<BackendAddr> {
    (1..=n)
        .map(|i| BackendAddr {
            addr: Ipv4Addr::new(10, 0, 1, i),
            port: 8080,
            proto: Proto::Tcp,
        })
        .collect()
}

/// The backend (address) each entry names.
fn named(t: &[u32], bs: &[BackendAddr]) -> Vec<BackendAddr> {
    t.iter().map(|i| bs[*i as usize]).collect()
}

#[test]
fn size_class_is_the_smallest_prime_of_1600_per_backend() {
    assert_eq!(size_of_class(size_class(0)), 251);
    assert_eq!(size_of_class(size_class(1)), 2039);
    assert_eq!(size_of_class(size_class(2)), 4093);
    assert_eq!(size_of_class(size_class(3)), 8191);
    assert_eq!(size_of_class(size_class(6)), 16381);
    assert_eq!(size_of_class(size_class(10)), 16381);
    assert_eq!(size_of_class(size_class(11)), 32749);
    assert_eq!(size_of_class(size_class(40)), 65521);
    assert_eq!(size_of_class(size_class(100_000)), 65521);
    // Still ≥ 100 per backend (Maglev's balance) up to 655 backends.
    assert!(size_of_class(size_class(655)) >= 65_500);
    // 64 tables of 10 backends fit the array.
    let block = MAGLEV_BLOCK_MIN << size_class(10);
    assert_eq!(MAGLEV_ENTRIES / block, 64);
}

#[test]
fn every_backend_gets_its_share() {
    for n in [1u8, 2, 3, 7, 10, 50, 200] {
        let bs = backends(n);
        let size = size_of_class(size_class(bs.len()));
        let t = table(42, &bs, size);
        assert_eq!(t.len(), size as usize);
        let mut counts = vec![0u32; bs.len()];
        for i in &t {
            counts[*i as usize] += 1;
        }
        let fair = size / u32::from(n);
        for c in counts {
            assert!(c.abs_diff(fair) <= 1, "n={n}: {c} entries, fair {fair}");
        }
    }
}

#[test]
fn order_of_backends_does_not_matter() {
    let bs = backends(10);
    let mut rev = bs.clone();
    rev.reverse();
    assert_eq!(
        named(&table(7, &bs, 1021), &bs),
        named(&table(7, &rev, 1021), &rev)
    );
}

#[test]
fn the_seed_changes_the_table() {
    let bs = backends(10);
    let a = table(1, &bs, 1021);
    let b = table(2, &bs, 1021);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // Unrelated tables agree on about 1/N of the entries.
    assert!(same < 1021 / 5, "{same} equal entries");
}

/// Maglev is not perfectly minimal (the paper says so too): when a backend goes, its
/// entries move, and the population order shifts a few more: with 10 backends, on average
/// over seeds and the backend removed, 2.5 % of the table at 1,021 entries, 1.2 % at 4,093,
/// 0.8 % at 8,191, 0.5 % at 16,381 (the size for 10 backends).
#[test]
fn removing_one_backend_moves_its_entries_and_few_others() {
    let m = size_of_class(size_class(10));
    for seed in [0u64, 1, 0xdead_beef, u64::MAX] {
        let bs = backends(10);
        let before = named(&table(seed, &bs, m), &bs);
        let removed = bs[3];
        let rest: Vec<BackendAddr> = bs.iter().copied().filter(|b| *b != removed).collect();
        let after = named(&table(seed, &rest, m), &rest);
        let own = before.iter().filter(|b| **b == removed).count();
        let mut others = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a && *b != removed {
                others += 1;
            }
        }
        assert!(after.iter().all(|a| *a != removed));
        assert!(
            (1638..=1639).contains(&own),
            "{own} entries of the removed backend"
        );
        // The target: ≤ 11 % of flows move when 1 of 10 backends goes.
        assert!(
            own + others <= m as usize * 11 / 100,
            "seed {seed}: {own} + {others} entries moved"
        );
    }
}

/// The mean over 20 seeds × each of the 10 backends removed: ~10.5 % (a few single cases
/// reach ~11.9 %, Maglev's tail).
#[test]
fn removing_one_of_ten_moves_under_11_percent_on_average() {
    let m = size_of_class(size_class(10));
    let bs = backends(10);
    let mut moved = 0usize;
    let mut cases = 0usize;
    for seed in (0..20).map(splitmix) {
        let before = named(&table(seed, &bs, m), &bs);
        for removed in &bs {
            let rest: Vec<BackendAddr> = bs.iter().copied().filter(|b| b != removed).collect();
            let after = named(&table(seed, &rest, m), &rest);
            moved += before.iter().zip(&after).filter(|(b, a)| b != a).count();
            cases += 1;
        }
    }
    let mean = moved as f64 / cases as f64 / f64::from(m);
    assert!(mean <= 0.11, "mean {mean:.4}");
    assert!(mean >= 0.1, "mean {mean:.4}");
}

#[test]
fn adding_one_backend_moves_about_its_share() {
    let m = size_of_class(size_class(10));
    for seed in [0u64, 5, 0x1234_5678_9abc] {
        let bs = backends(10);
        let before = named(&table(seed, &bs, m), &bs);
        let mut more = bs.clone();
        more.push(BackendAddr {
            addr: Ipv4Addr::new(10, 0, 2, 1),
            port: 8080,
            proto: Proto::Tcp,
        });
        let after = named(&table(seed, &more, m), &more);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        // The new backend's share is 1/11 (≈ 1,489 entries); Maglev moves a little more.
        let limit = (m / 10 + m * 3 / 100) as usize;
        assert!(moved <= limit, "{moved} of {m} moved, limit {limit}");
        assert!(moved >= (m / 11 - 1) as usize, "{moved} moved");
    }
}

#[test]
fn modulo_hashing_moves_most_flows() {
    // What `1 + hash % count` (the random/hash algorithm) does when 1 of 10 backends goes:
    // the reference the Maglev figures are compared with.
    let moved = (0u32..10_000)
        .filter(|h| {
            let h = splitmix(u64::from(*h));
            let before = h % 10;
            // Backend 3 removed: the slots of the others are renumbered.
            let after_slot = h % 9;
            let after = if after_slot >= 3 {
                after_slot + 1
            } else {
                after_slot
            };
            before != after
        })
        .count();
    assert!(moved > 8_000, "{moved}");
}

#[test]
fn blocks_are_aligned_reused_and_exhausted() {
    let mut a = BlockAlloc::new();
    let small = a.alloc(0).unwrap();
    assert_eq!(small, 0);
    let big = a.alloc(2).unwrap();
    assert_eq!(big % 1024, 0);
    assert_ne!(big, 0);
    let second = a.alloc(0).unwrap();
    assert_eq!(second, 256);
    a.release(small, 0);
    assert_eq!(a.alloc(0), Some(0));
    assert!(!a.reserve(0, 0), "already in use");
    assert!(!a.reserve(100, 0), "misaligned");
    let mut full = BlockAlloc::new();
    let mut n = 0;
    while full.alloc(8).is_some() {
        n += 1;
    }
    assert_eq!(n, MAGLEV_ENTRIES / (MAGLEV_BLOCK_MIN << 8));
    assert_eq!(full.alloc(0), None);
    let mut r = BlockAlloc::new();
    assert!(r.reserve(2048, 3));
    assert_ne!(r.alloc(3), Some(2048));
}
