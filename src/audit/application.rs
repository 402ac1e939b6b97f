//! Application events (`POST /admin/audit/events`): validated, then written in the same
//! envelope as seawall's own.
//!
//! ```json
//! {"type": "data.export", "outcome": "success",
//!  "actor": {"user_id": "u-1"}, "target": {"email": "jane@example.org"},
//!  "details": {"format": "csv"}, "reason": "subject_request", "stream": "data_change"}
//! ```
//!
//! Type, outcome, reason and stream go to the header. Actor, target and details are personal
//! data: each is sealed under the key of the subject it is about (details under the
//! target's, else the actor's), and every identifier given is indexed so a later access or
//! erasure request by any of them finds the event. Details are redacted like bodies.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::audit::event::{Draft, IdKind, Part, Role, Stream, Subject};
use crate::audit::redact::{self, Notes};

/// Identifier values longer than this are refused.
const MAX_IDENTIFIER: usize = 256;

/// A field that cannot be used: (JSON path, message).
pub type Invalid = (String, String);

/// Validates an application event and turns it into a draft.
pub fn draft(body: Map<String, Value>, id: &str, now: SystemTime) -> Result<Draft, Invalid> {
    let invalid = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
    for key in body.keys() {
        if ![
            "type", "outcome", "actor", "target", "details", "reason", "stream",
        ]
        .contains(&key.as_str())
        {
            return invalid(
                key,
                "is not a field of an event (type, outcome, actor, target, details, reason, stream)",
            );
        }
    }
    let event_type = match body.get("type") {
        Some(Value::String(t)) if is_event_type(t) => t.clone(),
        Some(_) => {
            return invalid(
                "type",
                "must be an event type: 1-64 of a-z, 0-9, '.', '_', '-' (e.g. \"data.export\")",
            );
        }
        None => return invalid("type", "is required"),
    };
    let outcome = match body.get("outcome").and_then(Value::as_str) {
        Some(o @ ("success" | "failure" | "unknown")) => o.to_string(),
        Some(_) | None if body.contains_key("outcome") => {
            return invalid("outcome", "must be success, failure or unknown");
        }
        _ => return invalid("outcome", "is required (success, failure or unknown)"),
    };
    let stream = match body.get("stream") {
        None => Stream::for_type(&event_type),
        Some(Value::String(name)) => match Stream::parse(name) {
            Some(stream) => stream,
            None => {
                return invalid(
                    "stream",
                    "must be security, access, data_change, gdpr or system",
                );
            }
        },
        Some(_) => return invalid("stream", "must be a string"),
    };
    let actor = identities("actor", body.get("actor"))?;
    let target = identities("target", body.get("target"))?;
    let mut draft = Draft::new(stream, &event_type, &outcome, id, now)
        .field("source", json!("application"))
        .field("actor", json!({"kind": actor_kind(&actor)}))
        .field(
            "target",
            json!({"subject_count": u8::from(!target.is_empty())}),
        );
    match body.get("reason") {
        None => {}
        Some(Value::String(reason)) if is_code(reason) => {
            draft = draft.field("reason", json!(reason))
        }
        Some(_) => {
            return invalid(
                "reason",
                "must be a code: 1-64 of a-z, 0-9, '_', '.' (never free text)",
            );
        }
    }
    let mut notes = Notes::default();
    let details = match body.get("details") {
        None => None,
        Some(Value::Object(details)) => {
            Some(redact::json(Value::Object(details.clone()), &mut notes))
        }
        Some(_) => return invalid("details", "must be an object"),
    };
    if !notes.is_empty() {
        draft = draft.field("redactions", json!(notes));
    }
    let details_subject = target.first().or(actor.first()).cloned();
    for (role, ids) in [(Role::Actor, actor), (Role::Target, target)] {
        if let Some((subject, aliases)) = ids.split_first() {
            let content = Value::Object(
                ids.iter()
                    .map(|s| (s.kind.as_str().to_string(), json!(s.value)))
                    .collect(),
            );
            draft.parts.push(Part {
                role,
                subject: Some(subject.clone()),
                aliases: aliases.to_vec(),
                content: serde_json::to_vec(&content).expect("JSON values serialize"),
            });
        }
    }
    if let Some(details) = details {
        draft.parts.push(Part {
            role: Role::Details,
            subject: details_subject,
            aliases: Vec::new(),
            content: serde_json::to_vec(&details).expect("JSON values serialize"),
        });
    }
    Ok(draft.important())
}

