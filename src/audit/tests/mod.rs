//! The write path, verification and retention on an injected clock, against a real sled
//! store in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::anchor::{self, Anchor};
use super::capacity::Step;
use super::clock_guard;
use super::event::{self, Draft, Hash, IdKind, Role, Stream, Subject};
use super::keys::Keyring;
use super::log::{AuditLog, day_of, decode_group, encode_group};
use super::writer::Writer;
use super::{AuditConfig, open_parts, retention, verify};
use crate::config::StoreConfig;
use crate::store::Store;

const DAY: u64 = 86_400;

struct Fixture {
    dir: tempfile::TempDir,
    log: Arc<AuditLog>,
    writer: Writer,
}

fn fixture() -> Fixture {
    let dir = tempfile::TempDir::new().unwrap();
    let config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: 16 << 20,
    };
    let store = Store::open(&config).unwrap();
    let keyring = Arc::new(Keyring::open(dir.path()).unwrap());
    let log = Arc::new(AuditLog::open(&store, keyring, "test").unwrap());
    let writer = Writer::new(log.clone()).unwrap();
    Fixture { dir, log, writer }
}

fn config() -> AuditConfig {
    AuditConfig {
        origin: "test".into(),
        queue_capacity: 1024,
        ..AuditConfig::default()
    }
}

/// 2026-03-10, a day well inside a month.
fn day0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(20_522 * DAY)
}

fn at(days: u64) -> SystemTime {
    day0() + Duration::from_secs(days * DAY)
}

fn request_event(stream: Stream, ip: &str, with_body: bool) -> Draft {
    let ip = Subject {
        kind: IdKind::Ip,
        value: ip.to_string(),
    };
    let mut draft = Draft::new(stream, "http.read", "success", "id", day0()).part(
        Role::Client,
        Some(ip.clone()),
        json!({"address": ip.value, "user_agent": "probe"}),
    );
    if with_body {
        draft = draft.part(Role::Body, Some(ip), json!({"request": {"q": "body text"}}));
    }
    draft
}

/// Verifies against the log's own signing key.
/// Writes one `access` request event from `ip` as of `time`.
fn commit_access(writer: &mut Writer, ip: &str, with_body: bool, time: SystemTime) {
    writer
        .commit(vec![request_event(Stream::Access, ip, with_body)], time)
        .unwrap();
}

fn check(log: &AuditLog, stream: Stream) -> verify::StreamReport {
    verify::stream(log, stream, &log.keyring.signing_key().verifying_key()).unwrap()
}

/// How many parts of each event still carry their sealed bytes.
fn sealed(log: &AuditLog, stream: Stream) -> Vec<usize> {
    log.events(stream)
        .map(|item| {
            let (_, record) = item.unwrap();
            record.parts.iter().filter(|p| p.sealed.is_some()).count()
        })
        .collect()
}

fn opened(log: &AuditLog, stream: Stream) -> Vec<usize> {
    log.events(stream)
        .map(|item| open_parts(log, &item.unwrap().1).len())
        .collect()
}

#[test]
fn sequence_numbers_are_gapless_per_stream_and_chains_verify() {
    let mut f = fixture();
    let drafts: Vec<Draft> = (0..250)
        .map(|i| {
            request_event(
                if i % 5 == 0 {
                    Stream::Security
                } else {
                    Stream::Access
                },
                &format!("10.0.0.{}", i % 7),
                i % 2 == 0,
            )
        })
        .collect();
    for chunk in drafts.chunks(64) {
        f.writer.commit(chunk.to_vec(), day0()).unwrap();
    }
    let access = check(&f.log, Stream::Access);
    let security = check(&f.log, Stream::Security);
    assert_eq!(
        (
            access.events,
            access.first_seq,
            access.last_seq,
            access.broken.clone()
        ),
        (200, Some(0), Some(199), None)
    );
    assert_eq!(
        (security.events, security.last_seq, security.broken),
        (50, Some(49), None)
    );
    assert_eq!(f.writer.next_seq(Stream::Access), 200);

    // A new writer continues where the stored records end.
    let again = Writer::new(f.log.clone()).unwrap();
    assert_eq!(again.next_seq(Stream::Access), 200);
    let record = f.log.events(Stream::Access).next().unwrap().unwrap().1;
    let parts = open_parts(&f.log, &record);
    assert_eq!(parts["client"]["address"], "10.0.0.1");
}

