//! The witness: the signed digests kept on another machine, and the check that the machine's
//! digests still extend them (research/audit.md §4.3 "Anchoring").
//!
//! Signed digests catch an altered trail only while the signing key is safe. Root on the
//! machine can rewrite history and sign it again, or wipe the store and start a new trail;
//! what it cannot change is a digest someone else already holds. `seawall audit witness`, run
//! from another machine (a cron job), fetches each stream's digests from
//! `GET /admin/audit/digests`, starting at the newest one it holds, and checks that:
//! - each is signed by the pinned key;
//! - the digest it holds is still listed, unchanged, or is gone only behind a signed retention
//!   anchor that removed every event it covered;
//! - each new digest follows the one before it (number, event range, `prev_digest` link).
//!
//! It then keeps the newest digest per stream in its state file. A failed check leaves the
//! state as it was and names the stream, the digest and the kind of break. [`extend`] is the
//! check; [`run`] fetches, checks and keeps, with a plain HTTP/1.1 GET (the admin listener is
//! on a private network, as for `verify`); [`exposition`] is the run as metrics for the
//! witness machine's node_exporter, which the `SeawallAuditWitness*` alerts watch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::anchor::Anchor;
use crate::audit::digest::{self, Digest};
use crate::audit::event::Stream;
use crate::hex;
use crate::metrics::Exposition;

/// Longest wait for one answer of the feed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream's retention anchor with the origin it names (its signature covers both).
pub type NamedAnchor = (String, Anchor);

/// What the witness holds between runs: the newest digest it has checked, per stream.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Held {
    pub streams: BTreeMap<String, Digest>,
}

/// Why the machine's digests do not extend what the witness holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub stream: String,
    /// The digest at fault, when there is one.
    pub number: Option<u64>,
    /// `signature`, `rewritten` (the held digest is listed with other content), `missing`
    /// (the held digest is gone and no signed anchor accounts for it), `gap` (numbers or event
    /// ranges do not follow), `link` (`prev_digest` does not name the digest before).
    pub kind: &'static str,
    pub detail: String,
}

/// What one stream showed.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub stream: String,
    /// The digest held before this run.
    pub held: Option<u64>,
    /// The digest held after it.
    pub newest: Option<u64>,
    /// Digests witnessed for the first time.
    pub new: u64,
    /// Set when the held digest had been removed by retention behind a signed anchor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub key_fingerprint: String,
    pub streams: Vec<StreamReport>,
    pub broken: Option<Break>,
}

/// What [`extend`] concluded for a stream.
#[derive(Debug, PartialEq)]
pub struct Extended {
    /// The newest digest now witnessed (the held one when nothing newer was listed).
    pub newest: Option<Digest>,
    /// Set when the held digest was found removed behind a signed anchor cut at this seq.
    pub pruned_through: Option<u64>,
    /// How many digests were checked for the first time.
    pub witnessed: u64,
}

/// Checks the digests the machine lists for `stream` (oldest first, from the held digest's
/// number on) and its retention anchor (with the origin it names) against `held`, under `key`.
pub fn extend(
    stream: Stream,
    held: Option<&Digest>,
    listed: &[Digest],
    anchor: Option<&NamedAnchor>,
    key: &VerifyingKey,
) -> Result<Extended, Break> {
    let fail = |number: Option<u64>, kind: &'static str, detail: String| Break {
        stream: stream.as_str().to_string(),
        number,
        kind,
        detail,
    };
    for d in listed {
        if d.stream != stream || !d.signed_by(key) {
            return Err(fail(
                Some(d.number),
                "signature",
                "not signed by the pinned key for this stream".to_string(),
            ));
        }
    }
    let mut previous = held;
    let mut fresh = listed;
    let mut pruned_through = None;
    if let Some(held) = held {
        match listed.iter().position(|d| d.number == held.number) {
            Some(at) if listed[at] == *held => fresh = &listed[at + 1..],
            Some(_) => {
                return Err(fail(
                    Some(held.number),
                    "rewritten",
                    "the machine lists this digest with other content".to_string(),
                ));
            }
            None => {
                // Only retention removes a digest, and only once every event it covered is
                // gone; its signed anchor says how far it cut, under which period. A cut that
                // removed events younger than its period, or names none, is not retention.
                let cut = anchor
                    .filter(|(origin, a)| {
                        *origin == held.origin
                            && a.signed_by(key, origin, stream)
                            && a.header_days > 0
                            && a.within_period()
                    })
                    .map(|(_, a)| a.pruned_through);
                match cut {
                    Some(cut) if cut + 1 >= held.next_seq => {
                        pruned_through = Some(cut);
                        // Nothing links the held digest to the ones listed now; they start a
                        // new line, which must at least be newer.
                        previous = None;
                        fresh = &listed[listed.partition_point(|d| d.number <= held.number)..];
                    }
                    _ => {
                        let newest = listed
                            .last()
                            .map_or("none".to_string(), |d| d.number.to_string());
                        return Err(fail(
                            Some(held.number),
                            "missing",
                            format!(
                                "no longer listed and no signed retention anchor removed its events (newest listed: {newest})"
                            ),
                        ));
                    }
                }
            }
        }
    }
    for d in fresh {
        if let Some(p) = previous {
            if d.number != p.number + 1 || d.from_seq != p.next_seq {
                return Err(fail(
                    Some(d.number),
                    "gap",
                    format!(
                        "follows digest {} (events up to {}) but starts at digest {}, event {}",
                        p.number, p.next_seq, d.number, d.from_seq
                    ),
                ));
            }
            if d.prev_digest.as_deref() != Some(hex::encode(&p.hash()).as_str()) {
                return Err(fail(
                    Some(d.number),
                    "link",
                    format!("prev_digest does not name digest {}", p.number),
                ));
            }
        }
        previous = Some(d);
    }
    Ok(Extended {
        newest: fresh.last().or(held).cloned(),
        pruned_through,
        witnessed: fresh.len() as u64,
    })
}

