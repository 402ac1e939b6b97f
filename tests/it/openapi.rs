//! The OpenAPI document of the admin and OFREP APIs (`src/openapi.yaml`): valid OpenAPI, served
//! by the admin listener without a token, every documented operation routed, and a bounded
//! property-based fuzz run (schemathesis) against a live seawall that finds no server error, no
//! crash and no answer the document does not describe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use http::Method;

use crate::support::{ADMIN_TOKEN, PROCESS_TIMEOUT, Seawall, full, get, required_env, send};

fn document() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/openapi.yaml")
}

/// The documented operations, after the document passed `openapi-spec-validator`.
fn operations() -> Vec<(Method, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_operations.py");
    let out = crate::support::run(
        Command::new(required_env("SEAWALL_TEST_PYTHON"))
            .arg(script)
            .arg(document()),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .map(|line| {
            let (method, path) = line.split_once(' ').unwrap();
            (method.parse().unwrap(), path.to_string())
        })
        .collect()
}

/// `path` with its parameters filled in, on the listener that serves it.
fn concrete_url(seawall: &Seawall, path: &str) -> String {
    let concrete = path
        .replace("{action}", "reset")
        .replace("{policy}", "medium")
        .replace(['{', '}'], "");
    if concrete.starts_with("/ofrep/") {
        seawall.proxy_url(&concrete)
    } else {
        seawall.admin_url(&concrete)
    }
}

/// Every feature that changes what the APIs answer is on: audit, rate limits (429 and 503 on
/// OFREP), breakers, with the upstream the document's breaker example names (nothing listens
/// on its port; no route sends to it).
const CONFIG: &str = "[features]\naudit_trail = true\nprioritized_rate_limit = true\n\
                      circuit_breaker = true\n[upstreams.app]\nurl = \"http://127.0.0.1:9\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_served_and_every_operation_is_routed() {
    let seawall = Seawall::start(CONFIG);
    let served = get(&seawall.admin_url("/admin/openapi.yaml")).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/yaml"));
    assert_eq!(served.text(), std::fs::read_to_string(document()).unwrap());

    let operations = operations();
    assert!(operations.len() >= 35, "{operations:?}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (method, path) in operations {
        let url = concrete_url(&seawall, &path);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let reply = send(method.clone(), &url, &headers, full("{}")).await;
        assert_ne!(
            reply.status, 405,
            "{method} {path} is documented but not routed"
        );
        assert!(
            reply.status.as_u16() < 500,
            "{method} {path}: {} {}",
            reply.status,
            reply.text()
        );
        if !path.contains('{') {
            assert_ne!(reply.status, 404, "{method} {path}: {}", reply.text());
        }
    }
}

/// RFC 9110 §15.5.6: a 405 lists the methods the resource supports, which are the ones its
/// path documents, and HEAD where GET is (§9.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_document_is_answered_405_with_its_own_methods() {
    let seawall = Seawall::start(CONFIG);
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (method, path) in operations() {
        documented
            .entry(path)
            .or_default()
            .insert(method.to_string());
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (path, methods) in documented {
        let reply = send(
            Method::OPTIONS,
            &concrete_url(&seawall, &path),
            &[("authorization", auth.as_str())],
            full(""),
        )
        .await;
        assert_eq!(reply.status, 405, "OPTIONS {path}: {}", reply.text());
        let allow: BTreeSet<String> = reply
            .header("allow")
            .unwrap_or_else(|| panic!("OPTIONS {path}: no Allow"))
            .split(", ")
            .map(str::to_string)
            .collect();
        let mut expected = methods.clone();
        if methods.contains("GET") {
            expected.insert("HEAD".to_string());
        }
        assert_eq!(allow, expected, "OPTIONS {path}");
    }
}

/// RFC 9110 §9.3.2: HEAD is answered as GET would be, without the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_get_answers_head_alike_without_a_body() {
    let seawall = Seawall::start(CONFIG);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let gets: Vec<String> = operations()
        .into_iter()
        .filter(|(method, _)| method == Method::GET)
        .map(|(_, path)| path)
        .collect();
    assert!(gets.len() >= 15, "{gets:?}");
    for path in gets {
        let url = concrete_url(&seawall, &path);
        let get = send(Method::GET, &url, &headers, full("")).await;
        let head = send(Method::HEAD, &url, &headers, full("")).await;
        assert_eq!(head.status, get.status, "HEAD {path}: {}", get.text());
        assert!(head.body.is_empty(), "HEAD {path} has a body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "HEAD {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_fuzz_run_finds_no_server_error_or_undocumented_answer() {
    let mut seawall = Seawall::start(CONFIG);
    let schema = seawall.admin_url("/admin/openapi.yaml");
    let work = tempfile::TempDir::new().unwrap();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let admin_base = seawall.admin_url("");
    let proxy_base = seawall.proxy_url("");
    let runs: [(&str, &[&str]); 2] = [
        (admin_base.as_str(), &["--exclude-tag", "ofrep"]),
        (proxy_base.as_str(), &["--include-tag", "ofrep"]),
    ];
    for (base, filter) in runs {
        let out = crate::support::run(
            Command::new(required_env("SEAWALL_TEST_SCHEMATHESIS"))
                .args(["run", &schema, "--url", base, "-H", &auth])
                // Every check but one: the answers keep to the document (status codes,
                // content types, headers, schemas, `Allow`), and what the document forbids is
                // refused. Not that everything it allows is accepted: some rules cannot be
                // written in a schema (a dependency must name an existing flag, an `ip`
                // identifier must parse), and a stale `If-Match` is rightly 412.
                .args([
                    "--checks",
                    "all",
                    "--exclude-checks",
                    "positive_data_acceptance",
                ])
                .args(["--max-examples", "12"])
                // One worker: with two, hypothesis parses lambdas' source from two threads,
                // which CPython 3.11 can fail with "AST constructor recursion depth mismatch"
                // (a runtime error of the tool, not a finding). Health checks judge how fast
                // the tool generates data, which says nothing about seawall on a busy machine.
                .args(["--seed", "20261127", "--workers", "1", "--no-shrink"])
                .args(["--suppress-health-check", "all"])
                .args(["--request-timeout", "30"])
                .args(filter)
                .current_dir(work.path()),
        );
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(report.contains("passed"), "{report}");
    }
    // Still serving, and still able to shut down cleanly: nothing crashed.
    assert_eq!(get(&seawall.proxy_url("/health/live")).await.status, 200);
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
}

#[test]
fn the_api_reference_is_rendered_from_the_document() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = crate::support::run(
        Command::new(required_env("SEAWALL_TEST_PYTHON"))
            .arg(root.join("tests/openapi_markdown.py"))
            .arg(document()),
    );
    let committed = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "docs/api.md is out of date: run tests/openapi_markdown.py src/openapi.yaml > docs/api.md"
    );
}
