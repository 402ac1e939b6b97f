//! The Unleash client specification, run unchanged: every case of files 01-18, 21 and 22 of
//! `../shared/testdata/unleash-client-specification/`, read at test time. A missing file or an
//! empty one fails the test instead of shrinking it.

use std::path::PathBuf;

use chrono::Utc;
use seawall::flags::model::State;
use seawall::flags::{Context, FlagSet, ThreadRandom};
use serde_json::{Value, json};

/// Files 19 and 20 are Unleash's delta API, which seawall does not implement (SPEC §4).
const FILES: [&str; 20] = [
    "01-simple-examples.json",
    "02-user-with-id-strategy.json",
    "03-gradual-rollout-user-id-strategy.json",
    "04-gradual-rollout-session-id-strategy.json",
    "05-gradual-rollout-random-strategy.json",
    "06-remote-address-strategy.json",
    "07-multiple-strategies.json",
    "08-variants.json",
    "09-strategy-constraints.json",
    "10-flexible-rollout-strategy.json",
    "11-strategy-constraints-edge-cases.json",
    "12-custom-stickiness.json",
    "13-constraint-operators.json",
    "14-constraint-semver-operators.json",
    "15-global-constraints.json",
    "16-strategy-variants.json",
    "17-dependent-features.json",
    "18-utf8-flag-names.json",
    "21-regex-constraint-operators.json",
    "22-cidr-constraint-operators.json",
];

/// 223 `isEnabled` and 52 `getVariant` cases in those files (research/flags.md §2.5).
const EXPECTED_CASES: usize = 275;

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata/unleash-client-specification")
}

/// The variant as the specification writes it.
fn variant_json(set: &FlagSet, name: &str, ctx: &Context) -> Value {
    let disabled = |feature_enabled: bool| json!({"name": "disabled", "enabled": false, "feature_enabled": feature_enabled});
    let Some(eval) = set.evaluate(name, ctx, Utc::now(), &mut ThreadRandom) else {
        return disabled(false);
    };
    match (eval.enabled, eval.variant) {
        (false, _) => disabled(false),
        (true, None) => disabled(true),
        (true, Some(v)) => {
            let mut out = json!({"name": v.name, "enabled": true, "feature_enabled": true});
            if let Some(p) = v.payload {
                out["payload"] = json!({"type": p.kind, "value": p.value});
            }
            out
        }
    }
}

#[test]
fn every_client_specification_case_passes() {
    let index: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(spec_dir().join("index.json")).expect("index.json is readable"),
    )
    .unwrap();
    for file in FILES {
        assert!(
            index.iter().any(|f| f == file),
            "{file} is not in the specification's index"
        );
    }
    let mut cases = 0;
    let mut failures = Vec::new();
    for file in FILES {
        let text = std::fs::read_to_string(spec_dir().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let state: State = serde_json::from_value(doc["state"].clone())
            .unwrap_or_else(|e| panic!("{file}: state does not parse: {e}"));
        let set = FlagSet::compile(&state.features, &state.segments);
        let tests = doc["tests"].as_array().cloned().unwrap_or_default();
        let variant_tests = doc["variantTests"].as_array().cloned().unwrap_or_default();
        assert!(
            !tests.is_empty() || !variant_tests.is_empty(),
            "{file} has no cases"
        );
        for case in &tests {
            cases += 1;
            let ctx: Context = serde_json::from_value(case["context"].clone()).unwrap();
            let name = case["toggleName"].as_str().unwrap();
            let got = set.is_enabled(name, &ctx, Utc::now(), &mut ThreadRandom);
            if Value::Bool(got) != case["expectedResult"] {
                failures.push(format!(
                    "{file}: {} ({name}): expected {}, got {got}",
                    case["description"], case["expectedResult"]
                ));
            }
        }
        for case in &variant_tests {
            cases += 1;
            let ctx: Context = serde_json::from_value(case["context"].clone()).unwrap();
            let name = case["toggleName"].as_str().unwrap();
            let got = variant_json(&set, name, &ctx);
            if got != case["expectedResult"] {
                failures.push(format!(
                    "{file}: {} ({name}): expected {}, got {got}",
                    case["description"], case["expectedResult"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        cases, EXPECTED_CASES,
        "the specification files hold a different number of cases than expected"
    );
}
