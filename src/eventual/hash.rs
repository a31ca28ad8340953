//! The fixed hash behind Merkle leaves and state digests: FNV-1a 64 followed by the
//! SplitMix64 finalizer. Written out here (not `std::hash`) so every process, build and
//! version computes the same value: two nodes compare these hashes over the network.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64-bit.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// SplitMix64's finalizer: spreads FNV's weak high bits, which pick the Merkle leaf.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash that places a key in the Merkle tree.
pub fn key_hash(key: &[u8]) -> u64 {
    mix64(fnv1a_64(key))
}

/// The contribution of one key (with its state digest) to its leaf: leaves and inner nodes
/// are the XOR of their entries, so one key's change updates each level in O(1).
pub fn entry_hash(key_hash: u64, state_digest: u64) -> u64 {
    mix64(key_hash ^ state_digest.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The hash is part of the protocol: these values must never change.
    #[test]
    fn hash_values_are_fixed() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(mix64(0), 0);
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
    }
}
