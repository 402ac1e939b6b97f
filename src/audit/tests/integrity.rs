//! C1-C3 (research/audit.md §6): every kind of tampering with stored records and digests is
//! reported at its sequence number with its kind.

use ed25519_dalek::SigningKey;

use super::*;
use crate::audit::DigestPolicy;
use crate::audit::digest::{self, Coverage, Digest};
use crate::audit::event::{self, Hash, Record};
use crate::audit::merkle;
use crate::audit::verify::Break;
use crate::hex;

/// A digest every five events, and none for time alone.
fn every_five() -> DigestPolicy {
    DigestPolicy {
        every: 5,
        interval: Duration::from_secs(3600),
        idle: Duration::from_secs(86_400),
    }
}

fn access_events(n: usize) -> Vec<Draft> {
    (0..n)
        .map(|_| request_event(Stream::Access, "10.1.1.1", false))
        .collect()
}

/// Ten access events in one stored group (seq 0-9) with digests every five events.
fn signed_fixture() -> Fixture {
    let mut f = fixture();
    for _ in 0..2 {
        f.writer.commit(access_events(5), day0()).unwrap();
        f.writer.sign_due(day0(), &every_five()).unwrap();
    }
    f
}

fn records(f: &Fixture) -> (sled::Tree, Vec<(sled::IVec, Vec<Record>)>) {
    let bucket = f.log.bucket(Stream::Access, day_of(day0())).unwrap();
    let groups = bucket
        .iter()
        .map(|item| {
            let (key, value) = item.unwrap();
            (key, decode_group(&value).unwrap())
        })
        .collect();
    (bucket, groups)
}

/// Applies `change` to the ten records (as one list) and stores them back in their groups.
fn tamper(f: &Fixture, change: impl FnOnce(&mut Vec<Record>)) {
    let (bucket, groups) = records(f);
    let sizes: Vec<usize> = groups.iter().map(|(_, r)| r.len()).collect();
    let keys: Vec<sled::IVec> = groups.iter().map(|(k, _)| k.clone()).collect();
    let mut all: Vec<Record> = groups.into_iter().flat_map(|(_, r)| r).collect();
    change(&mut all);
    for key in &keys {
        bucket.remove(key).unwrap();
    }
    // Keep the original grouping where the count allows; the rest go into the last group.
    let mut rest = all.as_slice();
    for (i, key) in keys.iter().enumerate() {
        let take = if i + 1 == keys.len() {
            rest.len()
        } else {
            sizes[i].min(rest.len())
        };
        if take > 0 {
            bucket.insert(key, encode_group(&rest[..take])).unwrap();
        }
        rest = &rest[take..];
    }
}

fn broken(f: &Fixture) -> Option<(u64, &'static str)> {
    check(&f.log, Stream::Access)
        .broken
        .map(|b| (b.seq, b.kind))
}

/// Recomputes leaves and chain values from `from` on, as an attacker without the signing key
/// would to hide an edit.
fn rechain(records: &mut [Record], from: usize, origin: &str) {
    let mut previous = if from == 0 {
        event::genesis(origin, Stream::Access)
    } else {
        records[from - 1].chain
    };
    for record in &mut records[from..] {
        let digests: Vec<_> = record.parts.iter().map(|p| p.digest).collect();
        record.leaf = event::leaf(&event::header_hash(&record.header), &digests);
        record.chain = event::chain(&previous, &record.leaf);
        previous = record.chain;
    }
}

#[test]
fn an_untouched_stream_verifies_and_reports_its_digests() {
    let f = signed_fixture();
    let report = check(&f.log, Stream::Access);
    assert_eq!(report.broken, None);
    assert_eq!(
        (report.events, report.digests, report.signed_through),
        (10, 2, Some(9))
    );
    assert_eq!((report.unanchored_tail, report.parts_present), (0, 10));
}

#[test]
fn one_changed_byte_is_found_at_its_record_with_its_kind() {
    let f = signed_fixture();
    tamper(&f, |r| {
        r[4].header = r[4].header.replace("http.read", "http.reae")
    });
    assert_eq!(broken(&f), Some((4, "header")));

    let f = signed_fixture();
    tamper(&f, |r| {
        let sealed = r[2].parts[0].sealed.as_mut().unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
    });
    assert_eq!(broken(&f), Some((2, "ciphertext")));

    let f = signed_fixture();
    tamper(&f, |r| r[3].parts[0].digest[0] ^= 1);
    assert_eq!(broken(&f), Some((3, "digest")));

    let f = signed_fixture();
    tamper(&f, |r| r[6].chain[31] ^= 1);
    assert_eq!(broken(&f), Some((6, "chain")));

    let f = signed_fixture();
    tamper(&f, |r| r[7].leaf[0] ^= 1);
    assert_eq!(broken(&f), Some((7, "leaf")));
}

