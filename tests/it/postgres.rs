//! SQL routes against a real PostgreSQL of each test's own: binding, errors, outages,
//! recovery, refused logins and role limits, a database that never answers, a client that
//! hangs up mid-statement, killed backends, slow statements, exhaustion and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{
    BREAKER_ON, PROCESS_TIMEOUT, Pg, Reply, Seawall, admin_get, assert_error, await_metric,
    breaker_named, full, get, metric, required_env, send,
};

const SCHEMA: &str = "CREATE TABLE pets (id bigint PRIMARY KEY, name text NOT NULL UNIQUE);
                      INSERT INTO pets VALUES (1, 'rex'), (2, 'tom');";

fn config(pg: &Pg, extra: &str) -> String {
    config_for(&pg.url(), extra)
}

/// The test configuration, connecting with `url`.
fn config_for(url: &str, extra: &str) -> String {
    format!(
        r#"
[health]
interval_ms = 200
timeout_ms = 1000

[postgres]
url = "{}"
pool_max = 4
pool_min = 1
acquire_timeout_ms = 1000
connect_timeout_ms = 500
statement_timeout_ms = 1000
{extra}

[postgres.breaker]
window = "count"
window_size = 6
minimum_calls = 3
wait_in_open_ms = 2000
half_open_permits = 1

[[routes]]
name = "pet"
match = "/pets/{{id}}"
methods = ["GET"]
postgres = "SELECT id, name FROM pets WHERE id = $1::bigint"
params = ["id"]

[[routes]]
name = "pets-by-name"
match = "/pets"
methods = ["GET"]
postgres = "SELECT id, name FROM pets WHERE name = $1 ORDER BY id"
params = ["name"]

[[routes]]
name = "new-pet"
match = "/pets"
methods = ["POST"]
postgres = "INSERT INTO pets (id, name) VALUES ($1::bigint, $2) RETURNING id, name"
params = ["id", "name"]

[[routes]]
name = "sleep"
match = "/sleep/{{seconds}}"
postgres = "SELECT pg_sleep($1::float8)::text AS slept"
params = ["seconds"]
"#,
        url
    )
}

fn start(pg: &Pg, extra: &str) -> Seawall {
    Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config(pg, extra),
        &BREAKER_ON,
    )
}

async fn post(seawall: &Seawall, path: &str, body: Value) -> Reply {
    send(
        Method::POST,
        &seawall.proxy_url(path),
        &[("content-type", "application/json")],
        full(body.to_string()),
    )
    .await
}

async fn postgres_breaker(seawall: &Seawall) -> Value {
    breaker_named(seawall, "postgres").await
}

async fn postgres_check(seawall: &Seawall) -> Value {
    get(&seawall.proxy_url("/health/detailed")).await.json()["checks"]["postgres:responseTime"][0]
        .clone()
}

/// Calls `path` until the breaker refuses it (`CIRCUIT_OPEN`), at most ten times; every answer
/// must have one of `statuses` and come within the call timeout (3 s here) and some slack.
async fn until_open(seawall: &Seawall, path: &str, statuses: &[u16]) -> Reply {
    let bound = Duration::from_secs(3 + 5);
    for _ in 0..10 {
        let started = Instant::now();
        let reply = get(&seawall.proxy_url(path)).await;
        let took = started.elapsed();
        assert!(took < bound, "a call took {took:?}");
        assert!(
            statuses.contains(&reply.status.as_u16()),
            "{}",
            reply.text()
        );
        if reply.json()["error"] == "CIRCUIT_OPEN" {
            return reply;
        }
    }
    panic!("the breaker on {path} never opened");
}

