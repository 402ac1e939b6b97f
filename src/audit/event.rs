//! The audit event: a header with no personal data, committed to a hash chain, and personal
//! parts sealed under per-subject data keys (research/audit.md §1).
//!
//! Producers (the request middleware, the admin API, application events, seawall itself) build
//! a [`Draft`]: the header fields they know plus the personal [`Part`]s, each tied to the
//! subject it is about. The writer assigns the stream's sequence number, completes and
//! canonicalises the header (RFC 8785 JCS), seals the parts and chains the record.

use std::ops::Range;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Schema major version of the header.
pub const VERSION: u64 = 1;
/// [`VERSION`] as the header's JSON holds it.
pub const VERSION_JSON: &str = "1";

/// Retention classes; each is its own sequence, chain and set of buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Security,
    Access,
    DataChange,
    Gdpr,
    System,
}

impl Stream {
    pub const ALL: [Stream; 5] = [
        Stream::Security,
        Stream::Access,
        Stream::DataChange,
        Stream::Gdpr,
        Stream::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Security => "security",
            Stream::Access => "access",
            Stream::DataChange => "data_change",
            Stream::Gdpr => "gdpr",
            Stream::System => "system",
        }
    }

    /// The name as a JSON string, as every header of the stream holds it.
    pub fn json(self) -> &'static str {
        match self {
            Stream::Security => "\"security\"",
            Stream::Access => "\"access\"",
            Stream::DataChange => "\"data_change\"",
            Stream::Gdpr => "\"gdpr\"",
            Stream::System => "\"system\"",
        }
    }

    pub fn parse(name: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Stream> {
        Stream::ALL.get(code as usize).copied()
    }

    /// The stream an event type belongs to, by its OWASP category prefix.
    pub fn for_type(event_type: &str) -> Stream {
        match event_type.split('.').next().unwrap_or_default() {
            "authn" | "authz" | "session" | "admin" | "audit" | "excess" | "malicious"
            | "input" | "key" => Stream::Security,
            "data" => Stream::DataChange,
            "gdpr" => Stream::Gdpr,
            "sys" | "system" | "integrity" => Stream::System,
            _ => Stream::Access,
        }
    }
}

/// How much of a request is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn parse(name: &str) -> Option<Level> {
        match name {
            "none" => Some(Level::None),
            "metadata" => Some(Level::Metadata),
            "request" => Some(Level::Request),
            "request_response" => Some(Level::RequestResponse),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Metadata => "metadata",
            Level::Request => "request",
            Level::RequestResponse => "request_response",
        }
    }
}

/// Who or what a personal part is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    UserId,
    Email,
    ApiKeyId,
    Ip,
}

impl IdKind {
    pub const ALL: [IdKind; 4] = [IdKind::UserId, IdKind::Email, IdKind::ApiKeyId, IdKind::Ip];

    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::Email => "email",
            IdKind::ApiKeyId => "api_key_id",
            IdKind::Ip => "ip",
        }
    }

    pub fn parse(name: &str) -> Option<IdKind> {
        IdKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The form pseudonyms are computed from, so `Jane@Example.com` and `jane@example.com`
    /// are one subject.
    pub fn normalise(self, value: &str) -> String {
        let value = value.trim();
        match self {
            IdKind::Email => value.to_lowercase(),
            IdKind::Ip => value
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.to_canonical().to_string())
                .unwrap_or_else(|_| value.to_string()),
            IdKind::UserId | IdKind::ApiKeyId => value.to_string(),
        }
    }
}

/// A data subject: an identifier of a known kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    pub kind: IdKind,
    pub value: String,
}

/// The role of a personal part within its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Actor,
    Target,
    Client,
    Body,
    Details,
}

impl Role {
    /// How the header's `parts` declares a part in this role, as canonical JSON.
    pub fn declaration(self) -> &'static str {
        match self {
            Role::Actor => r#"{"class":"identity","role":"actor"}"#,
            Role::Target => r#"{"class":"identity","role":"target"}"#,
            Role::Client => r#"{"class":"identity","role":"client"}"#,
            Role::Body => r#"{"class":"body","role":"body"}"#,
            Role::Details => r#"{"class":"identity","role":"details"}"#,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Actor => "actor",
            Role::Target => "target",
            Role::Client => "client",
            Role::Body => "body",
            Role::Details => "details",
        }
    }

    /// Captured bodies expire on their own short clock; everything else is identity data.
    pub fn class(self) -> KeyClass {
        match self {
            Role::Body => KeyClass::Body,
            _ => KeyClass::Identity,
        }
    }
}

