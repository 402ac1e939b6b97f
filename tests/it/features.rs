//! The feature helper that later capabilities ask per request, driven through the library with
//! many client addresses (the same helper gates routes over HTTP in `flags.rs`).

use std::net::SocketAddr;

use http::HeaderMap;
use seawall::config::{Config, MapEnv};
use seawall::features::Feature;
use seawall::request_context::RequestContext;
use seawall::state::AppState;
use tempfile::TempDir;

fn state(pairs: &[(&str, &str)]) -> (AppState, TempDir) {
    let dir = TempDir::new().unwrap();
    let mut env: MapEnv = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert(
        "SEAWALL_DATA_DIR".into(),
        dir.path().to_string_lossy().into_owned(),
    );
    env.insert(
        "SEAWALL_ADMIN_TOKEN".into(),
        crate::support::ADMIN_TOKEN.into(),
    );
    (
        AppState::build(Config::from_toml("", &env).unwrap()).unwrap(),
        dir,
    )
}

fn client(i: u32) -> RequestContext {
    let peer: SocketAddr = format!("10.{}.{}.{}:40000", i >> 16, (i >> 8) & 0xff, i & 0xff)
        .parse()
        .unwrap();
    RequestContext::new(peer, &HeaderMap::new(), &[])
}

#[test]
fn a_ten_percent_feature_is_on_for_about_ten_percent_of_clients_always_the_same() {
    let (state, _dir) = state(&[
        ("FF_ENABLE_CIRCUIT_BREAKER", "true"),
        ("FF_ENABLE_CIRCUIT_BREAKER_PERCENTAGE", "10"),
    ]);
    let clients = 20_000;
    let first: Vec<bool> = (0..clients)
        .map(|i| state.feature_on(Feature::CircuitBreaker, &client(i)))
        .collect();
    let share = first.iter().filter(|on| **on).count() as f64 * 100.0 / clients as f64;
    assert!(
        (9.0..=11.0).contains(&share),
        "on for {share:.2}% of clients"
    );
    for i in 0..clients {
        assert_eq!(
            state.feature_on(Feature::CircuitBreaker, &client(i)),
            first[i as usize],
            "client {i} changed answer"
        );
    }
    for feature in [
        Feature::EnhancedPooling,
        Feature::PrioritizedRateLimit,
        Feature::AuditTrail,
    ] {
        assert!(
            (0..1000).all(|i| !state.feature_on(feature, &client(i))),
            "{feature:?} is off by default"
        );
    }
}

#[test]
fn enabled_features_without_a_percentage_are_on_for_everyone() {
    let (state, _dir) = state(&[("FF_ENABLE_AUDIT_TRAIL", "true")]);
    assert!((0..1000).all(|i| state.feature_on(Feature::AuditTrail, &client(i))));
}
