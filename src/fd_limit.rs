//! The open-file limit.
//!
//! Every client connection, tunnel side, pooled upstream or database connection and store file
//! is a file descriptor, and processes often start with a soft limit of 1024, far below what
//! `server.max_connections` allows. Past the limit `accept` fails with EMFILE and every new
//! connection of any kind fails with it, so at start seawall raises its soft limit as far as its
//! configuration can use (never past the hard limit, never down), and warns when the hard limit
//! is too low. This module counts what the configuration can hold open; the caps themselves
//! belong to `server`, `tunnel`, `upstream` and `pg`.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::config::Config;

/// Descriptors beyond connections: the store's files, the log, health probes, the blocking
/// pool's file work (backups, exports) and the standard streams.
const RESERVE: u64 = 256;

/// How many descriptors this configuration can hold open at once.
pub fn needed(config: &Config) -> u64 {
    let server = &config.server;
    // In flight, plus what the other runtimes' pools keep idle meanwhile.
    let upstreams: u64 = config
        .upstreams
        .iter()
        .map(|u| {
            let idle = crate::upstream::idle_per_pool(u.max_connections, server.proxy_threads);
            (u.max_connections + idle * server.proxy_threads) as u64
        })
        .sum();
    let database = config
        .postgres
        .as_ref()
        .map_or(0, |p| u64::from(p.pool_max));
    server.max_connections as u64
        + server.admin_max_connections as u64
        + 2 * server.max_upgraded_connections as u64
        + upstreams
        + database
        + RESERVE
}

/// The soft limit before and after [`raise`], against what was needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub needed: u64,
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

impl Raised {
    /// Logs the outcome: a warning when the limit is still below what is needed.
    pub fn log(&self) {
        let Raised {
            needed,
            before,
            after,
            hard,
        } = *self;
        if after < needed {
            tracing::warn!(
                needed,
                limit = after,
                hard_limit = hard,
                "the open-file limit is below what the configuration can use: connections past \
                 about {after} will fail; raise the hard limit (ulimit -Hn, systemd \
                 LimitNOFILE) or lower server.max_connections"
            );
        } else if after > before {
            tracing::info!(from = before, to = after, needed, "open-file limit raised");
        }
    }
}

/// Raises the soft open-file limit towards `needed`, within the hard limit. Errors leave the
/// limit as it was; the result then says so.
pub fn raise(needed: u64) -> Raised {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Raised {
            needed,
            before: 0,
            after: 0,
            hard: 0,
        };
    };
    let target = needed.min(hard);
    let after = if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        target
    } else {
        soft
    };
    Raised {
        needed,
        before: soft,
        after,
        hard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;

    #[test]
    fn the_defaults_need_their_connection_caps_and_a_reserve() {
        let config = Config::from_toml("", &MapEnv::new()).unwrap();
        // 4096 proxy + 64 admin + 2 x 1024 tunnel sides + 256.
        assert_eq!(needed(&config), 4096 + 64 + 2048 + 256);
        let text = r#"
[server]
max_connections = 100
max_upgraded_connections = 10
proxy_threads = 4

[upstreams.app]
url = "http://127.0.0.1:3000"
max_connections = 32

[upstreams.search]
url = "http://127.0.0.1:3001"
max_connections = 8
"#;
        let config = Config::from_toml(text, &MapEnv::new()).unwrap();
        // Each upstream: its cap in flight, and each of 4 threads' pools its idle share.
        assert_eq!(
            needed(&config),
            100 + 64 + 20 + (32 + 4 * 8) + (8 + 4 * 2) + 256
        );
    }

    #[test]
    fn raising_never_lowers_the_limit_nor_passes_the_hard_one() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let modest = raise(16);
        assert_eq!((modest.before, modest.after), (soft, soft));
        let raised = raise(u64::MAX);
        // An unlimited hard limit cannot be set as the soft one (Linux caps it at nr_open).
        if hard != nix::sys::resource::RLIM_INFINITY {
            assert_eq!(raised.after, hard);
            assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
        }
    }
}
