//! `seawall audit witness` against a live seawall: it takes the digests, extends them run by run,
//! and catches a trail started anew with the machine's own key after the store was wiped,
//! which the machine's own verification cannot see. The Python verifier written from
//! docs/audit-format.md (`tests/verify_audit.py --witness`) runs beside it on the same
//! machine and must reach the same verdict each time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tempfile::TempDir;

use crate::audit::config;
use crate::backend::Backend;
use crate::support::{
    ADMIN_TOKEN, PROCESS_TIMEOUT, Seawall, admin_get, free_port, get, metric, python_check,
};

/// The witness machine: a token file and a state file of its own.
pub(crate) struct Witness {
    dir: TempDir,
    pubkey: String,
}

impl Witness {
    /// A witness of `seawall`, pinned to its digest key.
    pub(crate) async fn of(seawall: &Seawall) -> Witness {
        let pubkey = admin_get(seawall, "/admin/audit/pubkey").await.json()["public_key"]
            .as_str()
            .unwrap()
            .to_string();
        Witness {
            dir: TempDir::new().unwrap(),
            pubkey,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("witness.json")
    }

    pub(crate) fn metrics_file(&self) -> PathBuf {
        self.dir.path().join("witness.prom")
    }

    /// `seawall_audit_witness_broken` as the last run that checked wrote it.
    fn broken_metric(&self, url: &str) -> Option<f64> {
        let text = std::fs::read_to_string(self.metrics_file()).ok()?;
        metric(
            &text,
            &format!("seawall_audit_witness_broken{{target=\"{url}\"}}"),
        )
    }

    /// Runs the independent Python witness, with a state of its own, on the feed it asks for;
    /// whether it passed, and its report.
    async fn run_python(&self, seawall: &Seawall) -> (bool, String) {
        let state = self.dir.path().join("python-witness.json");
        let held: Value = std::fs::read(&state)
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
            .unwrap_or(Value::Null);
        let mut streams = serde_json::Map::new();
        for stream in ["security", "access", "data_change", "gdpr", "system"] {
            let since = held[stream]["number"].as_u64().unwrap_or(0);
            let feed = admin_get(
                seawall,
                &format!("/admin/audit/digests?stream={stream}&since={since}"),
            )
            .await
            .json();
            streams.insert(stream.to_string(), feed);
        }
        let input = serde_json::json!({"public_key": self.pubkey, "streams": streams});
        let args = [std::ffi::OsStr::new("--witness"), state.as_os_str()];
        python_check("verify_audit.py", &args, &input.to_string())
    }

    /// Runs the witness against `url`; its exit code and its report (or stderr).
    pub(crate) async fn run(&self, url: &str) -> (Option<i32>, Value, String) {
        let token = self.dir.path().join("token");
        std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seawall"));
        command
            .args(["audit", "witness", "--url", url, "--pubkey", &self.pubkey])
            .arg("--token-file")
            .arg(&token)
            .arg("--state")
            .arg(self.state())
            .arg("--metrics-file")
            .arg(self.metrics_file());
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), report, stderr)
    }
}

/// Sends audited requests until the access stream has at least `digests` digests (the writer
/// signs one once a group commit reaches `digest_every` events).
async fn traffic(seawall: &Seawall, digests: usize) {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    for i in 0.. {
        let url = seawall.proxy_url(&format!("/api/status/200?i={i}"));
        assert_eq!(get(&url).await.status, 200);
        let feed = admin_get(seawall, "/admin/audit/digests?stream=access")
            .await
            .json();
        if feed["digests"].as_array().unwrap().len() >= digests {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {digests} digests: {feed}"
        );
    }
}

fn access(report: &Value) -> &Value {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "access")
        .unwrap()
}

