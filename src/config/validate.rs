//! Raw values to typed config: defaults, ranges, shapes and cross-references.
//!
//! Every check names the key it rejects (and the environment variable when one set it), the
//! value, and what would have been accepted. Nothing here does IO: paths are not created and
//! addresses are not bound; that is left to the code that opens them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::{Method, Uri};
use ipnet::IpNet;

use crate::breaker::{BreakerConfig, WindowKind};
use crate::config::env::Sources;
use crate::config::raw::{RawBreaker, RawConfig, RawRoute, RawUpstream};
use crate::config::{
    AdminConfig, BackupConfig, Config, ConfigError, FlagsConfig, HealthConfig, LogConfig,
    LogFormat, RouteConfig, RouteTarget, Secret, ServerConfig, StoreConfig, UpstreamConfig,
    UpstreamKind,
};
use crate::path_pattern::PathPattern;

const MIB: u64 = 1024 * 1024;

/// Fly's proxy reaches a machine from these private ranges; trusted when running on Fly.
const FLY_PROXY_NETS: [&str; 2] = ["172.16.0.0/12", "fdaa::/16"];

pub fn validate(
    raw: RawConfig,
    flags: FlagsConfig,
    sources: &Sources,
) -> Result<Config, ConfigError> {
    let v = Validator { sources };
    let server = v.server(&raw)?;
    let upstreams = raw
        .upstreams
        .iter()
        .map(|(name, up)| v.upstream(name, up))
        .collect::<Result<Vec<_>, _>>()?;
    let postgres = match &raw.postgres {
        Some(section) => v.postgres(section)?,
        None => None,
    };
    for upstream in &upstreams {
        let key = format!("upstreams.{}.timeout_ms", upstream.name);
        v.below_request_timeout(&key, upstream.timeout, &server)?;
        v.not_seawall_itself(
            &format!("upstreams.{}.url", upstream.name),
            &upstream.url,
            &server,
        )?;
    }
    if let Some(postgres) = &postgres {
        v.below_request_timeout("postgres.call_timeout_ms", postgres.call_timeout, &server)?;
    }
    let ratelimit = v.ratelimit(&raw.ratelimit)?;
    let mut warnings = idle_sections(&raw, &flags);
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
    for (index, raw_route) in raw.routes.iter().enumerate() {
        let mut route = v.route(index, raw_route, &server, &upstreams, postgres.is_some())?;
        let names = raw_route
            .rate_limit
            .as_ref()
            .map(|r| r.to_vec())
            .unwrap_or_default();
        (route.priority, route.rate_limits) =
            v.route_limits(index, raw_route.priority.as_deref(), names, &ratelimit)?;
        if routes.iter().any(|r| r.name == route.name) {
            return Err(v.error(
                &format!("routes[{index}].name"),
                format!("{:?} is used by an earlier route", route.name),
            ));
        }
        if let Some(audit) = &raw_route.audit {
            route.audit = Some(v.route_audit(&format!("routes[{index}].audit"), audit)?);
        }
        routes.push(route);
    }
    warnings.extend(shadowed_routes(&routes));
    let route_names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
    let audit = v.audit(&raw.audit, &route_names)?;
    if audit.require_explicit_coverage {
        let named = |name: &String| audit.rules.iter().any(|rule| rule.routes.contains(name));
        if let Some(index) = routes
            .iter()
            .position(|route| route.audit.is_none() && !named(&route.name))
        {
            let message = format!(
                "route {:?} is audited only by the defaults; give it audit = {{ ... }} or name it in an [[audit.rules]] entry (audit.require_explicit_coverage is on)",
                routes[index].name
            );
            return Err(v.error(&format!("routes[{index}].audit"), message));
        }
    }
    Ok(Config {
        server,
        store: StoreConfig {
            data_dir: PathBuf::from(raw.store.data_dir.as_deref().unwrap_or("./data")),
            cache_capacity_bytes: v.range(
                "store.cache_capacity_mb",
                raw.store.cache_capacity_mb,
                StoreConfig::DEFAULT_CACHE_CAPACITY_MB,
                4,
                65_536,
            )? * MIB,
        },
        backup: BackupConfig {
            keep: v.range("backup.keep", raw.backup.keep, 7, 0, 1_000)? as usize,
        },
        admin: AdminConfig {
            token: v.token(raw.admin.token)?,
        },
        log: LogConfig {
            format: v.log_format(raw.log.format.as_deref())?,
            filter: raw.log.filter.unwrap_or_else(|| "info".to_string()),
        },
        health: HealthConfig {
            interval: v.millis(
                "health.interval_ms",
                raw.health.interval_ms,
                5_000,
                100,
                3_600_000,
            )?,
            timeout: v.millis(
                "health.timeout_ms",
                raw.health.timeout_ms,
                2_000,
                10,
                600_000,
            )?,
        },
        flags,
        upstreams,
        postgres,
        ratelimit,
        routes,
        audit,
        warnings,
    })
}