/// Which retention clock a data key follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyClass {
    /// Monthly keys per subject; expire with the stream's personal-data retention.
    Identity,
    /// Daily keys per subject; expire with the body retention.
    Body,
}

impl KeyClass {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Personal data of one event about one subject. `subject: None` means nobody identifiable
/// (it is keyed to the stream's anonymous key).
#[derive(Debug, Clone)]
pub struct Part {
    pub role: Role,
    pub subject: Option<Subject>,
    /// More identifiers of the same subject, indexed so a request by any of them finds it.
    pub aliases: Vec<Subject>,
    /// The content as JSON text, serialized by the producer.
    pub content: Vec<u8>,
}

/// An event as its producer knows it.
#[derive(Debug, Clone)]
pub struct Draft {
    pub stream: Stream,
    /// Header fields other than `v`, `origin`, `stream`, `seq` and `parts`, which the writer
    /// adds: each name with where its value, already canonical JSON, lies in `values`, so the
    /// writer only joins them. One buffer instead of a string per field; kept in name order,
    /// so the writer merges its own fields in rather than sorting. Ranges are `u32`, and the
    /// capacity fits a request event's 13-15 fields: drafts wait in a queue bounded in bytes.
    fields: Vec<(&'static str, Range<u32>)>,
    values: Vec<u8>,
    pub parts: Vec<Part>,
    /// Admin, security and application events wait for room in the queue instead of being
    /// dropped when it is full.
    pub important: bool,
}

impl Draft {
    /// A draft with the common header fields set.
    pub fn new(
        stream: Stream,
        event_type: &str,
        outcome: &str,
        id: &str,
        time: SystemTime,
    ) -> Draft {
        let category = event_type.split('.').next().unwrap_or("sys");
        Draft {
            stream,
            fields: Vec::with_capacity(16),
            values: Vec::with_capacity(384),
            parts: Vec::new(),
            important: false,
        }
        .text("type", event_type)
        .text("category", category)
        .text("outcome", outcome)
        .text("id", id)
        .set("time", |values| {
            values.push(b'"');
            crate::time::write_rfc3339_nanos(values, time);
            values.push(b'"');
        })
        .typed("severity", &severity(event_type, outcome))
    }

    /// Sets a header field from any JSON value (its object keys are sorted here).
    pub fn field(self, name: &'static str, value: Value) -> Draft {
        // Verifiers may assume headers have no fractions (docs/audit-format.md).
        debug_assert!(
            !has_float(&value),
            "audit headers hold no floating-point numbers: {value}"
        );
        let text = canonical(&value);
        self.set(name, |values| values.extend_from_slice(text.as_bytes()))
    }

    /// Sets a header field from a typed value whose serialization is already canonical:
    /// scalars, or structs that declare their fields in sorted order with no maps inside.
    /// This is the request path's way: no intermediate JSON tree.
    pub fn typed<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Draft {
        let draft = self.set(name, |values| {
            serde_json::to_writer(values, value).expect("header values serialize")
        });
        draft.debug_assert_canonical(name);
        draft
    }

    /// Sets a header field to a string, the commonest kind: type, outcome, id, level.
    pub fn text(self, name: &'static str, value: &str) -> Draft {
        self.set(name, |values| write_json_string(values, value))
    }

    /// Sets a header field to an object written field by field, in name order: the small
    /// objects of every audited request, without serde's machinery (see [`Object`]).
    pub fn object(self, name: &'static str, fill: impl FnOnce(&mut Object<'_>)) -> Draft {
        let draft = self.set(name, |values| Object::write(values, fill));
        draft.debug_assert_canonical(name);
        draft
    }

    /// Debug builds check that the value of `name` was written as canonical JSON: the writer
    /// joins header values as they are.
    fn debug_assert_canonical(&self, name: &'static str) {
        debug_assert!(
            {
                let text = self.value(name).expect("just set");
                canonical(&serde_json::from_slice(text).expect("JSON")).as_bytes() == text
            },
            "{name} is not canonical"
        );
    }

