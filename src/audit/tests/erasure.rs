//! Erasure by crypto-shredding, the ledger replay, KEK rotation and legal holds, against a
//! real store (the HTTP side and the byte scans are in tests/it/gdpr.rs).

use super::*;
use crate::audit::event::Part;
use crate::audit::gdpr::{self, Hold};
use crate::audit::ledger::Ledger;
use crate::audit::shred;
use crate::hex;

fn user(id: &str) -> Subject {
    Subject {
        kind: IdKind::UserId,
        value: id.to_string(),
    }
}

fn email(address: &str) -> Subject {
    Subject {
        kind: IdKind::Email,
        value: address.to_string(),
    }
}

/// An application event in `stream` by `actor` (with an e-mail alias) about `target`.
fn about(stream: Stream, actor: &Subject, alias: &Subject, target: &Subject, note: &str) -> Draft {
    let mut draft = Draft::new(stream, "data.update", "success", "id", day0())
        .part(
            Role::Actor,
            Some(actor.clone()),
            json!({"user_id": actor.value, "note": note}),
        )
        .part(
            Role::Target,
            Some(target.clone()),
            json!({"user_id": target.value, "note": note}),
        );
    let Part { aliases, .. } = &mut draft.parts[0];
    aliases.push(alias.clone());
    draft
}

/// Alice and Bob act on each other in data_change and security; Alice's address appears
/// in access.
fn two_subjects(f: &mut Fixture) -> (Vec<Subject>, Vec<Subject>) {
    let (alice, bob) = (user("alice"), user("bob"));
    let (alice_mail, bob_mail) = (email("Alice@Example.org"), email("bob@example.org"));
    let drafts = vec![
        about(Stream::DataChange, &alice, &alice_mail, &bob, "a-acts-on-b"),
        about(Stream::DataChange, &bob, &bob_mail, &alice, "b-acts-on-a"),
        about(Stream::Security, &alice, &alice_mail, &alice, "a-security"),
        request_event(Stream::Access, "198.51.100.7", true),
        request_event(Stream::Access, "198.51.100.8", false),
    ];
    f.writer.commit(drafts, day0()).unwrap();
    let ip = Subject {
        kind: IdKind::Ip,
        value: "198.51.100.7".into(),
    };
    (
        vec![alice, email("alice@example.org"), ip],
        vec![bob, bob_mail],
    )
}

fn exported(f: &Fixture, who: &[Subject]) -> Value {
    let found = gdpr::find(&f.log, who).unwrap();
    gdpr::export(&f.log, &config(), &found, day0())
        .unwrap()
        .unwrap()
}

