//! Flags in sled: the records, their history, segments, and the compiled snapshot that
//! requests evaluate against.
//!
//! Writes are serialised by one async mutex, applied in a single sled transaction (record and
//! history together), flushed before they return, and only then published as a new snapshot,
//! so an acknowledged change survives `kill -9` and readers never see a half-applied one.
//! Readers take the current `Arc<Snapshot>` and never wait for writers.
//!
//! Configuration precedence (SPEC §4): a flag defined by `FF_*` or `[features]` is written on
//! start while nobody changed it at runtime; once changed through the API it is `overridden`
//! and the configuration only updates the stored `configured` copy (and a warning is logged
//! when they disagree) until `reset` puts the configured definition back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::config::FlagsConfig;
use crate::flags::bootstrap::flag_from_spec;
use crate::flags::model::{Flag, Segment, State};
use crate::flags::validate::{self, FieldError, RESERVED_PREFIX};
use crate::flags::{Context, Evaluation, FlagSet, Now, ThreadRandom};
use crate::metrics::{Counter, Exposition, Family, LabelSet, Pairs};
use crate::store::{Store, StoreError, trees};

/// Where a flag came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// One of seawall's four features.
    Builtin,
    /// `FF_*` variables.
    Environment,
    /// Created through the admin API.
    Api,
    /// Created by an import.
    Import,
}

/// Bookkeeping kept with each flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagMeta {
    pub origin: Origin,
    /// Unique across all flags and all time (sled's id generator); the ETag.
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: String,
    /// Changed at runtime: the configuration no longer applies until a reset.
    pub overridden: bool,
    /// The configuration's definition, for reset and disagreement warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured: Option<Flag>,
}

/// One stored flag. `flag` is `None` for a configured flag deleted at runtime: the tombstone
/// keeps the configuration from bringing it back on the next start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub flag: Option<Flag>,
    pub meta: FlagMeta,
}

impl Record {
    /// The strong ETag of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.meta.version)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Bootstrapped,
    Created,
    Replaced,
    Patched,
    Deleted,
    Reset,
    Imported,
}

/// One change of one flag: who, when, before, after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub time: String,
    pub actor: String,
    pub action: Action,
    pub before: Option<Flag>,
    pub after: Option<Flag>,
}

