use super::*;

fn env(pairs: &[(&str, &str)]) -> MapEnv {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(text, &env(pairs))
}

fn error(text: &str, pairs: &[(&str, &str)]) -> ConfigError {
    load(text, pairs).expect_err("configuration should be rejected")
}

const ROUTED: &str = r#"
[upstreams.app]
url = "http://127.0.0.1:3000"

[[routes]]
name = "api"
match = "/api/*"
upstream = "app"
"#;

#[test]
fn embedded_defaults_need_nothing() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(
        config.server.admin_listen,
        "127.0.0.1:9090".parse().unwrap()
    );
    assert_eq!(config.store.data_dir, PathBuf::from("./data"));
    assert_eq!(config.store.cache_capacity_bytes, 16 * 1024 * 1024);
    assert_eq!(config.backup.keep, 7);
    assert!(config.routes.is_empty());
    assert!(config.admin.token.is_none());
}

#[test]
fn environment_overrides_the_file() {
    let text = "[server]\nlisten = \"127.0.0.1:1000\"\n[store]\ndata_dir = \"/file\"\n";
    let config = load(
        text,
        &[
            ("PORT", "7000"),
            ("SEAWALL_DATA_DIR", "/env"),
            ("SEAWALL_LOG_FORMAT", "json"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:7000".parse().unwrap());
    assert_eq!(config.store.data_dir, PathBuf::from("/env"));
    assert_eq!(config.log.format, LogFormat::Json);
    let config = load(
        "",
        &[("PORT", "7000"), ("SEAWALL_LISTEN", "127.0.0.1:7001")],
    )
    .unwrap();
    assert_eq!(
        config.server.listen,
        "127.0.0.1:7001".parse().unwrap(),
        "SEAWALL_LISTEN beats PORT"
    );
}

#[test]
fn chroma_url_defines_a_chroma_upstream_with_its_heartbeat_probe() {
    let config = load("", &[("CHROMA_URL", "http://127.0.0.1:8000")]).unwrap();
    let chroma = &config.upstreams[0];
    assert_eq!(
        (chroma.name.as_str(), chroma.kind),
        ("chroma", UpstreamKind::Chroma)
    );
    assert_eq!(chroma.health_path.as_deref(), Some("/api/v2/heartbeat"));
}

#[test]
fn unknown_keys_are_named() {
    let e = error("[server]\nlisten_port = 80\n", &[]);
    assert_eq!(e.key, "server.listen_port");
    assert!(e.message.contains("unknown field"), "{e}");
    let e = error("[sever]\n", &[]);
    assert!(e.message.contains("sever"), "{e}");
    let e = error(&format!("{ROUTED}\nretries = 3\n"), &[]);
    assert_eq!(e.key, "routes[0].retries");
}

#[test]
fn proxy_threads_default_to_the_cpus_and_stay_in_range() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(load("", &[]).unwrap().server.proxy_threads, cpus);
    assert_eq!(
        load("[server]\nproxy_threads = 3\n", &[])
            .unwrap()
            .server
            .proxy_threads,
        3
    );
    for bad in ["0", "257", "-1", "\"two\""] {
        let e = error(&format!("[server]\nproxy_threads = {bad}\n"), &[]);
        assert_eq!(e.key, "server.proxy_threads", "{bad}: {e}");
    }
}

#[test]
fn the_audit_queue_budget_is_in_mebibytes_and_in_range() {
    assert_eq!(load("", &[]).unwrap().audit.queue_bytes, 32 << 20);
    assert_eq!(
        load("[audit]\nqueue_mb = 8\n", &[])
            .unwrap()
            .audit
            .queue_bytes,
        8 << 20
    );
    for bad in ["0", "1025", "-1", "\"big\""] {
        let e = error(&format!("[audit]\nqueue_mb = {bad}\n"), &[]);
        assert_eq!(e.key, "audit.queue_mb", "{bad}: {e}");
    }
}

#[test]
fn wrong_types_are_named() {
    let e = error("[server]\nmax_connections = \"many\"\n", &[]);
    assert_eq!(e.key, "server.max_connections");
    let e = error("[upstreams.app]\nurl = 3000\n", &[]);
    assert_eq!(e.key, "upstreams.app.url");
}

#[test]
fn ports_out_of_range_are_named() {
    let e = error("[server]\nlisten = \"0.0.0.0:70000\"\n", &[]);
    assert_eq!(e.key, "server.listen");
    assert!(e.message.contains("70000"));
    let e = error("", &[("PORT", "http")]);
    assert_eq!(e.key, "PORT");
    let e = error("", &[("PORT", "70000")]);
    assert_eq!(e.key, "server.listen (set by PORT)");
    let e = error("", &[("SEAWALL_ADMIN_LISTEN", "localhost")]);
    assert_eq!(e.key, "server.admin_listen (set by SEAWALL_ADMIN_LISTEN)");
}

#[test]
fn malformed_urls_are_named() {
    for url in [
        "localhost:3000",
        "http://",
        "ftp://x",
        "https://example.com",
        "http://u:p@h:1",
        "http://h:1/?a=b",
    ] {
        let e = error(&format!("[upstreams.app]\nurl = {url:?}\n"), &[]);
        assert_eq!(e.key, "upstreams.app.url", "{url}: {e}");
    }
    let e = error("", &[("CHROMA_URL", "not a url")]);
    assert_eq!(e.key, "upstreams.chroma.url (set by CHROMA_URL)");
    // A refused URL is echoed without the password it carries (error lines reach logs).
    for url in [
        "http://u:pw-canary-1@h:1/x",
        "ftp://u:pw-canary-1@h",
        "http://u:pw-canary-1@",
        "http://h:1/?password=pw-canary-1",
    ] {
        let e = error("", &[("CHROMA_URL", url)]);
        assert!(!e.to_string().contains("pw-canary-1"), "{e}");
        assert!(e.to_string().contains("********"), "{e}");
    }
}

#[test]
fn dependency_deadlines_end_before_the_request_deadline() {
    let upstream = "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n";
    let e = error(&format!("{upstream}timeout_ms = 30000"), &[]);
    assert_eq!(e.key, "upstreams.app.timeout_ms");
    assert!(
        e.message.contains("server.request_timeout_ms (30000 ms)"),
        "{e}"
    );
    let raised = format!("[server]\nrequest_timeout_ms = 60000\n{upstream}timeout_ms = 30000");
    assert!(load(&raised, &[]).is_ok());
    // The default call timeout is acquire + statement + 1 s: 32 s here.
    let e = error(
        "[postgres]\nurl = \"postgres://app@127.0.0.1/app\"\nstatement_timeout_ms = 29000",
        &[],
    );
    assert_eq!(e.key, "postgres.call_timeout_ms");
    assert!(e.message.contains("32000 ms"), "{e}");
}

#[test]
fn an_upstream_at_seawalls_own_listener_is_refused() {
    let upstream = |url: &str| format!("[upstreams.app]\nurl = {url:?}\n");
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
        "http://0.0.0.0:8080",
        "http://127.0.0.1:9090",
    ] {
        let e = error(&upstream(url), &[]);
        assert_eq!(e.key, "upstreams.app.url", "{url}");
        assert!(e.message.contains("loop back into seawall"), "{e}");
    }
    for url in [
        "http://127.0.0.1:3000",
        "http://10.0.0.5:8080",
        "http://127.0.0.2:9090",
    ] {
        assert!(load(&upstream(url), &[]).is_ok(), "{url}");
    }
    // The app keeps 8080 when seawall moves.
    assert!(load(&upstream("http://127.0.0.1:8080"), &[("PORT", "3000")]).is_ok());
    let e = error(&upstream("http://localhost:3000"), &[("PORT", "3000")]);
    assert_eq!(e.key, "upstreams.app.url");
}

#[test]
fn a_strip_prefix_that_can_never_apply_is_refused() {
    let route = |strip: &str| format!("{ROUTED}strip_prefix = {strip:?}\n");
    let e = error(&route("/v1"), &[]);
    assert_eq!(e.key, "routes[0].strip_prefix");
    assert!(e.message.contains("can never apply"), "{e}");
    assert!(load(&route("/api"), &[]).is_ok());
    assert!(load(&route("/api/v1"), &[]).is_ok());
}

#[test]
fn a_route_cannot_name_connect() {
    let e = error(&format!("{ROUTED}methods = [\"GET\", \"CONNECT\"]\n"), &[]);
    assert_eq!(e.key, "routes[0].methods");
    assert!(e.message.contains("CONNECT"), "{e}");
}

#[test]
fn routes_an_earlier_route_leaves_nothing_are_warned_about() {
    let config = load(
        r#"
[upstreams.app]
url = "http://127.0.0.1:3000"

[[routes]]
name = "reads"
match = "/api/*"
methods = ["GET"]
upstream = "app"

[[routes]]
name = "api"
match = "/api/*"
upstream = "app"

[[routes]]
name = "everything"
match = "/*"
upstream = "app"

[[routes]]
name = "login"
match = "/login"
methods = ["POST"]
upstream = "app"
"#,
        &[],
    )
    .unwrap();
    let shadowed: Vec<&String> = config
        .warnings
        .iter()
        .filter(|w| w.contains("is never reached"))
        .collect();
    assert_eq!(shadowed.len(), 1, "{shadowed:?}");
    assert!(
        shadowed[0].starts_with(
            r#"routes[3] ("login", /login) is never reached: routes[2] ("everything", /*)"#
        ),
        "{}",
        shadowed[0]
    );
}

#[test]
fn routes_are_checked_against_upstreams_and_each_other() {
    let e = error(
        "[[routes]]\nname = \"a\"\nmatch = \"/a\"\nupstream = \"nowhere\"\n",
        &[],
    );
    assert_eq!(e.key, "routes[0].upstream");
    let e = error(
        &format!("{ROUTED}\n[[routes]]\nname = \"api\"\nmatch = \"/b\"\nupstream = \"app\"\n"),
        &[],
    );
    assert_eq!(e.key, "routes[1].name");
    let e = error(&format!("{ROUTED}\nmethods = [\"FETCH\"]\n"), &[]);
    assert_eq!(e.key, "routes[0].methods");
    let e = error(
        "[upstreams.app]\nurl = \"http://h:1\"\n[[routes]]\nname = \"a\"\nmatch = \"a/*\"\nupstream = \"app\"\n",
        &[],
    );
    assert_eq!(e.key, "routes[0].match");
}

#[test]
fn upgrades_are_protocol_names_on_http_upstream_routes() {
    let config = load(
        &format!("{ROUTED}upgrades = [\"WebSocket\", \"websocket\"]\n"),
        &[],
    )
    .unwrap();
    assert_eq!(config.routes[0].upgrades, ["websocket"]);
    assert!(load(ROUTED, &[]).unwrap().routes[0].upgrades.is_empty());
    for (list, expected) in [
        ("[\"h2c\"]", "cannot be tunnelled"),
        ("[\"web socket\"]", "not a protocol name"),
        ("[\"\"]", "not a protocol name"),
    ] {
        let e = error(&format!("{ROUTED}upgrades = {list}\n"), &[]);
        assert_eq!(e.key, "routes[0].upgrades", "{list}");
        assert!(e.message.contains(expected), "{list}: {}", e.message);
    }
    let chroma = "[upstreams.vectors]\nkind = \"chroma\"\nurl = \"http://127.0.0.1:8000\"\n\
                  [[routes]]\nname = \"v\"\nmatch = \"/v/*\"\nupstream = \"vectors\"\n\
                  upgrades = [\"websocket\"]\n";
    let e = error(chroma, &[]);
    assert_eq!(e.key, "routes[0].upgrades");
    assert!(e.message.contains("HTTP upstream"), "{}", e.message);
    let e = error("[server]\nmax_upgraded_connections = 0\n", &[]);
    assert_eq!(e.key, "server.max_upgraded_connections");
    let e = error("[server]\nupgraded_idle_timeout_ms = 10\n", &[]);
    assert_eq!(e.key, "server.upgraded_idle_timeout_ms");
}

#[test]
fn the_watchdog_kills_after_thirty_seconds_unless_told_otherwise() {
    let kill = |toml: &str| load(toml, &[]).unwrap().server.watchdog_kill;
    assert_eq!(kill(""), Some(Duration::from_secs(30)));
    assert_eq!(kill("[server]\nwatchdog_kill_ms = 0\n"), None);
    assert_eq!(
        kill("[server]\nwatchdog_kill_ms = 120000\n"),
        Some(Duration::from_secs(120))
    );
    // Shorter than two seconds would take a busy machine for a wedged one.
    let e = error("[server]\nwatchdog_kill_ms = 1000\n", &[]);
    assert_eq!(e.key, "server.watchdog_kill_ms");
    assert!(e.message.contains("2000-3600000"), "{}", e.message);
}

#[test]
fn stalled_transfers_have_bounds() {
    let config = load(ROUTED, &[]).unwrap();
    assert_eq!(config.server.send_timeout, Duration::from_secs(60));
    assert_eq!(config.upstreams[0].body_timeout, Duration::from_secs(60));
    let e = error("[server]\nsend_timeout_ms = 0\n", &[]);
    assert_eq!(e.key, "server.send_timeout_ms");
    let e = error(
        "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\nbody_timeout_ms = 10\n",
        &[],
    );
    assert_eq!(e.key, "upstreams.app.body_timeout_ms");
}

#[test]
fn kept_backups_are_bounded() {
    assert_eq!(error("[backup]\nkeep = 1001\n", &[]).key, "backup.keep");
}

#[test]
fn request_heads_are_bounded_from_hyper_minimum_up() {
    assert_eq!(load("", &[]).unwrap().server.max_header_bytes, 32 * 1024);
    let e = error("[server]\nmax_header_bytes = 4096\n", &[]);
    assert_eq!(e.key, "server.max_header_bytes");
    assert!(e.message.contains("8192"), "{}", e.message);
}

#[test]
fn secrets_are_masked_in_the_effective_config() {
    let config = load("", &[("SEAWALL_ADMIN_TOKEN", "a-very-secret-admin-token")]).unwrap();
    let shown = config.to_masked_json();
    assert!(!shown.contains("a-very-secret-admin-token"));
    assert!(shown.contains("********"));
    assert!(!format!("{config:?}").contains("a-very-secret-admin-token"));
}

#[test]
fn short_admin_tokens_are_refused() {
    let e = error("", &[("SEAWALL_ADMIN_TOKEN", "short")]);
    assert_eq!(e.key, "admin.token (set by SEAWALL_ADMIN_TOKEN)");
}

#[test]
fn ff_variables_define_application_flags() {
    let config = load(
        "",
        &[
            ("FF_NEW_CHECKOUT", "true"),
            ("FF_NEW_CHECKOUT_PERCENTAGE", "25"),
            ("FF_BETA_USERS", "ann, bob"),
            ("FF_OFFICE_IPS", "10.0.0.0/8,::1"),
            ("FF_OLD_UI", "false"),
        ],
    )
    .unwrap();
    let flags = &config.flags.environment;
    let names: Vec<&str> = flags.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["beta", "new-checkout", "office", "old-ui"]);
    assert_eq!((flags[1].enabled, flags[1].percentage), (true, Some(25)));
    assert_eq!(flags[0].users, ["ann", "bob"]);
    assert!(
        flags[0].enabled,
        "a user list alone switches the flag on for those users"
    );
    assert_eq!(flags[2].ips.len(), 2);
    assert!(!flags[3].enabled);
}