#[test]
fn deleted_swapped_and_cut_records_are_found() {
    let f = signed_fixture();
    tamper(&f, |r| {
        r.remove(5);
    });
    assert_eq!(broken(&f), Some((5, "gap")));

    let f = signed_fixture();
    tamper(&f, |r| r.swap(5, 6));
    assert_eq!(broken(&f), Some((5, "order")));

    // The digest of 5-9 proves that the cut-off tail existed.
    let f = signed_fixture();
    tamper(&f, |r| r.truncate(8));
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        report.broken,
        Some(Break {
            seq: 8,
            kind: "truncated",
            digest: Some(1),
        })
    );
}

#[test]
fn a_cut_after_the_last_digest_is_only_an_unanchored_tail() {
    let mut f = signed_fixture();
    f.writer.commit(access_events(3), day0()).unwrap();
    assert_eq!(check(&f.log, Stream::Access).unanchored_tail, 3);
    let bucket = f.log.bucket(Stream::Access, day_of(day0())).unwrap();
    bucket.remove(10u64.to_be_bytes()).unwrap();
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        (report.broken, report.events, report.unanchored_tail),
        (None, 10, 0),
        "what no digest covers cannot be proven on this machine: the limit the README states"
    );
}

#[test]
fn a_rewritten_history_fails_on_its_digest_and_a_new_key_fails_the_pinned_one() {
    // An edit with every later leaf and chain value recomputed passes the record checks;
    // the signed chain head does not match.
    let f = signed_fixture();
    let origin = f.log.origin.clone();
    tamper(&f, |r| {
        r[3].header = r[3].header.replace("http.read", "http.reae");
        rechain(r, 3, &origin);
    });
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        report.broken,
        Some(Break {
            seq: 0,
            kind: "head",
            digest: Some(0),
        }),
        "found within the first digest's range (0-4)"
    );

    // Re-signing every digest with a fresh key: the pinned key rejects the first one.
    let mut stored = Vec::new();
    for item in digest::list(&f.log, Stream::Access, 0).unwrap() {
        stored.push(item.unwrap());
    }
    let forger = SigningKey::from_bytes(&[9; 32]);
    let (_, groups) = records(&f);
    let all: Vec<Record> = groups.into_iter().flat_map(|(_, r)| r).collect();
    let mut previous: Option<Digest> = None;
    for old in &stored {
        let head = all[old.next_seq as usize - 1].chain;
        let forged = Digest::sign(
            &forger,
            Coverage {
                origin: &f.log.origin,
                stream: Stream::Access,
                from_seq: old.from_seq,
                next_seq: old.next_seq,
                chain_head: &head,
                batch_merkle_root: Some(
                    merkle::Tree::new(
                        all[old.from_seq as usize..old.next_seq as usize]
                            .iter()
                            .map(|r| r.leaf)
                            .collect(),
                    )
                    .root(),
                ),
                time: old.time.clone(),
            },
            previous.as_ref(),
        );
        digest::store(&f.log, &forged).unwrap();
        previous = Some(forged);
    }
    assert_eq!(broken(&f), Some((0, "signature")));
    let forged_view = verify::stream(&f.log, Stream::Access, &forger.verifying_key()).unwrap();
    assert_eq!(
        forged_view.broken, None,
        "with the forger's key everything checks: why the fingerprint must be kept off the machine"
    );
}

#[test]
fn a_missing_digest_breaks_the_digest_chain() {
    let mut f = signed_fixture();
    f.writer.commit(access_events(5), day0()).unwrap();
    f.writer.sign_due(day0(), &every_five()).unwrap();
    assert_eq!(check(&f.log, Stream::Access).digests, 3);
    let mut key = vec![Stream::Access.code()];
    key.extend_from_slice(&1u64.to_be_bytes());
    f.log.digests.remove(key).unwrap();
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        report.broken.map(|b| (b.kind, b.digest)),
        Some(("digest_link", Some(2)))
    );
}

