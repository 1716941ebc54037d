//! Retention: which snapshots to keep (policies, `forget`) and reclaiming what no kept snapshot
//! needs (`prune`).

pub mod forget;
pub mod prune;

pub use crate::policy::{Count, Decision, Policy, RetentionError, Span};
