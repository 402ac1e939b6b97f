//! Data-subject rights over the audit trail (research/audit.md §3): finding a subject's events
//! by their identifiers, exporting their own data (Art 15), planning and executing erasure
//! (Art 17) by crypto-shredding, legal holds, and the Art 30 record of the processing.
//!
//! A subject is found through pseudonyms only: the identifiers a request sends are hashed
//! with the pseudonym key, never stored. Their events are those with a sealed part under one
//! of their data keys, so an export can open nothing of anyone else's (Art 15(4)) and an
//! erasure destroys exactly their keys. The HTTP side (bodies, idempotency, auditing the
//! calls) is `admin_gdpr`'s; the mechanics of destruction are `shred`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::audit::event::{self, Hash, Record, Stream, Subject};
use crate::audit::keys::Pseudonym;
use crate::audit::ledger::Ledger;
use crate::audit::log::{self, AuditLog, KeyRecord};
use crate::audit::proofs::{Inclusion, Proofs};
use crate::audit::shred::{self, Shredded};
use crate::audit::{AuditConfig, ErasureAction};
use crate::hex;
use crate::store::StoreError;

/// Events one export returns at most; a subject with more is asked for by stream ranges
/// in a later version (none of the tests or the research's workloads come near).
pub const MAX_EXPORT_EVENTS: usize = 100_000;

/// Why and on what basis each stream is kept: the export's and the processing record's
/// single source, so they cannot disagree.
pub fn purpose(stream: Stream) -> (&'static str, &'static str) {
    match stream {
        Stream::Security => (
            "security monitoring and the investigation of incidents (authentication, authorisation, administration, abuse)",
            "Art 6(1)(f) legitimate interest in the security of the service (Art 32)",
        ),
        Stream::Access => (
            "accountability for requests to the service",
            "Art 6(1)(f) legitimate interest in operating and securing the service",
        ),
        Stream::DataChange => (
            "accountability for changes to and exports of data",
            "Art 6(1)(f) legitimate interest; Art 6(1)(c) where a law requires the record",
        ),
        Stream::Gdpr => (
            "the record of data-subject requests received and how they were handled",
            "Art 6(1)(c) legal obligation (Art 5(2) accountability, Art 12)",
        ),
        Stream::System => (
            "the operation and integrity of the audit trail itself",
            "Art 6(1)(f) legitimate interest",
        ),
    }
}

/// A legal hold: the subjects' data in these streams is neither erased nor expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    /// Hex pseudonyms; identifiers are never stored.
    pub pseudonyms: Vec<String>,
    /// Empty means every stream.
    pub streams: Vec<Stream>,
    /// A case reference (stored in clear, so never personal data).
    pub case: String,
    pub created: String,
}

impl Hold {
    fn covers(&self, pseudonym: &Pseudonym, stream: Stream) -> bool {
        (self.streams.is_empty() || self.streams.contains(&stream))
            && self.pseudonyms.iter().any(|p| *p == hex::encode(pseudonym))
    }
}

pub fn holds(log: &AuditLog) -> Result<Vec<Hold>, StoreError> {
    let mut out = Vec::new();
    for item in log.holds.iter() {
        let (_, value) = item?;
        out.push(
            serde_json::from_slice(&value)
                .map_err(|_| StoreError::Corrupt("an undecodable legal hold".into()))?,
        );
    }
    Ok(out)
}

pub fn add_hold(log: &AuditLog, hold: &Hold) -> Result<(), StoreError> {
    let _writing = log.store.writing();
    log.holds.insert(
        hold.id.as_bytes(),
        serde_json::to_vec(hold).expect("holds serialize"),
    )?;
    log.store.flush()?;
    Ok(())
}

/// Whether a hold with that id existed.
pub fn remove_hold(log: &AuditLog, id: &str) -> Result<bool, StoreError> {
    let _writing = log.store.writing();
    let existed = log.holds.remove(id.as_bytes())?.is_some();
    log.store.flush()?;
    Ok(existed)
}

pub fn is_held(holds: &[Hold], pseudonym: &Pseudonym, stream: Stream) -> Option<String> {
    holds
        .iter()
        .find(|h| h.covers(pseudonym, stream))
        .map(|h| h.id.clone())
}

/// A subject as the store knows them.
pub struct Found {
    pub pseudonyms: BTreeSet<Pseudonym>,
    pub keys: BTreeMap<[u8; 16], KeyRecord>,
    /// (pseudonym, stream, day) index entries.
    pub index: BTreeSet<(Pseudonym, Stream, u32)>,
}