/// sled writes a log message over a quarter of its segment (128 KiB) to a blob file of its own,
/// and writes a bucket's leaf whole when it splits it (about nine groups each side); groups of
/// sealed bodies, which do not compress, must stay small enough for that to stay inline. With
/// these bodies, groups of up to 16 KiB pass and 24 KiB ones fail.
#[test]
fn groups_of_sealed_bodies_keep_sleds_leaves_out_of_blob_files() {
    let mut f = fixture();
    let drafts: Vec<Draft> = (0..1_500)
        .map(|i| {
            // Sealed, any text is as incompressible as random bytes.
            let body = "x".repeat(600 + (i * 373) % 800);
            request_event(Stream::Access, "192.0.2.1", false).part(
                Role::Body,
                None,
                json!({ "request": body }),
            )
        })
        .collect();
    for chunk in drafts.chunks(64) {
        f.writer.commit(chunk.to_vec(), day0()).unwrap();
    }
    f.writer.flush().unwrap();
    let blobs = f.dir.path().join("store").join("blobs");
    let files = std::fs::read_dir(&blobs).map_or(0, |entries| entries.count());
    assert_eq!(files, 0, "sled wrote blob files under {}", blobs.display());
    assert_eq!(check(&f.log, Stream::Access).events, 1_500);
}

#[test]
fn reading_from_a_sequence_number_starts_in_its_bucket_and_crosses_into_the_next() {
    let mut f = fixture();
    // Ten events a day for three days: buckets 0-9, 10-19, 20-29, many groups each.
    for day in 0..3 {
        for _ in 0..10 {
            commit_access(&mut f.writer, "10.9.9.9", true, at(day));
        }
    }
    assert_eq!(f.log.buckets(Stream::Access).len(), 3);
    let all: Vec<Hash> = f
        .log
        .events(Stream::Access)
        .map(|item| item.unwrap().1.leaf)
        .collect();
    for from in [0, 7, 10, 15, 19, 20, 29, 30, 45] {
        let read: Vec<(u64, Hash)> = f
            .log
            .events_from(Stream::Access, from)
            .map(|item| item.map(|(seq, record)| (seq, record.leaf)).unwrap())
            .collect();
        let expected: Vec<(u64, Hash)> = (from..30).map(|seq| (seq, all[seq as usize])).collect();
        assert_eq!(read, expected, "from {from}");
    }
    let mut leaves = Vec::new();
    let complete = f
        .log
        .each_leaf(Stream::Access, 8, 23, |leaf| leaves.push(*leaf));
    assert!(complete.unwrap());
    assert_eq!(leaves, all[8..23]);
    let complete = f.log.each_leaf(Stream::Access, 25, 31, |_| {});
    assert!(!complete.unwrap(), "31 is not stored");
}

#[test]
fn headers_hold_no_personal_data() {
    let mut f = fixture();
    let planted = [
        "jane.doe@example.org",
        "user-8472-canary",
        "198.51.100.73",
        "ak_live_canary",
    ];
    let draft = Draft::new(Stream::DataChange, "data.export", "success", "id", day0())
        .part(
            Role::Actor,
            Some(Subject {
                kind: IdKind::UserId,
                value: planted[1].into(),
            }),
            json!({"user_id": planted[1]}),
        )
        .part(
            Role::Target,
            Some(Subject {
                kind: IdKind::Email,
                value: planted[0].into(),
            }),
            json!({"email": planted[0]}),
        )
        .part(
            Role::Client,
            Some(Subject {
                kind: IdKind::Ip,
                value: planted[2].into(),
            }),
            json!({"address": planted[2], "key": planted[3]}),
        );
    f.writer.commit(vec![draft], day0()).unwrap();
    let (_, record) = f.log.events(Stream::DataChange).next().unwrap().unwrap();
    for identifier in planted {
        assert!(
            !record.header.contains(identifier),
            "{identifier} in {}",
            record.header
        );
        for part in &record.parts {
            let sealed = part.sealed.as_ref().unwrap();
            assert!(
                !sealed
                    .windows(identifier.len())
                    .any(|w| w == identifier.as_bytes())
            );
        }
    }
    assert_eq!(open_parts(&f.log, &record)["target"]["email"], planted[0]);
}

