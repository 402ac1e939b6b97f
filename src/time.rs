//! Wall-clock formatting shared by health documents, logs and admin answers.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-27T12:00:00.000Z`.
pub fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Millis, true)
}