/// Why a write was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("flag {0:?} does not exist")]
    NotFound(String),
    #[error("flag {0:?} already exists")]
    Exists(String),
    #[error("the flag changed since it was read (current ETag {current})")]
    Stale { current: String },
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    Reserved(String),
    #[error("flags {dependents:?} depend on {name:?}")]
    HasDependents {
        name: String,
        dependents: Vec<String>,
    },
    #[error("flag {0:?} is not defined by configuration, so there is nothing to reset it to")]
    NoConfiguration(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a request evaluates against, immutable.
pub struct Snapshot {
    pub set: FlagSet,
    pub records: BTreeMap<String, Record>,
    pub segments: BTreeMap<i64, Segment>,
    /// Each flag's evaluation counters, in the order of `set.names()`.
    counters: Vec<Arc<Outcomes>>,
}

impl Snapshot {
    /// The live flag and its record (tombstones are not live).
    pub fn live(&self, name: &str) -> Option<(&Flag, &Record)> {
        let record = self.records.get(name)?;
        record.flag.as_ref().map(|flag| (flag, record))
    }

    /// Every live flag.
    fn flags(&self) -> impl Iterator<Item = &Flag> {
        self.records.values().filter_map(|r| r.flag.as_ref())
    }

    /// The live flags that depend on `name`.
    fn dependents<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Flag> {
        self.flags()
            .filter(move |f| f.dependencies.iter().any(|d| d.feature == name))
    }

    fn build(
        records: BTreeMap<String, Record>,
        segments: BTreeMap<i64, Segment>,
        metrics: &FlagMetrics,
    ) -> Snapshot {
        let flags: Vec<Flag> = records.values().filter_map(|r| r.flag.clone()).collect();
        let segment_list: Vec<Segment> = segments.values().cloned().collect();
        let set = FlagSet::compile(&flags, &segment_list);
        let counters = set
            .names()
            .iter()
            .map(|name| metrics.outcomes.get(&FlagLabel(name.clone())))
            .collect();
        Snapshot {
            set,
            records,
            segments,
            counters,
        }
    }
}

/// The flag store. One per process.
pub struct FlagStore {
    store: Store,
    flags: sled::Tree,
    history: sled::Tree,
    segments: sled::Tree,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: tokio::sync::Mutex<()>,
    metrics: FlagMetrics,
}

/// A planned write: new records (or removals) with their history, and segment changes.
#[derive(Default)]
struct Plan {
    records: Vec<(String, Option<Record>, HistoryEntry)>,
    segments: Vec<(i64, Option<Segment>)>,
}

impl FlagStore {
    /// Loads the flags and applies the configuration. Blocking: call at startup.
    pub fn open(store: &Store, config: &FlagsConfig) -> Result<FlagStore, StoreError> {
        let flags = store.tree(trees::FLAGS)?;
        let history = store.tree(trees::FLAG_HISTORY)?;
        let segments = store.tree(trees::FLAG_SEGMENTS)?;
        let mut records = BTreeMap::new();
        for entry in flags.iter() {
            let (key, value) = entry?;
            let name = String::from_utf8_lossy(&key).into_owned();
            let record: Record = serde_json::from_slice(&value).map_err(|e| {
                StoreError::Corrupt(format!("flag record {name:?} does not parse: {e}"))
            })?;
            records.insert(name, record);
        }
        let mut segment_map = BTreeMap::new();
        for entry in segments.iter() {
            let (_, value) = entry?;
            let segment: Segment = serde_json::from_slice(&value)
                .map_err(|e| StoreError::Corrupt(format!("segment does not parse: {e}")))?;
            segment_map.insert(segment.id, segment);
        }
        let metrics = FlagMetrics::new();
        let snapshot = Snapshot::build(records, segment_map, &metrics);
        let flag_store = FlagStore {
            store: store.clone(),
            flags,
            history,
            segments,
            snapshot: RwLock::new(Arc::new(snapshot)),
            writer: tokio::sync::Mutex::new(()),
            metrics,
        };
        let plan = flag_store.bootstrap_plan(config)?;
        if !plan.records.is_empty() {
            flag_store.apply(plan)?;
        }
        Ok(flag_store)
    }

    /// The current snapshot; cheap (an `Arc` clone under a read lock).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("flag snapshot lock").clone()
    }

    /// Whether `name` is on for `ctx` now; unknown flags are off. Counted in the metrics.
    pub fn is_on(&self, name: &str, ctx: &Context) -> bool {
        // Evaluated under the read lock rather than on a clone of the `Arc`: every request
        // asks several flags from both cores, and each clone is two more contended atomics.
        let snapshot = self.snapshot.read().expect("flag snapshot lock");
        self.evaluate(&snapshot, name, ctx, Now::System)
            .is_some_and(|e| e.enabled)
    }

    /// Whether a flag exists and its kill switch is on, whoever asks: for behaviour that is not
    /// per request (background probes).
    pub fn is_switched_on(&self, name: &str) -> bool {
        self.snapshot()
            .live(name)
            .is_some_and(|(flag, _)| flag.enabled)
    }

    /// Evaluates `name` in `snapshot` for `ctx` and counts the outcome (`None`: no such flag).
    pub fn evaluate<'s>(
        &self,
        snapshot: &'s Snapshot,
        name: &str,
        ctx: &Context,
        now: impl Into<Now>,
    ) -> Option<Evaluation<'s>> {
        let Some((position, evaluation)) =
            snapshot.set.evaluate_at(name, ctx, now, &mut ThreadRandom)
        else {
            self.metrics.not_found.inc();
            return None;
        };
        let outcomes = &snapshot.counters[position];
        if evaluation.enabled {
            outcomes.enabled.inc();
        } else {
            outcomes.disabled.inc();
        }
        Some(evaluation)
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let snapshot = self.snapshot();
        out.header(
            "seawall_flag_evaluations_total",
            "counter",
            "Flag evaluations by flag and result (enabled, disabled, not_found).",
        );
        for (pairs, outcomes) in self.metrics.outcomes.snapshot() {
            let flag = pairs[0].1.as_str();
            out.sample(
                "seawall_flag_evaluations_total",
                &[("flag", flag), ("result", "enabled")],
                outcomes.enabled.get() as f64,
            );
            out.sample(
                "seawall_flag_evaluations_total",
                &[("flag", flag), ("result", "disabled")],
                outcomes.disabled.get() as f64,
            );
        }
        out.sample(
            "seawall_flag_evaluations_total",
            &[("flag", ""), ("result", "not_found")],
            self.metrics.not_found.get() as f64,
        );
        out.single(
            "seawall_flags",
            "gauge",
            "Flags currently defined.",
            snapshot.set.len() as f64,
        );
    }

    /// The change history of one flag, oldest first. Blocking but short (one prefix scan).
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let mut entries = Vec::new();
        for item in self.history.scan_prefix(&prefix) {
            let (_, value) = item?;
            let entry = serde_json::from_slice(&value)
                .map_err(|e| StoreError::Corrupt(format!("history of {name:?}: {e}")))?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Creates a new flag.
    pub async fn create(&self, flag: Flag, actor: &str) -> Result<Record, WriteError> {
        self.write(|snap, now| {
            if snap.live(&flag.name).is_some() {
                return Err(WriteError::Exists(flag.name.clone()));
            }
            if flag.name.starts_with(RESERVED_PREFIX) {
                return Err(WriteError::Reserved(format!("names starting with {RESERVED_PREFIX:?} are reserved for seawall's own features")));
            }
            check(snap, &flag)?;
            let previous = snap.records.get(&flag.name);
            let meta = match previous {
                // Re-creating a deleted configured flag: still a runtime override.
                Some(record) => FlagMeta { overridden: true, updated_at: now.clone(), updated_by: actor.to_string(), ..record.meta.clone() },
                None => new_meta(Origin::Api, now, actor),
            };
            Ok(single(&flag.name.clone(), Some(Record { flag: Some(flag), meta }), Action::Created, None, now, actor))
        })
        .await
        .map(written)
    }

    /// Replaces a flag's definition.
    pub async fn replace(
        &self,
        name: &str,
        flag: Flag,
        if_match: Option<&str>,
        actor: &str,
    ) -> Result<Record, WriteError> {
        self.write(|snap, now| {
            let (current, record) = existing(snap, name)?;
            if flag.name != name {
                return Err(WriteError::Invalid(FieldError::new(
                    "name",
                    format!(
                        "{:?} differs from the flag in the path ({name:?})",
                        flag.name
                    ),
                )));
            }
            check(snap, &flag)?;
            precondition(record, if_match)?;
            Ok(overridden(
                name,
                current,
                record,
                flag,
                Action::Replaced,
                now,
                actor,
            ))
        })
        .await
        .map(written)
    }

    /// Applies a JSON merge patch (RFC 7396) to a flag's definition.
    pub async fn patch(
        &self,
        name: &str,
        patch: &serde_json::Value,
        if_match: Option<&str>,
        actor: &str,
    ) -> Result<Record, WriteError> {
        self.write(|snap, now| {
            let (current, record) = existing(snap, name)?;
            let mut document = serde_json::to_value(current).expect("flags serialize");
            merge_patch(&mut document, patch);
            let flag: Flag = serde_path_to_error::deserialize(document).map_err(|e| {
                WriteError::Invalid(FieldError::new(e.path().to_string(), e.inner().to_string()))
            })?;
            if flag.name != name {
                return Err(WriteError::Invalid(FieldError::new(
                    "name",
                    "a flag cannot be renamed",
                )));
            }
            check(snap, &flag)?;
            precondition(record, if_match)?;
            Ok(overridden(
                name,
                current,
                record,
                flag,
                Action::Patched,
                now,
                actor,
            ))
        })
        .await
        .map(written)
    }

    /// Deletes a flag. Configured flags leave a tombstone; built-in ones cannot be deleted.
    pub async fn delete(
        &self,
        name: &str,
        if_match: Option<&str>,
        actor: &str,
    ) -> Result<(), WriteError> {
        self.write(|snap, now| {
            let (current, record) = existing(snap, name)?;
            if record.meta.origin == Origin::Builtin {
                return Err(WriteError::Reserved(format!(
                    "{name:?} is one of seawall's own features; disable it instead"
                )));
            }
            // A dependency on a flag that is gone is never met: they would be off for everyone.
            let dependents: Vec<String> = snap.dependents(name).map(|f| f.name.clone()).collect();
            if !dependents.is_empty() {
                return Err(WriteError::HasDependents {
                    name: name.to_string(),
                    dependents,
                });
            }
            precondition(record, if_match)?;
            let before = Some(current.clone());
            let remaining = record.meta.configured.as_ref().map(|_| Record {
                flag: None,
                meta: FlagMeta {
                    overridden: true,
                    updated_at: now.clone(),
                    updated_by: actor.to_string(),
                    ..record.meta.clone()
                },
            });
            Ok(single(name, remaining, Action::Deleted, before, now, actor))
        })
        .await
        .map(|_| ())
    }

    /// Puts the configured definition back and lets the configuration govern again.
    pub async fn reset(&self, name: &str, actor: &str) -> Result<Record, WriteError> {
        self.write(|snap, now| {
            let record = snap
                .records
                .get(name)
                .ok_or_else(|| WriteError::NotFound(name.to_string()))?;
            let configured = record
                .meta
                .configured
                .clone()
                .ok_or_else(|| WriteError::NoConfiguration(name.to_string()))?;
            let meta = FlagMeta {
                overridden: false,
                updated_at: now.clone(),
                updated_by: actor.to_string(),
                ..record.meta.clone()
            };
            Ok(single(
                name,
                Some(Record {
                    flag: Some(configured),
                    meta,
                }),
                Action::Reset,
                record.flag.clone(),
                now,
                actor,
            ))
        })
        .await
        .map(written)
    }

    /// Imports an Unleash state: every flag and segment is upserted, all or nothing.
    pub async fn import(&self, state: State, actor: &str) -> Result<usize, WriteError> {
        let count = state.features.len();
        self.write_plan(|snap, now| {
            let mut plan = Plan::default();
            let mut ids: HashSet<i64> = snap.segments.keys().copied().collect();
            for (i, segment) in state.segments.iter().enumerate() {
                validate::check_segment(&format!("segments[{i}]"), segment)
                    .map_err(WriteError::Invalid)?;
                ids.insert(segment.id);
                plan.segments.push((segment.id, Some(segment.clone())));
            }
            // The flags as they will be: the import over what is stored. Built once, so that
            // checking each imported flag against them stays linear.
            let mut after: HashMap<&str, &Flag> =
                snap.flags().map(|f| (f.name.as_str(), f)).collect();
            after.extend(state.features.iter().map(|f| (f.name.as_str(), f)));
            let depended_on: HashSet<&str> = after
                .values()
                .flat_map(|f| f.dependencies.iter().map(|d| d.feature.as_str()))
                .collect();
            let neighbours = validate::Neighbours {
                dependencies_of: &|name| after.get(name).map(|f| f.dependencies.len()),
                has_dependents: &|name| depended_on.contains(name),
            };
            let mut seen = HashSet::new();
            for (i, flag) in state.features.iter().enumerate() {
                let at = |e: FieldError| {
                    WriteError::Invalid(FieldError::new(
                        format!("features[{i}].{}", e.field),
                        e.message,
                    ))
                };
                if !seen.insert(flag.name.as_str()) {
                    return Err(at(FieldError::new(
                        "name",
                        format!("{:?} appears twice", flag.name),
                    )));
                }
                validate::check_flag(flag, &neighbours, &ids).map_err(at)?;
                let record = snap.records.get(&flag.name);
                if record.is_none_or(|r| r.meta.origin != Origin::Builtin)
                    && flag.name.starts_with(RESERVED_PREFIX)
                {
                    return Err(at(FieldError::new(
                        "name",
                        format!("names starting with {RESERVED_PREFIX:?} are reserved"),
                    )));
                }
                let meta = match record {
                    Some(r) => FlagMeta {
                        overridden: true,
                        updated_at: now.clone(),
                        updated_by: actor.to_string(),
                        ..r.meta.clone()
                    },
                    None => new_meta(Origin::Import, now, actor),
                };
                let before = record.and_then(|r| r.flag.clone());
                let entry = history_entry(Action::Imported, before, Some(flag.clone()), now, actor);
                plan.records.push((
                    flag.name.clone(),
                    Some(Record {
                        flag: Some(flag.clone()),
                        meta,
                    }),
                    entry,
                ));
            }
            Ok(plan)
        })
        .await?;
        Ok(count)
    }

    /// Runs a one-flag change under the writer lock; the written record, or `None` when the
    /// flag was removed.
    async fn write(
        &self,
        change: impl FnOnce(&Snapshot, &String) -> Result<Plan, WriteError>,
    ) -> Result<Option<Record>, WriteError> {
        let applied = self.write_plan(change).await?;
        Ok(applied
            .records
            .into_iter()
            .next()
            .and_then(|(_, record, _)| record))
    }

    /// Plans a change against the current snapshot, commits and flushes it on the blocking
    /// pool, then publishes the new snapshot. The writer lock keeps writes in order.
    async fn write_plan(
        &self,
        change: impl FnOnce(&Snapshot, &String) -> Result<Plan, WriteError>,
    ) -> Result<Plan, WriteError> {
        let _writer = self.writer.lock().await;
        let snapshot = self.snapshot();
        let now = crate::time::rfc3339(SystemTime::now());
        let plan = change(&snapshot, &now)?;
        let store = self.store.clone();
        let (flags, history, segments) = (
            self.flags.clone(),
            self.history.clone(),
            self.segments.clone(),
        );
        let applied = tokio::task::spawn_blocking(move || {
            let plan = assign_versions(&store, plan)?;
            commit(&store, &flags, &history, &segments, &plan)?;
            Ok::<Plan, StoreError>(plan)
        })
        .await
        .expect("flag write task does not panic")?;
        self.publish(&snapshot, &applied);
        Ok(applied)
    }

    /// Applies a plan synchronously (startup bootstrap).
    fn apply(&self, plan: Plan) -> Result<(), StoreError> {
        let plan = assign_versions(&self.store, plan)?;
        commit(
            &self.store,
            &self.flags,
            &self.history,
            &self.segments,
            &plan,
        )?;
        let snapshot = self.snapshot();
        self.publish(&snapshot, &plan);
        Ok(())
    }

    fn publish(&self, base: &Snapshot, plan: &Plan) {
        let mut records = base.records.clone();
        for (name, record, _) in &plan.records {
            match record {
                Some(record) => records.insert(name.clone(), record.clone()),
                None => records.remove(name),
            };
        }
        let mut segments = base.segments.clone();
        for (id, segment) in &plan.segments {
            match segment {
                Some(segment) => segments.insert(*id, segment.clone()),
                None => segments.remove(id),
            };
        }
        *self.snapshot.write().expect("flag snapshot lock") =
            Arc::new(Snapshot::build(records, segments, &self.metrics));
    }

    fn bootstrap_plan(&self, config: &FlagsConfig) -> Result<Plan, StoreError> {
        let snapshot = self.snapshot();
        let now = crate::time::rfc3339(SystemTime::now());
        let mut plan = Plan::default();
        let specs = config
            .builtin
            .iter()
            .map(|s| (s, Origin::Builtin))
            .chain(config.environment.iter().map(|s| (s, Origin::Environment)));
        for (spec, origin) in specs {
            let configured = flag_from_spec(spec);
            let entry = |before: Option<Flag>| {
                history_entry(
                    Action::Bootstrapped,
                    before,
                    Some(configured.clone()),
                    &now,
                    "configuration",
                )
            };
            match snapshot.records.get(&spec.name) {
                None => {
                    let meta = FlagMeta {
                        configured: Some(configured.clone()),
                        ..new_meta(origin, &now, "configuration")
                    };
                    let record = Record {
                        flag: Some(configured.clone()),
                        meta,
                    };
                    plan.records
                        .push((spec.name.clone(), Some(record), entry(None)));
                }
                Some(record) if !record.meta.overridden => {
                    if record.flag.as_ref() != Some(&configured) {
                        tracing::info!(flag = %spec.name, source = %spec.source, "flag updated from configuration");
                        let meta = FlagMeta {
                            configured: Some(configured.clone()),
                            updated_at: now.clone(),
                            updated_by: "configuration".to_string(),
                            ..record.meta.clone()
                        };
                        plan.records.push((
                            spec.name.clone(),
                            Some(Record {
                                flag: Some(configured.clone()),
                                meta,
                            }),
                            entry(record.flag.clone()),
                        ));
                    }
                }
                Some(record) => {
                    if record.flag.as_ref() != Some(&configured) {
                        tracing::warn!(
                            flag = %spec.name,
                            source = %spec.source,
                            "flag was changed at runtime and differs from its configuration; the runtime definition stays until POST /admin/flags/{}/reset",
                            spec.name
                        );
                    }
                    if record.meta.configured.as_ref() != Some(&configured) {
                        let meta = FlagMeta {
                            configured: Some(configured.clone()),
                            ..record.meta.clone()
                        };
                        let mut unchanged = entry(record.flag.clone());
                        unchanged.after = record.flag.clone();
                        plan.records.push((
                            spec.name.clone(),
                            Some(Record {
                                flag: record.flag.clone(),
                                meta,
                            }),
                            unchanged,
                        ));
                    }
                }
            }
        }
        Ok(plan)
    }
}

