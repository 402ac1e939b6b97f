//! The Prometheus alert rules in `deploy/`: `promtool check rules` and the rules' unit tests
//! pass, and every series a rule names is one a running seawall exposes, so the rules cannot
//! drift from the code.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use http::Method;
use tempfile::TempDir;

use crate::backend::Backend;
use crate::support::{ADMIN_TOKEN, Pg, Seawall, full, get, required_env, send};
use crate::witness::Witness;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn promtool(args: &[&str]) {
    crate::support::run(
        Command::new(required_env("SEAWALL_TEST_PROMTOOL"))
            .args(args)
            .current_dir(deploy()),
    );
}

#[test]
fn rules_pass_promtool_and_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// Metric names a rule refers to.
fn named_in_rules() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let mut names = BTreeSet::new();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("seawall_") || word.starts_with("process_") {
            names.insert(word.to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_rules_name_is_exposed() {
    let pg = Pg::start("");
    let backend = Backend::start().await;
    let config = format!(
        r#"
[postgres]
url = "{}"

[upstreams.app]
url = "{}"

[[routes]]
name = "api"
match = "/api/*"
upstream = "app"
strip_prefix = "/api"
"#,
        pg.url(),
        backend.url()
    );
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config,
        &[("FF_ENABLE_CIRCUIT_BREAKER", "true")],
    );
    assert_eq!(get(&seawall.proxy_url("/api/status/200")).await.status, 200);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let backup = send(
        Method::POST,
        &seawall.admin_url("/admin/backup"),
        &[("authorization", auth.as_str())],
        full(""),
    )
    .await;
    assert_eq!(backup.status, 201, "{}", backup.text());
    let mut text = get(&seawall.admin_url("/metrics")).await.text();
    text.push_str(&witness_metrics(&seawall).await);
    let mut exposed = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            exposed.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_count", "_sum"] {
                    exposed.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let named = named_in_rules();
    assert!(named.len() >= 12, "{named:?}");
    let missing: Vec<&String> = named.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "rules name series seawall does not expose: {missing:?}\n{text}"
    );
}

/// What `seawall audit witness --metrics-file` writes after a run against `seawall` (the
/// `seawall-witness` rules watch it on the witness's machine).
async fn witness_metrics(seawall: &Seawall) -> String {
    let witness = Witness::of(seawall).await;
    let (code, report, stderr) = witness.run(&seawall.admin_url("")).await;
    assert_eq!(code, Some(0), "{report} {stderr}");
    crate::support::run(
        Command::new(required_env("SEAWALL_TEST_PROMTOOL"))
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(witness.metrics_file()).unwrap()),
    );
    std::fs::read_to_string(witness.metrics_file()).unwrap()
}