/// Polls `path` until it answers 200, within `limit`; the answers on the way must be 503s.
async fn until_ok(seawall: &Seawall, path: &str, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let reply = get(&seawall.proxy_url(path)).await;
        if reply.status == 200 {
            return reply;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(
            reply.header("retry-after").is_some(),
            "503 without Retry-After: {}",
            reply.text()
        );
        assert!(
            Instant::now() < deadline,
            "{path} never recovered; last answer {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_routes_answer_json_and_bind_parameters_as_data() {
    let pg = Pg::start(SCHEMA);
    let seawall = start(&pg, "");
    let one = get(&seawall.proxy_url("/pets/1")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.header("content-type"), Some("application/json"));
    assert_eq!(one.json(), json!([{"id": 1, "name": "rex"}]));
    assert_eq!(get(&seawall.proxy_url("/pets/999")).await.json(), json!([]));
    assert_eq!(
        get(&seawall.proxy_url("/pets?name=tom")).await.json(),
        json!([{"id": 2, "name": "tom"}])
    );

    let bad = get(&seawall.proxy_url("/pets/abc")).await;
    assert_error(&bad, 400, "INVALID_INPUT");
    assert_eq!(bad.json()["sqlstate"], "22P02");
    assert!(
        !bad.text().contains("bigint"),
        "no internals in the answer: {}",
        bad.text()
    );

    let created = post(&seawall, "/pets", json!({"id": 3, "name": "kit"})).await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json(), json!([{"id": 3, "name": "kit"}]));
    let duplicate = post(&seawall, "/pets", json!({"id": 4, "name": "kit"})).await;
    assert_error(&duplicate, 409, "CONFLICT");
    assert_eq!(duplicate.json()["sqlstate"], "23505");
    assert_error(
        &post(&seawall, "/pets", json!({"id": 5})).await,
        400,
        "MISSING_PARAMETER",
    );
    assert_error(
        &post(&seawall, "/pets", json!(["x"])).await,
        400,
        "BAD_REQUEST",
    );

    let injection = "'; DROP TABLE pets; --";
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", injection)
        .finish();
    assert_eq!(
        get(&seawall.proxy_url(&format!("/pets?{query}")))
            .await
            .json(),
        json!([])
    );
    let stored = post(&seawall, "/pets", json!({"id": 6, "name": injection})).await;
    assert_eq!(
        stored.json(),
        json!([{"id": 6, "name": injection}]),
        "stored as data"
    );
    assert_eq!(
        pg.psql("seawall", "SELECT count(*) FROM pets"),
        "4",
        "the table is intact"
    );

    let breaker = postgres_breaker(&seawall).await;
    assert_eq!(
        breaker["calls"]["failed"], 0,
        "constraint and input errors do not move the breaker: {breaker}"
    );
    assert_eq!(breaker["state"], "closed");
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            "seawall_db_query_errors_total{pool=\"postgres\",sqlstate_class=\"23\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "seawall_db_query_errors_total{pool=\"postgres\",sqlstate_class=\"22\"}"
        ),
        Some(1.0)
    );
    assert_database_series(&metrics);
    let file = seawall.dir.path().join("metrics.prom");
    std::fs::write(&file, &metrics).unwrap();
    crate::support::run(
        std::process::Command::new(required_env("SEAWALL_TEST_PROMTOOL"))
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap()),
    );
}