/// Versions come from sled's crash-safe id generator, so an ETag never repeats, even after a
/// flag is deleted and created again.
fn assign_versions(store: &Store, mut plan: Plan) -> Result<Plan, StoreError> {
    for (_, record, entry) in &mut plan.records {
        let version = store.generate_id()? + 1;
        entry.version = version;
        if let Some(record) = record {
            record.meta.version = version;
        }
    }
    Ok(plan)
}

fn commit(
    store: &Store,
    flags: &sled::Tree,
    history: &sled::Tree,
    segments: &sled::Tree,
    plan: &Plan,
) -> Result<(), StoreError> {
    /// One record write with its history entry, encoded outside the transaction closure
    /// (which sled may run more than once).
    struct Encoded {
        name: Vec<u8>,
        record: Option<Vec<u8>>,
        history_key: Vec<u8>,
        history: Vec<u8>,
    }
    let encoded: Vec<Encoded> = plan
        .records
        .iter()
        .map(|(name, record, entry)| {
            let mut history_key = name.as_bytes().to_vec();
            history_key.push(0);
            history_key.extend_from_slice(&entry.version.to_be_bytes());
            Encoded {
                name: name.as_bytes().to_vec(),
                record: record
                    .as_ref()
                    .map(|r| serde_json::to_vec(r).expect("records serialize")),
                history_key,
                history: serde_json::to_vec(entry).expect("history serializes"),
            }
        })
        .collect();
    let segment_values: Vec<(i64, Option<Vec<u8>>)> = plan
        .segments
        .iter()
        .map(|(id, s)| {
            (
                *id,
                s.as_ref()
                    .map(|s| serde_json::to_vec(s).expect("segments serialize")),
            )
        })
        .collect();
    let _writing = store.writing();
    (flags, history, segments)
        .transaction(|(flags, history, segments)| {
            for write in &encoded {
                match &write.record {
                    Some(value) => flags.insert(write.name.as_slice(), value.as_slice())?,
                    None => flags.remove(write.name.as_slice())?,
                };
                history.insert(write.history_key.as_slice(), write.history.as_slice())?;
            }
            for (id, value) in &segment_values {
                match value {
                    Some(value) => segments.insert(&id.to_be_bytes(), value.as_slice())?,
                    None => segments.remove(&id.to_be_bytes())?,
                };
            }
            Ok(())
        })
        .map_err(|e: sled::transaction::TransactionError<()>| match e {
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
            sled::transaction::TransactionError::Abort(()) => {
                StoreError::Corrupt("flag transaction aborted".into())
            }
        })?;
    store.flush()?;
    Ok(())
}

