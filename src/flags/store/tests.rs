use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::config::{Config, MapEnv, StoreConfig};

fn config(pairs: &[(&str, &str)]) -> FlagsConfig {
    let env: MapEnv = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_toml("", &env).unwrap().flags
}

fn open(dir: &TempDir, pairs: &[(&str, &str)]) -> FlagStore {
    let store_config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: 8 << 20,
    };
    let store = Store::open_when_free(&store_config, std::time::Duration::from_secs(30)).unwrap();
    FlagStore::open(&store, &config(pairs)).unwrap()
}

fn flag(value: serde_json::Value) -> Flag {
    serde_json::from_value(value).unwrap()
}

fn rollout_of(store: &FlagStore, name: &str) -> Option<String> {
    let snap = store.snapshot();
    let (flag, _) = snap.live(name)?;
    flag.strategies
        .iter()
        .find_map(|s| s.parameters.get("rollout").cloned())
}

const ENV: [(&str, &str); 2] = [
    ("FF_NEW_CHECKOUT", "true"),
    ("FF_NEW_CHECKOUT_PERCENTAGE", "25"),
];

#[tokio::test]
async fn configuration_creates_then_runtime_wins_until_reset() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir, &ENV);
        assert_eq!(rollout_of(&store, "new-checkout").as_deref(), Some("25"));
        assert!(
            store.snapshot().live("seawall.audit-trail").is_some(),
            "built-in features always exist"
        );
        store
            .patch("new-checkout", &json!({"enabled": false}), None, "ann")
            .await
            .unwrap();
    }
    {
        let store = open(&dir, &ENV);
        let snap = store.snapshot();
        let (flag, record) = snap.live("new-checkout").unwrap();
        assert!(
            !flag.enabled,
            "the runtime change survives a restart with the same environment"
        );
        assert!(record.meta.overridden);
        let reset = store.reset("new-checkout", "ann").await.unwrap();
        assert!(reset.flag.unwrap().enabled);
        assert!(!reset.meta.overridden);
    }
    let store = open(
        &dir,
        &[
            ("FF_NEW_CHECKOUT", "true"),
            ("FF_NEW_CHECKOUT_PERCENTAGE", "50"),
        ],
    );
    assert_eq!(
        rollout_of(&store, "new-checkout").as_deref(),
        Some("50"),
        "without an override the environment applies"
    );
    let actions: Vec<Action> = store
        .history("new-checkout")
        .unwrap()
        .iter()
        .map(|h| h.action)
        .collect();
    assert_eq!(
        actions,
        [
            Action::Bootstrapped,
            Action::Patched,
            Action::Reset,
            Action::Bootstrapped
        ]
    );
}

#[tokio::test]
async fn deleted_configured_flags_stay_deleted_until_reset() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir, &ENV);
        store.delete("new-checkout", None, "ann").await.unwrap();
        assert!(store.snapshot().live("new-checkout").is_none());
        assert!(matches!(
            store.delete("seawall.audit-trail", None, "ann").await,
            Err(WriteError::Reserved(_))
        ));
    }
    let store = open(&dir, &ENV);
    assert!(
        store.snapshot().live("new-checkout").is_none(),
        "a restart does not bring it back"
    );
    store.reset("new-checkout", "ann").await.unwrap();
    assert!(store.snapshot().live("new-checkout").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_others_depend_on_is_kept_until_they_no_longer_do() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, &[]);
    let parent = flag(json!({"name": "parent", "enabled": true}));
    let child = json!({"name": "child", "enabled": true, "dependencies": [{"feature": "parent"}]});
    store.create(parent, "ann").await.unwrap();
    store.create(flag(child), "ann").await.unwrap();
    // Dependencies are one level deep: neither a grandchild nor a parent with a parent.
    let grandchild =
        json!({"name": "grandchild", "enabled": true, "dependencies": [{"feature": "child"}]});
    assert!(matches!(
        store.create(flag(grandchild), "ann").await,
        Err(WriteError::Invalid(e)) if e.field == "dependencies[0].feature"
    ));
    store
        .create(flag(json!({"name": "other", "enabled": true})), "ann")
        .await
        .unwrap();
    let parent_with_parent =
        json!({"name": "parent", "enabled": true, "dependencies": [{"feature": "other"}]});
    assert!(matches!(
        store.replace("parent", flag(parent_with_parent), None, "ann").await,
        Err(WriteError::Invalid(e)) if e.field == "dependencies"
    ));
    match store.delete("parent", None, "ann").await {
        Err(WriteError::HasDependents { dependents, .. }) => assert_eq!(dependents, ["child"]),
        other => panic!("expected HasDependents, got {other:?}"),
    }
    assert!(store.snapshot().live("parent").is_some(), "nothing changed");
    store.delete("child", None, "ann").await.unwrap();
    store.delete("parent", None, "ann").await.unwrap();
    assert!(store.snapshot().live("parent").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_with_one_etag_let_exactly_one_win() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(&dir, &[]));
    let created = store
        .create(flag(json!({"name": "race", "enabled": true})), "ann")
        .await
        .unwrap();
    let etag = created.etag();
    let attempt = |enabled: bool| {
        let store = store.clone();
        let etag = etag.clone();
        tokio::spawn(async move {
            let next = flag(json!({"name": "race", "enabled": enabled}));
            store.replace("race", next, Some(&etag), "someone").await
        })
    };
    let (a, b) = (attempt(false), attempt(true));
    let results = [a.await.unwrap(), b.await.unwrap()];
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let stale = results
        .iter()
        .filter(|r| matches!(r, Err(WriteError::Stale { .. })))
        .count();
    assert_eq!((wins, stale), (1, 1));
}