/// Looks a subject up by all of their identifiers. Blocking.
pub fn find(log: &AuditLog, subjects: &[Subject]) -> Result<Found, StoreError> {
    let pseudonyms = log.resolve(subjects)?;
    let keys = log.subject_keys(&pseudonyms)?;
    let index = log.subject_index(&pseudonyms)?;
    Ok(Found {
        pseudonyms,
        keys,
        index,
    })
}

impl Found {
    fn days(&self) -> BTreeSet<(Stream, u32)> {
        self.index.iter().map(|(_, s, d)| (*s, *d)).collect()
    }

    /// Calls `visit` with each event holding a part under one of the subject's keys, in
    /// stream and sequence order, until it returns false.
    fn each_event(
        &self,
        log: &AuditLog,
        mut visit: impl FnMut(Stream, u64, &Record) -> bool,
    ) -> Result<(), StoreError> {
        let kids: Vec<[u8; 16]> = self.keys.keys().copied().collect();
        let mut going = true;
        for (stream, day) in self.days() {
            log.groups_with_kids(stream, day, Some(&kids), |_, _, first, records| {
                for (seq, record) in (first..).zip(records) {
                    let theirs = record
                        .parts
                        .iter()
                        .any(|p| p.kid.is_some_and(|kid| self.keys.contains_key(&kid)));
                    if theirs && !visit(stream, seq, &record) {
                        going = false;
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            if !going {
                break;
            }
        }
        Ok(())
    }
}

/// What an erasure does to one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamPlan {
    /// `shred` or `retain`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    pub events: u64,
    pub keys: u64,
}

/// The erasure plan for a subject (research/audit.md §3.4): per stream with any of their
/// data, the configured action, overridden by a legal hold. Blocking.
pub fn plan(
    log: &AuditLog,
    config: &AuditConfig,
    found: &Found,
) -> Result<BTreeMap<Stream, StreamPlan>, StoreError> {
    let holds = holds(log)?;
    let mut out: BTreeMap<Stream, StreamPlan> = BTreeMap::new();
    let entry = |stream: Stream| -> StreamPlan {
        let hold = found
            .pseudonyms
            .iter()
            .find_map(|p| is_held(&holds, p, stream));
        match (hold, &config.erasure[&stream]) {
            (Some(id), _) => StreamPlan {
                action: "retain",
                basis: Some(format!("Art 17(3)(e): legal hold {id}")),
                events: 0,
                keys: 0,
            },
            (None, ErasureAction::Retain { basis }) => StreamPlan {
                action: "retain",
                basis: Some(basis.clone()),
                events: 0,
                keys: 0,
            },
            (None, ErasureAction::Shred) => StreamPlan {
                action: "shred",
                basis: None,
                events: 0,
                keys: 0,
            },
        }
    };
    for record in found.keys.values() {
        let Some(stream) = Stream::from_code(record.stream) else {
            continue;
        };
        out.entry(stream).or_insert_with(|| entry(stream)).keys += 1;
    }
    found.each_event(log, |stream, _, _| {
        out.entry(stream).or_insert_with(|| entry(stream)).events += 1;
        true
    })?;
    Ok(out)
}

/// Carries out `plan`: the keys of every shredded stream are written to the ledger, then
/// destroyed with their parts and index entries. Blocking.
pub fn execute(
    log: &AuditLog,
    ledger: &Ledger,
    found: &Found,
    plan: &BTreeMap<Stream, StreamPlan>,
    request_id: &str,
    now: SystemTime,
) -> Result<Shredded, StoreError> {
    let shredded = |stream: Stream| plan.get(&stream).is_some_and(|p| p.action == "shred");
    let keys: BTreeMap<[u8; 16], KeyRecord> = found
        .keys
        .iter()
        .filter(|(_, r)| Stream::from_code(r.stream).is_some_and(shredded))
        .map(|(k, r)| (*k, r.clone()))
        .collect();
    let index: BTreeSet<(Pseudonym, Stream, u32)> = found
        .index
        .iter()
        .filter(|(_, stream, _)| shredded(*stream))
        .copied()
        .collect();
    if !keys.is_empty() {
        let kids: Vec<[u8; 16]> = keys.keys().copied().collect();
        ledger
            .append(request_id, &crate::audit::event::rfc3339_nanos(now), &kids)
            .map_err(|e| StoreError::Corrupt(format!("erasure ledger: {e}")))?;
    }
    shred::shred(log, &keys, &index)
}

/// Destroys again every key the ledger names that the store still holds (a restored backup).
/// Blocking; runs before the writer starts.
pub fn replay(log: &AuditLog, ledger: &Ledger) -> Result<Shredded, StoreError> {
    let kids = ledger
        .kids()
        .map_err(|e| StoreError::Corrupt(format!("erasure ledger: {e}")))?;
    let mut keys = BTreeMap::new();
    for kid in kids {
        if let Some(bytes) = log.keys.get(kid)?
            && let Ok(record) = postcard::from_bytes::<KeyRecord>(&bytes)
        {
            keys.insert(kid, record);
        }
    }
    let mut index = BTreeSet::new();
    for record in keys.values() {
        let Some(stream) = Stream::from_code(record.stream) else {
            continue;
        };
        for day in log::period_days(record.class, record.period, record.period_end_day) {
            index.insert((record.pseudonym, stream, day));
        }
    }
    if keys.is_empty() {
        return Ok(Shredded::default());
    }
    shred::shred(log, &keys, &index)
}

fn date(day: u32) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400);
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y-%m-%d")
        .to_string()
}

fn describe(event_type: &str) -> &'static str {
    match event_type.split('.').next().unwrap_or_default() {
        "authn" => "an authentication attempt",
        "authz" => "an authorisation decision",
        "admin" => "an administrative action",
        "audit" => "a read of the audit trail",
        "excess" => "a request refused for exceeding a rate limit",
        "data" => "an access to or change of data",
        "gdpr" => "a data-protection request",
        "sys" | "system" | "integrity" => "an event of the service itself",
        _ => "a request to the service",
    }
}

