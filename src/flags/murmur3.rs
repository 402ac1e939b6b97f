//! MurmurHash3, x86 32-bit variant: the hash Unleash buckets with.
//!
//! Written here rather than taken from a crate because the evaluator hashes
//! `"<groupId>:<id>"` on every evaluation and the common crate reads through `io::Read`; this
//! version hashes several byte slices as one string without allocating for typical sizes.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// The hash of the concatenation of `parts`.
pub fn hash_parts(parts: &[&[u8]], seed: u32) -> u32 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut stack = [0u8; 256];
    let joined: Vec<u8>;
    let bytes: &[u8] = if len <= stack.len() {
        let mut at = 0;
        for part in parts {
            stack[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        &stack[..len]
    } else {
        joined = parts.concat();
        &joined
    };
    hash(bytes, seed)
}

/// MurmurHash3_x86_32 of `bytes`.
pub fn hash(bytes: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut blocks = bytes.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= mix(k);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, byte) in tail.iter().enumerate() {
            k |= (*byte as u32) << (8 * i);
        }
        h ^= mix(k);
    }
    h ^= bytes.len() as u32;
    fmix(h)
}

fn mix(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        assert_eq!(hash(b"", 0), 0);
        assert_eq!(hash(b"", 1), 0x514e_28b7);
        assert_eq!(hash(b"hello", 0), 0x248b_fa47);
        assert_eq!(hash("My 🚀 is full of 🦎.".as_bytes(), 0), 1_818_098_979);
        assert_eq!(hash(b"AB12A:122", 0), 1_062_108_722);
        assert_eq!(hash(b"Feature.Variants.B:2", 86_028_157), 764_876_931);
        assert_eq!(hash(b"Feature.Variants.C:232", 86_028_157), 2_010_930_785);
    }

    #[test]
    fn parts_hash_like_their_concatenation() {
        let long = "x".repeat(300);
        for (a, b) in [("AB12A", "122"), ("", ""), (long.as_str(), "7")] {
            let joined = format!("{a}:{b}");
            assert_eq!(
                hash_parts(&[a.as_bytes(), b":", b.as_bytes()], 0),
                hash(joined.as_bytes(), 0)
            );
        }
    }
}
