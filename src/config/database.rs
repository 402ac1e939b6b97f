//! The `[postgres]` section (with `DATABASE_URL`, `DB_POOL_MAX`, `DB_POOL_MIN`) and SQL routes.
//!
//! The connection string is parsed by the `postgres` crate itself, so anything it would refuse
//! at connect time is refused here, at start, naming the key. Its password never leaves this
//! module in clear: the typed config carries a masked copy for display.

use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::config::raw::{RawBreaker, RawPostgres};
use crate::config::validate::Validator;
use crate::config::{ConfigError, PostgresConfig, SqlRoute};

/// Shown instead of a password.
const MASK: &str = "********";

impl Validator<'_> {
    pub(super) fn postgres(
        &self,
        raw: &RawPostgres,
    ) -> Result<Option<PostgresConfig>, ConfigError> {
        let Some(url) = raw.url.as_deref() else {
            return Ok(None);
        };
        let mut connection: ::postgres::Config = url.parse().map_err(|e| {
            self.error(
                "postgres.url",
                format!("{} is not a PostgreSQL connection string: {e}", mask(url)),
            )
        })?;
        if connection.get_hosts().is_empty() {
            return Err(self.error("postgres.url", format!("{} names no host", mask(url))));
        }
        if connection.get_user().is_none() {
            return Err(self.error("postgres.url", format!("{} names no user", mask(url))));
        }
        let pool_max = self.range("postgres.pool_max", raw.pool_max, 10, 1, 1_000)?;
        let pool_min = self.range("postgres.pool_min", raw.pool_min, 2.min(pool_max), 0, 1_000)?;
        if pool_min > pool_max {
            let message = format!("{pool_min} is above pool_max ({pool_max})");
            return Err(self.error("postgres.pool_min", message));
        }
        let acquire_timeout = self.millis(
            "postgres.acquire_timeout_ms",
            raw.acquire_timeout_ms,
            2_000,
            1,
            600_000,
        )?;
        let connect_timeout = self.millis(
            "postgres.connect_timeout_ms",
            raw.connect_timeout_ms,
            2_000,
            1,
            600_000,
        )?;
        let statement_timeout = self.millis(
            "postgres.statement_timeout_ms",
            raw.statement_timeout_ms,
            5_000,
            1,
            86_400_000,
        )?;
        // The client waits for the slot, the connection and the statement, plus a margin for
        // the round trips around them.
        let default_call = acquire_timeout + statement_timeout + Duration::from_secs(1);
        let call_timeout = self.millis(
            "postgres.call_timeout_ms",
            raw.call_timeout_ms,
            default_call.as_millis() as u64,
            1,
            86_400_000,
        )?;
        let max_queue = self.range(
            "postgres.max_queue",
            raw.max_queue,
            2 * pool_max,
            0,
            1_000_000,
        )?;
        let default_breaker = RawBreaker {
            slow_call_duration_ms: Some(2_000),
            ..RawBreaker::default()
        };
        let breaker: BreakerConfig = match &raw.breaker {
            Some(breaker) => {
                let with_default = RawBreaker {
                    slow_call_duration_ms: breaker.slow_call_duration_ms.or(Some(2_000)),
                    ..breaker.clone()
                };
                self.breaker("postgres.breaker", &with_default, call_timeout)?
            }
            None => self.breaker("postgres.breaker", &default_breaker, call_timeout)?,
        };
        connection
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(call_timeout)
            .options(&format!(
                "-c statement_timeout={}",
                statement_timeout.as_millis()
            ));
        if connection.get_application_name().is_none() {
            connection.application_name("seawall");
        }
        Ok(Some(PostgresConfig {
            url: mask(url),
            connection,
            pool_max: pool_max as u32,
            pool_min: pool_min as u32,
            acquire_timeout,
            connect_timeout,
            statement_timeout,
            call_timeout,
            max_queue: max_queue as usize,
            breaker,
        }))
    }

    /// A route's `postgres = "..."` statement with its `params`.
    pub(super) fn sql_route(
        &self,
        at: &str,
        sql: &str,
        params: &[String],
        postgres: bool,
    ) -> Result<SqlRoute, ConfigError> {
        if !postgres {
            return Err(self.error(
                &format!("{at}.postgres"),
                "needs a database: set DATABASE_URL or [postgres] url".to_string(),
            ));
        }
        if sql.trim().is_empty() {
            return Err(self.error(&format!("{at}.postgres"), "is empty".to_string()));
        }
        for (i, param) in params.iter().enumerate() {
            let valid = !param.is_empty()
                && param
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                let message = format!("{param:?} is not a parameter name (letters, digits, '_')");
                return Err(self.error(&format!("{at}.params[{i}]"), message));
            }
        }
        let highest = highest_placeholder(sql);
        if highest != params.len() {
            let message = format!(
                "the statement uses ${highest} as its highest placeholder but {} params are listed; list one name per $n, in order",
                params.len()
            );
            return Err(self.error(&format!("{at}.params"), message));
        }
        Ok(SqlRoute {
            sql: sql.to_string(),
            params: params.to_vec(),
        })
    }
}

/// The highest `$n` placeholder outside string literals and quoted identifiers.
fn highest_placeholder(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut highest = 0;
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' => {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = digits.parse::<usize>() {
                    highest = highest.max(n);
                    i += digits.len();
                }
            }
            None => {}
        }
        i += 1;
    }
    highest
}

/// A connection string or URL with any password replaced by a mask, in URL or key=value form.
pub fn mask(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or_default();
            let shown = if userinfo.contains(':') {
                format!("{user}:{MASK}")
            } else {
                user.to_string()
            };
            return format!("{scheme}://{shown}@{host}{}", mask_query(tail));
        }
        return format!("{scheme}://{authority}{}", mask_query(tail));
    }
    url.split_whitespace()
        .map(|pair| {
            if pair.starts_with("password=") {
                format!("password={MASK}")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn mask_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("password=") {
                format!("password={MASK}")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_every_form() {
        assert_eq!(
            mask("postgres://app:s3cret@db:5432/app"),
            "postgres://app:********@db:5432/app"
        );
        assert_eq!(
            mask("postgresql://app@db/app?password=s3cret&sslmode=disable"),
            "postgresql://app@db/app?password=********&sslmode=disable"
        );
        assert_eq!(
            mask("host=db user=app password=s3cret"),
            "host=db user=app password=********"
        );
        assert_eq!(mask("postgres://app@db/app"), "postgres://app@db/app");
    }

    #[test]
    fn placeholders_inside_literals_do_not_count() {
        assert_eq!(
            highest_placeholder("SELECT $1, $2::int WHERE x = '$9' AND \"$8\" = $2"),
            2
        );
        assert_eq!(highest_placeholder("SELECT 1"), 0);
        assert_eq!(highest_placeholder("SELECT $10"), 10);
    }
}
