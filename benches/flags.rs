//! Flag evaluation: one flag with three strategies and constraints, and a bulk evaluation of
//! 100 flags for one context (what an OFREP bulk request does, minus HTTP and JSON).

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use seawall::flags::model::Flag;
use seawall::flags::{Context, FlagSet, ThreadRandom};
use serde_json::json;

/// A realistic flag: an allowlist, a constrained rollout, and an office-network rule.
fn three_strategy_flag(name: &str) -> Flag {
    serde_json::from_value(json!({
        "name": name,
        "enabled": true,
        "strategies": [
            {"name": "userWithId", "parameters": {"userIds": "alice,bob,carol"}},
            {"name": "flexibleRollout", "parameters": {"rollout": "30", "stickiness": "default", "groupId": name},
             "constraints": [
                {"contextName": "environment", "operator": "IN", "values": ["production", "staging"]},
                {"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "2.3.0"},
                {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@example.com"], "caseInsensitive": true}
             ]},
            {"name": "remoteAddress", "parameters": {"IPs": "10.0.0.0/8,192.168.1.0/24"}}
        ],
        "variants": [
            {"name": "a", "weight": 500, "payload": {"type": "string", "value": "A"}},
            {"name": "b", "weight": 500, "payload": {"type": "string", "value": "B"}}
        ]
    }))
    .expect("valid flag")
}

fn context() -> Context {
    let mut ctx = Context {
        user_id: Some("user-4711".into()),
        environment: Some("production".into()),
        remote_address: Some("203.0.113.9".into()),
        ..Context::default()
    };
    ctx.properties.insert("appVersion".into(), "2.4.1".into());
    ctx.properties
        .insert("email".into(), "Someone@Example.com".into());
    ctx
}

fn bench(c: &mut Criterion) {
    let one = FlagSet::compile(&[three_strategy_flag("checkout")], &[]);
    let ctx = context();
    c.bench_function(
        "evaluate one flag (3 strategies, constraints, variants)",
        |b| {
            b.iter(|| {
                black_box(one.evaluate(black_box("checkout"), &ctx, Utc::now(), &mut ThreadRandom))
                    .map(|e| e.enabled)
            })
        },
    );

    let flags: Vec<Flag> = (0..100)
        .map(|i| three_strategy_flag(&format!("flag-{i:03}")))
        .collect();
    let hundred = FlagSet::compile(&flags, &[]);
    c.bench_function("evaluate 100 flags for one context", |b| {
        b.iter(|| {
            let now = Utc::now();
            let on = hundred
                .names()
                .iter()
                .filter(|name| {
                    hundred
                        .evaluate(name, &ctx, now, &mut ThreadRandom)
                        .is_some_and(|e| e.enabled)
                })
                .count();
            black_box(on)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