#[tokio::test]
async fn invalid_changes_leave_the_flag_unchanged() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, &[]);
    let created = store
        .create(flag(json!({"name": "f", "enabled": true})), "ann")
        .await
        .unwrap();
    let bad = json!({"strategies": [{"name": "default", "constraints": [{"contextName": "x", "operator": "REGEX", "value": "(("}]}]});
    let Err(WriteError::Invalid(e)) = store.patch("f", &bad, None, "ann").await else {
        panic!("refused")
    };
    assert_eq!(e.field, "strategies[0].constraints[0].value");
    let Err(WriteError::Invalid(e)) = store
        .patch("f", &json!({"enabled": "yes"}), None, "ann")
        .await
    else {
        panic!("refused")
    };
    assert_eq!(e.field, "enabled");
    let snap = store.snapshot();
    let (_, record) = snap.live("f").unwrap();
    assert_eq!(record, &created, "nothing was written");
    assert!(matches!(
        store
            .create(flag(json!({"name": "seawall.x", "enabled": true})), "ann")
            .await,
        Err(WriteError::Reserved(_))
    ));
    assert!(matches!(
        store
            .create(flag(json!({"name": "f", "enabled": true})), "ann")
            .await,
        Err(WriteError::Exists(_))
    ));
}

#[tokio::test]
async fn imports_are_all_or_nothing() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, &[]);
    let state: State = serde_json::from_value(json!({
        "version": 1,
        "features": [{"name": "a", "enabled": true, "strategies": [{"name": "default", "segments": [7]}]},
                     {"name": "b", "enabled": true, "dependencies": [{"feature": "a"}]}],
        "segments": [{"id": 7, "constraints": [{"contextName": "environment", "operator": "IN", "values": ["prod"]}]}]
    }))
    .unwrap();
    assert_eq!(store.import(state, "ann").await.unwrap(), 2);
    assert!(store.snapshot().live("b").is_some());
    let broken: State = serde_json::from_value(json!({
        "features": [{"name": "c", "enabled": true}, {"name": "d", "enabled": true, "strategies": [{"name": "nope"}]}]
    }))
    .unwrap();
    let Err(WriteError::Invalid(e)) = store.import(broken, "ann").await else {
        panic!("refused")
    };
    assert_eq!(e.field, "features[1].strategies[0].name");
    assert!(
        store.snapshot().live("c").is_none(),
        "no flag of a refused import is written"
    );
    // Judged against the store as the import leaves it: `b` (stored) depends on `a`, so an
    // imported `a` cannot depend on anything.
    let deeper: State = serde_json::from_value(json!({
        "features": [{"name": "e", "enabled": true},
                     {"name": "a", "enabled": true, "dependencies": [{"feature": "e"}]}]
    }))
    .unwrap();
    let Err(WriteError::Invalid(e)) = store.import(deeper, "ann").await else {
        panic!("refused")
    };
    assert_eq!(e.field, "features[1].dependencies");
}

#[tokio::test]
async fn each_evaluation_counts_under_its_own_flag_and_result() {
    let dir = TempDir::new().unwrap();
    let store = open(
        &dir,
        &[
            ("FF_ALPHA", "true"),
            ("FF_BETA", "false"),
            ("FF_ZULU", "true"),
        ],
    );
    let ctx = Context::default();
    let asked = [
        "zulu",
        "alpha",
        "beta",
        "zulu",
        "no-such-flag",
        "zulu",
        "seawall.audit-trail",
    ];
    for name in asked {
        store.is_on(name, &ctx);
    }
    let snapshot = store.snapshot();
    assert!(
        store
            .evaluate(&snapshot, "missing", &ctx, Now::System)
            .is_none()
    );
    let mut out = Exposition::new();
    store.render_metrics(&mut out);
    let text = out.finish();
    let count = |flag: &str, result: &str| -> f64 {
        let series =
            format!("seawall_flag_evaluations_total{{flag=\"{flag}\",result=\"{result}\"}}");
        crate::metrics::sample_value(&text, &series)
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    assert_eq!(count("alpha", "enabled"), 1.0);
    assert_eq!(count("beta", "disabled"), 1.0);
    assert_eq!(count("beta", "enabled"), 0.0);
    assert_eq!(count("zulu", "enabled"), 3.0);
    assert_eq!(count("", "not_found"), 2.0);
    let audit = count("seawall.audit-trail", "enabled") + count("seawall.audit-trail", "disabled");
    assert_eq!(audit, 1.0);
}