fn notes(export: &Value) -> Vec<String> {
    let mut out: Vec<String> = export["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["your_data"].as_object().unwrap().values())
        .filter_map(|part| part.get("note").and_then(Value::as_str).map(String::from))
        .collect();
    out.sort();
    out
}

use serde_json::Value;

#[test]
fn an_export_holds_only_the_subjects_own_data() {
    let mut f = fixture();
    let (alice, bob) = two_subjects(&mut f);
    let export = exported(&f, &alice);
    assert_eq!(
        notes(&export),
        vec!["a-acts-on-b", "a-security", "a-security", "b-acts-on-a"],
        "as actor, as target, and both in one event"
    );
    assert_eq!(
        export["counts"],
        json!({"access": 1, "data_change": 2, "security": 1})
    );
    let text = export.to_string();
    assert!(
        !text.contains("\"bob\"") && !text.contains("198.51.100.8"),
        "nothing of anyone else: {text}"
    );
    assert!(text.contains("198.51.100.7"), "the address is theirs");
    let by_alias = exported(&f, &[email("ALICE@example.org")]);
    assert_eq!(
        notes(&by_alias),
        notes(&export),
        "any identifier finds them"
    );
    assert_eq!(
        notes(&exported(&f, &bob)),
        vec!["a-acts-on-b", "b-acts-on-a"]
    );
}

#[test]
fn erasure_shreds_the_subject_keeps_others_and_the_chain() {
    let mut f = fixture();
    let (alice, bob) = two_subjects(&mut f);
    let bob_before = exported(&f, &bob);
    let found = gdpr::find(&f.log, &alice).unwrap();
    let plan = gdpr::plan(&f.log, &config(), &found).unwrap();
    assert_eq!(
        (
            plan[&Stream::DataChange].action,
            plan[&Stream::DataChange].events
        ),
        ("shred", 2)
    );
    assert_eq!(plan[&Stream::Security].action, "retain");
    let ledger = Ledger::new(f.dir.path());
    let result = gdpr::execute(&f.log, &ledger, &found, &plan, "r1", day0()).unwrap();
    assert_eq!(
        result.parts_dropped, 4,
        "two data_change parts, client and body"
    );

    let after = exported(&f, &alice);
    assert_eq!(notes(&after), vec!["a-security", "a-security"]);
    assert!(
        after["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["on_erasure"]["action"] == "retain" && e["on_erasure"]["basis"].is_string()),
        "what stays is listed with its basis"
    );
    assert_eq!(exported(&f, &bob)["events"], bob_before["events"]);
    for stream in Stream::ALL {
        assert_eq!(check(&f.log, stream).broken, None, "{stream:?}");
    }
    assert_eq!(check(&f.log, Stream::DataChange).parts_dropped, 2);
    assert_eq!(ledger.kids().unwrap().len() as u64, result.keys_destroyed);

    // Idempotent: nothing left to do.
    let found = gdpr::find(&f.log, &alice).unwrap();
    let plan = gdpr::plan(&f.log, &config(), &found).unwrap();
    let again = gdpr::execute(&f.log, &ledger, &found, &plan, "r2", day0()).unwrap();
    assert_eq!((again.keys_destroyed, again.parts_dropped), (0, 0));

    // A new interaction gets a new key.
    f.writer
        .commit(
            vec![about(
                Stream::DataChange,
                &alice[0],
                &alice[1],
                &bob[0],
                "later",
            )],
            day0(),
        )
        .unwrap();
    assert!(notes(&exported(&f, &alice)).contains(&"later".to_string()));
}

#[test]
fn the_ledger_replay_destroys_the_keys_a_restored_store_still_has() {
    let mut f = fixture();
    let (alice, _) = two_subjects(&mut f);
    let found = gdpr::find(&f.log, &alice).unwrap();
    let kids: Vec<[u8; 16]> = found
        .keys
        .iter()
        .filter(|(_, r)| r.stream == Stream::DataChange.code())
        .map(|(k, _)| *k)
        .collect();
    // The ledger knows an erasure this store has not seen (it was restored from before it).
    let ledger = Ledger::new(f.dir.path());
    ledger.append("r1", "t", &kids).unwrap();
    let replayed = gdpr::replay(&f.log, &ledger).unwrap();
    assert_eq!(replayed.keys_destroyed, kids.len() as u64);
    assert!(kids.iter().all(|k| f.log.data_key(k).is_none()));
    assert!(!notes(&exported(&f, &alice)).contains(&"a-acts-on-b".to_string()));
    assert_eq!(check(&f.log, Stream::DataChange).broken, None);
    assert_eq!(
        gdpr::replay(&f.log, &ledger).unwrap().keys_destroyed,
        0,
        "replaying twice changes nothing"
    );
}

#[test]
fn a_kek_rotation_retires_the_old_kek_and_keeps_every_live_key() {
    let mut f = fixture();
    let (alice, bob) = two_subjects(&mut f);
    let before = exported(&f, &alice);
    let rotation = shred::rotate_kek(&f.log).unwrap();
    assert_eq!(rotation.epoch, 2);
    assert!(rotation.keys_rewrapped > 0 && rotation.keys_unreadable == 0);
    assert!(!f.dir.path().join("keys/kek.1").exists());
    assert!(f.dir.path().join("keys/kek.2").exists());
    assert_eq!(exported(&f, &alice)["events"], before["events"]);
    assert!(!notes(&exported(&f, &bob)).is_empty());
}

#[test]
fn a_legal_hold_beats_erasure_and_retention() {
    let mut f = fixture();
    let (alice, bob) = two_subjects(&mut f);
    let pseudonyms = f.log.resolve(&alice).unwrap();
    let hold = Hold {
        id: "case-1".into(),
        pseudonyms: pseudonyms.iter().map(|p| hex::encode(p)).collect(),
        streams: vec![Stream::DataChange],
        case: "case-1".into(),
        created: "t".into(),
    };
    gdpr::add_hold(&f.log, &hold).unwrap();
    let found = gdpr::find(&f.log, &alice).unwrap();
    let plan = gdpr::plan(&f.log, &config(), &found).unwrap();
    assert_eq!(
        (
            plan[&Stream::DataChange].action,
            plan[&Stream::DataChange].basis.as_deref()
        ),
        ("retain", Some("Art 17(3)(e): legal hold case-1"))
    );
    assert_eq!(plan[&Stream::Access].action, "shred");

    // Two years on, Bob's data_change keys are gone, Alice's held ones are not, and the
    // bucket holding her events stays.
    retention::run(&f.log, &config(), at(730), usize::MAX).unwrap();
    let alice_keys = f.log.subject_keys(&pseudonyms).unwrap();
    assert!(
        alice_keys
            .values()
            .any(|r| r.stream == Stream::DataChange.code())
    );
    assert_eq!(f.log.count(Stream::DataChange).unwrap(), 2);
    assert!(
        f.log
            .subject_keys(&f.log.resolve(&bob).unwrap())
            .unwrap()
            .values()
            .all(|r| r.stream != Stream::DataChange.code())
    );
    assert!(gdpr::remove_hold(&f.log, "case-1").unwrap());
    retention::run(&f.log, &config(), at(730), usize::MAX).unwrap();
    assert_eq!(f.log.count(Stream::DataChange).unwrap(), 0);
}

/// The hazard crypto-shredding answers (research/audit.md §2.4): a value removed from sled
/// and flushed is still in its files. If sled ever erases on removal, this fails and the
/// team can revisit the design.
#[test]
fn control_a_plain_sled_remove_leaves_the_plaintext_in_the_files() {
    let dir = tempfile::TempDir::new().unwrap();
    let canary = b"plaintext-canary-7d1e9b2f-removed-but-present";
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("k", &canary[..]).unwrap();
        db.flush().unwrap();
        tree.remove("k").unwrap();
        db.flush().unwrap();
        assert_eq!(tree.get("k").unwrap(), None);
    }
    assert!(
        scan(dir.path(), canary),
        "sled erased a removed value: the control no longer shows the hazard"
    );
}

/// Whether any file under `dir` contains `needle`.
pub fn scan(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}