/// The live flag `name` and its record.
fn existing<'s>(snap: &'s Snapshot, name: &str) -> Result<(&'s Flag, &'s Record), WriteError> {
    snap.live(name)
        .ok_or_else(|| WriteError::NotFound(name.to_string()))
}

/// The `If-Match` precondition. Judged after the change itself has been validated, so that a
/// change that could never apply is answered 400 rather than 412 (RFC 9110 §13.2.1 leaves the
/// order to the server once the content is processed).
fn precondition(record: &Record, if_match: Option<&str>) -> Result<(), WriteError> {
    match if_match {
        Some(expected)
            if expected.trim() != "*"
                && !expected.split(',').any(|tag| tag.trim() == record.etag()) =>
        {
            Err(WriteError::Stale {
                current: record.etag(),
            })
        }
        _ => Ok(()),
    }
}

/// Validates a flag against the snapshot it is about to join (its dependencies and segments
/// must exist, dependencies one level deep).
fn check(snap: &Snapshot, flag: &Flag) -> Result<(), WriteError> {
    let ids: HashSet<i64> = snap.segments.keys().copied().collect();
    let neighbours = validate::Neighbours {
        dependencies_of: &|name| match name == flag.name {
            true => Some(flag.dependencies.len()),
            false => snap.live(name).map(|(f, _)| f.dependencies.len()),
        },
        has_dependents: &|name| snap.dependents(name).any(|f| f.name != flag.name),
    };
    validate::check_flag(flag, &neighbours, &ids).map_err(WriteError::Invalid)
}

