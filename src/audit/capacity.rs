//! The capacity guard (research/audit.md §2.3, §6 D5): flooding the audit trail is an attack on
//! it, and a full volume stops every write. When the data volume fills past its high-water
//! mark, retention shortens the periods of what matters least, one step per check while the
//! volume keeps filling: captured bodies first, then the `access` stream's personal parts, then
//! its headers. `security`, `data_change`, `gdpr` and `system` keep their configured periods:
//! if the volume still fills, writes fail as they would without the guard (the store check
//! fails readiness, `blocking-strict` routes answer 503, proxying goes on).
//!
//! sled reuses the room that removed data leaves but does not give it back to the file
//! system, so after a step the volume's usage stays where it was. A step is therefore judged by
//! whether the volume *keeps filling* (its free space falls by more than 1% of its size since
//! the step), not by usage falling. The configured periods come back when usage falls 5 points
//! under the mark (the volume was extended, or other files removed).
//!
//! This module only judges readings and derives the shortened periods; reading the volume
//! and acting on a change (events, metrics, a retention run) is the audit trail's retention
//! task.

use std::path::Path;

use serde::Serialize;

use crate::audit::{AuditConfig, Stream};

/// The step back to the configured periods is taken this many points under the mark.
const HYSTERESIS_PERCENT: f64 = 5.0;

/// A shortened period keeps the current day only.
const SHORTENED_DAYS: u32 = 1;