    /// Appends a value; a field set again points at its new value (the old bytes stay unused).
    fn set(mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) -> Draft {
        let offset = |at: usize| u32::try_from(at).expect("a header is far below 4 GiB");
        let start = offset(self.values.len());
        write(&mut self.values);
        let range = start..offset(self.values.len());
        match self.fields.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(at) => self.fields[at].1 = range,
            Err(at) => self.fields.insert(at, (name, range)),
        }
        self
    }

    fn value(&self, name: &str) -> Option<&[u8]> {
        let at = self.fields.binary_search_by(|(n, _)| n.cmp(&name)).ok()?;
        Some(self.text_at(&self.fields[at].1))
    }

    /// Each header field with its canonical JSON value, in name order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.fields
            .iter()
            .map(|(name, range)| (*name, self.text_at(range)))
    }

    fn text_at(&self, range: &Range<u32>) -> &[u8] {
        &self.values[range.start as usize..range.end as usize]
    }

    /// The header fields as one JSON object (without the writer's fields), for inspection.
    pub fn fields_json(&self) -> Value {
        let fields: Vec<(&str, &[u8])> = self.fields().collect();
        serde_json::from_str(&join(&fields)).expect("fragments are JSON")
    }

    pub fn part(self, role: Role, subject: Option<Subject>, content: Value) -> Draft {
        let content = serde_json::to_vec(&content).expect("JSON values serialize");
        self.part_json(role, subject, content)
    }

    /// Adds a part whose content is already JSON text.
    pub fn part_json(mut self, role: Role, subject: Option<Subject>, content: Vec<u8>) -> Draft {
        self.parts.push(Part {
            role,
            subject,
            aliases: Vec::new(),
            content,
        });
        self
    }

    pub fn important(mut self) -> Draft {
        self.important = true;
        self
    }

    /// About how much memory the draft holds while it waits in the queue: its box and every
    /// buffer it owns, at their capacity. What the queue's byte budget counts.
    pub fn memory_size(&self) -> usize {
        let subject = |s: &Subject| s.value.capacity();
        let parts: usize = self
            .parts
            .iter()
            .map(|part| {
                part.content.capacity()
                    + part.subject.as_ref().map_or(0, subject)
                    + part.aliases.capacity() * std::mem::size_of::<Subject>()
                    + part.aliases.iter().map(subject).sum::<usize>()
            })
            .sum();
        std::mem::size_of::<Draft>()
            + self.fields.capacity() * std::mem::size_of::<(&str, Range<u32>)>()
            + self.values.capacity()
            + self.parts.capacity() * std::mem::size_of::<Part>()
            + parts
    }
}

/// OpenTelemetry severity numbers: INFO 9, WARN 13, ERROR 17.
fn severity(event_type: &str, outcome: &str) -> u8 {
    if event_type.starts_with("sys.error") || event_type.starts_with("integrity.failure") {
        17
    } else if outcome == "failure" || event_type.ends_with(".fail") {
        13
    } else {
        9
    }
}

/// `value` as a JSON string. Most header strings are plain words that need no escape and
/// are copied as they are; the others are escaped by serde_json, whose escapes are RFC 8785's
/// (`\"`, `\\`, the short forms and `\u00xx` for control characters, nothing else).
fn write_json_string(out: &mut Vec<u8>, value: &str) {
    // Without an early exit the compiler tests many bytes per instruction.
    let plain = !value.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, value).expect("strings serialize");
    }
}

/// A JSON object written straight into bytes, for the few small objects every audited
/// request carries (its HTTP facts, actor and network, and its sealed client facts). Written
/// through serde, they cost about 2 300 more instructions per audited request (callgrind);
/// here names are copied and values copied unless they need an escape ([`write_json_string`]).
///
/// Fields come in name order, so that header values are canonical JSON (RFC 8785) as written;
/// debug builds check it.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    last: Option<&'static str>,
}

