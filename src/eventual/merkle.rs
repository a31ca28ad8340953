//! A fixed-shape Merkle tree over a keyspace: fan-out [`FANOUT`], [`DEPTH`] levels below the
//! root, [`LEAVES`] leaves. A key lives in the leaf named by the top bits of its
//! [`key_hash`](super::hash::key_hash); a leaf's hash is the XOR of its keys'
//! [`entry_hash`](super::hash::entry_hash)es, and an inner node's is the XOR of its children's.
//!
//! XOR makes the tree incremental: changing one key flips the same bits in its leaf and in
//! every ancestor, O(`DEPTH`) per change, and an empty subtree hashes to 0. Two trees are
//! compared top-down, descending only into children whose hashes differ.
//!
//! ```text
//!  level 0            [root]
//!  level 1      [0] [1] ... [15]
//!  ...
//!  level 4   65,536 leaves: leaf = key_hash >> 48
//! ```
//!
//! The shape is a protocol constant: every node must use the same one.

use serde::{Deserialize, Serialize};

/// Children per inner node.
pub const FANOUT: usize = 16;
/// Bits of the key hash consumed per level.
pub const FANOUT_BITS: u32 = 4;
/// Levels below the root. Leaves are at level `DEPTH`.
pub const DEPTH: u8 = 4;
/// Number of leaves: `FANOUT ^ DEPTH`. 65,536 leaves hold ~15 keys each at 1M keys.
pub const LEAVES: usize = 1 << (FANOUT_BITS * DEPTH as u32);

const _: () = assert!(FANOUT == 1 << FANOUT_BITS);
const _: () = assert!(LEAVES == FANOUT.pow(DEPTH as u32));

/// A node of the tree: its level (0 = root) and its index within the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// 0 for the root, [`DEPTH`] for leaves.
    pub level: u8,
    /// Index within the level, below `FANOUT ^ level`.
    pub index: u32,
}

impl NodeRef {
    /// The root.
    pub const ROOT: NodeRef = NodeRef { level: 0, index: 0 };

    /// True if `level` and `index` name a node of the tree (checks peer input).
    pub fn is_valid(self) -> bool {
        self.level <= DEPTH && (self.index as usize) < FANOUT.pow(u32::from(self.level))
    }

    /// True for a leaf.
    pub fn is_leaf(self) -> bool {
        self.level == DEPTH
    }

    /// The `slot`-th child. Must not be called on a leaf.
    pub fn child(self, slot: usize) -> NodeRef {
        assert!(!self.is_leaf(), "invariant: leaves have no children");
        assert!(slot < FANOUT, "invariant: child slot below the fan-out");
        NodeRef {
            level: self.level + 1,
            index: self.index * FANOUT as u32 + slot as u32,
        }
    }

    /// The range of key hashes under this node (end exclusive, `None` = up to `u64::MAX`).
    pub fn hash_range(self) -> (u64, Option<u64>) {
        let shift = 64 - FANOUT_BITS * u32::from(self.level);
        if self.level == 0 {
            return (0, None);
        }
        let start = u64::from(self.index) << shift;
        let end = u64::from(self.index).checked_add(1).and_then(|next| {
            if next >= 1u64 << (FANOUT_BITS * u32::from(self.level)) {
                None
            } else {
                Some(next << shift)
            }
        });
        (start, end)
    }
}

/// The leaf a key hash belongs to.
pub fn leaf_of(key_hash: u64) -> u32 {
    (key_hash >> (64 - FANOUT_BITS * u32::from(DEPTH))) as u32
}

/// The tree. Invariant: every inner node's hash is the XOR of its children's, and every
/// leaf's hash is the XOR of the entry hashes of the keys in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[l]` holds the `FANOUT^l` hashes of level `l`.
    levels: Vec<Vec<u64>>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        MerkleTree::new()
    }
}

impl MerkleTree {
    /// The tree of an empty keyspace (all hashes 0).
    pub fn new() -> MerkleTree {
        let levels = (0..=DEPTH)
            .map(|level| vec![0; FANOUT.pow(u32::from(level))])
            .collect();
        MerkleTree { levels }
    }

