//! Engine properties beyond the Unleash vectors: rollout consistency, shares, reasons, the clock.

use chrono::Utc;
use serde_json::json;

use crate::flags::model::Flag;
use crate::flags::{Context, FlagSet, Now, Reason, ThreadRandom};

fn flag(value: serde_json::Value) -> Flag {
    serde_json::from_value(value).unwrap()
}

fn rollout(name: &str, percentage: u32) -> Flag {
    flag(json!({
        "name": name, "enabled": true,
        "strategies": [{"name": "flexibleRollout", "parameters": {"rollout": percentage.to_string(), "stickiness": "default"}}]
    }))
}

fn user(id: &str) -> Context {
    Context {
        user_id: Some(id.to_string()),
        ..Context::default()
    }
}

fn enabled_ids(percentage: u32, ids: usize) -> Vec<bool> {
    let set = FlagSet::compile(&[rollout("checkout", percentage)], &[]);
    (0..ids)
        .map(|i| {
            set.is_enabled(
                "checkout",
                &user(&format!("user-{i}")),
                Utc::now(),
                &mut ThreadRandom,
            )
        })
        .collect()
}

#[test]
fn raising_a_rollout_only_adds_users() {
    let at_10 = enabled_ids(10, 100_000);
    let at_50 = enabled_ids(50, 100_000);
    let at_100 = enabled_ids(100, 100_000);
    for i in 0..at_10.len() {
        if at_10[i] {
            assert!(
                at_50[i] && at_100[i],
                "user-{i} was on at 10% but lost the feature later"
            );
        }
        if at_50[i] {
            assert!(at_100[i]);
        }
    }
}

#[test]
fn the_enabled_share_is_within_one_point_of_the_percentage() {
    for percentage in [1, 10, 25, 50, 90] {
        let on = enabled_ids(percentage, 100_000)
            .iter()
            .filter(|e| **e)
            .count();
        let share = on as f64 / 1000.0;
        assert!(
            (share - percentage as f64).abs() <= 1.0,
            "{percentage}%: {share:.2}% of 100,000 ids enabled"
        );
    }
}

#[test]
fn different_flags_pick_independent_users() {
    let set = FlagSet::compile(&[rollout("a", 10), rollout("b", 10)], &[]);
    let both = (0..100_000)
        .filter(|i| {
            let ctx = user(&format!("user-{i}"));
            set.is_enabled("a", &ctx, Utc::now(), &mut ThreadRandom)
                && set.is_enabled("b", &ctx, Utc::now(), &mut ThreadRandom)
        })
        .count();
    // Independent 10% samples overlap on about 1%, not 10%.
    assert!(
        (500..=1500).contains(&both),
        "{both} ids in both 10% rollouts"
    );
}

#[test]
fn reasons_follow_how_the_value_was_decided() {
    let set = FlagSet::compile(
        &[
            flag(json!({"name": "static", "enabled": true, "strategies": []})),
            flag(
                json!({"name": "plain-default", "enabled": true, "strategies": [{"name": "default"}]}),
            ),
            flag(json!({"name": "off", "enabled": false, "strategies": []})),
            rollout("split", 50),
            flag(
                json!({"name": "targeted", "enabled": true, "strategies": [{"name": "userWithId", "parameters": {"userIds": "ann"}}]}),
            ),
            flag(
                json!({"name": "variants", "enabled": true, "strategies": [],
                "variants": [{"name": "a", "weight": 500}, {"name": "b", "weight": 500}]}),
            ),
        ],
        &[],
    );
    let reason = |name: &str, who: &str| {
        set.evaluate(name, &user(who), Utc::now(), &mut ThreadRandom)
            .unwrap()
            .reason
    };
    assert_eq!(reason("static", "x"), Reason::Static);
    assert_eq!(reason("plain-default", "x"), Reason::Static);
    assert_eq!(reason("off", "x"), Reason::Disabled);
    assert_eq!(reason("split", "x"), Reason::Split);
    assert_eq!(reason("targeted", "ann"), Reason::TargetingMatch);
    assert_eq!(reason("targeted", "bob"), Reason::TargetingMatch);
    assert_eq!(reason("variants", "x"), Reason::Split);
    assert!(
        set.evaluate("missing", &user("x"), Utc::now(), &mut ThreadRandom)
            .is_none()
    );
}

#[test]
fn current_time_constraints_read_the_clock_only_through_now() {
    let dated = |name: &str, operator: &str| {
        flag(json!({
            "name": name, "enabled": true,
            "strategies": [{"name": "default", "constraints": [
                {"contextName": "currentTime", "operator": operator, "value": "2020-01-01T00:00:00Z"}
            ]}]
        }))
    };
    let set = FlagSet::compile(
        &[dated("after", "DATE_AFTER"), dated("before", "DATE_BEFORE")],
        &[],
    );
    let on =
        |name: &str, ctx: &Context, now: Now| set.is_enabled(name, ctx, now, &mut ThreadRandom);
    let nobody = Context::default();
    // The system clock is read when the constraint asks for it: today is after 2020.
    assert!(on("after", &nobody, Now::System));
    assert!(!on("before", &nobody, Now::System));
    // A fixed instant is used as given.
    let in_2019 = chrono::DateTime::parse_from_rfc3339("2019-06-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert!(!on("after", &nobody, Now::At(in_2019)));
    assert!(on("before", &nobody, Now::At(in_2019)));
    // The context's own time wins over either.
    let then = Context {
        current_time: Some("2019-06-01T00:00:00Z".to_string()),
        ..Context::default()
    };
    assert!(!on("after", &then, Now::System));
    assert!(on("before", &then, Now::System));
}