impl Object<'_> {
    /// Writes `{`, the fields `fill` adds, and `}`.
    pub fn write(out: &mut Vec<u8>, fill: impl FnOnce(&mut Object<'_>)) {
        out.push(b'{');
        let mut object = Object { out, last: None };
        fill(&mut object);
        object.out.push(b'}');
    }

    pub fn text(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.name(name);
        write_json_string(self.out, value);
        self
    }

    /// A string, or `null` for `None`.
    pub fn text_or_null(&mut self, name: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(name, value),
            None => {
                self.name(name);
                self.out.extend_from_slice(b"null");
                self
            }
        }
    }

    pub fn number(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.name(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    pub fn object(&mut self, name: &'static str, fill: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        self.name(name);
        Object::write(self.out, fill);
        self
    }

    fn name(&mut self, name: &'static str) {
        debug_assert!(
            self.last.is_none_or(|last| last < name),
            "{name} after {:?}: fields go in name order",
            self.last
        );
        debug_assert!(
            name.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
            "{name:?} is written without escapes"
        );
        if self.last.is_some() {
            self.out.push(b',');
        }
        self.last = Some(name);
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
}

/// RFC 3339 with nanoseconds and `Z`, a string so JSON parsers never round it.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let mut out = Vec::with_capacity(30);
    crate::time::write_rfc3339_nanos(&mut out, time);
    String::from_utf8(out).expect("RFC 3339 is ASCII")
}

/// `{"a":..,"b":..}` from fields sorted by name, each value canonical JSON text. Names are
/// ASCII, so byte order is JCS's UTF-16 order.
pub fn join(fields: &[(&str, &[u8])]) -> String {
    let size = fields
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size + 2);
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    }
    out.push(b'}');
    String::from_utf8(out).expect("names and JSON values are UTF-8")
}

/// RFC 8785 (JCS) canonical JSON: object keys sorted by UTF-16 code units, no whitespace,
/// serde_json's string escaping (which JCS shares), numbers as ECMAScript writes them.
pub fn canonical(value: &Value) -> String {
    let mut out = Vec::with_capacity(512);
    write_canonical(value, None, &mut out).expect("writing to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes `value` in canonical form (see [`canonical`]) to `out`, leaving out the top-level
/// member named `except`: how a signed document is hashed without its signature, streamed,
/// with no copy of a large document.
pub fn write_canonical(
    value: &Value,
    except: Option<&str>,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|key| Some(key.as_str()) != except)
                .collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.write_all(b"{")?;
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                write_canonical(&map[key], None, out)?;
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, None, out)?;
            }
            out.write_all(b"]")
        }
        Value::Number(number) => out.write_all(number_text(number).as_bytes()),
        scalar => Ok(serde_json::to_writer(&mut *out, scalar)?),
    }
}

/// Integers that a double holds exactly are written as they are; every other number as
/// ECMAScript writes its double (RFC 8785 §3.2.2.3).
fn number_text(number: &serde_json::Number) -> String {
    const EXACT: u64 = 1 << 53;
    match (number.as_u64(), number.as_i64()) {
        (Some(n), _) if n <= EXACT => n.to_string(),
        (_, Some(n)) if n.unsigned_abs() <= EXACT => n.to_string(),
        _ => ecmascript_number(number.as_f64().expect("JSON numbers are finite")),
    }
}

/// ECMAScript's `Number.prototype.toString` for a finite double: the shortest digits that
/// read back as the same double, in plain notation from 1e-6 up to 1e21, else as `d.ddde±n`.
pub fn ecmascript_number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    // Rust's `{:e}` writes exactly those shortest digits: "3.3333333333333335e-6".
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} writes an exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    // The value is 0.DIGITS × 10^n.
    let n = exponent.parse::<i32>().expect("a decimal exponent") + 1;
    let sign = if value < 0.0 { "-" } else { "" };
    if k <= n && n <= 21 {
        format!("{sign}{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(n as usize);
        format!("{sign}{whole}.{fraction}")
    } else if -6 < n && n <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(-n as usize))
    } else {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if n > 0 { "+" } else { "-" };
        format!(
            "{sign}{first}{point}{rest}e{exponent_sign}{}",
            (n - 1).abs()
        )
    }
}

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

pub type Hash = [u8; 32];

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> Hash {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        hasher.update(part);
    }
    finish(hasher)
}

