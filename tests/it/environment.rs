//! The test set-up itself: the real dependencies `tests/run` provides are there and answer.

use crate::support::{get, required_env};

#[tokio::test]
async fn postgres_and_chroma_are_running() {
    let chroma = required_env("SEAWALL_TEST_CHROMA_URL");
    let heartbeat = get(&format!("{chroma}/api/v2/heartbeat")).await;
    assert_eq!(
        heartbeat.status,
        200,
        "ChromaDB heartbeat: {}",
        heartbeat.text()
    );
    assert!(heartbeat.json()["nanosecond heartbeat"].is_u64());

    let url = required_env("SEAWALL_TEST_DATABASE_URL");
    let addr = url
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await;
    assert!(
        stream.is_ok(),
        "PostgreSQL at {addr} refuses connections: {stream:?}"
    );
    let psql = std::path::Path::new(&required_env("SEAWALL_TEST_PG_BIN")).join("psql");
    let out = std::process::Command::new(psql)
        .args([url.as_str(), "-tAc", "SELECT 40 + 2"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
