//! Admin authentication: bearer token, constant-time compared; 401 otherwise.

use bytes::Bytes;
use http::Method;

use crate::support::{ADMIN_TOKEN, Seawall, admin_get, assert_error, full, get, send};

#[tokio::test]
async fn admin_requests_need_the_right_token() {
    let seawall = Seawall::start("");
    let url = seawall.admin_url("/admin/stats");
    let missing = get(&url).await;
    assert_error(&missing, 401, "UNAUTHORIZED");
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let wrong = send(
        Method::GET,
        &url,
        &[("authorization", "Bearer not-the-token")],
        full(Bytes::new()),
    )
    .await;
    assert_error(&wrong, 401, "UNAUTHORIZED");
    let basic = send(
        Method::GET,
        &url,
        &[("authorization", &format!("Basic {ADMIN_TOKEN}"))],
        full(Bytes::new()),
    )
    .await;
    assert_error(&basic, 401, "UNAUTHORIZED");
    assert_eq!(admin_get(&seawall, "/admin/stats").await.status, 200);
    // Unknown admin paths are hidden behind the token too.
    assert_error(
        &get(&seawall.admin_url("/admin/nothing-here")).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &admin_get(&seawall, "/admin/nothing-here").await,
        404,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn effective_config_masks_the_token() {
    let seawall = Seawall::start("");
    let reply = admin_get(&seawall, "/admin/config").await;
    assert_eq!(reply.status, 200);
    assert!(!reply.text().contains(ADMIN_TOKEN));
    assert_eq!(reply.json()["admin"]["token"], "********");
}

#[tokio::test]
async fn a_generated_token_is_stored_private_and_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::sync::Arc::new(tempfile::TempDir::new().unwrap());
    // An empty SEAWALL_ADMIN_TOKEN counts as unset, so seawall generates one.
    let seawall = Seawall::start_in(dir, "", &[("SEAWALL_ADMIN_TOKEN", "")]);
    let path = seawall.data_dir().join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&path).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let ok = send(
        Method::GET,
        &seawall.admin_url("/admin/stats"),
        &[("authorization", &auth)],
        full(Bytes::new()),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(
        !seawall.logs().contains(token.trim()),
        "the token itself is never logged"
    );
}