pub(super) struct Validator<'a> {
    pub(super) sources: &'a Sources,
}

impl Validator<'_> {
    /// `text` as one of a fixed set of names, or an error at `key` that lists them.
    pub(super) fn one_of<T>(
        &self,
        key: &str,
        text: &str,
        (what, expected): (&str, &str),
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        parse(text)
            .ok_or_else(|| self.error(key, format!("{text:?} is not {what} (expected {expected})")))
    }

    /// A dependency's call deadline must end before the request's own: cut by the request's
    /// deadline, a hanging call would be dropped rather than recorded, and its breaker would
    /// never see the failure.
    fn below_request_timeout(
        &self,
        key: &str,
        timeout: Duration,
        server: &ServerConfig,
    ) -> Result<(), ConfigError> {
        if timeout < server.request_timeout {
            return Ok(());
        }
        Err(self.error(
            key,
            format!(
                "{} ms must be below server.request_timeout_ms ({} ms), or the request's deadline cuts the call first and its breaker never counts a hanging call",
                timeout.as_millis(),
                server.request_timeout.as_millis()
            ),
        ))
    }

    /// An upstream at one of seawall's own listeners would send every request back into
    /// seawall: the likely slip when the app used to listen on the port seawall now takes.
    fn not_seawall_itself(
        &self,
        key: &str,
        url: &Uri,
        server: &ServerConfig,
    ) -> Result<(), ConfigError> {
        let port = url.port_u16().unwrap_or(80);
        let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
        let ip = host.parse::<IpAddr>().ok();
        let localhost = host.eq_ignore_ascii_case("localhost");
        let local = |listen: &SocketAddr| {
            let reaches = match listen.ip() {
                // Every local address reaches a listener on all of them.
                any if any.is_unspecified() => {
                    localhost || ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
                }
                own => ip == Some(own) || (localhost && own.is_loopback()),
            };
            port == listen.port() && reaches
        };
        for (listener, listen) in [
            ("server.listen", &server.listen),
            ("server.admin_listen", &server.admin_listen),
        ] {
            if local(listen) {
                return Err(self.error(
                    key,
                    format!(
                        "{url} is seawall's own listener ({listener} {listen}): requests would loop back into seawall; run the app on another port (for example 3000) and point the upstream there"
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn error(&self, key: &str, message: String) -> ConfigError {
        match self.sources.get(key) {
            Some(var) => ConfigError::new(format!("{key} (set by {var})"), message),
            None => ConfigError::new(key, message),
        }
    }

    fn server(&self, raw: &RawConfig) -> Result<ServerConfig, ConfigError> {
        let s = &raw.server;
        let mut trusted_proxies = Vec::new();
        for (i, text) in s.trusted_proxies.iter().flatten().enumerate() {
            trusted_proxies.push(self.net(&format!("server.trusted_proxies[{i}]"), text)?);
        }
        if s.trust_fly_proxy == Some(true) {
            trusted_proxies.extend(
                FLY_PROXY_NETS
                    .iter()
                    .map(|n| n.parse::<IpNet>().expect("valid literal")),
            );
        }
        Ok(ServerConfig {
            listen: self.addr("server.listen", s.listen.as_deref(), "0.0.0.0:8080")?,
            admin_listen: self.addr(
                "server.admin_listen",
                s.admin_listen.as_deref(),
                "127.0.0.1:9090",
            )?,
            max_connections: self.range(
                "server.max_connections",
                s.max_connections,
                4096,
                1,
                1_000_000,
            )? as usize,
            admin_max_connections: self.range(
                "server.admin_max_connections",
                s.admin_max_connections,
                64,
                1,
                10_000,
            )? as usize,
            proxy_threads: self.range(
                "server.proxy_threads",
                s.proxy_threads,
                std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
                1,
                256,
            )? as usize,
            max_body_bytes: self.range(
                "server.max_body_bytes",
                s.max_body_bytes,
                10 * MIB,
                1,
                1 << 40,
            )?,
            admin_max_body_bytes: self.range(
                "server.admin_max_body_bytes",
                s.admin_max_body_bytes,
                MIB,
                1024,
                1 << 30,
            )?,
            header_read_timeout: self.millis(
                "server.header_read_timeout_ms",
                s.header_read_timeout_ms,
                10_000,
                100,
                600_000,
            )?,
            // hyper's smallest read buffer is 8 KiB.
            max_header_bytes: self.range(
                "server.max_header_bytes",
                s.max_header_bytes,
                32 * 1024,
                8 * 1024,
                MIB,
            )? as usize,
            send_timeout: self.millis(
                "server.send_timeout_ms",
                s.send_timeout_ms,
                60_000,
                100,
                3_600_000,
            )?,
            request_timeout: self.millis(
                "server.request_timeout_ms",
                s.request_timeout_ms,
                30_000,
                100,
                3_600_000,
            )?,
            shutdown_delay: self.millis(
                "server.shutdown_delay_ms",
                s.shutdown_delay_ms,
                1_000,
                0,
                300_000,
            )?,
            shutdown_grace: self.millis(
                "server.shutdown_grace_ms",
                s.shutdown_grace_ms,
                20_000,
                0,
                300_000,
            )?,
            max_upgraded_connections: self.range(
                "server.max_upgraded_connections",
                s.max_upgraded_connections,
                1024,
                1,
                1_000_000,
            )? as usize,
            upgraded_idle_timeout: self.millis(
                "server.upgraded_idle_timeout_ms",
                s.upgraded_idle_timeout_ms,
                300_000,
                100,
                86_400_000,
            )?,
            watchdog_kill: match s.watchdog_kill_ms {
                Some(0) => None,
                value => {
                    Some(self.millis("server.watchdog_kill_ms", value, 30_000, 2_000, 3_600_000)?)
                }
            },
            trusted_proxies,
        })
    }

    fn upstream(&self, name: &str, raw: &RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let key = |field: &str| format!("upstreams.{name}.{field}");
        check_name(name).map_err(|m| self.error(&format!("upstreams.{name}"), m))?;
        if name == "postgres" {
            let message = "is reserved for the PostgreSQL pool and its breaker".to_string();
            return Err(self.error(&format!("upstreams.{name}"), message));
        }
        let kind = match raw.kind.as_deref() {
            None | Some("http") => UpstreamKind::Http,
            Some("chroma") => UpstreamKind::Chroma,
            Some(other) => {
                return Err(self.error(
                    &key("kind"),
                    format!("{other:?} is not a kind (expected \"http\" or \"chroma\")"),
                ));
            }
        };
        let Some(url) = raw.url.as_deref() else {
            return Err(self.error(
                &key("url"),
                "is required (e.g. \"http://127.0.0.1:3000\")".to_string(),
            ));
        };
        let url = self.upstream_url(&key("url"), url)?;
        let health_path = match (&raw.health_path, kind) {
            (Some(path), _) if !path.starts_with('/') => {
                return Err(
                    self.error(&key("health_path"), format!("{path:?} must start with '/'"))
                );
            }
            (Some(path), _) => Some(path.clone()),
            (None, UpstreamKind::Chroma) => Some("/api/v2/heartbeat".to_string()),
            (None, UpstreamKind::Http) => None,
        };
        let max_connections =
            self.range(&key("max_connections"), raw.max_connections, 64, 1, 100_000)?;
        let timeout = self.millis(&key("timeout_ms"), raw.timeout_ms, 10_000, 1, 3_600_000)?;
        let default_breaker = RawBreaker::default();
        let breaker = self.breaker(
            &key("breaker"),
            raw.breaker.as_ref().unwrap_or(&default_breaker),
            timeout,
        )?;
        Ok(UpstreamConfig {
            name: name.to_string(),
            kind,
            url,
            health_path,
            max_connections: max_connections as usize,
            connect_timeout: self.millis(
                &key("connect_timeout_ms"),
                raw.connect_timeout_ms,
                1_000,
                1,
                600_000,
            )?,
            timeout,
            body_timeout: self.millis(
                &key("body_timeout_ms"),
                raw.body_timeout_ms,
                60_000,
                100,
                3_600_000,
            )?,
            max_queue: self.range(
                &key("max_queue"),
                raw.max_queue,
                2 * max_connections,
                0,
                1_000_000,
            )? as usize,
            acquire_timeout: self.millis(
                &key("acquire_timeout_ms"),
                raw.acquire_timeout_ms,
                2_000,
                1,
                3_600_000,
            )?,
            breaker,
        })
    }

    fn route(
        &self,
        index: usize,
        raw: &RawRoute,
        server: &ServerConfig,
        upstreams: &[UpstreamConfig],
        postgres: bool,
    ) -> Result<RouteConfig, ConfigError> {
        let key = |field: &str| format!("routes[{index}].{field}");
        let Some(name) = raw.name.clone() else {
            return Err(self.error(&key("name"), "is required".to_string()));
        };
        check_name(&name).map_err(|m| self.error(&key("name"), m))?;
        let Some(pattern) = raw.path.as_deref() else {
            return Err(self.error(&key("match"), "is required (e.g. \"/api/*\")".to_string()));
        };
        let pattern = PathPattern::parse(pattern).map_err(|m| self.error(&key("match"), m))?;
        let methods = match &raw.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(self.error(
                    &key("methods"),
                    "is empty; leave it out to accept every method".to_string(),
                ));
            }
            Some(list) => {
                let mut methods = list
                    .iter()
                    .map(|m| self.method(&key("methods"), m))
                    .collect::<Result<Vec<_>, _>>()?;
                if methods.contains(&Method::CONNECT) {
                    return Err(self.error(
                        &key("methods"),
                        "names CONNECT, which seawall refuses: it is a reverse proxy and opens no tunnels".to_string(),
                    ));
                }
                // RFC 9110 §9.3.2: HEAD is GET without the body; a server that answers GET
                // answers HEAD too (as nginx's `limit_except GET` does).
                if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
                    methods.push(Method::HEAD);
                }
                Some(methods)
            }
        };
        let target = match (&raw.upstream, &raw.postgres) {
            (Some(_), Some(_)) => {
                let message = "a route has either upstream or postgres, not both".to_string();
                return Err(self.error(&key("postgres"), message));
            }
            (None, None) => {
                let message =
                    "is required: the name of an [upstreams.NAME] section (or postgres = \"SQL\")";
                return Err(self.error(&key("upstream"), message.to_string()));
            }
            (Some(upstream), None) => {
                if !upstreams.iter().any(|u| &u.name == upstream) {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    return Err(self.error(
                        &key("upstream"),
                        format!("{upstream:?} is not a configured upstream (known: {known:?})"),
                    ));
                }
                RouteTarget::Upstream(upstream.clone())
            }
            (None, Some(sql)) => {
                let params = raw.params.clone().unwrap_or_default();
                RouteTarget::Postgres(self.sql_route(
                    &format!("routes[{index}]"),
                    sql,
                    &params,
                    postgres,
                )?)
            }
        };
        if raw.params.is_some() && raw.postgres.is_none() {
            return Err(self.error(
                &key("params"),
                "only applies to postgres routes".to_string(),
            ));
        }
        if let Some(prefix) = &raw.strip_prefix
            && (!prefix.starts_with('/') || prefix.ends_with('/') && prefix.len() > 1)
        {
            return Err(self.error(
                &key("strip_prefix"),
                format!("{prefix:?} must start with '/' and not end with '/'"),
            ));
        }
        if let Some(prefix) = &raw.strip_prefix
            && !pattern.admits_prefix(prefix)
        {
            return Err(self.error(
                &key("strip_prefix"),
                format!("{prefix:?} can never apply: no path that match = \"{pattern}\" finds starts with it"),
            ));
        }
        let upgrades = match &raw.upgrades {
            None => Vec::new(),
            Some(list) => self.upgrades(&key("upgrades"), list, &target, upstreams)?,
        };
        Ok(RouteConfig {
            name,
            pattern,
            methods,
            target,
            strip_prefix: raw.strip_prefix.clone(),
            upgrades,
            flag: raw.flag.clone(),
            priority: crate::ratelimit::Level::Medium,
            rate_limits: Vec::new(),
            audit: None,
            max_body_bytes: self.range(
                &key("max_body_bytes"),
                raw.max_body_bytes,
                server.max_body_bytes,
                0,
                1 << 40,
            )?,
        })
    }

    /// A route's `upgrades`: protocol names (HTTP tokens, compared without case) an HTTP
    /// upstream route may switch a connection to.
    fn upgrades(
        &self,
        at: &str,
        list: &[String],
        target: &RouteTarget,
        upstreams: &[UpstreamConfig],
    ) -> Result<Vec<String>, ConfigError> {
        let http_upstream = match target {
            RouteTarget::Upstream(name) => upstreams
                .iter()
                .any(|u| &u.name == name && u.kind == UpstreamKind::Http),
            RouteTarget::Postgres(_) => false,
        };
        if !http_upstream {
            let message = "only applies to routes to an HTTP upstream".to_string();
            return Err(self.error(at, message));
        }
        let mut protocols = Vec::with_capacity(list.len());
        for protocol in list {
            let name = protocol.to_ascii_lowercase();
            let is_token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !is_token {
                let message = format!("{protocol:?} is not a protocol name (an HTTP token)");
                return Err(self.error(at, message));
            }
            if name == "h2c" {
                let message = "\"h2c\" cannot be tunnelled: seawall forwards HTTP/1.1, and a \
                               connection switched to HTTP/2 would carry requests past every check"
                    .to_string();
                return Err(self.error(at, message));
            }
            if !protocols.contains(&name) {
                protocols.push(name);
            }
        }
        Ok(protocols)
    }

    /// A breaker section; defaults follow research/breaker-pool.md §7.2. The half-open wait
    /// defaults to the dependency's call timeout.
    pub(super) fn breaker(
        &self,
        at: &str,
        raw: &RawBreaker,
        call_timeout: Duration,
    ) -> Result<BreakerConfig, ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        let size = self.range(&key("window_size"), raw.window_size, 10, 1, 100_000)? as u32;
        let window = match raw.window.as_deref() {
            None | Some("time") if size > 3600 => {
                let message = format!("{size} seconds is out of range (expected 1-3600)");
                return Err(self.error(&key("window_size"), message));
            }
            None | Some("time") => WindowKind::Time(size),
            Some("count") => WindowKind::Count(size),
            Some(other) => {
                let message = format!("{other:?} is not a window (expected \"time\" or \"count\")");
                return Err(self.error(&key("window"), message));
            }
        };
        let percent = |field: &str, value: Option<f64>, default: f64| {
            let value = value.unwrap_or(default);
            if value > 0.0 && value <= 100.0 {
                return Ok(value);
            }
            let message = format!("{value} is out of range (expected more than 0, at most 100)");
            Err(self.error(&key(field), message))
        };
        let wait_in_open = self.millis(
            &key("wait_in_open_ms"),
            raw.wait_in_open_ms,
            30_000,
            1,
            86_400_000,
        )?;
        let default_max = 300_000.max(wait_in_open.as_millis() as u64);
        let max_wait_in_open = self.millis(
            &key("max_wait_in_open_ms"),
            raw.max_wait_in_open_ms,
            default_max,
            1,
            86_400_000,
        )?;
        if max_wait_in_open < wait_in_open {
            let message = format!(
                "{} is below wait_in_open_ms ({})",
                max_wait_in_open.as_millis(),
                wait_in_open.as_millis()
            );
            return Err(self.error(&key("max_wait_in_open_ms"), message));
        }
        let wait_multiplier = raw.wait_multiplier.unwrap_or(2.0);
        if !(1.0..=10.0).contains(&wait_multiplier) {
            let message = format!("{wait_multiplier} is out of range (expected 1-10)");
            return Err(self.error(&key("wait_multiplier"), message));
        }
        let half_open_default = call_timeout.as_millis() as u64;
        Ok(BreakerConfig {
            window,
            minimum_calls: self.range(&key("minimum_calls"), raw.minimum_calls, 10, 1, 100_000)?
                as u32,
            failure_rate_threshold: percent(
                "failure_rate_threshold",
                raw.failure_rate_threshold,
                50.0,
            )?,
            slow_call_rate_threshold: percent(
                "slow_call_rate_threshold",
                raw.slow_call_rate_threshold,
                80.0,
            )?,
            slow_call_duration: self.millis(
                &key("slow_call_duration_ms"),
                raw.slow_call_duration_ms,
                5_000,
                1,
                3_600_000,
            )?,
            half_open_permits: self.range(
                &key("half_open_permits"),
                raw.half_open_permits,
                3,
                1,
                10_000,
            )? as u32,
            wait_in_open,
            wait_multiplier,
            max_wait_in_open,
            max_wait_in_half_open: self.millis(
                &key("max_wait_in_half_open_ms"),
                raw.max_wait_in_half_open_ms,
                half_open_default,
                0,
                3_600_000,
            )?,
        })
    }

    fn addr(
        &self,
        key: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let text = value.unwrap_or(default);
        text.trim().parse().map_err(|_| {
            self.error(key, format!("{text:?} is not an address (expected host:port, an IP address and a port 0-65535)"))
        })
    }

    fn net(&self, key: &str, text: &str) -> Result<IpNet, ConfigError> {
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| self.error(key, format!("{text:?} is not an IP address or CIDR")))
    }

    pub(super) fn range(
        &self,
        key: &str,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let value = value.unwrap_or(default);
        if value < min || value > max {
            return Err(self.error(
                key,
                format!("{value} is out of range (expected {min}-{max})"),
            ));
        }
        Ok(value)
    }

    pub(super) fn millis(
        &self,
        key: &str,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        self.range(key, value, default, min, max)
            .map(Duration::from_millis)
    }

    fn token(&self, token: Option<String>) -> Result<Option<Secret>, ConfigError> {
        match token {
            Some(t) if t.len() < 16 => Err(self.error(
                "admin.token",
                "is too short (expected at least 16 characters)".to_string(),
            )),
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => Err(self.error(
                "admin.token",
                "must be printable ASCII without spaces".to_string(),
            )),
            other => Ok(other.map(Secret::new)),
        }
    }

    fn log_format(&self, value: Option<&str>) -> Result<LogFormat, ConfigError> {
        match value {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(self.error(
                "log.format",
                format!("{other:?} is not a format (expected \"text\" or \"json\")"),
            )),
        }
    }

    pub(super) fn method(&self, key: &str, text: &str) -> Result<Method, ConfigError> {
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ];
        if !KNOWN.contains(&text) {
            return Err(self.error(
                key,
                format!("{text:?} is not an HTTP method (expected one of {KNOWN:?})"),
            ));
        }
        Ok(Method::from_bytes(text.as_bytes()).expect("known method"))
    }

    fn upstream_url(&self, key: &str, text: &str) -> Result<Uri, ConfigError> {
        // The refused text is shown without a password it may carry: error lines reach logs.
        let shown = super::database::mask(text);
        let bad = |why: &str| {
            self.error(
                key,
                format!("{shown:?} is not a usable upstream URL: {why}"),
            )
        };
        let uri: Uri = text
            .parse()
            .map_err(|_| bad("it does not parse as a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; seawall speaks plain HTTP to upstreams on a private network",
                ));
            }
            _ => return Err(bad("expected http://host:port")),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("it has no host"));
        };
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("expected http://host:port without credentials"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        Ok(uri)
    }
}