fn state_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_extends_its_digests_and_catches_a_trail_started_anew() {
    let backend = Backend::start().await;
    let dir = Arc::new(TempDir::new().unwrap());
    let configuration = config(&backend, "\n[audit]\ndigest_every = 3\n");
    let mut seawall = Seawall::start_in(dir.clone(), &configuration, &[]);
    let witness = Witness::of(&seawall).await;

    traffic(&seawall, 2).await;
    let (code, first, stderr) = witness.run(&seawall.admin_url("")).await;
    assert_eq!(code, Some(0), "{first} {stderr}");
    assert_eq!(first["ok"], true);
    let held = access(&first)["newest"].as_u64().unwrap();
    assert!(held >= 1, "{first}");
    assert_eq!(access(&first)["held"], Value::Null);
    assert_eq!(witness.broken_metric(&seawall.admin_url("")), Some(0.0));
    let (passed, python) = witness.run_python(&seawall).await;
    assert!(passed, "{python}");
    assert!(
        python.contains(&format!("access: held -, newest {held}")),
        "{python}"
    );

    traffic(&seawall, (held + 2) as usize).await;
    let (code, second, stderr) = witness.run(&seawall.admin_url("")).await;
    assert_eq!(code, Some(0), "{second} {stderr}");
    assert_eq!(access(&second)["held"], held);
    assert!(
        access(&second)["newest"].as_u64().unwrap() > held,
        "{second}"
    );
    assert!(access(&second)["new"].as_u64().unwrap() >= 1, "{second}");
    let (passed, python) = witness.run_python(&seawall).await;
    assert!(passed, "{python}");
    let newest = access(&second)["newest"].as_u64().unwrap();
    assert!(
        python.contains(&format!("access: held {held}, newest {newest}")),
        "{python}"
    );

    // Whoever holds the machine wipes the store and starts a new trail; the signing key is
    // the same, so the machine's own verification passes.
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    std::fs::remove_dir_all(seawall.data_dir().join("store")).unwrap();
    let seawall = Seawall::start_in(dir.clone(), &configuration, &[]);
    traffic(&seawall, 1).await;
    let verified = admin_get(&seawall, "/admin/audit/verify").await.json();
    assert_eq!(verified["ok"], true, "{verified}");
    // The machine's own watermark notices a wipe done by hand (not one done by whoever can
    // also edit that file: that is the witness's job).
    let metrics = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(
        metric(&metrics, "seawall_audit_store_rolled_back"),
        Some(1.0)
    );
    let kept = state_bytes(&witness.state());
    let (code, caught, stderr) = witness.run(&seawall.admin_url("")).await;
    assert_eq!(code, Some(1), "{caught} {stderr}");
    assert_eq!(caught["ok"], false);
    assert_eq!(witness.broken_metric(&seawall.admin_url("")), Some(1.0));
    let kind = caught["broken"]["kind"].as_str().unwrap();
    assert!(kind == "missing" || kind == "rewritten", "{caught}");
    assert_eq!(
        state_bytes(&witness.state()),
        kept,
        "a failed run keeps the state"
    );
    let (passed, python) = witness.run_python(&seawall).await;
    assert!(!passed, "{python}");
    assert!(
        python.contains(&format!("break: access {kind} digest ")),
        "{python}"
    );

    // Nothing listening: the feed could not be checked at all.
    let (code, _, stderr) = witness
        .run(&format!("http://127.0.0.1:{}", free_port()))
        .await;
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("audit witness"), "{stderr}");
    assert_eq!(state_bytes(&witness.state()), kept);
    // A run that could not check leaves the metrics as they were: the break stays visible,
    // and the last-check time ages until SeawallAuditWitnessStale fires.
    assert_eq!(witness.broken_metric(&seawall.admin_url("")), Some(1.0));

    // A state file that is not a witness state is refused as such, and left alone.
    std::fs::write(witness.state(), "not a witness state").unwrap();
    let (code, _, stderr) = witness.run(&seawall.admin_url("")).await;
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("is not a witness state"), "{stderr}");
    assert_eq!(state_bytes(&witness.state()), b"not a witness state");
}
