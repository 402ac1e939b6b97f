//! Signed digests of the chains (research/audit.md §4.2, after CloudTrail's digest files).
//!
//! Each stream's writer signs a [`Digest`] every so many events or seconds, and at least every
//! idle interval when nothing happens (proving inactivity). A digest names the range of
//! sequence numbers it covers, the chain value after the last of them, and the digest before
//! it, and is signed with the Ed25519 key in `keys/signing.key`. Copied off the machine (the
//! `GET /admin/audit/digests` feed), digests let an outside party prove that nothing was
//! rewritten or cut off the end. Checking them is `verify`'s job; deciding when to sign is the
//! writer's.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::audit::event::{self, Hash, Stream};
use crate::audit::log::AuditLog;
use crate::hex;
use crate::store::{self, StoreError};

pub const ALGORITHM: &str = "Ed25519";

/// Digests per answer of the feed (`GET /admin/audit/digests`); clients page on with `since`.
pub const FEED_PAGE: usize = 10_000;

/// One signed digest. Text fields only, so any JSON client can check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub alg: String,
    pub origin: String,
    pub stream: Stream,
    /// Per stream, from 0, without gaps.
    pub number: u64,
    /// The events covered: `from_seq..next_seq` (empty for an idle digest).
    pub from_seq: u64,
    pub next_seq: u64,
    /// Hex chain value after event `next_seq - 1` (the anchor's or genesis when none).
    pub chain_head: String,
    /// Hex RFC 6962 Merkle Tree Hash of the covered events' leaves (see `merkle`), which
    /// single-event inclusion proofs lead to. Absent in digests signed before it existed (their
    /// signing string is version 1), and when the writer could not read every leaf of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_merkle_root: Option<String>,
    pub time: String,
    /// Hex SHA-256 of the previous digest's signing string and signature.
    pub prev_digest: Option<String>,
    pub key_fingerprint: String,
    /// Hex Ed25519 signature of [`Digest::signing_string`].
    pub signature: String,
}

/// What a new digest covers.
pub struct Coverage<'a> {
    pub origin: &'a str,
    pub stream: Stream,
    pub from_seq: u64,
    pub next_seq: u64,
    pub chain_head: &'a Hash,
    pub batch_merkle_root: Option<Hash>,
    pub time: String,
}

impl Digest {
    /// Signs `coverage` as the digest after `previous`.
    pub fn sign(key: &SigningKey, coverage: Coverage<'_>, previous: Option<&Digest>) -> Digest {
        let mut digest = Digest {
            alg: ALGORITHM.to_string(),
            origin: coverage.origin.to_string(),
            stream: coverage.stream,
            number: previous.map_or(0, |p| p.number + 1),
            from_seq: coverage.from_seq,
            next_seq: coverage.next_seq,
            chain_head: hex::encode(coverage.chain_head),
            batch_merkle_root: coverage
                .batch_merkle_root
                .as_ref()
                .map(|root| hex::encode(root)),
            time: coverage.time,
            prev_digest: previous.map(|p| hex::encode(&p.hash())),
            key_fingerprint: fingerprint(&key.verifying_key()),
            signature: String::new(),
        };
        digest.signature = hex::encode(&key.sign(digest.signing_string().as_bytes()).to_bytes());
        digest
    }

    /// The newline-joined fields the signature covers, in this order; version 2 adds the
    /// Merkle root as a last line.
    pub fn signing_string(&self) -> String {
        let version = match self.batch_merkle_root {
            Some(_) => "seawall-audit-digest-v2",
            None => "seawall-audit-digest-v1",
        };
        [
            version,
            &self.alg,
            &self.origin,
            self.stream.as_str(),
            &self.number.to_string(),
            &self.from_seq.to_string(),
            &self.next_seq.to_string(),
            &self.chain_head,
            &self.time,
            self.prev_digest.as_deref().unwrap_or("-"),
            &self.key_fingerprint,
        ]
        .into_iter()
        .chain(self.batch_merkle_root.as_deref())
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// What the next digest's `prev_digest` names.
    pub fn hash(&self) -> Hash {
        event::sha256(&[
            self.signing_string().as_bytes(),
            b"\n",
            self.signature.as_bytes(),
        ])
    }

    /// Whether `key` signed exactly these fields.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        let Some(bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.alg == ALGORITHM
            && self.key_fingerprint == fingerprint(key)
            && key
                .verify(self.signing_string().as_bytes(), &signature)
                .is_ok()
    }
}

/// Hex of the first 16 bytes of SHA-256 over the public key.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&event::sha256(&[key.as_bytes()])[..16])
}

/// A public key from its hex form.
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text)?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn storage_key(stream: Stream, number: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = stream.code();
    key[1..].copy_from_slice(&number.to_be_bytes());
    key
}

pub fn store(log: &AuditLog, digest: &Digest) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(digest).expect("digests serialize");
    log.digests
        .insert(storage_key(digest.stream, digest.number), bytes)?;
    Ok(())
}

/// The digests of `stream` numbered `from` or later, oldest first; an undecodable one is
/// returned as `Err(number)` so verification can report it.
pub fn list(
    log: &AuditLog,
    stream: Stream,
    from: u64,
) -> Result<Vec<Result<Digest, u64>>, StoreError> {
    let mut out = Vec::new();
    for item in log
        .digests
        .range(storage_key(stream, from)..=storage_key(stream, u64::MAX))
    {
        let (key, value) = item?;
        let number = u64::from_be_bytes(key[1..9].try_into().expect("nine-byte keys"));
        out.push(serde_json::from_slice(&value).map_err(|_| number));
    }
    Ok(out)
}

