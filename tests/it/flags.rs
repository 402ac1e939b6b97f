//! Feature flags over HTTP: environment bootstrap and precedence, the admin API with ETags,
//! route gating, and the per-client feature helper.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{ADMIN_TOKEN, Reply, Seawall, assert_error, full, get, send};

async fn admin(
    seawall: &Seawall,
    method: Method,
    path: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let body = body
        .map(|b| full(b.to_string()))
        .unwrap_or_else(|| full(Bytes::new()));
    send(method, &seawall.admin_url(path), &headers, body).await
}

fn rollout(reply: &Reply) -> String {
    let flag = &reply.json()["flag"];
    flag["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["parameters"]["rollout"].as_str().map(str::to_string))
        .unwrap()
}

const ENV: [(&str, &str); 2] = [
    ("FF_NEW_CHECKOUT", "true"),
    ("FF_NEW_CHECKOUT_PERCENTAGE", "25"),
];

#[tokio::test]
async fn environment_flags_yield_to_runtime_changes_until_reset() {
    let dir = Arc::new(TempDir::new().unwrap());
    let mut seawall = Seawall::start_in(dir.clone(), "", &ENV);
    let created = admin(
        &seawall,
        Method::GET,
        "/admin/flags/new-checkout",
        None,
        &[],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(rollout(&created), "25");
    assert_eq!(created.json()["meta"]["origin"], "environment");
    let etag = created.header("etag").unwrap().to_string();

    let patch = json!({"strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "60", "stickiness": "default", "groupId": "new-checkout"}}]});
    let changed = admin(
        &seawall,
        Method::PATCH,
        "/admin/flags/new-checkout",
        Some(patch),
        &[("if-match", &etag), ("x-seawall-actor", "ann")],
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(rollout(&changed), "60");
    assert_ne!(changed.header("etag"), Some(etag.as_str()));

    seawall.signal("TERM");
    assert!(seawall.wait_exit(crate::support::PROCESS_TIMEOUT).success());
    let seawall = Seawall::start_in(dir.clone(), "", &ENV);
    let after_restart = admin(
        &seawall,
        Method::GET,
        "/admin/flags/new-checkout",
        None,
        &[],
    )
    .await;
    assert_eq!(
        rollout(&after_restart),
        "60",
        "the runtime change survives a restart with the same environment"
    );
    assert_eq!(after_restart.json()["meta"]["overridden"], true);
    assert!(
        seawall.logs().contains("differs from its configuration"),
        "the disagreement is logged"
    );

    let reset = admin(
        &seawall,
        Method::POST,
        "/admin/flags/new-checkout/reset",
        None,
        &[],
    )
    .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(rollout(&reset), "25");

    let history = admin(
        &seawall,
        Method::GET,
        "/admin/flags/new-checkout/history",
        None,
        &[],
    )
    .await
    .json();
    let entries = history["history"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["bootstrapped", "patched", "reset"]);
    assert_eq!(entries[1]["actor"], "ann");
    assert!(entries[1]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        entries[1]["before"]["strategies"][0]["parameters"]["rollout"],
        "25"
    );
    assert_eq!(
        entries[1]["after"]["strategies"][0]["parameters"]["rollout"],
        "60"
    );
}

/// A change that could never apply is answered 400 before its `If-Match` is judged, and a
/// malformed actor is refused only where a change is made; nothing refused changes anything.
#[tokio::test]
async fn changes_are_validated_before_their_precondition_and_actor() {
    let seawall = Seawall::start("");
    let flag = json!({"name": "beta", "enabled": true});
    let created = admin(&seawall, Method::POST, "/admin/flags", Some(flag), &[]).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let etag = created.header("etag").unwrap().to_string();
    let stale = [("if-match", "\"0\"")];

    let stale_patch = |patch: Value| {
        admin(
            &seawall,
            Method::PATCH,
            "/admin/flags/beta",
            Some(patch),
            &stale,
        )
    };
    let refused = stale_patch(json!({"enabled": false})).await;
    assert_error(&refused, 412, "PRECONDITION_FAILED");
    let refused = stale_patch(json!({"strategies": [{"name": "no-such-strategy"}]})).await;
    assert_error(&refused, 400, "VALIDATION_FAILED");

    let blank_actor = [("x-seawall-actor", "  ")];
    let listed = admin(&seawall, Method::GET, "/admin/flags", None, &blank_actor).await;
    assert_eq!(listed.status, 200, "a read ignores the actor header");
    let refused = admin(
        &seawall,
        Method::DELETE,
        "/admin/flags/beta",
        None,
        &blank_actor,
    )
    .await;
    assert_error(&refused, 400, "BAD_REQUEST");
    let limit = json!({"quota": 5});
    let refused = admin(
        &seawall,
        Method::PUT,
        "/admin/ratelimits/medium",
        Some(limit),
        &blank_actor,
    )
    .await;
    assert_error(&refused, 400, "BAD_REQUEST");

    let after = admin(&seawall, Method::GET, "/admin/flags/beta", None, &[]).await;
    assert_eq!(after.header("etag"), Some(etag.as_str()));
    assert_eq!(after.json()["flag"]["enabled"], true);
    let limits = admin(&seawall, Method::GET, "/admin/ratelimits", None, &[]).await;
    assert!(
        !limits.text().contains("\"overridden\":true"),
        "{}",
        limits.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_with_one_etag_let_exactly_one_win() {
    let seawall = Arc::new(Seawall::start(""));
    let created = admin(
        &seawall,
        Method::POST,
        "/admin/flags",
        Some(json!({"name": "race", "enabled": false})),
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/admin/flags/race"));
    let etag = created.header("etag").unwrap().to_string();
    let attempts: Vec<_> = [true, false]
        .into_iter()
        .map(|enabled| {
            let seawall = seawall.clone();
            let etag = etag.clone();
            tokio::spawn(async move {
                admin(
                    &seawall,
                    Method::PUT,
                    "/admin/flags/race",
                    Some(json!({"name": "race", "enabled": enabled})),
                    &[("if-match", &etag)],
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        let reply = attempt.await.unwrap();
        if reply.status == 412 {
            assert_error(&reply, 412, "PRECONDITION_FAILED");
        }
        statuses.push(reply.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 412]);
}

#[tokio::test]
async fn bad_flag_documents_are_refused_naming_the_field_and_change_nothing() {
    let seawall = Seawall::start("");
    let created = admin(
        &seawall,
        Method::POST,
        "/admin/flags",
        Some(json!({"name": "guarded", "enabled": true})),
        &[],
    )
    .await;
    let etag = created.header("etag").unwrap().to_string();
    let strategy = |s: Value| json!({"name": "guarded", "enabled": true, "strategies": [s]});
    let constraint = |c: Value| strategy(json!({"name": "default", "constraints": [c]}));
    let cases = [
        (
            strategy(json!({"name": "gradualRolloutMagic"})),
            "strategies[0].name",
        ),
        (
            strategy(
                json!({"name": "remoteAddress", "parameters": {"IPs": "10.0.0.0/8, 10.1.2.3/99"}}),
            ),
            "strategies[0].parameters.IPs",
        ),
        (
            constraint(json!({"contextName": "email", "operator": "REGEX", "value": "([a-z]"})),
            "strategies[0].constraints[0].value",
        ),
        (
            constraint(json!({"contextName": "version", "operator": "SEMVER_GTE", "value": "1.2"})),
            "strategies[0].constraints[0].value",
        ),
        (
            constraint(
                json!({"contextName": "ip", "operator": "IN_CIDR", "values": ["192.168.0.0/16", "nope"]}),
            ),
            "strategies[0].constraints[0].values[1]",
        ),
        (json!({"name": "guarded", "enabled": "yes"}), "enabled"),
        (
            json!({"name": "guarded", "enabled": true, "colour": "red"}),
            "colour",
        ),
    ];
    for (document, field) in cases {
        let reply = admin(
            &seawall,
            Method::PUT,
            "/admin/flags/guarded",
            Some(document.clone()),
            &[],
        )
        .await;
        assert_error(&reply, 400, "VALIDATION_FAILED");
        assert_eq!(reply.json()["field"], field, "{document}: {}", reply.text());
        assert!(
            reply.json()["message"].as_str().unwrap().starts_with(field),
            "{}",
            reply.text()
        );
    }
    let malformed = send(
        Method::POST,
        &seawall.admin_url("/admin/flags"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        full("{\"name\": \"x\", "),
    )
    .await;
    assert_error(&malformed, 400, "BAD_REQUEST");
    let not_an_object = send(
        Method::POST,
        &seawall.admin_url("/admin/flags"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        full("[1, 2]"),
    )
    .await;
    assert_error(&not_an_object, 400, "VALIDATION_FAILED");

    let after = admin(&seawall, Method::GET, "/admin/flags/guarded", None, &[]).await;
    assert_eq!(
        after.header("etag"),
        Some(etag.as_str()),
        "the stored flag is unchanged"
    );
    assert_eq!(
        after.json()["flag"],
        json!({"name": "guarded", "enabled": true, "strategies": []})
    );

    assert_error(
        &admin(&seawall, Method::GET, "/admin/flags/ghost", None, &[]).await,
        404,
        "FLAG_NOT_FOUND",
    );
    assert_error(
        &admin(
            &seawall,
            Method::POST,
            "/admin/flags",
            Some(json!({"name": "guarded", "enabled": true})),
            &[],
        )
        .await,
        409,
        "FLAG_EXISTS",
    );
    assert_error(
        &admin(
            &seawall,
            Method::DELETE,
            "/admin/flags/seawall.audit-trail",
            None,
            &[],
        )
        .await,
        409,
        "RESERVED_FLAG",
    );
    assert_error(
        &admin(
            &seawall,
            Method::POST,
            "/admin/flags/guarded/reset",
            None,
            &[],
        )
        .await,
        409,
        "NO_CONFIGURATION",
    );
    let oversized = json!({"name": "big", "enabled": true, "description": "x".repeat(2 << 20)});
    assert_error(
        &admin(&seawall, Method::POST, "/admin/flags", Some(oversized), &[]).await,
        413,
        "PAYLOAD_TOO_LARGE",
    );
}

#[tokio::test]
async fn an_unleash_export_imports_and_deletes_work() {
    let seawall = Seawall::start("");
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata/unleash-client-specification/08-variants.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
    let state = doc["state"].clone();
    let count = state["features"].as_array().unwrap().len();
    let imported = admin(
        &seawall,
        Method::POST,
        "/admin/flags/import",
        Some(state),
        &[],
    )
    .await;
    assert_eq!(imported.status, 200, "{}", imported.text());
    assert_eq!(imported.json()["imported"], count);
    let list = admin(&seawall, Method::GET, "/admin/flags", None, &[])
        .await
        .json();
    assert_eq!(
        list["flags"].as_array().unwrap().len(),
        count + 4,
        "imported flags plus the four built-in features"
    );

    let name = doc["state"]["features"][0]["name"].as_str().unwrap();
    let path = format!("/admin/flags/{name}");
    assert_eq!(
        admin(&seawall, Method::DELETE, &path, None, &[])
            .await
            .status,
        204
    );
    assert_error(
        &admin(&seawall, Method::GET, &path, None, &[]).await,
        404,
        "FLAG_NOT_FOUND",
    );
}

#[tokio::test]
async fn acknowledged_flag_changes_survive_kill_9() {
    let dir = Arc::new(TempDir::new().unwrap());
    let mut seawall = Seawall::start_in(dir.clone(), "", &[]);
    for i in 0..20 {
        let reply = admin(
            &seawall,
            Method::POST,
            "/admin/flags",
            Some(json!({"name": format!("durable-{i}"), "enabled": true})),
            &[],
        )
        .await;
        assert_eq!(reply.status, 201);
    }
    seawall.kill();
    let seawall = Seawall::start_in(dir, "", &[]);
    for i in 0..20 {
        assert_eq!(
            admin(
                &seawall,
                Method::GET,
                &format!("/admin/flags/durable-{i}"),
                None,
                &[]
            )
            .await
            .status,
            200,
            "flag {i} was acknowledged"
        );
    }
}

/// Routes gated by a flag answer 404 while it is off for the client, keyed by client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_flags_gate_per_client_and_stick() {
    let backend = crate::backend::Backend::start().await;
    let config = format!(
        r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[upstreams.app]
url = "{}"

[[routes]]
name = "new-api"
match = "/new/*"
upstream = "app"
strip_prefix = "/new"
flag = "new-api"
"#,
        backend.url()
    );
    let dir = Arc::new(TempDir::new().unwrap());
    let seawall = Seawall::start_in(dir, &config, &[("FF_NEW_API_PERCENTAGE", "10")]);
    let mut on = 0;
    for i in 0..400u32 {
        let ip = format!("198.51.{}.{}", i / 200, i % 200 + 1);
        let reply = send(
            Method::GET,
            &seawall.proxy_url("/new/headers"),
            &[("fly-client-ip", &ip)],
            full(Bytes::new()),
        )
        .await;
        let again = send(
            Method::GET,
            &seawall.proxy_url("/new/headers"),
            &[("fly-client-ip", &ip)],
            full(Bytes::new()),
        )
        .await;
        assert_eq!(
            reply.status, again.status,
            "{ip} gets the same answer every time"
        );
        match reply.status.as_u16() {
            200 => on += 1,
            404 => assert_error(&reply, 404, "NOT_FOUND"),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (20..=60).contains(&on),
        "{on} of 400 clients inside a 10% rollout"
    );
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains("seawall_flag_evaluations_total{flag=\"new-api\",result=\"enabled\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_flags_are_named_when_missing_and_kept_while_a_route_needs_them() {
    let backend = crate::backend::Backend::start().await;
    let route = |name: &str, flag: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nmatch = \"/{name}/*\"\nstrip_prefix = \"/{name}\"\nupstream = \"app\"\nflag = \"{flag}\"\n"
        )
    };
    let config = format!(
        "[upstreams.app]\nurl = \"{}\"\n{}{}",
        backend.url(),
        route("beta", "new-beta"),
        route("known", "known-flag")
    );
    let dir = Arc::new(TempDir::new().unwrap());
    let seawall = Seawall::start_in(dir, &config, &[("FF_KNOWN_FLAG", "true")]);
    let warnings: Vec<String> = seawall
        .logs()
        .lines()
        .filter(|line| line.contains("the route's flag does not exist"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(r#""route":"beta""#) && warnings[0].contains(r#""flag":"new-beta""#),
        "{}",
        warnings[0]
    );
    assert_error(
        &get(&seawall.proxy_url("/beta/headers")).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(get(&seawall.proxy_url("/known/headers")).await.status, 200);
    // Deleting it would take the route away from everyone; switching it off is the way.
    let flag = "/admin/flags/known-flag";
    let delete = admin(&seawall, Method::DELETE, flag, None, &[]).await;
    assert_error(&delete, 409, "FLAG_IN_USE");
    assert!(
        delete.json()["message"]
            .as_str()
            .unwrap()
            .contains("\"known\"")
    );
    assert_eq!(get(&seawall.proxy_url("/known/headers")).await.status, 200);
    let off = json!({"enabled": false});
    let patch = admin(&seawall, Method::PATCH, flag, Some(off), &[]).await;
    assert_eq!(patch.status, 200, "{}", patch.text());
    assert_error(
        &get(&seawall.proxy_url("/known/headers")).await,
        404,
        "NOT_FOUND",
    );
    // Nor can a flag others depend on: a dependency on a flag that is gone is never met.
    for created in [
        json!({"name": "parent", "enabled": true}),
        json!({"name": "child", "enabled": true, "dependencies": [{"feature": "parent"}]}),
    ] {
        let reply = admin(&seawall, Method::POST, "/admin/flags", Some(created), &[]).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let delete = admin(&seawall, Method::DELETE, "/admin/flags/parent", None, &[]).await;
    assert_error(&delete, 409, "FLAG_HAS_DEPENDENTS");
}