/// How far the guard has shortened retention, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The configured periods.
    Normal,
    /// Captured bodies (every stream) are kept one day.
    Bodies,
    /// And the `access` stream's personal parts.
    AccessPayload,
    /// And the `access` stream's headers.
    AccessHeaders,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::Normal,
        Step::Bodies,
        Step::AccessPayload,
        Step::AccessHeaders,
    ];

    /// The step's number, as the `seawall_audit_capacity_step` gauge shows it.
    pub fn level(self) -> u8 {
        self as u8
    }

    pub fn from_level(level: u8) -> Step {
        Step::ALL[usize::from(level).min(Step::ALL.len() - 1)]
    }

    /// The step's name in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Normal => "normal",
            Step::Bodies => "bodies",
            Step::AccessPayload => "access_payload",
            Step::AccessHeaders => "access_headers",
        }
    }

    fn next(self) -> Option<Step> {
        Step::ALL.get(usize::from(self.level()) + 1).copied()
    }

    /// `config` with this step's periods shortened (never lengthened).
    pub fn apply(self, config: &AuditConfig) -> AuditConfig {
        let mut shortened = config.clone();
        if self >= Step::Bodies {
            shortened.body_days = shortened.body_days.min(SHORTENED_DAYS);
        }
        let access = shortened
            .retention
            .get_mut(&Stream::Access)
            .expect("every stream has a retention");
        if self >= Step::AccessPayload {
            access.payload_days = access.payload_days.min(SHORTENED_DAYS);
        }
        if self >= Step::AccessHeaders {
            access.header_days = access.header_days.min(SHORTENED_DAYS);
        }
        shortened
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Size and free space of the volume holding the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VolumeUsage {
    pub total_bytes: u64,
    /// Not in use, including blocks reserved for root.
    pub free_bytes: u64,
    /// What seawall, not root, can still use.
    pub available_bytes: u64,
}

impl VolumeUsage {
    /// Reads the file system's counters (`statvfs`). Blocking, but cheap.
    pub fn read(dir: &Path) -> std::io::Result<VolumeUsage> {
        let stats = fs2::statvfs(dir)?;
        Ok(VolumeUsage {
            total_bytes: stats.total_space(),
            free_bytes: stats.free_space(),
            available_bytes: stats.available_space(),
        })
    }

    /// Usage as `df` shows it: used over what is used plus what is available, so blocks
    /// reserved for root count as neither.
    pub fn used_percent(&self) -> f64 {
        let used = self.total_bytes.saturating_sub(self.free_bytes);
        let usable = used + self.available_bytes;
        if usable == 0 {
            return 0.0;
        }
        used as f64 * 100.0 / usable as f64
    }
}

/// The guard's state between checks.
#[derive(Debug)]
pub struct CapacityGuard {
    /// `None`: the guard is off.
    high_water_percent: Option<u8>,
    step: Step,
    /// Free space when the current step was taken.
    available_at_step: u64,
}

/// The configured high-water mark, or `None` when it is 100, which turns the guard (and the
/// store check's warning) off.
pub fn mark(high_water_percent: u8) -> Option<u8> {
    (high_water_percent < 100).then_some(high_water_percent)
}

impl CapacityGuard {
    /// A mark of 100 turns the guard off.
    pub fn new(high_water_percent: u8) -> CapacityGuard {
        CapacityGuard {
            high_water_percent: mark(high_water_percent),
            step: Step::Normal,
            available_at_step: 0,
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// Takes one reading; returns the new step when it changed.
    pub fn observe(&mut self, usage: VolumeUsage) -> Option<Step> {
        let mark = f64::from(self.high_water_percent?);
        let used = usage.used_percent();
        if used < mark - HYSTERESIS_PERCENT {
            if self.step == Step::Normal {
                return None;
            }
            self.step = Step::Normal;
            return Some(Step::Normal);
        }
        if used < mark {
            return None;
        }
        let filling = self.step == Step::Normal
            || usage.available_bytes + usage.total_bytes / 100 < self.available_at_step;
        if !filling {
            return None;
        }
        self.step = self.step.next()?;
        self.available_at_step = usage.available_bytes;
        Some(self.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A 100 GiB volume with `free` GiB left.
    fn free(free: f64) -> VolumeUsage {
        let free = (free * GIB as f64) as u64;
        VolumeUsage {
            total_bytes: 100 * GIB,
            free_bytes: free,
            available_bytes: free,
        }
    }

    #[test]
    fn under_the_mark_nothing_changes() {
        let mut guard = CapacityGuard::new(90);
        for reading in [free(50.0), free(10.5), free(10.01)] {
            assert_eq!(guard.observe(reading), None);
        }
        assert_eq!(guard.step(), Step::Normal);
    }

    #[test]
    fn each_check_that_finds_the_volume_still_filling_takes_the_next_step() {
        let mut guard = CapacityGuard::new(90);
        assert_eq!(guard.observe(free(9.5)), Some(Step::Bodies));
        // Within 1% of the volume since the step: the step is holding.
        assert_eq!(guard.observe(free(9.0)), None);
        assert_eq!(guard.observe(free(8.6)), None);
        assert_eq!(guard.observe(free(8.4)), Some(Step::AccessPayload));
        assert_eq!(guard.observe(free(8.0)), None);
        assert_eq!(guard.observe(free(7.3)), Some(Step::AccessHeaders));
        // The last step: nothing further to shorten.
        assert_eq!(guard.observe(free(1.0)), None);
        assert_eq!(guard.step(), Step::AccessHeaders);
    }

    #[test]
    fn the_configured_periods_return_five_points_under_the_mark() {
        let mut guard = CapacityGuard::new(90);
        guard.observe(free(9.0));
        guard.observe(free(7.0));
        assert_eq!(guard.step(), Step::AccessPayload);
        // Between the two thresholds: hold.
        assert_eq!(guard.observe(free(12.0)), None);
        assert_eq!(guard.observe(free(14.9)), None);
        assert_eq!(guard.observe(free(15.1)), Some(Step::Normal));
        assert_eq!(guard.observe(free(20.0)), None);
        // Back over the mark starts again at the first step.
        assert_eq!(guard.observe(free(9.9)), Some(Step::Bodies));
    }

    #[test]
    fn a_mark_of_100_is_off_and_an_empty_reading_is_ignored() {
        let mut off = CapacityGuard::new(100);
        assert_eq!(off.observe(free(0.0)), None);
        let mut guard = CapacityGuard::new(90);
        let nothing = VolumeUsage {
            total_bytes: 0,
            free_bytes: 0,
            available_bytes: 0,
        };
        assert_eq!(guard.observe(nothing), None);
    }

    #[test]
    fn usage_is_counted_as_df_does_leaving_out_blocks_reserved_for_root() {
        // 100 GiB, 50 used, 50 free of which 5 are reserved: df says 52.6%.
        let reserved = VolumeUsage {
            total_bytes: 100 * GIB,
            free_bytes: 50 * GIB,
            available_bytes: 45 * GIB,
        };
        assert!((reserved.used_percent() - 52.63).abs() < 0.01);
    }

    #[test]
    fn steps_shorten_bodies_then_access_payload_then_access_headers_only() {
        let config = AuditConfig::default();
        let retention = |c: &AuditConfig, s: Stream| {
            let r = c.retention[&s];
            (r.header_days, r.payload_days)
        };
        assert_eq!(
            Step::Normal.apply(&config).body_days,
            config.body_days,
            "normal keeps the configuration"
        );
        let bodies = Step::Bodies.apply(&config);
        assert_eq!(bodies.body_days, 1);
        assert_eq!(retention(&bodies, Stream::Access), (180, 30));
        let payload = Step::AccessPayload.apply(&config);
        assert_eq!(retention(&payload, Stream::Access), (180, 1));
        let headers = Step::AccessHeaders.apply(&config);
        assert_eq!(retention(&headers, Stream::Access), (1, 1));
        for stream in [
            Stream::Security,
            Stream::DataChange,
            Stream::Gdpr,
            Stream::System,
        ] {
            assert_eq!(
                retention(&headers, stream),
                retention(&config, stream),
                "{stream:?} is never shortened"
            );
        }
        assert_eq!(
            Step::from_level(Step::AccessHeaders.level()),
            Step::AccessHeaders
        );
    }
}
