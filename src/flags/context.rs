//! The evaluation context: who and what a flag is evaluated for (Unleash's context fields).

use std::collections::HashMap;

use serde::Deserialize;

/// Unleash context: well-known fields plus free-form string properties.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub remote_address: Option<String>,
    pub environment: Option<String>,
    pub app_name: Option<String>,
    /// RFC 3339; when absent, the evaluation's `now` is used.
    pub current_time: Option<String>,
    #[serde(default, deserialize_with = "properties")]
    pub properties: HashMap<String, String>,
}

/// A context field a constraint or stickiness setting refers to, resolved once at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    UserId,
    SessionId,
    RemoteAddress,
    Environment,
    AppName,
    CurrentTime,
    Property(String),
}

impl Field {
    pub fn named(name: &str) -> Field {
        match name {
            "userId" => Field::UserId,
            "sessionId" => Field::SessionId,
            "remoteAddress" => Field::RemoteAddress,
            "environment" => Field::Environment,
            "appName" => Field::AppName,
            "currentTime" => Field::CurrentTime,
            other => Field::Property(other.to_string()),
        }
    }
}

impl Context {
    pub fn get(&self, field: &Field) -> Option<&str> {
        let value = match field {
            Field::UserId => self.user_id.as_deref(),
            Field::SessionId => self.session_id.as_deref(),
            Field::RemoteAddress => self.remote_address.as_deref(),
            Field::Environment => self.environment.as_deref(),
            Field::AppName => self.app_name.as_deref(),
            Field::CurrentTime => self.current_time.as_deref(),
            Field::Property(name) => self.properties.get(name).map(String::as_str),
        };
        value.filter(|v| !v.is_empty())
    }
}

/// Properties with `null` values are treated as absent, as the Unleash SDKs do.
fn properties<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    let raw = Option::<HashMap<String, Option<String>>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}