/// `{"user_id": "...", "email": "..."}` → subjects, most specific first.
fn identities(field: &str, value: Option<&Value>) -> Result<Vec<Subject>, Invalid> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Object(map) = value else {
        return Err((
            field.to_string(),
            "must be an object of identifiers (user_id, email, api_key_id, ip)".to_string(),
        ));
    };
    if map.is_empty() {
        return Err((
            field.to_string(),
            "must name at least one identifier (user_id, email, api_key_id, ip)".to_string(),
        ));
    }
    let mut subjects = Vec::new();
    for (key, value) in map {
        let at = format!("{field}.{key}");
        let Some(kind) = IdKind::parse(key) else {
            return Err((
                at,
                "is not an identifier type (user_id, email, api_key_id, ip)".to_string(),
            ));
        };
        let valid = match value.as_str() {
            Some(text) if !text.trim().is_empty() && text.len() <= MAX_IDENTIFIER => match kind {
                IdKind::Ip => text.parse::<std::net::IpAddr>().is_ok(),
                IdKind::Email => text.contains('@'),
                IdKind::UserId | IdKind::ApiKeyId => true,
            },
            _ => false,
        };
        if !valid {
            return Err((
                at,
                format!(
                    "must be a non-empty string of at most {MAX_IDENTIFIER} bytes{}",
                    match kind {
                        IdKind::Ip => " holding an IP address",
                        IdKind::Email => " holding an e-mail address",
                        _ => "",
                    }
                ),
            ));
        }
        subjects.push(Subject {
            kind,
            value: value.as_str().unwrap_or_default().to_string(),
        });
    }
    subjects.sort_by_key(|s| IdKind::ALL.iter().position(|k| *k == s.kind));
    Ok(subjects)
}

fn actor_kind(actor: &[Subject]) -> &'static str {
    match actor.first().map(|s| s.kind) {
        Some(IdKind::UserId | IdKind::Email) => "user",
        Some(IdKind::ApiKeyId) => "service",
        Some(IdKind::Ip) | None => "anonymous",
    }
}

fn is_event_type(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn is_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<Draft, Invalid> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        draft(map, "id", SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn a_valid_event_seals_identifiers_and_keeps_the_header_plain() {
        let draft = parse(json!({"type": "data.export", "outcome": "success", "actor": {"email": "op@example.org", "user_id": "u-1"}, "target": {"email": "jane@example.org"}, "details": {"format": "csv", "password": "hunter2"}})).unwrap();
        assert_eq!(draft.stream, Stream::DataChange);
        assert!(draft.important);
        let header = draft.fields_json().to_string();
        for personal in ["op@example.org", "u-1", "jane@example.org", "hunter2"] {
            assert!(!header.contains(personal), "{personal} in {header}");
        }
        let actor = &draft.parts[0];
        assert_eq!(
            (
                actor.role,
                actor.subject.as_ref().unwrap().kind,
                actor.aliases.len()
            ),
            (Role::Actor, IdKind::UserId, 1)
        );
        let details = &draft.parts[2];
        assert_eq!(details.subject.as_ref().unwrap().value, "jane@example.org");
        let content: Value = serde_json::from_slice(&details.content).unwrap();
        assert_eq!(content["password"], "REDACTED");
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (json!({"outcome": "success"}), "type"),
            (json!({"type": "Data Export", "outcome": "success"}), "type"),
            (json!({"type": "data.export"}), "outcome"),
            (
                json!({"type": "data.export", "outcome": "maybe"}),
                "outcome",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "actor": {"phone": "1"}}),
                "actor.phone",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "actor": {}}),
                "actor",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "target": {"ip": "not-an-ip"}}),
                "target.ip",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "target": {"user_id": 7}}),
                "target.user_id",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "details": [1]}),
                "details",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "reason": "the user asked nicely"}),
                "reason",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "stream": "archive"}),
                "stream",
            ),
            (
                json!({"type": "data.export", "outcome": "success", "colour": "red"}),
                "colour",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(parse(body.clone()).unwrap_err().0, field, "{body}");
        }
    }
}