#[test]
fn the_four_enable_variables_configure_builtin_features_only() {
    let config = load(
        "[features]\naudit_trail = true\nenhanced_pooling = true\n",
        &[
            ("FF_ENABLE_CIRCUIT_BREAKER", "true"),
            ("FF_ENABLE_CIRCUIT_BREAKER_PERCENTAGE", "10"),
            ("FF_ENABLE_ENHANCED_POOLING", "false"),
        ],
    )
    .unwrap();
    assert!(
        config.flags.environment.is_empty(),
        "reserved names never create application flags"
    );
    let builtin = |name: &str| {
        config
            .flags
            .builtin
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            builtin("seawall.circuit-breaker").enabled,
            builtin("seawall.circuit-breaker").percentage
        ),
        (true, Some(10))
    );
    assert!(
        !builtin("seawall.enhanced-pooling").enabled,
        "the environment wins over [features]"
    );
    assert!(builtin("seawall.audit-trail").enabled);
    assert!(
        !builtin("seawall.prioritized-rate-limit").enabled,
        "off by default"
    );
    let other = load("", &[("FF_ENABLE_SEARCH", "true")]).unwrap();
    assert_eq!(
        other.flags.environment[0].name, "enable-search",
        "other FF_ENABLE_ names are ordinary flags"
    );
}