/// The newest digest of `stream`.
pub fn last(log: &AuditLog, stream: Stream) -> Result<Option<Digest>, StoreError> {
    let range = storage_key(stream, 0)..=storage_key(stream, u64::MAX);
    match log.digests.range(range).next_back() {
        Some(item) => Ok(serde_json::from_slice(&item?.1).ok()),
        None => Ok(None),
    }
}

/// The digest of `stream` whose range holds event `seq`, if one is stored and readable.
/// Ranges ascend with digest numbers, so this bisects the numbers: about log2(digests) reads,
/// where a busy machine holds millions of digests per stream.
pub fn covering(log: &AuditLog, stream: Stream, seq: u64) -> Result<Option<Digest>, StoreError> {
    let number_of = |key: &[u8]| u64::from_be_bytes(key[1..9].try_into().expect("nine-byte keys"));
    let all = storage_key(stream, 0)..=storage_key(stream, u64::MAX);
    let (Some(first), Some(last)) = (
        log.digests.range(all.clone()).next(),
        log.digests.range(all).next_back(),
    ) else {
        return Ok(None);
    };
    let (mut low, mut high) = (number_of(&first?.0), number_of(&last?.0));
    while low <= high {
        let middle = low + (high - low) / 2;
        // The first digest stored from `middle` to `high`.
        let found = log
            .digests
            .range(storage_key(stream, middle)..=storage_key(stream, high))
            .next()
            .transpose()?;
        let lower = match found {
            None => true,
            Some((key, value)) => {
                let Ok(digest) = serde_json::from_slice::<Digest>(&value) else {
                    // Verification reports it; no proof leads through it.
                    return Ok(None);
                };
                if digest.from_seq <= seq && seq < digest.next_seq {
                    return Ok(Some(digest));
                }
                if digest.next_seq <= seq {
                    low = number_of(&key) + 1;
                }
                digest.from_seq > seq
            }
        };
        if lower {
            let Some(below) = middle.checked_sub(1) else {
                return Ok(None);
            };
            high = below;
        }
    }
    Ok(None)
}

/// Removes the digests that only cover events retention has removed (`next_seq` at or below
/// `pruned_through`), keeping the newest of them, which links the remaining ones to the cut.
pub fn prune(log: &AuditLog, stream: Stream, pruned_through: u64) -> Result<usize, StoreError> {
    // Oldest first, stopping at the first digest that still covers a kept event.
    let mut covered = Vec::new();
    for item in log
        .digests
        .range(storage_key(stream, 0)..=storage_key(stream, u64::MAX))
    {
        let (key, value) = item?;
        match serde_json::from_slice::<Digest>(&value) {
            Ok(d) if d.next_seq <= pruned_through => covered.push(key),
            _ => break,
        }
    }
    covered.pop();
    let mut batch = store::Batch::default();
    for key in &covered {
        batch.remove(key);
    }
    batch.apply(&log.digests)?;
    Ok(covered.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(head: &Hash) -> Coverage<'_> {
        Coverage {
            origin: "seawall",
            stream: Stream::Access,
            from_seq: 0,
            next_seq: 10,
            chain_head: head,
            batch_merkle_root: Some([3; 32]),
            time: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_digest_verifies_only_unaltered_and_under_its_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let first = Digest::sign(&key, coverage(&[1; 32]), None);
        assert!(first.signed_by(&key.verifying_key()));
        let second = Digest::sign(&key, coverage(&[2; 32]), Some(&first));
        assert_eq!(second.number, 1);
        assert_eq!(second.prev_digest, Some(hex::encode(&first.hash())));
        let mut altered = second.clone();
        altered.next_seq = 9;
        assert!(!altered.signed_by(&key.verifying_key()));
        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = Digest::sign(&other, coverage(&[2; 32]), Some(&first));
        assert!(!forged.signed_by(&key.verifying_key()));
        assert!(parse_public_key(&hex::encode(key.verifying_key().as_bytes())).is_some());
    }

    #[test]
    fn the_merkle_root_is_signed_and_digests_from_before_it_still_verify() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let digest = Digest::sign(&key, coverage(&[1; 32]), None);
        assert!(
            digest
                .signing_string()
                .starts_with("seawall-audit-digest-v2\n")
        );
        assert!(
            digest
                .signing_string()
                .ends_with(&format!("\n{}", hex::encode(&[3; 32])))
        );
        let mut altered = digest.clone();
        altered.batch_merkle_root = Some(hex::encode(&[4; 32]));
        assert!(!altered.signed_by(&key.verifying_key()));
        let mut dropped = digest.clone();
        dropped.batch_merkle_root = None;
        assert!(!dropped.signed_by(&key.verifying_key()));

        // A version 1 digest, as stored before roots existed: no such member, the v1 string.
        let old = Digest::sign(
            &key,
            Coverage {
                batch_merkle_root: None,
                ..coverage(&[1; 32])
            },
            None,
        );
        let mut stored = serde_json::to_value(&old).unwrap();
        assert!(stored.get("batch_merkle_root").is_none(), "{stored}");
        stored.as_object_mut().unwrap().remove("batch_merkle_root");
        let read: Digest = serde_json::from_value(stored).unwrap();
        assert!(
            read.signing_string()
                .starts_with("seawall-audit-digest-v1\n")
        );
        assert_eq!(read.signing_string().lines().count(), 11);
        assert!(read.signed_by(&key.verifying_key()));
    }
}