    /// A tree built from scratch over `(key_hash, entry_hash)` pairs.
    pub fn from_entries(entries: impl IntoIterator<Item = (u64, u64)>) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for (key_hash, entry) in entries {
            tree.update(key_hash, 0, entry);
        }
        tree
    }

    /// A tree from its leaves' hashes (`(leaf, hash)`, leaves not named are 0): what a store
    /// keeps, so a restart reads O(leaves), not every key.
    pub fn from_leaves(leaves: impl IntoIterator<Item = (u32, u64)>) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for (leaf, hash) in leaves {
            if (leaf as usize) < LEAVES {
                tree.flip_leaf(leaf as usize, hash);
            }
        }
        tree
    }

    /// Replaces a key's entry hash `old` by `new` (0 = no entry): O(`DEPTH`).
    pub fn update(&mut self, key_hash: u64, old: u64, new: u64) {
        self.flip_leaf(leaf_of(key_hash) as usize, old ^ new);
    }

    /// XORs `change` into a leaf and every node above it.
    fn flip_leaf(&mut self, leaf: usize, change: u64) {
        if change == 0 {
            return;
        }
        for level in 0..=DEPTH {
            let index = leaf >> (FANOUT_BITS * u32::from(DEPTH - level));
            self.levels[usize::from(level)][index] ^= change;
        }
    }

    /// The root hash.
    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    /// The hash of one node. `node` must be valid.
    pub fn hash(&self, node: NodeRef) -> u64 {
        assert!(
            node.is_valid(),
            "invariant: callers validate node references"
        );
        self.levels[usize::from(node.level)][node.index as usize]
    }

    /// The hashes of a node's children. `node` must be a valid inner node.
    pub fn children(&self, node: NodeRef) -> [u64; FANOUT] {
        assert!(
            node.is_valid() && !node.is_leaf(),
            "invariant: children of an inner node"
        );
        let start = node.index as usize * FANOUT;
        let mut hashes = [0; FANOUT];
        hashes.copy_from_slice(&self.levels[usize::from(node.level) + 1][start..start + FANOUT]);
        hashes
    }

    /// The children of `node` whose hashes differ from `theirs`.
    pub fn differing_children(&self, node: NodeRef, theirs: &[u64; FANOUT]) -> Vec<NodeRef> {
        let mine = self.children(node);
        (0..FANOUT)
            .filter(|slot| mine[*slot] != theirs[*slot])
            .map(|slot| node.child(slot))
            .collect()
    }

    /// All leaves where two trees differ, descending only into differing subtrees.
    pub fn diff(&self, other: &MerkleTree) -> Vec<u32> {
        let mut frontier = vec![NodeRef::ROOT];
        if self.root() == other.root() {
            return Vec::new();
        }
        for _ in 0..DEPTH {
            frontier = frontier
                .iter()
                .flat_map(|node| self.differing_children(*node, &other.children(*node)))
                .collect();
        }
        frontier.into_iter().map(|leaf| leaf.index).collect()
    }

    /// Checks the XOR invariant of every inner node: O(size), for tests and debug checks.
    pub fn check_invariants(&self) {
        for level in 0..DEPTH {
            for (index, hash) in self.levels[usize::from(level)].iter().enumerate() {
                let node = NodeRef {
                    level,
                    index: index as u32,
                };
                let folded = self.children(node).iter().fold(0, |acc, h| acc ^ h);
                assert_eq!(
                    *hash, folded,
                    "invariant: node {node:?} is the XOR of its children"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::hash::{entry_hash, key_hash};

    fn entries(count: u64, salt: u64) -> Vec<(u64, u64)> {
        (0..count)
            .map(|i| {
                let key = key_hash(&i.to_le_bytes());
                (key, entry_hash(key, i ^ salt))
            })
            .collect()
    }

    #[test]
    fn merkle_incremental_equals_rebuilt_from_scratch() {
        let mut incremental = MerkleTree::new();
        let first = entries(500, 0);
        for (key, entry) in &first {
            incremental.update(*key, 0, *entry);
        }
        // Change every third key, delete every fifth.
        let mut final_entries = Vec::new();
        for (i, (key, entry)) in first.iter().enumerate() {
            if i % 5 == 0 {
                incremental.update(*key, *entry, 0);
            } else if i % 3 == 0 {
                let changed = entry_hash(*key, 77 + i as u64);
                incremental.update(*key, *entry, changed);
                final_entries.push((*key, changed));
            } else {
                final_entries.push((*key, *entry));
            }
        }
        incremental.check_invariants();
        assert_eq!(incremental, MerkleTree::from_entries(final_entries));
        assert_ne!(incremental.root(), 0);
    }

    #[test]
    fn merkle_diff_finds_exactly_the_differing_leaves() {
        let base = entries(2_000, 0);
        let mut changed = base.clone();
        let mut expected = Vec::new();
        for i in [3usize, 500, 1_999] {
            changed[i].1 ^= 1;
            expected.push(leaf_of(changed[i].0));
        }
        let extra = key_hash(b"only-on-one-side");
        changed.push((extra, entry_hash(extra, 5)));
        expected.push(leaf_of(extra));
        expected.sort();
        expected.dedup();
        let mine = MerkleTree::from_entries(base);
        let theirs = MerkleTree::from_entries(changed);
        assert_eq!(mine.diff(&theirs), expected);
        assert_eq!(theirs.diff(&mine), expected);
        assert!(mine.diff(&mine.clone()).is_empty());
    }

    #[test]
    fn node_hash_ranges_tile_the_key_space() {
        let leaf = NodeRef {
            level: DEPTH,
            index: 5,
        };
        assert_eq!(leaf.hash_range(), (5 << 48, Some(6 << 48)));
        let last = NodeRef {
            level: 1,
            index: 15,
        };
        assert_eq!(last.hash_range(), (15 << 60, None));
        assert_eq!(NodeRef::ROOT.hash_range(), (0, None));
        assert!(
            !NodeRef {
                level: 2,
                index: 256
            }
            .is_valid()
        );
        assert!(
            !NodeRef {
                level: DEPTH + 1,
                index: 0
            }
            .is_valid()
        );
        assert_eq!(leaf_of(u64::MAX), (LEAVES - 1) as u32);
    }
}