/// The 32 bytes of a finished SHA-256.
pub fn finish(hasher: ring::digest::Context) -> Hash {
    hasher
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The digest of a sealed part, kept when the part itself is erased.
pub fn part_digest(sealed: &[u8]) -> Hash {
    sha256(&[sealed])
}

/// `SHA-256(0x00 || SHA-256(header) || payload)`, where payload commits to the part digests;
/// takes the header's hash, which the writer has already computed for the parts' AAD.
pub fn leaf(header_hash: &Hash, digests: &[Hash]) -> Hash {
    let payload = if digests.is_empty() {
        [0u8; 32]
    } else {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        hasher.update(&[0x03]);
        for digest in digests {
            hasher.update(digest);
        }
        finish(hasher)
    };
    sha256(&[&[0x00], header_hash, &payload])
}

/// `SHA-256(0x02 || previous || leaf)`.
pub fn chain(previous: &Hash, leaf: &Hash) -> Hash {
    sha256(&[&[0x02], previous, leaf])
}

/// The chain value before a stream's first event.
pub fn genesis(origin: &str, stream: Stream) -> Hash {
    sha256(&[
        b"audit-chain-v1",
        origin.as_bytes(),
        &[0],
        stream.as_str().as_bytes(),
    ])
}

/// `SHA-256(header)`: binds sealed parts to their event (part of their AEAD associated data).
pub fn header_hash(header: &str) -> Hash {
    sha256(&[header.as_bytes()])
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The canonical header text that was hashed.
    pub header: String,
    pub parts: Vec<StoredPart>,
    pub leaf: Hash,
    pub chain: Hash,
}

/// A sealed part. `kid` and `sealed` are routing data, not committed; `digest` is committed
/// and stays after the part is erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPart {
    pub role: Role,
    pub kid: Option<[u8; 16]>,
    pub sealed: Option<Vec<u8>>,
    pub digest: Hash,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("records encode")
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        postcard::from_bytes(bytes).ok()
    }

    pub fn header_value(&self) -> Value {
        serde_json::from_str(&self.header).unwrap_or(Value::Null)
    }

    /// The header's sequence number, without building the whole JSON tree.
    pub fn header_seq(&self) -> Option<u64> {
        #[derive(Deserialize)]
        struct Seq {
            seq: u64,
        }
        serde_json::from_str::<Seq>(&self.header)
            .ok()
            .map(|s| s.seq)
    }
}