/// Names appear in metric labels, URLs and log lines, so they are kept to a safe alphabet.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (1-64 characters of a-z, 0-9, '.', '_', '-')"
        ))
    }
}

/// Routes that an earlier route leaves nothing: first match wins, and it matches every path
/// and method they do (a flag does not change that: a route whose flag is off answers 404).
fn shadowed_routes(routes: &[RouteConfig]) -> Vec<String> {
    let methods_cover =
        |earlier: &RouteConfig, later: &RouteConfig| match (&earlier.methods, &later.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(theirs), Some(mine)) => mine.iter().all(|m| theirs.contains(m)),
        };
    let mut warnings = Vec::new();
    for (index, later) in routes.iter().enumerate() {
        let first = routes[..index].iter().enumerate().find(|(_, earlier)| {
            earlier.pattern.covers(&later.pattern) && methods_cover(earlier, later)
        });
        if let Some((before, earlier)) = first {
            warnings.push(format!(
                "routes[{index}] ({:?}, {}) is never reached: routes[{before}] ({:?}, {}) comes first and takes every request it would; put the more specific route first",
                later.name, later.pattern, earlier.name, earlier.pattern
            ));
        }
    }
    warnings
}

/// Sections that are configured but will do nothing while their feature stays off.
fn idle_sections(raw: &RawConfig, flags: &FlagsConfig) -> Vec<String> {
    let off = |flag: &str| {
        !flags
            .builtin
            .iter()
            .any(|spec| spec.name == flag && spec.enabled)
    };
    let mut warnings = Vec::new();
    let mut warn = |flag: &str, what: String| {
        if off(flag) {
            warnings.push(format!("{what} is configured, but {flag} is off (FF_ENABLE_* or [features]), so it has no effect until the flag is switched on"));
        }
    };
    let rate_limited = !raw.ratelimit.levels.is_empty()
        || !raw.ratelimit.policies.is_empty()
        || raw.ratelimit.max_in_flight.is_some()
        || raw
            .routes
            .iter()
            .any(|r| r.priority.is_some() || r.rate_limit.is_some());
    if rate_limited {
        warn(
            "seawall.prioritized-rate-limit",
            "rate limiting ([ratelimit], route priority or rate_limit)".to_string(),
        );
    }
    for (name, upstream) in &raw.upstreams {
        if upstream.breaker.is_some() {
            warn(
                "seawall.circuit-breaker",
                format!("[upstreams.{name}.breaker]"),
            );
        }
        if upstream.max_queue.is_some() || upstream.acquire_timeout_ms.is_some() {
            warn(
                "seawall.enhanced-pooling",
                format!("upstreams.{name} max_queue / acquire_timeout_ms"),
            );
        }
        if upstream.health_path.is_some() {
            warn(
                "seawall.enhanced-pooling",
                format!("upstreams.{name}.health_path (probes)"),
            );
        }
    }
    if raw.postgres.as_ref().is_some_and(|p| p.breaker.is_some()) {
        warn("seawall.circuit-breaker", "[postgres.breaker]".to_string());
    }
    if !raw.audit.rules.is_empty() || raw.routes.iter().any(|r| r.audit.is_some()) {
        warn(
            "seawall.audit-trail",
            "request auditing ([[audit.rules]] or a route's audit)".to_string(),
        );
    }
    warnings
}