#[test]
fn bad_flag_variables_are_named() {
    assert_eq!(
        error("", &[("FF_X_PERCENTAGE", "half")]).key,
        "FF_X_PERCENTAGE"
    );
    assert_eq!(
        error("", &[("FF_X_PERCENTAGE", "150")]).key,
        "FF_X_PERCENTAGE"
    );
    assert_eq!(error("", &[("FF_X", "maybe")]).key, "FF_X");
    assert_eq!(error("", &[("FF_X_IPS", "10.0.0.0/33")]).key, "FF_X_IPS");
    assert_eq!(
        error("", &[("FF_ENABLE_AUDIT_TRAIL", "yes please")]).key,
        "FF_ENABLE_AUDIT_TRAIL"
    );
    assert_eq!(
        error("[features]\ncircuit_breaker_percentage = 101\n", &[]).key,
        "features.circuit_breaker_percentage"
    );
    assert_eq!(
        error("[features]\ncircuit_breakers = true\n", &[]).key,
        "features.circuit_breakers"
    );
}

#[test]
fn sections_idle_while_their_feature_is_off_are_warned_about() {
    let text = "[ratelimit]\nmax_in_flight = 10\n[upstreams.app]\nurl = \"http://h:1\"\n[upstreams.app.breaker]\nminimum_calls = 3\n";
    let off = load(text, &[]).unwrap();
    assert_eq!(off.warnings.len(), 2, "{:?}", off.warnings);
    assert!(off.warnings[0].contains("seawall.prioritized-rate-limit"));
    let on = load(
        text,
        &[
            ("FF_ENABLE_PRIORITIZED_RATE_LIMIT", "true"),
            ("FF_ENABLE_CIRCUIT_BREAKER", "true"),
        ],
    )
    .unwrap();
    assert!(on.warnings.is_empty(), "{:?}", on.warnings);
}

