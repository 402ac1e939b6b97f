//! fly.toml holds the invariants a single stateful seawall machine depends on, and agrees with
//! the configuration seawall derives from the `[env]` it sets.

use seawall::config::{Config, MapEnv};
use toml::Value;

fn fly() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fly.toml");
    toml::from_str(&std::fs::read_to_string(path).unwrap()).expect("fly.toml is valid TOML")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(key)
            .unwrap_or_else(|| panic!("fly.toml lacks {}", path.join(".")));
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

#[test]
fn fly_toml_keeps_the_single_machine_invariants() {
    let fly = fly();
    assert_eq!(str_at(&fly, &["kill_signal"]), "SIGTERM");

    let mounts = fly["mounts"].as_array().expect("[[mounts]]");
    assert_eq!(mounts.len(), 1, "exactly one volume");
    let mount = str_at(&mounts[0], &["destination"]);
    assert_eq!(mount, "/data");

    let service = &fly["http_service"];
    assert_eq!(service["internal_port"].as_integer(), Some(8080));
    assert_eq!(str_at(service, &["auto_stop_machines"]), "off");
    let concurrency = &service["concurrency"];
    assert_eq!(str_at(concurrency, &["type"]), "requests");
    let soft = concurrency["soft_limit"].as_integer().unwrap();
    let hard = concurrency["hard_limit"].as_integer().unwrap();
    assert!(0 < soft && soft < hard, "soft {soft} < hard {hard}");
    let checks = service["checks"]
        .as_array()
        .expect("[[http_service.checks]]");
    assert!(
        checks
            .iter()
            .any(|c| str_at(c, &["path"]) == "/health/ready"),
        "routing check on readiness"
    );

    let strategy = str_at(&fly, &["deploy", "strategy"]);
    assert!(
        ["rolling", "immediate"].contains(&strategy),
        "{strategy} does not work with volumes"
    );

    // The configuration seawall builds from fly.toml's [env] must agree with the rest of it.
    let env: MapEnv = fly["env"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let config = Config::from_toml("", &env).expect("fly.toml's [env] is a valid configuration");
    assert!(
        config.store.data_dir.starts_with(mount),
        "data dir {:?} is on the volume",
        config.store.data_dir
    );
    assert_eq!(config.server.listen.port(), 8080);
    assert_eq!(
        fly["metrics"]["port"].as_integer(),
        Some(config.server.admin_listen.port() as i64),
        "Fly scrapes the admin listener"
    );
    assert!(
        config.server.admin_listen.ip().is_unspecified(),
        "metrics must be reachable from Fly's scraper"
    );
    assert_eq!(str_at(&fly, &["metrics", "path"]), "/metrics");
    let kill_timeout = fly["kill_timeout"].as_integer().unwrap() as u64;
    let shutdown = config.server.shutdown_delay + config.server.shutdown_grace;
    assert!(
        kill_timeout * 1000 > shutdown.as_millis() as u64 + 2_000,
        "kill_timeout {kill_timeout}s leaves time to flush after {shutdown:?}"
    );
    assert_eq!(str_at(&fly, &["env", "SEAWALL_LOG_FORMAT"]), "json");
}