/// The subject-access export (research/audit.md §3.3): the Art 15(1) envelope and, per event,
/// date, purpose, what happened and the subject's own decrypted data. Blocking.
pub fn export(
    log: &AuditLog,
    config: &AuditConfig,
    found: &Found,
    now: SystemTime,
) -> Result<Result<Value, usize>, StoreError> {
    let mut proofs = Proofs::new(log);
    let mut events = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut too_many = 0;
    let mut failed = None;
    found.each_event(log, |stream, seq, record| {
        if events.len() == MAX_EXPORT_EVENTS {
            too_many += 1;
            return true;
        }
        let inclusion = match proofs.prove(stream, seq) {
            Ok(inclusion) => inclusion,
            Err(e) => {
                failed = Some(e);
                return false;
            }
        };
        *counts.entry(stream.as_str()).or_default() += 1;
        events.push(exported(log, config, found, stream, seq, record, inclusion));
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if too_many > 0 {
        return Ok(Err(MAX_EXPORT_EVENTS + too_many));
    }
    let mut document = envelope(config);
    document.insert(
        "generated_at".into(),
        json!(crate::audit::event::rfc3339_nanos(now)),
    );
    document.insert("counts".into(), json!(counts));
    document.insert("events".into(), Value::Array(events));
    document.insert("digests".into(), json!(proofs.cited()));
    Ok(Ok(Value::Object(document)))
}

fn exported(
    log: &AuditLog,
    config: &AuditConfig,
    found: &Found,
    stream: Stream,
    seq: u64,
    record: &Record,
    inclusion: Inclusion,
) -> Value {
    let header = record.header_value();
    let event_type = header["type"].as_str().unwrap_or_default().to_string();
    let mut your_data = Map::new();
    let mut personal_until = None;
    for part in &record.parts {
        let Some(key) = part.kid.and_then(|kid| found.keys.get(&kid)) else {
            continue;
        };
        let ttl = match key.class {
            crate::audit::event::KeyClass::Body => {
                config.body_days.min(config.retention[&stream].payload_days)
            }
            crate::audit::event::KeyClass::Identity => config.retention[&stream].payload_days,
        };
        personal_until = personal_until.max(Some(key.period_end_day + ttl));
        if let Some(content) = log.open_part(record, part) {
            your_data.insert(part.role.as_str().to_string(), content);
        }
    }
    let day = header["time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| log::day_of(SystemTime::from(t)));
    let mut event = json!({
        "time": header["time"],
        "event_type": event_type,
        "description": describe(&event_type),
        "stream": stream.as_str(),
        "purpose": purpose(stream).0,
        "legal_basis": purpose(stream).1,
        "outcome": header["outcome"],
        "actor": header.get("actor").cloned().unwrap_or(json!({})),
        "your_data": your_data,
        "retained_until": date(day + config.retention[&stream].header_days),
        "your_data_retained_until": personal_until.map(date),
        "integrity": {
            "stream": stream.as_str(),
            "seq": seq,
            "header": record.header,
            "part_digests": record.parts.iter().map(|p| hex::encode(&p.digest)).collect::<Vec<_>>(),
            "leaf": hex::encode(&record.leaf),
        },
    });
    inclusion.add_to(&mut event["integrity"]);
    if let Some(http) = header.get("http") {
        event["http"] = json!({
            "method": http["method"],
            "route": http["route"],
            "status_code": http["status_code"],
        });
    }
    if let ErasureAction::Retain { basis } = &config.erasure[&stream] {
        event["on_erasure"] = json!({"action": "retain", "basis": basis});
    }
    event
}

/// The Art 15(1)(a)-(h) information, from the running configuration.
fn envelope(config: &AuditConfig) -> Map<String, Value> {
    let streams: Map<String, Value> = Stream::ALL
        .into_iter()
        .map(|stream| {
            let (purpose, basis) = purpose(stream);
            let retention = config.retention[&stream];
            let erasure = match &config.erasure[&stream] {
                ErasureAction::Shred => json!({"action": "shred"}),
                ErasureAction::Retain { basis } => json!({"action": "retain", "basis": basis}),
            };
            (
                stream.as_str().to_string(),
                json!({
                    "purpose": purpose,
                    "legal_basis": basis,
                    "retention": {
                        "event_days": retention.header_days,
                        "personal_data_days": retention.payload_days,
                        "captured_bodies_days": config.body_days.min(retention.payload_days),
                    },
                    "on_erasure": erasure,
                }),
            )
        })
        .collect();
    let mut out = Map::new();
    out.insert("controller_system".into(), json!(config.origin));
    out.insert("streams".into(), Value::Object(streams));
    out.insert(
        "categories_of_data".into(),
        json!([
            "identifiers (user id, e-mail, API key id)",
            "network data (IP address, user agent)",
            "request metadata (time, route, method, status)",
            "redacted request and response bodies where a route captures them"
        ]),
    );
    out.insert(
        "recipients".into(),
        json!("none; the audit trail is kept on the service's own machine"),
    );
    out.insert("transfers".into(), json!("none"));
    out.insert(
        "source".into(),
        json!("collected from your requests to this service and from the applications it protects"),
    );
    out.insert(
        "rights".into(),
        json!([
            "access (Art 15)",
            "rectification (Art 16)",
            "erasure (Art 17)",
            "restriction of processing (Art 18)",
            "objection (Art 21)",
            "lodging a complaint with a supervisory authority (Art 77)"
        ]),
    );
    out.insert("automated_decision_making".into(), json!("none"));
    out
}

/// The Art 30 record of the audit-logging activity, generated from the running
/// configuration (research/audit.md §3.6).
pub fn processing_record(config: &AuditConfig) -> Value {
    let mut record = envelope(config);
    record.insert(
        "activity".into(),
        json!("audit logging of requests, administrative actions and application events"),
    );
    record.insert(
        "categories_of_data_subjects".into(),
        json!([
            "end users of the protected service",
            "operators and administrators"
        ]),
    );
    record.insert(
        "security_measures".into(),
        json!({
            "pseudonymisation": "subjects are indexed by HMAC-SHA256 pseudonyms under a key kept outside the store (Art 32(1)(a))",
            "encryption": "personal data sealed with XChaCha20-Poly1305 under per-subject data keys, wrapped by a key-encryption key rotated every "
                .to_string() + &format_duration(config.kek_rotation_interval) + " (Art 32(1)(a))",
            "integrity": "a SHA-256 hash chain per stream with Ed25519-signed digests (Art 32(1)(b))",
            "availability": "verified online backups; an erasure ledger replayed on restore (Art 32(1)(c))",
            "testing": "every chain and signature is recomputed every ".to_string() + &format_duration(config.verify_interval) + " in the background, and on demand by GET /admin/audit/verify and `seawall audit verify` (Art 32(1)(d))",
        }),
    );
    Value::Object(record)
}

fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{secs} s")
    }
}

/// Hash of an idempotency key, so the key itself is never stored.
pub fn idempotency_slot(key: &str) -> Hash {
    event::sha256(&[key.as_bytes()])
}
