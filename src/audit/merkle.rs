//! RFC 6962 Merkle trees over the leaves a signed digest covers (research/audit.md §4.2).
//!
//! An event's `leaf` is already an RFC 6962 leaf hash (`SHA-256(0x00 || data)`), so a digest's
//! `batch_merkle_root` is the Merkle Tree Hash of its events' leaves, with interior nodes
//! `SHA-256(0x01 || left || right)` and the empty tree `SHA-256("")`. An inclusion proof (the
//! audit path of RFC 6962 §2.1.1, checked as RFC 9162 §2.1.3.2 says) then shows that one
//! exported event is in a signed batch without revealing any other event of it.
//!
//! [`Frontier`] builds a root as leaves arrive, in O(log n) memory: the writer and `verify` use
//! it. [`Tree`] keeps every level, for the export's proofs. Which leaves a digest covers, and
//! storing digests, is `digest`'s and `writer`'s business.

use crate::audit::event::{Hash, sha256};

/// The Merkle Tree Hash of no leaves.
pub fn empty_root() -> Hash {
    sha256(&[])
}

fn node(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// A tree grown one leaf at a time: the roots of its perfect subtrees, largest first.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    pub fn push(&mut self, leaf: &Hash) {
        self.peaks.push(*leaf);
        // Each trailing one bit of the old size is a perfect subtree the new leaf completes.
        let mut carry = self.size;
        while carry & 1 == 1 {
            let right = self.peaks.pop().expect("a peak per one bit");
            let left = self.peaks.pop().expect("a peak per one bit");
            self.peaks.push(node(&left, &right));
            carry >>= 1;
        }
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// RFC 6962's MTH: the largest perfect subtree on the left, the rest folded in from the right.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(smallest) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*smallest, |right, left| node(left, &right))
    }
}

/// Every level of a tree, leaves first, for audit paths. A level's last node without a
/// sibling moves up unchanged, which gives exactly RFC 6962's tree for any size.
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().expect("at least the leaves").len() > 1 {
            let below = levels.last().expect("at least the leaves");
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node(left, right),
                    [alone] => *alone,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    pub fn size(&self) -> usize {
        self.levels[0].len()
    }

    pub fn root(&self) -> Hash {
        match self.levels.last().expect("at least the leaves").as_slice() {
            [root] => *root,
            _ => empty_root(),
        }
    }

    /// The audit path of leaf `index`, nearest sibling first; `None` past the last leaf.
    pub fn path(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.size() {
            return None;
        }
        let mut path = Vec::new();
        let mut at = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(at ^ 1) {
                path.push(*sibling);
            }
            at /= 2;
        }
        Some(path)
    }
}

/// The root that `path` proves leaf `index` of a `size`-leaf tree to be under (RFC 9162
/// §2.1.3.2); `None` when the path cannot belong to such a tree.
pub fn root_from_path(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut at, mut last) = (index, size - 1);
    let mut root = *leaf;
    for sibling in path {
        if last == 0 {
            return None;
        }
        if at & 1 == 1 || at == last {
            root = node(sibling, &root);
            // A right edge: levels where this node had no sibling are skipped.
            while at & 1 == 0 && at != 0 {
                at >>= 1;
                last >>= 1;
            }
        } else {
            root = node(&root, sibling);
        }
        at >>= 1;
        last >>= 1;
    }
    (last == 0).then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// The Certificate Transparency reference leaves (RFC 6962 test data, as published with
    /// transparency-dev/merkle) and the tree head for each size from 0 to 8.
    const DATA: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaf_hash(data: &[u8]) -> Hash {
        sha256(&[&[0x00], data])
    }

    fn reference_leaves() -> Vec<Hash> {
        DATA.iter().map(|data| leaf_hash(data)).collect()
    }

    #[test]
    fn roots_match_the_rfc_6962_reference_for_every_size() {
        let leaves = reference_leaves();
        for (size, expected) in ROOTS.iter().enumerate() {
            let mut frontier = Frontier::default();
            leaves[..size].iter().for_each(|leaf| frontier.push(leaf));
            assert_eq!(
                hex::encode(&frontier.root()),
                *expected,
                "frontier of {size}"
            );
            let tree = Tree::new(leaves[..size].to_vec());
            assert_eq!(hex::encode(&tree.root()), *expected, "tree of {size}");
        }
    }

    #[test]
    fn audit_paths_match_the_reference_proofs() {
        let tree = Tree::new(reference_leaves());
        let cases = [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, expected) in cases {
            let path: Vec<String> = tree
                .path(index)
                .unwrap()
                .iter()
                .map(|h| hex::encode(h))
                .collect();
            assert_eq!(path, expected, "leaf {index}");
        }
    }

    #[test]
    fn every_proof_of_every_size_verifies_and_nothing_else_does() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for size in 1..=leaves.len() {
            let tree = Tree::new(leaves[..size].to_vec());
            let mut frontier = Frontier::default();
            leaves[..size].iter().for_each(|leaf| frontier.push(leaf));
            assert_eq!(tree.root(), frontier.root(), "size {size}");
            assert_eq!(frontier.size(), size as u64);
            let (n, root) = (size as u64, tree.root());
            for (index, leaf) in leaves[..size].iter().enumerate() {
                let path = tree.path(index).unwrap();
                let i = index as u64;
                assert_eq!(
                    root_from_path(leaf, i, n, &path),
                    Some(root),
                    "{index} of {size}"
                );
                // Another leaf, another place or a shortened path: not this root. (The size is
                // not the proof's to choose: a verifier takes it from the signed digest.)
                let other = leaf_hash(b"other");
                assert_ne!(root_from_path(&other, i, n, &path), Some(root));
                if size > 1 {
                    assert_ne!(root_from_path(leaf, (i + 1) % n, n, &path), Some(root));
                    assert_ne!(root_from_path(leaf, i, n, &path[1..]), Some(root));
                }
            }
            assert_eq!(tree.path(size), None);
            assert_eq!(root_from_path(&leaves[0], n, n, &[]), None);
        }
    }
}
