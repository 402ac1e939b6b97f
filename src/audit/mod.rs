//! The audit trail.

pub mod detect;
pub mod redact;
