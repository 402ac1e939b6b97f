//! Checking a subject-access export away from the trail it came from (`seawall audit
//! verify-export`): the document is the one its manifest signed, each listed digest is signed
//! by the pinned key, each event's leaf follows from its header and part digests, and each
//! inclusion proof leads from that leaf to the Merkle root its digest signed
//! (docs/audit-format.md, "Checking one exported event").
//!
//! It reads only the document and the key, so whoever holds an export (the subject, their
//! lawyer, a regulator) can run it. Building the proofs is `proofs`' job; the tree math is
//! `merkle`'s; the manifest's form is `manifest`'s.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use serde_json::Value;

use crate::audit::digest::{self, Digest};
use crate::audit::event::{self, Hash, Stream};
use crate::audit::{manifest, merkle};
use crate::hex;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    pub ok: bool,
    /// The key the digests were checked against.
    pub key_fingerprint: String,
    pub digests: usize,
    pub events: usize,
    /// Events whose inclusion proof leads to their digest's signed Merkle root.
    pub proven: usize,
    /// Events no signed Merkle root covered yet when the export was made (their leaf was
    /// still checked against their header).
    pub unproven: usize,
    /// The first problem, if any.
    pub broken: Option<ExportBreak>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportBreak {
    /// `manifest`, `digests` or `events`, and the position in that list (0 for the manifest).
    pub list: &'static str,
    pub index: usize,
    /// `malformed` (a member missing or of the wrong form), `signature` (the manifest or a
    /// digest not signed by the pinned key), `content` (the document is not the one the
    /// manifest signed), `header` (the header names another event), `leaf` (the header and
    /// part digests do not give the leaf), `digest` (the digest an event names is not listed,
    /// does not cover it or signed no root), `proof` (the path does not lead to the root).
    pub kind: &'static str,
}

/// Checks `document`, an export as `POST /admin/gdpr/export` answers it, against `pinned`.
/// `Err` when it is not an export at all.
pub fn check(document: &Value, pinned: &VerifyingKey) -> Result<ExportReport, String> {
    let listed = document["digests"]
        .as_array()
        .ok_or("not a seawall export: no \"digests\" list")?;
    let events = document["events"]
        .as_array()
        .ok_or("not a seawall export: no \"events\" list")?;
    let mut report = ExportReport {
        ok: false,
        key_fingerprint: digest::fingerprint(pinned),
        digests: listed.len(),
        events: events.len(),
        proven: 0,
        unproven: 0,
        broken: None,
    };
    if let Some(kind) = manifest::problem(document, pinned) {
        report.broken = Some(ExportBreak {
            list: "manifest",
            index: 0,
            kind,
        });
        return Ok(report);
    }
    let mut digests = HashMap::new();
    for (index, value) in listed.iter().enumerate() {
        let kind = match serde_json::from_value::<Digest>(value.clone()) {
            Err(_) => "malformed",
            Ok(digest) if !digest.signed_by(pinned) => "signature",
            Ok(digest) => {
                digests.insert((digest.stream, digest.number), digest);
                continue;
            }
        };
        report.broken = Some(ExportBreak {
            list: "digests",
            index,
            kind,
        });
        return Ok(report);
    }
    for (index, event) in events.iter().enumerate() {
        match check_event(event, &digests) {
            Ok(true) => report.proven += 1,
            Ok(false) => report.unproven += 1,
            Err(kind) => {
                report.broken = Some(ExportBreak {
                    list: "events",
                    index,
                    kind,
                });
                return Ok(report);
            }
        }
    }
    report.ok = true;
    Ok(report)
}

/// One event: `Ok(true)` when proven, `Ok(false)` when nothing signed covers it yet.
fn check_event(
    event: &Value,
    digests: &HashMap<(Stream, u64), Digest>,
) -> Result<bool, &'static str> {
    let integrity = &event["integrity"];
    let stream = integrity["stream"]
        .as_str()
        .and_then(Stream::parse)
        .ok_or("malformed")?;
    let seq = integrity["seq"].as_u64().ok_or("malformed")?;
    let header_text = integrity["header"].as_str().ok_or("malformed")?;
    let header: Value = serde_json::from_str(header_text).map_err(|_| "malformed")?;
    let part_digests = hashes_of(&integrity["part_digests"]).ok_or("malformed")?;
    let leaf = hash_of(&integrity["leaf"]).ok_or("malformed")?;

    if header["stream"] != stream.as_str()
        || header["seq"] != seq
        || header["time"] != event["time"]
    {
        return Err("header");
    }
    if event::leaf(&event::header_hash(header_text), &part_digests) != leaf {
        return Err("leaf");
    }
    let proof = &integrity["proof"];
    if proof.is_null() {
        return Ok(false);
    }
    let path = hashes_of(&proof["path"]).ok_or("malformed")?;
    let number = integrity["digest"].as_u64().ok_or("malformed")?;
    let digest = digests
        .get(&(stream, number))
        .filter(|d| d.from_seq <= seq && seq < d.next_seq)
        .ok_or("digest")?;
    let root = digest.batch_merkle_root.as_deref().ok_or("digest")?;
    // The tree's size is the signed digest's, never the proof's.
    let size = digest.next_seq - digest.from_seq;
    match merkle::root_from_path(&leaf, seq - digest.from_seq, size, &path) {
        Some(proven) if hex::encode(&proven) == root => Ok(true),
        _ => Err("proof"),
    }
}

fn hash_of(value: &Value) -> Option<Hash> {
    hex::decode(value.as_str()?)?.try_into().ok()
}

