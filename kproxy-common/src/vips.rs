//! The service-address set's ABI: a fixed-size, preallocated hash set of IPv4 addresses in a
//! BPF array of [`VipBucket`]s. An address lives in one of its two buckets
//! ([`vip_buckets`]), so a lookup reads two array entries whatever the number of addresses.
//! The array costs the same kernel memory at 0 or 98,304 addresses (a hash map costs about
//! 88 bytes per address, growing with the services).

use crate::map_name;

/// Service addresses (every frontend address but the node's own, NodePort ones): an array
/// of [`VIP_BUCKETS`] [`VipBucket`]s, each address (network byte order) in one of its two
/// buckets with its [`vip_flags`]. Echo requests to them are answered.
pub const MAP_VIPS: &str = map_name!(MAP_VIPS);

/// Flags of a [`MAP_VIPS`] entry (stored in a byte per slot).
pub mod vip_flags {
    /// Some frontend on the address is reachable from outside (LoadBalancer IP, externalIP):
    /// the uplink answers echo requests to it too, not only pods.
    pub const EXTERNAL: u32 = 1 << 0;
    /// All flags; they fit the byte a slot has.
    pub const ALL: u32 = EXTERNAL;
}
const _: () = assert!(vip_flags::ALL <= u8::MAX as u32);

/// Address slots per bucket.
pub const VIP_SLOTS: usize = 4;
/// Buckets in [`MAP_VIPS`] (a power of two). The kernel rounds each 20-byte value up to 24
/// bytes: 786,432 bytes of values, allocated once.
pub const VIP_BUCKETS: u32 = 32_768;
/// The addresses the planner admits: 3/4 of the 131,072 slots. Two choices with cuckoo
/// relocation (see `kproxy::datapath::vips`) place random addresses without a failure up to
/// over 90 % load, one address per service (65,536, 50 %) with a wide margin.
pub const MAX_VIP_ENTRIES: u32 = VIP_BUCKETS * 3;
const _: () = assert!(VIP_SLOTS == 4);

/// Up to [`VIP_SLOTS`] service addresses (network byte order; 0 marks an empty slot, so the
/// address 0.0.0.0 is never a member) and their [`vip_flags`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipBucket {
    pub addrs: [u32; VIP_SLOTS],
    pub flags: [u8; VIP_SLOTS],
}
const _: () = assert!(core::mem::size_of::<VipBucket>() == 20);

impl VipBucket {
    /// The flags of `addr` if this bucket holds it. Unrolled, constant indices: no loop and
    /// no bounds checks for the verifier.
    #[inline]
    #[must_use]
    pub fn flags_of(&self, addr: u32) -> Option<u8> {
        if addr == 0 {
            None
        } else if self.addrs[0] == addr {
            Some(self.flags[0])
        } else if self.addrs[1] == addr {
            Some(self.flags[1])
        } else if self.addrs[2] == addr {
            Some(self.flags[2])
        } else if self.addrs[3] == addr {
            Some(self.flags[3])
        } else {
            None
        }
    }
}

/// Two different 32-bit mixes of the address, each a bijection with full avalanche, so
/// neighbouring addresses (a ClusterIP range) spread over all buckets, independently of
/// each other. Both are Chris Wellons' `lowbias32`-style xor-shift-multiply chains, with
/// different constants.
#[inline]
const fn mix_a(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

#[inline]
const fn mix_b(mut x: u32) -> u32 {
    // MurmurHash3's finalizer, of the address offset by the golden ratio.
    x ^= 0x9e37_79b9;
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^ (x >> 16)
}

/// The two buckets `addr` (network byte order) may live in; always different.
#[inline]
#[must_use]
pub const fn vip_buckets(addr: u32) -> (u32, u32) {
    let a = mix_a(addr) % VIP_BUCKETS;
    let b = mix_b(addr) % VIP_BUCKETS;
    (a, if a == b { a ^ 1 } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(a: [u8; 4]) -> u32 {
        u32::from_ne_bytes(a)
    }

    #[test]
    #[expect(
        clippy::large_stack_arrays,
        clippy::naive_bytecount,
        reason = "two 32 KiB histograms in a test thread (the crate is no_std: no Vec), counted once"
    )]
    fn bucket_choices_differ_and_spread() {
        const { assert!(VIP_BUCKETS.is_power_of_two()) };
        // A /16 of neighbouring ClusterIPs, as an allocator hands them out: each choice
        // alone fills the buckets about as evenly as random throws (65,536 into 32,768:
        // mean 2, about 13.5 % empty, max well under 12), and the two are unrelated.
        let mut first = [0u8; VIP_BUCKETS as usize];
        let mut second = [0u8; VIP_BUCKETS as usize];
        let mut same_pair = 0u32;
        for i in 0..=u16::MAX {
            let [hi, lo] = i.to_be_bytes();
            let (a, b) = vip_buckets(be([10, 96, hi, lo]));
            assert_ne!(a, b);
            assert!(a < VIP_BUCKETS && b < VIP_BUCKETS);
            first[a as usize] += 1;
            second[b as usize] += 1;
            same_pair += u32::from(a / 2 == b / 2);
        }
        for counts in [&first, &second] {
            let empty = counts.iter().filter(|c| **c == 0).count();
            assert!((4_000..4_900).contains(&empty), "{empty} empty buckets");
            assert!(*counts.iter().max().unwrap() < 12);
        }
        // Unrelated choices: a's and b's pair of buckets coincide about 1 / 16,384 of the time.
        assert!(same_pair < 20, "{same_pair}");
    }

    #[test]
    fn flags_of_finds_members_only() {
        let b = VipBucket {
            addrs: [0, be([10, 0, 0, 1]), 0, be([10, 0, 0, 2])],
            flags: [0, 1, 0, 0],
        };
        assert_eq!(b.flags_of(be([10, 0, 0, 1])), Some(1));
        assert_eq!(b.flags_of(be([10, 0, 0, 2])), Some(0));
        assert_eq!(b.flags_of(be([10, 0, 0, 3])), None);
        assert_eq!(b.flags_of(0), None);
    }
}
