//! Bad configuration never starts a half-working server: exit 64 and a message naming the key.

use tempfile::TempDir;

use crate::support::{ADMIN_TOKEN, run_until_exit, seawall_command};

/// Runs seawall (the server command) and returns its exit code and stderr.
fn run_with(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("seawall.toml");
    std::fs::write(&path, config).unwrap();
    run_until_exit(dir.path(), &path, env)
}

fn assert_rejected(config: &str, env: &[(&str, &str)], key: &str) {
    let (code, stderr) = run_with(config, env);
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains(key), "the message names {key:?}: {stderr}");
}

#[test]
fn unknown_keys_exit_64() {
    assert_rejected("[server]\nlisten_port = 8080\n", &[], "server.listen_port");
    assert_rejected(
        "[upstreams.app]\nurl = \"http://127.0.0.1:1\"\nretries = 3\n",
        &[],
        "upstreams.app.retries",
    );
}

#[test]
fn malformed_urls_exit_64() {
    assert_rejected(
        "[upstreams.app]\nurl = \"htp//nope\"\n",
        &[],
        "upstreams.app.url",
    );
    assert_rejected("", &[("CHROMA_URL", "chroma:8000")], "CHROMA_URL");
}

#[test]
fn ports_out_of_range_exit_64() {
    assert_rejected(
        "[server]\nadmin_listen = \"127.0.0.1:99999\"\n",
        &[("SEAWALL_ADMIN_LISTEN", "")],
        "server.admin_listen",
    );
    assert_rejected(
        "",
        &[("SEAWALL_LISTEN", "127.0.0.1:70000")],
        "SEAWALL_LISTEN",
    );
}

#[test]
fn wrong_types_exit_64() {
    assert_rejected(
        "[server]\nmax_connections = \"lots\"\n",
        &[],
        "server.max_connections",
    );
    assert_rejected("[[routes]]\nname = 7\n", &[], "routes[0].name");
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("seawall.toml");
    std::fs::write(&path, "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n[upstreams.app.breaker]\nminimum_calls = 5\n").unwrap();
    let out = crate::support::run(seawall_command(dir.path(), &path, &[]).arg("check-config"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(ADMIN_TOKEN), "the admin token is masked");
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["admin"]["token"], "********");
    assert_eq!(config["upstreams"][0]["url"], "http://127.0.0.1:3000/");
}