fn hashes_of(value: &Value) -> Option<Vec<Hash>> {
    value.as_array()?.iter().map(hash_of).collect()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    use super::*;
    use crate::audit::digest::Coverage;

    /// An export of events 1 and 3 of a five-event batch, with its digest, built the way
    /// `gdpr::export` builds one; and the key that signed it.
    fn export() -> (Value, SigningKey) {
        let key = SigningKey::from_bytes(&[5; 32]);
        let headers: Vec<String> = (0..5)
            .map(|seq| {
                format!(
                    r#"{{"outcome":"success","seq":{seq},"stream":"access","time":"2026-11-{:02}T00:00:00Z"}}"#,
                    seq + 1
                )
            })
            .collect();
        let parts = [[7u8; 32]];
        let leaves: Vec<Hash> = headers
            .iter()
            .map(|h| event::leaf(&event::header_hash(h), &parts))
            .collect();
        let tree = merkle::Tree::new(leaves.clone());
        let digest = Digest::sign(
            &key,
            Coverage {
                origin: "test",
                stream: Stream::Access,
                from_seq: 0,
                next_seq: 5,
                chain_head: &[1; 32],
                batch_merkle_root: Some(tree.root()),
                time: "2026-11-06T00:00:00Z".into(),
            },
            None,
        );
        let event = |seq: usize, proof: Value| {
            json!({
                "time": format!("2026-11-{:02}T00:00:00Z", seq + 1),
                "integrity": {
                    "stream": "access", "seq": seq, "header": headers[seq],
                    "part_digests": [hex::encode(&parts[0])], "leaf": hex::encode(&leaves[seq]),
                    "digest": 0, "proof": proof,
                },
            })
        };
        let path = |seq| json!({"path": tree.path(seq).unwrap().iter().map(|h| hex::encode(h)).collect::<Vec<_>>()});
        let mut document = json!({
            "events": [event(1, path(1)), event(3, path(3)), event(4, Value::Null)],
            "digests": [digest],
        });
        manifest::attach(&key, &mut document);
        (document, key)
    }

    fn first_problem(
        document: &Value,
        pinned: &VerifyingKey,
    ) -> Option<(&'static str, usize, &'static str)> {
        let report = check(document, pinned).unwrap();
        assert_eq!(report.ok, report.broken.is_none());
        report.broken.map(|b| (b.list, b.index, b.kind))
    }

    /// The first problem of `document` once its manifest is signed again, as if whoever holds
    /// the key had altered it: the proofs must still catch what they cover.
    fn resigned_problem(
        document: &Value,
        key: &SigningKey,
    ) -> Option<(&'static str, usize, &'static str)> {
        let mut document = document.clone();
        manifest::attach(key, &mut document);
        first_problem(&document, &key.verifying_key())
    }

    #[test]
    fn an_untouched_export_is_proven_event_by_event() {
        let (document, key) = export();
        let report = check(&document, &key.verifying_key()).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!((report.proven, report.unproven, report.digests), (2, 1, 1));
    }

    #[test]
    fn each_alteration_is_found_where_it_was_made() {
        let (document, key) = export();
        let cases: [(&str, Value, (&str, usize, &str)); 8] = [
            (
                "/events/1/integrity/proof/path/0",
                json!("00".repeat(32)),
                ("events", 1, "proof"),
            ),
            ("/events/0/integrity/seq", json!(3), ("events", 0, "header")),
            (
                "/events/0/time",
                json!("2026-11-03T00:00:00Z"),
                ("events", 0, "header"),
            ),
            (
                "/events/1/integrity/part_digests/0",
                json!("ab".repeat(32)),
                ("events", 1, "leaf"),
            ),
            (
                "/events/1/integrity/digest",
                json!(1),
                ("events", 1, "digest"),
            ),
            (
                "/events/2/integrity/leaf",
                json!("zz"),
                ("events", 2, "malformed"),
            ),
            ("/digests/0/next_seq", json!(6), ("digests", 0, "signature")),
            (
                "/digests/0/batch_merkle_root",
                json!(hex::encode(&[2; 32])),
                ("digests", 0, "signature"),
            ),
        ];
        let pinned = key.verifying_key();
        for (pointer, value, expected) in cases {
            let mut altered = document.clone();
            *altered.pointer_mut(pointer).unwrap() = value;
            assert_eq!(
                first_problem(&altered, &pinned),
                Some(("manifest", 0, "content")),
                "{pointer}"
            );
            assert_eq!(
                resigned_problem(&altered, &key),
                Some(expected),
                "{pointer}"
            );
        }
        // Another key, and a header edited consistently with its leaf (but not with the
        // signed root).
        let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
        assert_eq!(
            first_problem(&document, &other),
            Some(("manifest", 0, "signature"))
        );
        let mut altered = document.clone();
        let header = altered["events"][0]["integrity"]["header"]
            .as_str()
            .unwrap()
            .replace("success", "failure");
        let leaf = event::leaf(&event::header_hash(&header), &[[7; 32]]);
        altered["events"][0]["integrity"]["header"] = json!(header);
        altered["events"][0]["integrity"]["leaf"] = json!(hex::encode(&leaf));
        assert_eq!(
            resigned_problem(&altered, &key),
            Some(("events", 0, "proof"))
        );
    }

    #[test]
    fn a_document_that_is_not_an_export_is_refused() {
        let (_, key) = export();
        let pinned = key.verifying_key();
        assert!(check(&json!({"events": []}), &pinned).is_err());
        assert!(check(&json!([1, 2]), &pinned).is_err());
        let mut empty = json!({"events": [], "digests": []});
        assert_eq!(
            first_problem(&empty, &pinned),
            Some(("manifest", 0, "malformed"))
        );
        manifest::attach(&key, &mut empty);
        assert_eq!(first_problem(&empty, &pinned), None);
    }
}
