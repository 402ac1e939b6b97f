//! The audit trail checked from outside seawall (research/audit.md §6 C4): `tests/verify_audit.py`,
//! written from docs/audit-format.md alone, recomputes every stream's hash chain and checks
//! every signed digest from what the admin API returns. One altered header field, or one
//! altered digest, makes it fail where the document says it should.

use http::Method;
use serde_json::{Value, json};

use crate::audit::{admin, await_events, config, query_all};
use crate::backend::Backend;
use crate::support::{Seawall, admin_get, get, python_check};

const STREAMS: [&str; 5] = ["security", "access", "data_change", "gdpr", "system"];

/// What docs/audit-format.md says to fetch, as the verifier reads it.
async fn fetch(seawall: &Seawall) -> Value {
    let public_key = admin_get(seawall, "/admin/audit/pubkey").await.json()["public_key"].clone();
    let mut streams = serde_json::Map::new();
    for stream in STREAMS {
        // Digests first: reads are audited, so the security stream grows while it is read.
        let reply = admin_get(seawall, &format!("/admin/audit/digests?stream={stream}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let digests = reply.json()["digests"].clone();
        let events = query_all(seawall, &format!("stream={stream}&integrity=true")).await;
        streams.insert(stream.into(), json!({"events": events, "digests": digests}));
    }
    json!({"public_key": public_key, "streams": streams})
}

fn verify(fetched: &Value) -> (bool, String) {
    python_check("verify_audit.py", &[], &fetched.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_verifier_checks_the_chains_and_digests_the_api_returns() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "\n[audit]\ndigest_every = 7\n"));
    for i in 0..30 {
        let url = seawall.proxy_url(&format!("/api/headers/{i}?q=x"));
        assert_eq!(get(&url).await.status, 200);
    }
    for (event_type, reason) in [
        ("data.update", "plan_changed"),
        ("authn.login.failure", "bad_password"),
        ("data.export", "quarterly_report"),
    ] {
        let event = json!({"type": event_type, "outcome": "success", "reason": reason,
                           "actor": {"user_id": "u-17"}, "details": {"note": "x"}});
        let reply = admin(&seawall, Method::POST, "/admin/audit/events", event, &[]).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    await_events(&seawall, "api", 30).await;

    let fetched = fetch(&seawall).await;
    let access = fetched["streams"]["access"].clone();
    assert!(access["events"].as_array().unwrap().len() >= 30);
    assert!(
        access["digests"].as_array().unwrap().len() >= 2,
        "a digest every 7 events: {access}"
    );
    let (passed, report) = verify(&fetched);
    assert!(passed, "{report}");
    assert!(report.contains("access: "), "{report}");

    // A stream whose start retention has removed (the first 10 events and digest 0, which
    // covered only removed ones): the chain is checked from the next digest boundary.
    let mut pruned = fetched.clone();
    let access = &mut pruned["streams"]["access"];
    access["events"].as_array_mut().unwrap().drain(..10);
    access["digests"].as_array_mut().unwrap().remove(0);
    let (passed, report) = verify(&pruned);
    assert!(passed, "{report}");
    let line = report.lines().find(|l| l.starts_with("access: ")).unwrap();
    let checked: usize = line["access: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..20).contains(&checked) && line.contains(" of 20 events chained"),
        "from the first boundary after seq 10: {report}"
    );

    // One header field changed: the leaf of exactly that event no longer matches.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["events"][3]["http"]["status_code"] = json!(201);
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access leaf: seq 3"),
        "{report}"
    );

    // An event removed from the middle: the sequence has a gap.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["events"]
        .as_array_mut()
        .unwrap()
        .remove(5);
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access gap or order: seq 6"),
        "{report}"
    );

    // A digest's time changed: its signature no longer verifies.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["digests"][1]["time"] = json!("2020-01-01T00:00:00.000000000Z");
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access digest 1: signature"),
        "{report}"
    );

    // Another key: nothing verifies against it.
    let mut altered = fetched.clone();
    altered["public_key"] = json!("11".repeat(32));
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access digest 0"),
        "{report}"
    );
}