/// research/breaker-pool.md §9 D1: every PostgreSQL pool and breaker series of §8 is exposed
/// with its documented labels, whether or not anything has happened to it yet.
fn assert_database_series(metrics: &str) {
    let pool = "pool=\"postgres\"";
    let mut series: Vec<String> = vec![
        format!("seawall_db_pool_connections{{{pool},state=\"idle\"}}"),
        format!("seawall_db_pool_connections{{{pool},state=\"in_use\"}}"),
        format!("seawall_db_pool_max_connections{{{pool}}}"),
        format!("seawall_db_pool_waiters{{{pool}}}"),
        format!("seawall_db_pool_timeouts_total{{{pool}}}"),
        format!("seawall_db_pool_rejected_total{{{pool}}}"),
        format!("seawall_db_pool_connections_created_total{{{pool}}}"),
    ];
    for histogram in ["acquire", "usage", "creation"] {
        for part in ["_sum", "_count"] {
            series.push(format!(
                "seawall_db_pool_{histogram}_seconds{part}{{{pool}}}"
            ));
        }
        series.push(format!(
            "seawall_db_pool_{histogram}_seconds_bucket{{{pool},le=\"+Inf\"}}"
        ));
    }
    for reason in [
        "invalid",
        "broken",
        "max_lifetime",
        "idle_timeout",
        "shutdown",
    ] {
        series.push(format!(
            "seawall_db_pool_connections_closed_total{{{pool},reason=\"{reason}\"}}"
        ));
    }
    for kind in [
        "refused",
        "timeout",
        "auth",
        "db_missing",
        "too_many_connections",
        "other",
    ] {
        series.push(format!(
            "seawall_db_pool_connection_errors_total{{{pool},kind=\"{kind}\"}}"
        ));
    }
    for state in [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
        "metrics_only",
    ] {
        series.push(format!(
            "seawall_circuit_breaker_state{{name=\"postgres\",state=\"{state}\"}}"
        ));
    }
    for name in series {
        assert!(metric(metrics, &name).is_some(), "no {name} in:\n{metrics}");
    }
    // The pool has opened a connection and timed it; the breaker's state is one-hot.
    for opened in [
        "seawall_db_pool_connections_created_total{pool=\"postgres\"}",
        "seawall_db_pool_creation_seconds_count{pool=\"postgres\"}",
        "seawall_db_pool_usage_seconds_count{pool=\"postgres\"}",
    ] {
        assert!(metric(metrics, opened).unwrap() >= 1.0, "{opened}");
    }
    let states: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("seawall_circuit_breaker_state{name=\"postgres\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(states, 1.0, "one state at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seawall_starts_while_postgres_is_down_and_recovers_on_its_own() {
    let pg = Pg::start(SCHEMA);
    pg.stop();
    let seawall = start(&pg, "");
    assert_eq!(get(&seawall.proxy_url("/health/live")).await.status, 200);
    assert_eq!(get(&seawall.proxy_url("/health/ready")).await.status, 200);
    assert_eq!(
        admin_get(&seawall, "/admin/flags").await.status,
        200,
        "everything else works"
    );
    let down = get(&seawall.proxy_url("/pets/1")).await;
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(["DB_UNAVAILABLE", "CIRCUIT_OPEN"].contains(&down.json()["error"].as_str().unwrap()));
    assert!(down.header("retry-after").is_some());
    let check = postgres_check(&seawall).await;
    assert!(
        check["status"] == "fail" || check["status"] == "warn",
        "{check}"
    );
    assert_eq!(
        get(&seawall.proxy_url("/health")).await.status,
        200,
        "a database outage does not fail seawall's health"
    );

    pg.start_again();
    let back = until_ok(&seawall, "/pets/1", Duration::from_secs(60)).await;
    assert_eq!(back.json(), json!([{"id": 1, "name": "rex"}]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while postgres_check(&seawall).await["status"] != "pass" {
        assert!(
            Instant::now() < deadline,
            "the postgres check never passed again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_traffic_opens_the_breaker_and_its_restart_closes_it() {
    let pg = Pg::start(SCHEMA);
    let seawall = start(&pg, "");
    for _ in 0..5 {
        assert_eq!(get(&seawall.proxy_url("/pets/2")).await.status, 200);
    }
    pg.stop();
    let open = until_open(&seawall, "/pets/2", &[503]).await;
    let retry_after: u64 = open.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let started = Instant::now();
    assert_error(
        &get(&seawall.proxy_url("/pets/2")).await,
        503,
        "CIRCUIT_OPEN",
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "open breakers answer at once"
    );
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            "seawall_circuit_breaker_state{name=\"postgres\",state=\"open\"}"
        ),
        Some(1.0)
    );

    pg.start_again();
    until_ok(&seawall, "/pets/2", Duration::from_secs(60)).await;
    let breaker = postgres_breaker(&seawall).await;
    let transitions = breaker["transitions"].to_string();
    assert!(
        transitions.contains("\"from\":\"half_open\",\"to\":\"closed\""),
        "{transitions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_without_failing_requests() {
    let pg = Pg::start(SCHEMA);
    let seawall = start(&pg, "");
    for _ in 0..5 {
        assert_eq!(get(&seawall.proxy_url("/pets/1")).await.status, 200);
    }
    let killed = pg.psql("postgres", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'seawall'");
    assert!(
        killed.parse::<u32>().unwrap() >= 1,
        "no seawall backend to kill"
    );
    let mut failed = 0;
    for _ in 0..10 {
        if get(&seawall.proxy_url("/pets/1")).await.status != 200 {
            failed += 1;
        }
    }
    assert!(
        failed <= 1,
        "{failed} of 10 requests failed after the backends were killed"
    );
    assert_eq!(postgres_breaker(&seawall).await["state"], "closed");
    // Each killed session was found either by validation on checkout or on its way back.
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    let closed = |reason: &str| {
        metric(
            &metrics,
            &format!(
                "seawall_db_pool_connections_closed_total{{pool=\"postgres\",reason=\"{reason}\"}}"
            ),
        )
        .expect("closed counter")
    };
    assert!(
        closed("invalid") + closed("broken") >= 1.0,
        "no killed connection was counted:\n{metrics}"
    );
    assert_eq!(closed("max_lifetime") + closed("idle_timeout"), 0.0);
}

/// research/breaker-pool.md §9 C12 and C13: a login PostgreSQL refuses is counted as `auth` and
/// opens the breaker; a role past its connection limit is counted as `too_many_connections`
/// while the connections it has go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_and_role_limits_are_counted_by_kind() {
    let setup = format!(
        "{SCHEMA} CREATE ROLE limited LOGIN CONNECTION LIMIT 2; GRANT SELECT ON pets TO limited;"
    );
    let pg = Pg::start(&setup);
    let connection_errors = |metrics: &str, kind: &str| {
        let name =
            format!("seawall_db_pool_connection_errors_total{{pool=\"postgres\",kind=\"{kind}\"}}");
        metric(metrics, &name).unwrap_or(0.0)
    };

    // A role that does not exist: SQLSTATE 28000.
    let unknown = pg.url().replace("postgres@", "nobody@");
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config_for(&unknown, ""),
        &BREAKER_ON,
    );
    until_open(&seawall, "/pets/1", &[503]).await;
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    assert!(connection_errors(&metrics, "auth") >= 1.0, "{metrics}");
    assert_eq!(connection_errors(&metrics, "too_many_connections"), 0.0);
    drop(seawall);

    // A role allowed two connections, in a pool that keeps four: the other two are refused
    // with SQLSTATE 53300, again and again, and requests are served all the same.
    let limited = pg.url().replace("postgres@", "limited@");
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config_for(&limited, "").replace("pool_min = 1", "pool_min = 4"),
        &BREAKER_ON,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = get(&seawall.admin_url("/metrics")).await.text();
        if connection_errors(&metrics, "too_many_connections") >= 1.0 {
            assert_eq!(connection_errors(&metrics, "auth"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no 53300 was counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        let reply = get(&seawall.proxy_url("/pets/1")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(postgres_breaker(&seawall).await["state"], "closed");
}

/// research/breaker-pool.md §9 C14: a database that accepts connections and never answers
/// (frozen, or a black-holed path) costs each request at most its call timeout, opens the
/// breaker, leaves everything else answering, and is recovered from once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_costs_each_call_its_timeout_and_opens_the_breaker() {
    let pg = Pg::start(SCHEMA);
    let seawall = start(&pg, "");
    for _ in 0..3 {
        assert_eq!(get(&seawall.proxy_url("/pets/1")).await.status, 200);
    }
    let frozen = pg.freeze();
    // Each call ends by its timeout (504), or by the acquire timeout while the pool's
    // connections are stuck (503), until the breaker opens.
    until_open(&seawall, "/pets/1", &[503, 504]).await;
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(get(&seawall.proxy_url(path)).await.status, 200, "{path}");
    }
    assert_eq!(admin_get(&seawall, "/admin/flags").await.status, 200);

    drop(frozen);
    let back = until_ok(&seawall, "/pets/1", Duration::from_secs(60)).await;
    assert_eq!(back.json(), json!([{"id": 1, "name": "rex"}]));
}

/// research/breaker-pool.md §9 C17: a client that hangs up during a slow statement is counted
/// once, as ignored (not as a failure of the database); the statement finishes on its own and
/// its connection goes back to the pool, in use by nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_statement_costs_the_breaker_nothing() {
    let pg = Pg::start(SCHEMA);
    let seawall = start(&pg, "");
    for _ in 0..3 {
        assert_eq!(get(&seawall.proxy_url("/pets/1")).await.status, 200);
    }
    let calls = |kind: &str| {
        format!("seawall_circuit_breaker_calls_total{{name=\"postgres\",kind=\"{kind}\"}}")
    };
    await_metric(&seawall, &calls("successful"), 3.0).await;

    // Under the statement timeout (1 s), so the statement itself succeeds.
    let hung_up = tokio::time::timeout(
        Duration::from_millis(200),
        get(&seawall.proxy_url("/sleep/0.8")),
    )
    .await;
    assert!(hung_up.is_err(), "the client gave up first");
    await_metric(&seawall, &calls("ignored"), 1.0).await;
    // The statement runs on, then ends; only then are the counts final.
    let sleeping = "SELECT count(*) FROM pg_stat_activity \
                    WHERE state = 'active' AND query LIKE '%SELECT pg_sleep(%' \
                    AND pid <> pg_backend_pid()";
    for running in ["1", "0"] {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while pg.psql("seawall", sleeping) != running {
            assert!(
                Instant::now() < deadline,
                "the statement never showed {running}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    await_metric(
        &seawall,
        "seawall_db_pool_connections{pool=\"postgres\",state=\"in_use\"}",
        0.0,
    )
    .await;
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    for (kind, expected) in [("successful", 3.0), ("failed", 0.0), ("ignored", 1.0)] {
        assert_eq!(metric(&metrics, &calls(kind)), Some(expected), "{kind}");
    }
    // The pool saw the connection held for the whole statement, past the hang-up.
    let usage = |series: &str| {
        metric(
            &metrics,
            &format!("seawall_db_pool_usage_seconds_{series}{{pool=\"postgres\"}}"),
        )
        .expect("usage histogram")
    };
    let held_under_half_a_second = metric(
        &metrics,
        "seawall_db_pool_usage_seconds_bucket{pool=\"postgres\",le=\"0.5\"}",
    )
    .expect("usage bucket");
    assert!(usage("count") - held_under_half_a_second >= 1.0);
    assert!(usage("sum") >= 0.8, "{}", usage("sum"));
    assert_eq!(get(&seawall.proxy_url("/pets/1")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_cut_and_exhaustion_is_refused_at_once() {
    let pg = Pg::start(SCHEMA);
    let seawall = Arc::new(start(&pg, "max_queue = 2"));
    let started = Instant::now();
    let slow = get(&seawall.proxy_url("/sleep/3")).await;
    assert_error(&slow, 504, "QUERY_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "statement_timeout (1 s) cut it: {:?}",
        started.elapsed()
    );
    let breaker = postgres_breaker(&seawall).await;
    assert_eq!(breaker["calls"]["failed"], 1, "{breaker}");

    let flood: Vec<_> = (0..12)
        .map(|_| {
            let seawall = seawall.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (
                    get(&seawall.proxy_url("/sleep/0.6")).await,
                    started.elapsed(),
                )
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for request in flood {
        let (reply, took) = request.await.unwrap();
        match reply.status.as_u16() {
            200 => served += 1,
            503 => {
                assert_error(&reply, 503, "DB_BUSY");
                assert!(
                    took < Duration::from_millis(1500),
                    "a refusal took {took:?}, beyond the acquire timeout"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(served + refused, 12);
    assert!(
        served >= 4 && refused >= 6,
        "{served} served, {refused} refused: 4 slots and a queue of 2"
    );
    let pools = admin_get(&seawall, "/admin/pools").await.json();
    let postgres = &pools["pools"][0];
    assert_eq!(postgres["name"], "postgres");
    assert!(postgres["rejected"].as_u64().unwrap() >= 6, "{postgres}");
    assert_eq!(postgres["waiters"], 0);
    // Refusing work the pool has no room for says nothing about the database (research C16).
    let breaker = postgres_breaker(&seawall).await;
    assert_eq!(breaker["calls"]["failed"], 1, "{breaker}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_queries_in_flight_ends_cleanly() {
    let pg = Pg::start(SCHEMA);
    let config = config(&pg, "");
    let mut seawall = Seawall::start_in(Arc::new(TempDir::new().unwrap()), &config, &BREAKER_ON);
    let url = seawall.proxy_url("/sleep/0.5");
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    // Wait until PostgreSQL runs them, so the shutdown really finds them in flight.
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while pg.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND state = 'active' AND application_name = 'seawall'") == "0" {
        assert!(Instant::now() < deadline, "the queries never started");
    }
    seawall.signal("TERM");
    for request in in_flight {
        assert_eq!(
            request.await.unwrap().status,
            200,
            "in-flight queries finish"
        );
    }
    let status = seawall.wait_exit(PROCESS_TIMEOUT);
    let logs = seawall.logs();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}
