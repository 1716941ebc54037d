//! Retention: which snapshots to keep (policies, `forget`) and reclaiming what no kept snapshot
//! needs (`prune`).

pub mod forget;
mod policy;
pub mod prune;

pub use policy::{Count, Decision, Policy, RetentionError, Span};