#[test]
fn idle_streams_get_a_digest_and_numbers_continue_after_a_restart() {
    let mut f = fixture();
    let policy = DigestPolicy {
        every: 1000,
        interval: Duration::from_secs(60),
        idle: Duration::from_secs(3600),
    };
    // Fixture writers start with "now" as their last digest time.
    let later = SystemTime::now() + Duration::from_secs(3601);
    assert_eq!(
        f.writer.sign_due(later, &policy).unwrap(),
        5,
        "one per stream"
    );
    let mut again = Writer::new(f.log.clone()).unwrap();
    let much_later = later + Duration::from_secs(3601);
    again.sign_due(much_later, &policy).unwrap();
    let numbers: Vec<u64> = digest::list(&f.log, Stream::Gdpr, 0)
        .unwrap()
        .into_iter()
        .map(|d| d.unwrap().number)
        .collect();
    assert_eq!(numbers, vec![0, 1]);
    let report = check(&f.log, Stream::Gdpr);
    assert_eq!((report.broken, report.digests, report.events), (None, 2, 0));
}

/// D4: an anchor vouches for a cut only when signed by the pinned key and when the cut kept the
/// period the anchor names.
#[test]
fn a_forged_altered_or_premature_anchor_is_found() {
    let mut f = fixture();
    for day in 0..3 {
        let drafts: Vec<Draft> = (0..3)
            .map(|i| request_event(Stream::Access, &format!("10.7.{day}.{i}"), false))
            .collect();
        f.writer.commit(drafts, at(day)).unwrap();
    }
    // The capacity guard's last step keeps access headers one day: days 0 and 1 go.
    let config = Step::AccessHeaders.apply(&config());
    retention::run(&f.log, &config, at(2), usize::MAX).unwrap();
    let report = check(&f.log, Stream::Access);
    assert_eq!((report.broken, report.first_seq), (None, Some(6)));
    let cut = report.cut.unwrap();
    assert_eq!((cut.pruned_through, cut.header_days), (5, 1));

    let good = anchor::load(&f.log, Stream::Access).unwrap().unwrap();
    let put = |anchor: &Anchor| anchor::store(&f.log, Stream::Access, anchor).unwrap();
    let resign = |key: &SigningKey, header_days: u32| {
        Anchor::sign(
            key,
            &f.log.origin,
            Stream::Access,
            (good.pruned_through, good.chain, good.through_day),
            good.time.clone(),
            header_days,
        )
    };
    // Signed by another key: someone who could write the store but not use the key.
    put(&resign(&SigningKey::from_bytes(&[9; 32]), 1));
    assert_eq!(broken(&f), Some((5, "anchor_signature")));
    // Altered after signing.
    let mut altered = good.clone();
    altered.header_days = 0;
    put(&altered);
    assert_eq!(broken(&f), Some((5, "anchor_signature")));
    // Signed, but claiming the configured 180 days for a cut two days after the events.
    put(&resign(f.log.keyring.signing_key(), 180));
    assert_eq!(broken(&f), Some((5, "anchor_period")));
    // Unreadable.
    f.log
        .anchors
        .insert([Stream::Access.code()], &b"\xff"[..])
        .unwrap();
    assert_eq!(broken(&f).map(|b| b.1), Some("anchor_signature"));
    put(&good);
    assert_eq!(broken(&f), None);
}

/// Anchors written before they were signed are signed at start, with their period unknown.
#[test]
fn an_unsigned_anchor_of_an_earlier_version_is_signed_at_start() {
    #[derive(serde::Serialize)]
    struct Unsigned {
        pruned_through: u64,
        chain: event::Hash,
        through_day: u32,
        time: String,
    }
    let mut f = fixture();
    for day in 0..2 {
        commit_access(&mut f.writer, "10.8.0.1", false, at(day));
    }
    let config = Step::AccessHeaders.apply(&config());
    retention::run(&f.log, &config, at(1), usize::MAX).unwrap();
    let signed = anchor::load(&f.log, Stream::Access).unwrap().unwrap();
    let old = Unsigned {
        pruned_through: signed.pruned_through,
        chain: signed.chain,
        through_day: signed.through_day,
        time: signed.time.clone(),
    };
    f.log
        .anchors
        .insert(
            [Stream::Access.code()],
            postcard::to_allocvec(&old).unwrap(),
        )
        .unwrap();
    assert_eq!(broken(&f), Some((0, "anchor_signature")));
    assert_eq!(anchor::sign_unsigned(&f.log).unwrap(), 1);
    assert_eq!(anchor::sign_unsigned(&f.log).unwrap(), 0, "once");
    let report = check(&f.log, Stream::Access);
    assert_eq!(report.broken, None);
    assert_eq!(report.cut.map(|c| c.header_days), Some(0));
}