/// Why a run could not check at all.
#[derive(Debug)]
pub enum Unchecked {
    /// The feed did not answer, or answered with something else.
    Feed(String),
    /// The state file could not be read or written.
    StateIo(String),
    /// The state file is not a witness state.
    StateInvalid(String),
}

impl std::fmt::Display for Unchecked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unchecked::Feed(why) | Unchecked::StateIo(why) | Unchecked::StateInvalid(why) => {
                f.write_str(why)
            }
        }
    }
}

/// One witness run against the admin listener at `url` (`http://host:port`): fetches, checks
/// every stream and, when all pass, keeps the newest digests in `state`.
pub fn run(url: &str, token: &str, key: &VerifyingKey, state: &Path) -> Result<Report, Unchecked> {
    let mut held: Held = match std::fs::read_to_string(state) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Unchecked::StateInvalid(format!("{} is not a witness state: {e}", state.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Held::default(),
        Err(e) => {
            return Err(Unchecked::StateIo(format!(
                "cannot read {}: {e}",
                state.display()
            )));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Unchecked::Feed(format!("cannot start a runtime: {e}")))?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut report = Report {
        ok: true,
        key_fingerprint: digest::fingerprint(key),
        streams: Vec::new(),
        broken: None,
    };
    for stream in Stream::ALL {
        let before = held.streams.get(stream.as_str()).cloned();
        let mut entry = StreamReport {
            stream: stream.as_str().to_string(),
            held: before.as_ref().map(|d| d.number),
            newest: None,
            new: 0,
            pruned_through: None,
        };
        let mut current = before;
        loop {
            let since = current.as_ref().map_or(0, |d| d.number);
            let feed = runtime
                .block_on(fetch(
                    &client,
                    &format!(
                        "{url}/admin/audit/digests?stream={}&since={since}",
                        stream.as_str()
                    ),
                    token,
                ))
                .map_err(Unchecked::Feed)?;
            let (listed, anchor) = read_feed(&feed, stream).map_err(Unchecked::Feed)?;
            match extend(stream, current.as_ref(), &listed, anchor.as_ref(), key) {
                Ok(extended) => {
                    entry.new += extended.witnessed;
                    entry.pruned_through = entry.pruned_through.or(extended.pruned_through);
                    current = extended.newest;
                    if listed.len() < digest::FEED_PAGE || extended.witnessed == 0 {
                        break;
                    }
                }
                Err(broken) => {
                    // The witness keeps what it held.
                    entry.newest = entry.held;
                    report.ok = false;
                    report.broken = Some(broken);
                    report.streams.push(entry);
                    return Ok(report);
                }
            }
        }
        entry.newest = current.as_ref().map(|d| d.number);
        if let Some(newest) = current {
            held.streams.insert(stream.as_str().to_string(), newest);
        }
        report.streams.push(entry);
    }
    save(state, &held).map_err(Unchecked::StateIo)?;
    Ok(report)
}

/// The listed digests of `stream` and its anchor, from one answer of the feed.
fn read_feed(feed: &Value, stream: Stream) -> Result<(Vec<Digest>, Option<NamedAnchor>), String> {
    let listed: Vec<Digest> = serde_json::from_value(feed["digests"].clone())
        .map_err(|e| format!("the answer is not the digest feed: {e}"))?;
    let anchor = feed["anchors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Anchor::from_public_json)
        .find(|(_, s, _)| *s == stream)
        .map(|(origin, _, anchor)| (origin, anchor));
    Ok((listed, anchor))
}

async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    token: &str,
) -> Result<Value, String> {
    let request = Request::get(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{url}: no answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("{url} answered with something other than JSON: {e}"))
}

fn save(state: &Path, held: &Held) -> Result<(), String> {
    let text = serde_json::to_string_pretty(held).expect("witness state serializes");
    write_whole(state, &text)
}

/// The run as Prometheus text, for node_exporter's textfile collector on the witness's machine;
/// `target` (the `--url`) tells apart the machines one witness watches.
pub fn exposition(report: &Report, target: &str, now: SystemTime) -> String {
    let labels = [("target", target)];
    let mut out = Exposition::new();
    out.single_labelled(
        "seawall_audit_witness_broken",
        "gauge",
        "1 when the last check found that the machine's digests do not extend what the witness holds.",
        &labels,
        if report.ok { 0.0 } else { 1.0 },
    );
    let checked = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.single_labelled(
        "seawall_audit_witness_last_check_timestamp_seconds",
        "gauge",
        "When the witness last checked the digest feed, whatever it found.",
        &labels,
        checked.as_secs_f64(),
    );
    out.header(
        "seawall_audit_witness_newest_digest",
        "gauge",
        "The number of the newest digest the witness holds, per stream.",
    );
    for stream in &report.streams {
        if let Some(newest) = stream.newest {
            out.sample(
                "seawall_audit_witness_newest_digest",
                &[("target", target), ("stream", &stream.stream)],
                newest as f64,
            );
        }
    }
    out.finish()
}

/// Replaces `path` as a whole (a new file, on disk before it is renamed over the old one), so
/// a run that stops half-way, a crash, or a reader in between sees the previous content or the
/// new one. Each call writes its own new file, so two runs at once (an overlapping cron job)
/// cannot mix their states: the last rename wins, whole.
pub fn write_whole(path: &Path, text: &str) -> Result<(), String> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(
        ".{}.partial",
        hex::encode(&rand::random::<[u8; 8]>())
    ));
    let partial = std::path::PathBuf::from(partial);
    let written = std::fs::File::create(&partial)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::audit::digest::Coverage;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Digests 0..n of the access stream, `events` each, signed by `key`.
    fn line(key: &SigningKey, n: u64, events: u64) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::new();
        for number in 0..n {
            let coverage = Coverage {
                origin: "gw",
                stream: Stream::Access,
                from_seq: number * events,
                next_seq: (number + 1) * events,
                chain_head: &[number as u8; 32],
                batch_merkle_root: Some([7; 32]),
                time: format!("2026-11-28T00:00:{number:02}Z"),
            };
            out.push(Digest::sign(key, coverage, out.last()));
        }
        out
    }

    fn check(held: Option<&Digest>, listed: &[Digest]) -> Result<Extended, Break> {
        extend(Stream::Access, held, listed, None, &key(1).verifying_key())
    }

    fn kind(result: Result<Extended, Break>) -> (&'static str, Option<u64>) {
        let broken = result.expect_err("a break");
        (broken.kind, broken.number)
    }

    #[test]
    fn the_metrics_say_broken_when_and_what_each_stream_holds() {
        let report = Report {
            ok: false,
            key_fingerprint: "ab".to_string(),
            streams: vec![StreamReport {
                stream: "access".to_string(),
                held: Some(2),
                newest: Some(5),
                new: 3,
                pruned_through: None,
            }],
            broken: None,
        };
        let text = exposition(
            &report,
            "http://10.0.0.2:9090",
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        for line in [
            "seawall_audit_witness_broken{target=\"http://10.0.0.2:9090\"} 1",
            "seawall_audit_witness_last_check_timestamp_seconds{target=\"http://10.0.0.2:9090\"} 1800000000",
            "seawall_audit_witness_newest_digest{target=\"http://10.0.0.2:9090\",stream=\"access\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn a_first_run_takes_the_whole_line_and_later_runs_extend_it() {
        let all = line(&key(1), 6, 4);
        let first = check(None, &all[..3]).unwrap();
        assert_eq!(first.newest.as_ref(), Some(&all[2]));
        let second = check(first.newest.as_ref(), &all[2..]).unwrap();
        assert_eq!(second.newest.as_ref(), Some(&all[5]));
        // Nothing new: the held digest stays.
        let idle = check(Some(&all[5]), &all[5..]).unwrap();
        assert_eq!(idle.newest.as_ref(), Some(&all[5]));
    }

    #[test]
    fn another_key_a_rewritten_held_digest_and_a_wiped_stream_are_found() {
        let all = line(&key(1), 6, 4);
        let forged = line(&key(2), 6, 4);
        assert_eq!(
            kind(check(Some(&all[2]), &forged[2..])),
            ("signature", Some(2))
        );
        // Re-signed with the machine's key after a rewrite: the held digest differs.
        let rewritten = line(&key(1), 6, 5);
        assert_eq!(
            kind(check(Some(&all[2]), &rewritten[2..])),
            ("rewritten", Some(2))
        );
        // The store wiped and a new trail started: asked from the held digest's number on, the
        // machine lists nothing.
        assert_eq!(kind(check(Some(&all[4]), &[])), ("missing", Some(4)));
    }

    #[test]
    fn a_dropped_or_unlinked_digest_breaks_the_line() {
        let all = line(&key(1), 6, 4);
        let mut dropped = all[2..].to_vec();
        dropped.remove(2);
        assert_eq!(kind(check(Some(&all[2]), &dropped)), ("gap", Some(5)));
        // A digest signed as the successor of another digest 3 than the one listed.
        let elsewhere = line(&key(1), 4, 3);
        let stranger = Digest::sign(
            &key(1),
            Coverage {
                origin: "gw",
                stream: Stream::Access,
                from_seq: 16,
                next_seq: 20,
                chain_head: &[9; 32],
                batch_merkle_root: None,
                time: "2026-11-28T00:01:00Z".to_string(),
            },
            Some(&elsewhere[3]),
        );
        let mut spliced = all[2..4].to_vec();
        spliced.push(stranger);
        assert_eq!(kind(check(Some(&all[2]), &spliced)), ("link", Some(4)));
    }

    #[test]
    fn a_digest_removed_by_retention_passes_only_behind_a_signed_anchor_past_its_events() {
        let all = line(&key(1), 6, 4);
        // An anchor for a cut through event `through`, stored on `through_day`, made on
        // 2026-11-28 under a period of `header_days`.
        let anchor = |through: u64, signer: &SigningKey, through_day: u32, header_days: u32| {
            let anchor = Anchor::sign(
                signer,
                "gw",
                Stream::Access,
                (through, [3; 32], through_day),
                "2026-11-28T01:00:00Z".to_string(),
                header_days,
            );
            ("gw".to_string(), anchor)
        };
        let pinned = key(1).verifying_key();
        // The witness holds digest 1; the feed now starts at digest 3, behind `cut`.
        let extend_behind = |cut: &(String, Anchor)| {
            extend(Stream::Access, Some(&all[1]), &all[3..], Some(cut), &pinned)
        };
        // Digest 1 covered events 4..8; a cut through event 11 removed them (and digest 2's).
        let extended = extend_behind(&anchor(11, &key(1), 20_000, 30)).unwrap();
        assert_eq!(extended.newest.as_ref(), Some(&all[5]));
        assert_eq!(extended.pruned_through, Some(11));
        // A cut that left some of its events, an anchor under another key, a cut under no
        // period, and one that removed events younger than its period do not.
        for refused in [
            anchor(6, &key(1), 20_000, 30),
            anchor(11, &key(2), 20_000, 30),
            anchor(11, &key(1), 20_000, 0),
            anchor(11, &key(1), 20_780, 30),
        ] {
            assert_eq!(kind(extend_behind(&refused)), ("missing", Some(1)));
        }
    }

    /// Two runs replacing the same state at once (an overlapping cron job), and a reader:
    /// every read sees one whole state, and nothing is left beside it.
    #[test]
    fn concurrent_writes_replace_the_file_whole() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("state.json");
        let texts = ["a".repeat(64 * 1024), "b".repeat(64 * 1024)];
        write_whole(&path, &texts[0]).unwrap();
        std::thread::scope(|scope| {
            for text in &texts {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..200 {
                        write_whole(path, text).unwrap();
                    }
                });
            }
            for _ in 0..400 {
                let read = std::fs::read_to_string(&path).unwrap();
                assert!(texts.contains(&read), "a mixed or partial state");
            }
        });
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