#[test]
fn retention_expires_each_class_at_its_own_age_and_is_idempotent() {
    let mut f = fixture();
    let config = config();
    let access: Vec<Draft> = (0..20)
        .map(|i| request_event(Stream::Access, &format!("10.2.0.{i}"), true))
        .collect();
    let security: Vec<Draft> = (0..5)
        .map(|i| request_event(Stream::Security, &format!("10.3.0.{i}"), false))
        .collect();
    f.writer.commit(access, day0()).unwrap();
    f.writer.commit(security, day0()).unwrap();
    assert!(opened(&f.log, Stream::Access).iter().all(|&n| n == 2));

    // Bodies: daily keys, 7 days after their day.
    let early = retention::run(&f.log, &config, at(7), usize::MAX).unwrap();
    assert_eq!(
        early.streams.get("access").map_or(0, |s| s.keys_destroyed),
        0
    );
    let bodies = retention::run(&f.log, &config, at(8), usize::MAX).unwrap();
    assert_eq!(
        (
            bodies.streams["access"].keys_destroyed,
            bodies.streams["access"].parts_dropped
        ),
        (20, 20)
    );
    assert!(
        opened(&f.log, Stream::Access).iter().all(|&n| n == 1),
        "client parts stay"
    );
    assert_eq!(
        sealed(&f.log, Stream::Access),
        vec![1; 20],
        "the expired bodies' ciphertext is gone from the records, not only their keys"
    );
    let again = retention::run(&f.log, &config, at(8), usize::MAX).unwrap();
    assert!(
        again.complete
            && again
                .streams
                .values()
                .all(|s| s.keys_destroyed == 0 && s.buckets_dropped == 0)
    );

    // Access identities: monthly keys, 30 days after the month ends (April 1 is day 22).
    retention::run(&f.log, &config, at(22 + 29), usize::MAX).unwrap();
    assert!(opened(&f.log, Stream::Access).iter().all(|&n| n == 1));
    retention::run(&f.log, &config, at(22 + 30), usize::MAX).unwrap();
    assert!(opened(&f.log, Stream::Access).iter().all(|&n| n == 0));
    assert_eq!(sealed(&f.log, Stream::Access), vec![0; 20]);
    assert_eq!(
        f.log.count(Stream::Access).unwrap(),
        20,
        "headers outlive personal parts"
    );
    assert!(
        opened(&f.log, Stream::Security).iter().all(|&n| n == 1),
        "security keeps identities for 180 days"
    );
    assert_eq!(
        check(&f.log, Stream::Access).broken,
        None,
        "destroyed keys do not break the chain"
    );

    // Access headers: 180 days; security headers: 365.
    let pruned = retention::run(&f.log, &config, at(180), usize::MAX).unwrap();
    assert_eq!(
        (
            pruned.streams["access"].events_pruned,
            pruned.streams["access"].pruned_through
        ),
        (20, Some(19))
    );
    assert_eq!(f.log.count(Stream::Access).unwrap(), 0);
    assert_eq!(f.log.count(Stream::Security).unwrap(), 5);
    assert!(opened(&f.log, Stream::Security).iter().all(|&n| n == 1));
    retention::run(&f.log, &config, at(22 + 180), usize::MAX).unwrap();
    assert!(
        opened(&f.log, Stream::Security).iter().all(|&n| n == 0),
        "security identities go 180 days after the month"
    );

    // The chain continues from the anchor, in the store and after a restart of the writer.
    let mut writer = Writer::new(f.log.clone()).unwrap();
    assert_eq!(writer.next_seq(Stream::Access), 20);
    commit_access(&mut writer, "10.9.9.9", false, at(181));
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        (report.events, report.first_seq, report.broken),
        (1, Some(20), None)
    );
    let idle = retention::run(&f.log, &config, at(181), usize::MAX).unwrap();
    assert!(idle.streams.values().all(|s| s.buckets_dropped == 0));
}