/// Digest 1 of the signed fixture, signed again by the machine's key with `root` instead.
fn resign_second_digest(f: &Fixture, root: Option<Hash>) {
    let digests: Vec<Digest> = digest::list(&f.log, Stream::Access, 0)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let head = hex::decode(&digests[1].chain_head).unwrap();
    let resigned = Digest::sign(
        f.log.keyring.signing_key(),
        Coverage {
            origin: &f.log.origin,
            stream: Stream::Access,
            from_seq: digests[1].from_seq,
            next_seq: digests[1].next_seq,
            chain_head: &head.try_into().unwrap(),
            batch_merkle_root: root,
            time: digests[1].time.clone(),
        },
        Some(&digests[0]),
    );
    digest::store(&f.log, &resigned).unwrap();
}

#[test]
fn each_digest_signs_the_merkle_root_of_its_events_also_across_a_restart() {
    let mut f = fixture();
    let policy = every_five();
    f.writer.commit(access_events(3), day0()).unwrap();
    assert_eq!(f.writer.sign_due(day0(), &policy).unwrap(), 0);
    // A restart between: the new writer reads the three unsigned leaves back.
    let mut writer = Writer::new(f.log.clone()).unwrap();
    writer.commit(access_events(4), day0()).unwrap();
    assert_eq!(writer.sign_due(day0(), &policy).unwrap(), 1);
    let idle = day0() + Duration::from_secs(86_401);
    writer.sign_due(idle, &policy).unwrap();

    let digests: Vec<Digest> = digest::list(&f.log, Stream::Access, 0)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (_, groups) = records(&f);
    let leaves: Vec<Hash> = groups.iter().flat_map(|(_, r)| r).map(|r| r.leaf).collect();
    assert_eq!(leaves.len(), 7);
    let expected = [
        (0, 7, merkle::Tree::new(leaves).root()),
        (7, 7, merkle::empty_root()),
    ];
    let signed: Vec<(u64, u64, Option<String>)> = digests
        .iter()
        .map(|d| (d.from_seq, d.next_seq, d.batch_merkle_root.clone()))
        .collect();
    let expected: Vec<(u64, u64, Option<String>)> = expected
        .iter()
        .map(|(from, next, root)| (*from, *next, Some(hex::encode(root))))
        .collect();
    assert_eq!(signed, expected);
    assert_eq!(check(&f.log, Stream::Access).broken, None);
}

#[test]
fn a_signed_root_that_is_not_the_leaves_is_found_and_a_digest_without_one_passes() {
    let f = signed_fixture();
    resign_second_digest(&f, Some([9; 32]));
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        report.broken.map(|b| (b.seq, b.kind, b.digest)),
        Some((5, "merkle", Some(1)))
    );
    // A digest signed before roots existed (version 1) is checked by its chain head alone.
    resign_second_digest(&f, None);
    let report = check(&f.log, Stream::Access);
    assert_eq!((report.broken, report.digests), (None, 2));
}

#[test]
fn the_digest_covering_an_event_is_found_among_idle_and_pruned_ones() {
    let mut f = fixture();
    let policy = every_five();
    let mut time = day0();
    // 3 digests of five events, an idle one (a day later, nothing new), then 2 more.
    for round in 0..5 {
        if round == 3 {
            time += policy.idle;
            f.writer.sign_due(time, &policy).unwrap();
        }
        f.writer.commit(access_events(5), time).unwrap();
        f.writer.sign_due(time, &policy).unwrap();
    }
    let listed: Vec<Digest> = digest::list(&f.log, Stream::Access, 0)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert!(
        listed.iter().any(|d| d.from_seq == d.next_seq),
        "an idle digest"
    );
    let covering = |seq| digest::covering(&f.log, Stream::Access, seq).unwrap();
    for seq in 0..25 {
        let expected = listed
            .iter()
            .find(|d| d.from_seq <= seq && seq < d.next_seq)
            .unwrap();
        assert_eq!(covering(seq).as_ref(), Some(expected), "seq {seq}");
    }
    assert_eq!(covering(25), None, "not signed yet");
    assert_eq!(digest::covering(&f.log, Stream::Gdpr, 0).unwrap(), None);

    // Retention removed the digests of the first ten events but the newest of them.
    assert_eq!(digest::prune(&f.log, Stream::Access, 10).unwrap(), 1);
    assert_eq!(covering(3), None);
    assert_eq!(covering(7).map(|d| d.number), Some(1));
    assert_eq!(covering(24).map(|d| d.number), Some(5));
}
