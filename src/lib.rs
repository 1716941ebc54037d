//! gitvault: encrypted, deduplicating, replicated backups of git hosting accounts.
//!
//! The library is the product; `src/main.rs` is one client of it. Its modules form layers that
//! only point down (docs/ARCHITECTURE.md, checked by `tests/layers.rs`). The entry points:
//!
//! - [`Vault`]: create (`Vault::init`), open and unlock a vault; its targets, index and locks.
//! - [`backup::Session`]: one backup run over URLs and configured sources; `finish` gives the
//!   run report after every step a run must end with.
//! - [`restore`]: pick a snapshot (`select_snapshot`) and write it as a bare repository
//!   (`restore_snapshot`), with its LFS objects and metadata.
//! - [`verify`], [`replicas`] (sync), [`retention`] (forget, prune), [`recover`], [`stats`].
//!
//! Back up a repository and restore it:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gitvault::backup::{BackupRequest, Options, Session};
//! use gitvault::restore::{Selector, restore_snapshot, select_snapshot};
//! use gitvault::vault::InitOptions;
//! use gitvault::{Unlock, Vault};
//!
//! # let tmp = tempfile::tempdir()?;
//! # let project = tmp.path().join("project");
//! # let git = |args: &[&str]| {
//! #     std::process::Command::new("git").arg("-C").arg(&project).args(args).output()
//! # };
//! # std::fs::create_dir(&project)?;
//! # git(&["init", "-q"])?;
//! # git(&["-c", "user.name=A", "-c", "user.email=a@example.com", "commit", "-q",
//! #       "--allow-empty", "-m", "first"])?;
//! // A vault whose keys open with an age identity (or a passphrase).
//! let identity = age::x25519::Identity::generate();
//! let dir = tmp.path().join("vault");
//! let recipients = vec![identity.to_public().to_string()];
//! Vault::init(&dir, InitOptions { recipients, passphrase: None })?;
//! let vault = Vault::open(&dir)?;
//! let keys = vault.unlock(&Unlock::Identities(vec![Box::new(identity)]))?;
//!
//! // One run: every ref of the repository, as it is now, becomes a snapshot.
//! let lock = vault.lock()?;
//! let options = Options { jobs: 1, ..Options::default() };
//! let mut session = Session::new(&vault, &keys, &lock, options)?;
//! let request = BackupRequest {
//!     url: project.display().to_string(),
//!     name: Some("project".into()),
//!     credentials: None,
//!     source: None,
//! };
//! session.backup_urls(&[request], &|line| println!("{} {:?}", line.repo, line.status));
//! let run = session.finish()?;
//! assert!(run.ok);
//! drop(lock);
//!
//! // The newest snapshot (or the one at a date: `Selector { at: Some(..), .. }`), restored.
//! let row = select_snapshot(&vault, "project", &Selector { snapshot: None, at: None })?;
//! restore_snapshot(&vault, &keys, &row, &tmp.path().join("restored.git"))?;
//! # Ok(())
//! # }
//! ```

pub mod backup;
pub mod crypto;
pub mod daemon;
pub mod delta;
pub mod flow;
pub mod git;
pub mod hooks;
pub mod index;
pub mod lfs;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod policy;
pub mod progress;
pub mod provider;
pub mod recover;
pub mod redact;
pub mod replicas;
pub mod report;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod store;
pub mod target;
pub mod timetable;
pub mod vault;
pub mod verify;

pub use crypto::{ChunkId, Unlock};
pub use store::{ChunkKind, ChunkReader, ChunkStore};
pub use vault::{Vault, VaultError};