#[test]
fn a_clock_behind_the_stored_events_prunes_nothing_until_it_catches_up() {
    let mut f = fixture();
    let config = config();
    commit_access(&mut f.writer, "10.5.0.1", true, day0());
    commit_access(&mut f.writer, "10.5.0.2", true, at(400));

    // Day 399 is before the newest bucket: everything of day 0 has expired by then, but the
    // clock cannot be trusted, so nothing goes.
    let behind = retention::run(&f.log, &config, at(399), usize::MAX).unwrap();
    assert_eq!(
        behind.refused,
        Some(retention::ClockBehind {
            now: "2027-04-13T00:00:00.000000000Z".into(),
            stored: "2027-04-14T00:00:00.000000000Z".into(),
        })
    );
    assert!(!behind.complete && behind.streams.is_empty());
    assert_eq!(f.log.count(Stream::Access).unwrap(), 2);
    assert_eq!(opened(&f.log, Stream::Access), vec![2, 2]);

    let caught_up = retention::run(&f.log, &config, at(400), usize::MAX).unwrap();
    assert!(caught_up.complete && caught_up.refused.is_none());
    assert_eq!(caught_up.streams["access"].events_pruned, 1);
    assert_eq!(f.log.count(Stream::Access).unwrap(), 1);
    assert_eq!(check(&f.log, Stream::Access).broken, None);
}

#[test]
fn a_clock_behind_the_newest_digest_prunes_nothing() {
    let mut f = fixture();
    let config = config();
    commit_access(&mut f.writer, "10.5.1.1", true, day0());
    // The writer's digest clock starts at the real time; sign two hours after it. Retention an
    // hour earlier than that signature would prune day 0's event (over 180 days old).
    let signed = SystemTime::now() + Duration::from_secs(2 * 3600);
    assert_eq!(f.writer.sign_due(signed, &config.digests).unwrap(), 5);
    let earlier = signed - Duration::from_secs(3600);
    let behind = retention::run(&f.log, &config, earlier, usize::MAX).unwrap();
    assert_eq!(
        behind.refused.map(|r| r.stored),
        Some(super::event::rfc3339_nanos(signed))
    );
    assert_eq!(f.log.count(Stream::Access).unwrap(), 1);
    let later = signed + Duration::from_secs(3600);
    let after = retention::run(&f.log, &config, later, usize::MAX).unwrap();
    assert!(after.complete && after.refused.is_none());
    assert_eq!(f.log.count(Stream::Access).unwrap(), 0);
}

/// A trail over the fixture's store with `config`, its writer not started.
fn open_trail(f: &Fixture, config: super::AuditConfig) -> Arc<super::AuditTrail> {
    Arc::new(super::AuditTrail::open(&f.log.store, f.dir.path(), config).unwrap())
}

/// A trail over the fixture's store, with its writer thread running.
fn started_trail(f: &Fixture) -> (Arc<super::AuditTrail>, std::thread::JoinHandle<()>) {
    let trail = open_trail(f, config());
    let writer_thread = trail.start();
    (trail, writer_thread)
}

/// The sample `series` of the trail's metrics.
fn trail_metric(trail: &super::AuditTrail, series: &str) -> f64 {
    let mut metrics = crate::metrics::Exposition::default();
    trail.render_metrics(&mut metrics);
    crate::metrics::sample_value(&metrics.finish(), series).expect("the metric is exposed")
}

/// `seawall_audit_retention_refused_total` as the trail exposes it.
fn refused_runs(trail: &super::AuditTrail) -> u64 {
    trail_metric(trail, "seawall_audit_retention_refused_total") as u64
}

/// The headers of the `system` stream, once everything queued is written.
async fn system_headers(trail: &super::AuditTrail) -> Vec<String> {
    trail.flush().await;
    trail
        .log
        .events(Stream::System)
        .map(|item| item.unwrap().1.header)
        .collect()
}

