//! The signed manifest of a subject-access export (research/audit.md §3.3): the SHA-256 of
//! the whole document in RFC 8785 canonical form, signed with the digest key. Where inclusion
//! proofs show that each event's header is in the trail, the manifest shows that the document
//! as a whole, the subject's decrypted data included, is what this machine issued.
//!
//! Building the export is `gdpr`'s job; checking one offline is `export_check`'s.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};

use crate::audit::digest::{self, ALGORITHM};
use crate::audit::event::{Hash, finish, write_canonical};
use crate::hex;

/// The first line of the signing string; the digests' strings start differently, so one
/// signature can never pass for the other.
const SIGNING_PREFIX: &str = "seawall-audit-export-v1";

/// The member the manifest is stored under, the last of the document.
pub const MEMBER: &str = "manifest";

/// Signs `document` (an export) and adds the manifest to it, in place of any it had. Blocking:
/// the canonical form of a large export takes a while.
pub fn attach(key: &SigningKey, document: &mut Value) {
    if let Some(members) = document.as_object_mut() {
        members.remove(MEMBER);
    }
    let content = hex::encode(&content_sha256(document));
    let fingerprint = digest::fingerprint(&key.verifying_key());
    let signature = key.sign(signing_string(&content, &fingerprint).as_bytes());
    document[MEMBER] = json!({
        "alg": ALGORITHM,
        "key_fingerprint": fingerprint,
        "content_sha256": content,
        "signature": hex::encode(&signature.to_bytes()),
    });
}

/// What is wrong with `document`'s manifest under `pinned`, if anything: `malformed` (missing,
/// or not of the form above), `content` (the document differs from what was signed),
/// `signature` (not signed by the pinned key).
pub fn problem(document: &Value, pinned: &VerifyingKey) -> Option<&'static str> {
    let manifest = &document[MEMBER];
    let (Some(content), Some(fingerprint), Some(signature)) = (
        manifest["content_sha256"].as_str(),
        manifest["key_fingerprint"].as_str(),
        manifest["signature"]
            .as_str()
            .and_then(hex::decode)
            .and_then(|bytes| Signature::from_slice(&bytes).ok()),
    ) else {
        return Some("malformed");
    };
    let signed = manifest["alg"] == ALGORITHM
        && fingerprint == digest::fingerprint(pinned)
        && pinned
            .verify(signing_string(content, fingerprint).as_bytes(), &signature)
            .is_ok();
    if !signed {
        return Some("signature");
    }
    (hex::encode(&content_sha256(document)) != content).then_some("content")
}

/// SHA-256 of the document's canonical form without its manifest, hashed as it is written.
fn content_sha256(document: &Value) -> Hash {
    struct Hashing(ring::digest::Context);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(ring::digest::Context::new(&ring::digest::SHA256));
    write_canonical(document, Some(MEMBER), &mut hashing).expect("hashing cannot fail");
    finish(hashing.0)
}

fn signing_string(content: &str, fingerprint: &str) -> String {
    [SIGNING_PREFIX, ALGORITHM, content, fingerprint].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_covers_every_member_in_any_order_and_only_the_key_that_signed() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut document = json!({"events": [{"your_data": {"amount": 12.5, "note": "é"}}], "counts": {"access": 1}});
        attach(&key, &mut document);
        let pinned = key.verifying_key();
        assert_eq!(problem(&document, &pinned), None);

        // The same members in another order (a re-serialized file) still check.
        let reordered: Value = serde_json::from_str(
            &serde_json::to_string(&json!({
                "manifest": document["manifest"],
                "counts": document["counts"],
                "events": document["events"],
            }))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(problem(&reordered, &pinned), None);

        let mut altered = document.clone();
        altered["events"][0]["your_data"]["amount"] = json!(12.25);
        assert_eq!(problem(&altered, &pinned), Some("content"));
        let mut added = document.clone();
        added["extra"] = json!(true);
        assert_eq!(problem(&added, &pinned), Some("content"));
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert_eq!(problem(&document, &other), Some("signature"));
        let mut forged = document.clone();
        forged["manifest"]["content_sha256"] = json!(hex::encode(&[0; 32]));
        assert_eq!(problem(&forged, &pinned), Some("signature"));
        let mut missing = document.clone();
        missing.as_object_mut().unwrap().remove("manifest");
        assert_eq!(problem(&missing, &pinned), Some("malformed"));
    }
}
