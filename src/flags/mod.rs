//! Feature flags: Unleash's model and evaluation, stored in sled, bootstrapped from the
//! environment, served over OFREP and the admin API.
//!
//! - `model`: the JSON shape (Unleash feature toggles) as stored and exchanged.
//! - `compile`, `constraint`, `evaluate`, `murmur3`, `context`: the pure engine. A [`FlagSet`]
//!   is compiled once per change and evaluated per request with a context, the time and a
//!   source of randomness; it does no IO.
//!
//! HTTP handlers live outside this folder (`ofrep`, `admin_flags`); nothing here knows hyper.

pub mod bootstrap;
pub mod compile;
pub mod constraint;
pub mod context;
pub mod evaluate;
pub mod model;
pub mod murmur3;
pub mod store;
pub mod validate;

pub use compile::FlagSet;
pub use constraint::Now;
pub use context::Context;
pub use evaluate::{Evaluation, Random, Reason, ThreadRandom, VariantChoice};

#[cfg(test)]
mod tests;