/// Fuzzing the parser and validator: documents built from seawall's own sections and keys with
/// values of every type and range, plus environment variables, never panic, and every refusal
/// names what is wrong.
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const SECTIONS: &[&str] = &[
        "[server]",
        "[store]",
        "[backup]",
        "[features]",
        "[health]",
        "[postgres]",
        "[postgres.breaker]",
        "[ofrep]",
        "[ratelimit]",
        "[ratelimit.levels.medium]",
        "[ratelimit.policies.burst]",
        "[audit]",
        "[audit.retention.access]",
        "[audit.erasure.security]",
        "[upstreams.app]",
        "[upstreams.app.breaker]",
        "[[routes]]",
        "[[audit.rules]]",
        "[nonsense]",
    ];

    const KEYS: &[&str] = &[
        "listen",
        "admin_listen",
        "data_dir",
        "cache_capacity_mb",
        "keep",
        "audit_trail",
        "circuit_breaker",
        "circuit_breaker_percentage",
        "url",
        "max_connections",
        "proxy_threads",
        "timeout_ms",
        "name",
        "match",
        "upstream",
        "strip_prefix",
        "flag",
        "methods",
        "priority",
        "audit",
        "quota",
        "window_s",
        "mode",
        "max_in_flight",
        "header_days",
        "payload_days",
        "action",
        "basis",
        "digest_every",
        "kek_rotation_interval_ms",
        "flush_interval_ms",
        "queue_mb",
        "level",
        "routes",
        "event",
        "stream",
        "window",
        "window_size",
        "minimum_calls",
        "keys",
        "trusted_proxies",
        "pool_max",
        "postgres",
        "params",
        "max_body_bytes",
        "upgrades",
        "max_upgraded_connections",
        "max_header_bytes",
        "send_timeout_ms",
        "body_timeout_ms",
        "unknown_key",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..200_000).prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            "[a-z0-9:/._*{}-]{0,24}".prop_map(|s| format!("{s:?}")),
            any::<String>().prop_map(|s| format!("{s:?}")),
            Just("\"http://127.0.0.1:3000\"".to_string()),
            Just("\"/api/*\"".to_string()),
            Just("[\"GET\", \"POST\"]".to_string()),
            Just("{ level = \"request\" }".to_string()),
            Just("1.5".to_string()),
            Just("[]".to_string()),
        ]
    }

    fn document() -> impl Strategy<Value = String> {
        let line =
            (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}"));
        let section = (
            proptest::sample::select(SECTIONS),
            proptest::collection::vec(line, 0..6),
        )
            .prop_map(|(header, lines)| format!("{header}\n{}\n", lines.join("\n")));
        proptest::collection::vec(section, 0..8).prop_map(|sections| sections.concat())
    }

    fn environment() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = proptest::sample::select(
            &[
                "FF_ENABLE_AUDIT_TRAIL",
                "FF_ENABLE_CIRCUIT_BREAKER_PERCENTAGE",
                "FF_NEW_CHECKOUT_USERS",
                "FF_NEW_CHECKOUT_IPS",
                "SEAWALL_LISTEN",
                "SEAWALL_ADMIN_TOKEN",
                "SEAWALL_DATA_DIR",
                "PORT",
                "SEAWALL_OFREP_KEYS",
            ][..],
        );
        proptest::collection::vec((name, "[ -~]{0,20}"), 0..4)
            .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn check(text: &str, pairs: &[(String, String)]) {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match load(text, &pairs) {
            Ok(config) => {
                let json = config.to_masked_json();
                assert!(json.starts_with('{'), "{json}");
            }
            Err(e) => assert!(
                !e.to_string().trim().is_empty(),
                "an empty message for {text:?}"
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn structured_documents_never_panic(text in document(), pairs in environment()) {
            check(&text, &pairs);
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            check(&text, &[]);
        }
    }
}

#[test]
fn audit_rules_are_validated_by_key() {
    let route = |audit: &str| format!("{ROUTED}audit = {{ {audit} }}\n");
    let e = error(&route(r#"durability = "blocking""#), &[]);
    assert_eq!(e.key, "routes[0].audit.durability");
    assert!(e.message.contains("batch or blocking-strict"), "{e}");
    let e = error(
        &route(r#"level = "none", durability = "blocking-strict""#),
        &[],
    );
    assert_eq!(e.key, "routes[0].audit.durability");
    let e = error(&route(r#"event = "authn.login", level = "request""#), &[]);
    assert_eq!(e.key, "routes[0].audit.level");
    let e = error(
        &format!("{ROUTED}\n[[audit.rules]]\nroutes = [\"nope\"]\n"),
        &[],
    );
    assert_eq!(e.key, "audit.rules[0].routes");
    let e = error("[audit]\nstrict_timeout_ms = 0\n", &[]);
    assert_eq!(e.key, "audit.strict_timeout_ms");
    for (text, key) in [
        (
            "capacity_high_water_percent = 49",
            "audit.capacity_high_water_percent",
        ),
        (
            "capacity_high_water_percent = 101",
            "audit.capacity_high_water_percent",
        ),
        (
            "capacity_high_water_percent = \"90%\"",
            "audit.capacity_high_water_percent",
        ),
        (
            "capacity_check_interval_ms = 99",
            "audit.capacity_check_interval_ms",
        ),
        (
            "retention_clock_jump_tolerance_ms = 59999",
            "audit.retention_clock_jump_tolerance_ms",
        ),
        (
            "retention_clock_jump_tolerance_ms = -1",
            "audit.retention_clock_jump_tolerance_ms",
        ),
    ] {
        assert_eq!(error(&format!("[audit]\n{text}\n"), &[]).key, key, "{text}");
    }
    // Explicit coverage: a route with neither its own audit nor a rule naming it is refused.
    let explicit = "[audit]\nrequire_explicit_coverage = true\n";
    let e = error(&format!("{ROUTED}\n{explicit}"), &[]);
    assert_eq!(e.key, "routes[0].audit");
    assert!(e.message.contains("\"api\""), "{}", e.message);
    let e = error(
        &format!("{ROUTED}\n{explicit}[[audit.rules]]\nlevel = \"metadata\"\n"),
        &[],
    );
    assert_eq!(e.key, "routes[0].audit", "a catch-all rule is not explicit");
    load(
        &format!("{ROUTED}\n{explicit}[[audit.rules]]\nroutes = [\"api\"]\n"),
        &[],
    )
    .unwrap();
    load(&format!("{}\n{explicit}", route(r#"level = "none""#)), &[]).unwrap();

    let tolerance = load("[audit]\nretention_clock_jump_tolerance_ms = 60000\n", &[])
        .unwrap()
        .audit
        .clock_jump_tolerance;
    assert_eq!(tolerance, std::time::Duration::from_secs(60));

    let guard = load(
        "[audit]\ncapacity_high_water_percent = 100\ncapacity_check_interval_ms = 500\n",
        &[],
    )
    .unwrap()
    .audit
    .capacity;
    assert_eq!(
        (guard.high_water_percent, guard.check_interval),
        (100, std::time::Duration::from_millis(500))
    );

    let config = load(
        &format!(
            "{ROUTED}\n[[audit.rules]]\nmethods = [\"POST\"]\ndurability = \"blocking-strict\"\n"
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        config.audit.rules[0].durability,
        Some(crate::audit::policy::Durability::BlockingStrict)
    );
    assert_eq!(config.audit.strict_timeout, Duration::from_secs(2));
}