/// The AEAD associated data of a part: the header it belongs to and its role.
pub fn part_aad(header_hash: &Hash, role: Role) -> Vec<u8> {
    let mut aad = header_hash.to_vec();
    aad.extend_from_slice(role.as_str().as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_written_as_serde_json_writes_them() {
        // The largest integer canonical JSON keeps exact (RFC 8785 writes numbers as doubles).
        const MAX_SAFE: u64 = (1 << 53) - 1;
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} é 日本 \u{1F600}";
        let mut out = Vec::new();
        Object::write(&mut out, |o| {
            o.text("a", awkward)
                .object("b", |inner| {
                    inner.text("x-y", "plain").number("z", MAX_SAFE);
                })
                .object("c", |_| {})
                .text_or_null("d", None)
                .text_or_null("e", Some(""))
                .number("f", 0);
        });
        let expected = json!({
            "a": awkward,
            "b": {"x-y": "plain", "z": MAX_SAFE},
            "c": {},
            "d": null,
            "e": "",
            "f": 0,
        });
        assert_eq!(String::from_utf8(out).unwrap(), canonical(&expected));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "fields go in name order")]
    fn object_fields_out_of_name_order_are_caught_in_debug_builds() {
        Object::write(&mut Vec::new(), |o| {
            o.text("b", "").text("a", "");
        });
    }

    #[test]
    fn part_declarations_stream_names_and_the_version_are_the_canonical_json_of_what_they_declare()
    {
        for role in [
            Role::Actor,
            Role::Target,
            Role::Client,
            Role::Body,
            Role::Details,
        ] {
            let class = serde_json::to_value(role.class()).unwrap();
            let declared = json!({"class": class, "role": role.as_str()});
            assert_eq!(role.declaration(), canonical(&declared));
        }
        assert_eq!(VERSION_JSON, canonical(&json!(VERSION)));
        for stream in Stream::ALL {
            assert_eq!(stream.json(), canonical(&json!(stream.as_str())));
        }
    }

    proptest::proptest! {
        #[test]
        fn text_fields_are_the_canonical_json_of_their_string(value in "\\PC*|[\"\\\\\u{0}-\u{1f}a-z\u{7f}-\u{a0}]*") {
            let draft = Draft::new(Stream::System, "sys.start", "success", "id", std::time::UNIX_EPOCH);
            let draft = draft.text("zeta", &value);
            let expected = canonical(&json!(value));
            proptest::prop_assert_eq!(draft.value("zeta"), Some(expected.as_bytes()));
        }
    }

    #[test]
    fn draft_fields_come_in_name_order_and_a_field_set_again_is_replaced() {
        let draft = Draft::new(
            Stream::Access,
            "http.read",
            "success",
            "id-1",
            std::time::UNIX_EPOCH,
        )
        .typed("zeta", &1)
        .typed("alpha", &2)
        .typed("zeta", &3);
        let names: Vec<&str> = draft.fields().map(|(name, _)| name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert_eq!(draft.value("zeta"), Some(&b"3"[..]));
    }

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let value = json!({"b": 1, "a": {"d": [true, null, "x\n"], "c": "é"}});
        assert_eq!(
            canonical(&value),
            r#"{"a":{"c":"é","d":[true,null,"x\n"]},"b":1}"#
        );
    }

    #[test]
    fn numbers_are_written_as_rfc_8785_appendix_b_says() {
        let vectors = [
            (0x0000_0000_0000_0000u64, "0"),
            (0x8000_0000_0000_0000, "0"),
            (0x0000_0000_0000_0001, "5e-324"),
            (0x8000_0000_0000_0001, "-5e-324"),
            (0x7fef_ffff_ffff_ffff, "1.7976931348623157e+308"),
            (0xffef_ffff_ffff_ffff, "-1.7976931348623157e+308"),
            (0x4340_0000_0000_0000, "9007199254740992"),
            (0xc340_0000_0000_0000, "-9007199254740992"),
            (0x4430_0000_0000_0000, "295147905179352830000"),
            (0x44b5_2d02_c7e1_4af5, "9.999999999999997e+22"),
            (0x44b5_2d02_c7e1_4af6, "1e+23"),
            (0x44b5_2d02_c7e1_4af7, "1.0000000000000001e+23"),
            (0x444b_1ae4_d6e2_ef4e, "999999999999999700000"),
            (0x444b_1ae4_d6e2_ef4f, "999999999999999900000"),
            (0x444b_1ae4_d6e2_ef50, "1e+21"),
            (0x3eb0_c6f7_a0b5_ed8c, "9.999999999999997e-7"),
            (0x3eb0_c6f7_a0b5_ed8d, "0.000001"),
            (0x41b3_de43_5555_5553, "333333333.3333332"),
            (0x41b3_de43_5555_5554, "333333333.33333325"),
            (0x41b3_de43_5555_5555, "333333333.3333333"),
            (0x41b3_de43_5555_5556, "333333333.3333334"),
            (0x41b3_de43_5555_5557, "333333333.33333343"),
            (0xbecb_f647_612f_3696, "-0.0000033333333333333333"),
        ];
        for (bits, expected) in vectors {
            assert_eq!(
                ecmascript_number(f64::from_bits(bits)),
                expected,
                "{bits:016x}"
            );
        }
        // Through `canonical`: integers a double holds exactly stay as written, larger ones and
        // fractions go through the double.
        let value: Value =
            serde_json::from_str(r#"[4.50, 2e-3, 1E30, 12, -7, 18446744073709551615, 100.0]"#)
                .unwrap();
        assert_eq!(
            canonical(&value),
            "[4.5,0.002,1e+30,12,-7,18446744073709552000,100]"
        );
    }

    #[test]
    fn the_chain_commits_to_order_and_content() {
        let g = genesis("seawall", Stream::Access);
        let l1 = leaf(&header_hash("{\"seq\":0}"), &[]);
        let l2 = leaf(&header_hash("{\"seq\":1}"), &[part_digest(b"x")]);
        let forward = chain(&chain(&g, &l1), &l2);
        let swapped = chain(&chain(&g, &l2), &l1);
        assert_ne!(forward, swapped);
        assert_ne!(
            leaf(&header_hash("{\"seq\":1}"), &[part_digest(b"y")]),
            l2,
            "the leaf commits to part digests"
        );
        assert_ne!(genesis("seawall", Stream::Security), g);
    }

    #[test]
    fn streams_follow_event_type_categories() {
        assert_eq!(Stream::for_type("authn.login.failure"), Stream::Security);
        assert_eq!(Stream::for_type("data.export"), Stream::DataChange);
        assert_eq!(Stream::for_type("gdpr.erasure.executed"), Stream::Gdpr);
        assert_eq!(Stream::for_type("sys.retention.run"), Stream::System);
        assert_eq!(Stream::for_type("http.read"), Stream::Access);
    }
}