/// The queue holds at most `queue_bytes` of drafts however many more events it could take:
/// past that, ordinary events are dropped and counted while important ones wait; the room
/// comes back as the writer writes, and the first event that finds it is followed by a
/// notice of the drops.
#[tokio::test]
async fn the_queue_keeps_to_its_byte_budget() {
    let f = fixture();
    let draft = || request_event(Stream::Access, "10.7.0.1", true);
    let size = draft().memory_size();
    let config = super::AuditConfig {
        queue_bytes: 10 * size,
        ..config()
    };
    assert!(config.queue_capacity > 30, "the count is not what binds");
    let trail = open_trail(&f, config);

    // No writer yet: nothing leaves the queue.
    for _ in 0..25 {
        trail.record_now(draft());
    }
    assert_eq!(trail_metric(&trail, "seawall_audit_queue_depth"), 10.0);
    assert_eq!(
        trail_metric(&trail, "seawall_audit_queue_bytes"),
        (10 * size) as f64
    );
    assert_eq!(
        trail_metric(&trail, "seawall_audit_events_dropped_total"),
        15.0
    );
    let important = tokio::spawn({
        let trail = trail.clone();
        async move { trail.record(draft().important()).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !important.is_finished(),
        "an important event waits for room"
    );

    let writer_thread = trail.start();
    tokio::time::timeout(Duration::from_secs(30), important)
        .await
        .expect("room comes back as the writer writes")
        .unwrap();
    trail.flush().await;
    assert_eq!(trail_metric(&trail, "seawall_audit_queue_bytes"), 0.0);
    assert!(trail_metric(&trail, "seawall_audit_commit_seconds_count") >= 1.0);
    assert!(trail_metric(&trail, "seawall_audit_flush_seconds_count") >= 1.0);
    trail.record_now(draft());
    let headers = system_headers(&trail).await;
    assert_eq!(f.log.count(Stream::Access).unwrap(), 12);
    assert_eq!(
        trail_metric(&trail, "seawall_audit_events_dropped_total"),
        15.0
    );
    assert!(
        headers
            .iter()
            .any(|h| h.contains(r#""type":"sys.audit.events_dropped""#)
                && h.contains(r#""dropped":15"#)),
        "{headers:?}"
    );
    drop(trail);
    writer_thread.join().unwrap();
}

/// A durable event that times out waiting for the queue (full in count here) gives back the
/// room it had taken: the budget does not shrink with every refused `blocking-strict` request.
#[tokio::test]
async fn room_is_given_back_when_a_wait_for_the_queue_ends_early() {
    let f = fixture();
    let draft = || request_event(Stream::Access, "10.7.0.2", false);
    let size = draft().memory_size();
    let config = super::AuditConfig {
        queue_capacity: 16,
        queue_bytes: 100 * size,
        ..config()
    };
    let trail = open_trail(&f, config);
    for _ in 0..16 {
        trail.record_now(draft());
    }
    assert_eq!(trail_metric(&trail, "seawall_audit_queue_depth"), 16.0);
    let held = trail_metric(&trail, "seawall_audit_queue_bytes");
    assert_eq!(held, (16 * size) as f64);

    let written = trail
        .record_durably(draft(), Duration::from_millis(50))
        .await;
    assert!(!written, "no writer: the event cannot be on disk");
    assert_eq!(trail_metric(&trail, "seawall_audit_queue_bytes"), held);
    let dropped = trail_metric(&trail, "seawall_audit_events_dropped_total");
    trail.record_now(draft());
    assert_eq!(
        trail_metric(&trail, "seawall_audit_events_dropped_total"),
        dropped + 1.0,
        "full in count"
    );
    assert_eq!(trail_metric(&trail, "seawall_audit_queue_bytes"), held);
}

#[tokio::test]
async fn a_refused_run_is_recorded_as_a_failure_naming_the_clock() {
    let f = fixture();
    let tomorrow = SystemTime::now() + Duration::from_secs(2 * DAY);
    let mut writer = Writer::new(f.log.clone()).unwrap();
    commit_access(&mut writer, "10.6.0.1", false, tomorrow);
    drop(writer);
    let (trail, writer_thread) = started_trail(&f);

    let report = trail
        .run_retention(SystemTime::now(), Instant::now())
        .await
        .unwrap();
    assert!(report.refused.is_some());
    assert_eq!(refused_runs(&trail), 1);
    let headers = system_headers(&trail).await;
    assert!(
        headers
            .iter()
            .any(|h| h.contains(r#""type":"sys.retention.refused""#)
                && h.contains(r#""outcome":"failure""#)
                && h.contains(r#""reason":"clock_behind""#)),
        "{headers:?}"
    );
    drop(trail);
    writer_thread.join().unwrap();
}

#[tokio::test]
async fn a_clock_that_jumped_forward_holds_pruning_for_a_day_by_the_new_clock() {
    let f = fixture();
    let mut writer = Writer::new(f.log.clone()).unwrap();
    commit_access(&mut writer, "10.6.0.2", false, SystemTime::now());
    drop(writer);
    let (trail, writer_thread) = started_trail(&f);
    let hour = Duration::from_secs(3_600);
    // A minute ahead, so that no digest the writer signs meanwhile is later than the clock.
    let now = SystemTime::now() + Duration::from_secs(60);
    let at = Instant::now();
    let first = trail.run_retention(now, at).await.unwrap();
    assert!(first.complete && first.held.is_none());

    // A year later by the wall clock, an hour later by the monotonic one: the access event has
    // expired by the new clock, but it stays.
    let jumped = now + hour + Duration::from_secs(365 * DAY);
    let held = trail.run_retention(jumped, at + hour).await.unwrap();
    let until = event::rfc3339_nanos(jumped + clock_guard::HOLD);
    assert_eq!(
        held.held,
        Some(clock_guard::Held {
            jumped_ms: Some(365 * DAY * 1_000),
            until: until.clone(),
        })
    );
    assert!(!held.complete && held.streams.is_empty());
    assert_eq!(f.log.count(Stream::Access).unwrap(), 1);
    let still = trail
        .run_retention(jumped + 23 * hour, at + 24 * hour)
        .await
        .unwrap();
    assert_eq!(
        still.held.map(|h| (h.jumped_ms, h.until)),
        Some((None, until))
    );
    assert_eq!(f.log.count(Stream::Access).unwrap(), 1);

    // A day on by both clocks, the hold is over and the same clock prunes.
    let after = trail
        .run_retention(jumped + 25 * hour, at + 26 * hour)
        .await
        .unwrap();
    assert!(after.complete && after.held.is_none());
    assert_eq!(after.streams["access"].events_pruned, 1);
    assert_eq!(f.log.count(Stream::Access).unwrap(), 0);

    let refusals: Vec<String> = system_headers(&trail)
        .await
        .into_iter()
        .filter(|h| h.contains(r#""reason":"clock_jumped""#))
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals[0].contains(r#""type":"sys.retention.refused""#));
    assert!(refusals[0].contains(r#""jumped_ms":31536000000"#));
    assert_eq!(refused_runs(&trail), 2);
    drop(trail);
    writer_thread.join().unwrap();
}

#[test]
fn an_interrupted_run_leaves_a_consistent_store() {
    let mut f = fixture();
    let config = config();
    for day in 0..4 {
        let drafts: Vec<Draft> = (0..3)
            .map(|i| request_event(Stream::Access, &format!("10.4.{day}.{i}"), false))
            .collect();
        f.writer.commit(drafts, at(day)).unwrap();
    }
    // Every key has expired by day 400. Phase A drops their parts from the four buckets (a
    // batch each), then destroys the keys (one batch); each bucket dropped is one more.
    let first = retention::run(&f.log, &config, at(400), 6).unwrap();
    assert!(!first.complete);
    assert_eq!(first.streams["access"].buckets_dropped, 1);
    let report = check(&f.log, Stream::Access);
    assert_eq!(
        (report.events, report.first_seq, report.broken),
        (9, Some(3), None)
    );
    assert_eq!(
        Writer::new(f.log.clone()).unwrap().next_seq(Stream::Access),
        12
    );

    // An anchor written before its bucket was dropped (a crash in between) still verifies.
    let last_kept = f.log.buckets(Stream::Access)[0];
    let tree = f.log.bucket(Stream::Access, last_kept).unwrap();
    let (_, record) = f.log.newest(&tree, Stream::Access).unwrap().unwrap();
    let anchor = Anchor::sign(
        f.log.keyring.signing_key(),
        &f.log.origin,
        Stream::Access,
        (5, record.chain, last_kept),
        event::rfc3339_nanos(at(400)),
        config.retention[&Stream::Access].header_days,
    );
    anchor::store(&f.log, Stream::Access, &anchor).unwrap();
    assert_eq!(check(&f.log, Stream::Access).broken, None);

    let rest = retention::run(&f.log, &config, at(400), usize::MAX).unwrap();
    assert!(rest.complete);
    assert_eq!(f.log.count(Stream::Access).unwrap(), 0);
    assert_eq!(
        anchor::load(&f.log, Stream::Access)
            .unwrap()
            .unwrap()
            .pruned_through,
        11
    );
}

#[test]
fn a_run_interrupted_between_dropping_parts_and_destroying_keys_finishes_next_time() {
    let mut f = fixture();
    let config = config();
    for day in 0..3 {
        commit_access(&mut f.writer, &format!("10.5.0.{day}"), true, at(day));
    }
    // Bodies of days 0-2 have expired by day 10 (identities have not): one sweep a bucket.
    let cut = retention::run(&f.log, &config, at(10), 2).unwrap();
    assert!(!cut.complete);
    assert_eq!(
        (
            cut.streams["access"].parts_dropped,
            cut.streams["access"].keys_destroyed
        ),
        (2, 0)
    );
    assert_eq!(sealed(&f.log, Stream::Access), vec![1, 1, 2]);
    assert_eq!(
        opened(&f.log, Stream::Access),
        vec![1, 1, 2],
        "nothing unreadable meanwhile"
    );
    assert_eq!(check(&f.log, Stream::Access).broken, None);

    let rest = retention::run(&f.log, &config, at(10), usize::MAX).unwrap();
    assert!(rest.complete);
    assert_eq!(
        (
            rest.streams["access"].parts_dropped,
            rest.streams["access"].keys_destroyed
        ),
        (1, 3)
    );
    assert_eq!(sealed(&f.log, Stream::Access), vec![1, 1, 1]);
    assert_eq!(check(&f.log, Stream::Access).broken, None);
}

#[test]
fn capacity_steps_shorten_bodies_then_access_and_spare_the_other_streams() {
    let mut f = fixture();
    let config = config();
    for day in 0..3 {
        commit_access(&mut f.writer, &format!("10.6.0.{day}"), true, at(day));
        f.writer
            .commit(
                vec![request_event(Stream::Security, "10.6.1.1", true)],
                at(day),
            )
            .unwrap();
    }
    let run = |step: Step| retention::run(&f.log, &step.apply(&config), at(2), usize::MAX).unwrap();
    assert!(
        run(Step::Normal)
            .streams
            .values()
            .all(|s| s.parts_dropped == 0)
    );

    // Bodies of every stream are kept one day after theirs: day 0's go.
    let bodies = run(Step::Bodies);
    assert_eq!(bodies.streams["access"].parts_dropped, 1);
    assert_eq!(bodies.streams["security"].parts_dropped, 1);
    assert_eq!(sealed(&f.log, Stream::Access), vec![1, 2, 2]);
    // Identity keys are monthly: this month's stay until it ends.
    let payload = run(Step::AccessPayload);
    assert!(payload.streams.values().all(|s| s.parts_dropped == 0));
    let headers = run(Step::AccessHeaders);
    assert_eq!(
        (
            headers.streams["access"].buckets_dropped,
            headers.streams["access"].events_pruned
        ),
        (2, 2)
    );
    assert_eq!(f.log.count(Stream::Access).unwrap(), 1);
    assert_eq!(
        f.log.count(Stream::Security).unwrap(),
        3,
        "security keeps its periods"
    );
    assert_eq!(sealed(&f.log, Stream::Security), vec![1, 2, 2]);
    assert_eq!(check(&f.log, Stream::Access).broken, None);
    assert_eq!(check(&f.log, Stream::Security).broken, None);
    // After the month (April 1 is day 22), access identities go one day later instead of 30;
    // security identities stay.
    let month_end = retention::run(
        &f.log,
        &Step::AccessPayload.apply(&config),
        at(23),
        usize::MAX,
    )
    .unwrap();
    assert_eq!(month_end.streams["access"].parts_dropped, 2);
    assert_eq!(sealed(&f.log, Stream::Access), vec![0]);
    assert_eq!(sealed(&f.log, Stream::Security), vec![1, 1, 1]);
}

mod erasure;
mod integrity;