/// The record a create, replace, patch or reset wrote (they always write one).
fn written(record: Option<Record>) -> Record {
    record.expect("this change writes a record")
}

fn new_meta(origin: Origin, now: &str, actor: &str) -> FlagMeta {
    FlagMeta {
        origin,
        version: 0,
        created_at: now.to_string(),
        updated_at: now.to_string(),
        updated_by: actor.to_string(),
        overridden: false,
        configured: None,
    }
}

fn history_entry(
    action: Action,
    before: Option<Flag>,
    after: Option<Flag>,
    now: &str,
    actor: &str,
) -> HistoryEntry {
    HistoryEntry {
        version: 0,
        time: now.to_string(),
        actor: actor.to_string(),
        action,
        before,
        after,
    }
}

/// A new definition for an existing flag, marked as overriding its configured one.
fn overridden(
    name: &str,
    current: &Flag,
    record: &Record,
    flag: Flag,
    action: Action,
    now: &str,
    actor: &str,
) -> Plan {
    let meta = FlagMeta {
        overridden: true,
        updated_at: now.to_string(),
        updated_by: actor.to_string(),
        ..record.meta.clone()
    };
    let record = Record {
        flag: Some(flag),
        meta,
    };
    single(
        name,
        Some(record),
        action,
        Some(current.clone()),
        now,
        actor,
    )
}

fn single(
    name: &str,
    record: Option<Record>,
    action: Action,
    before: Option<Flag>,
    now: &str,
    actor: &str,
) -> Plan {
    let after = record.as_ref().and_then(|r| r.flag.clone());
    Plan {
        records: vec![(
            name.to_string(),
            record,
            history_entry(action, before, after, now, actor),
        )],
        segments: Vec::new(),
    }
}

/// RFC 7396: objects merge recursively, `null` removes, anything else replaces.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(
                target.entry(key.clone()).or_insert(serde_json::Value::Null),
                value,
            );
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct FlagLabel(String);

impl LabelSet for FlagLabel {
    fn pairs(&self) -> Pairs {
        vec![("flag", self.0.clone())]
    }
}

#[derive(Default)]
struct Outcomes {
    enabled: Counter,
    disabled: Counter,
}

struct FlagMetrics {
    outcomes: Family<FlagLabel, Outcomes>,
    not_found: Counter,
}

impl FlagMetrics {
    fn new() -> FlagMetrics {
        FlagMetrics {
            outcomes: Family::new(Outcomes::default),
            not_found: Counter::default(),
        }
    }
}

#[cfg(test)]
mod tests;
