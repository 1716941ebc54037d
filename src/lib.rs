//! gitvault: encrypted, deduplicating, replicated backups of git hosting accounts.
//!
//! The library is the product; `src/main.rs` is one client of it. Parts (see docs/ARCHITECTURE.md):
//! `vault` opens a vault and is the one place that knows its layout; `crypto` holds keys and
//! age encryption; `store` chunks, packs and reads data; `index` is the SQLite cache;
//! `target` is where packs are kept.

pub mod backup;
pub mod crypto;
pub mod git;
pub mod hooks;
pub mod index;
pub mod lfs;
pub mod model;
pub mod policy;
pub mod provider;
pub mod recover;
pub mod redact;
pub mod replicas;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod target;
pub mod vault;

pub use crypto::{ChunkId, Unlock};
pub use store::{ChunkKind, ChunkReader, ChunkStore};
pub use vault::{Vault, VaultError};
