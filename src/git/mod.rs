//! Git: where a repository is (URLs, credentials), one ref advertisement plus a negotiated
//! mirror fetch into a local cache (gix), reading objects from that cache, and writing a
//! restored repository (a real pack and index, refs, HEAD).
//!
//! This module knows nothing of packs of the vault or targets: the backup and restore modules
//! connect it to the chunk store.

pub mod objects;
pub mod packfile;
pub mod previous;
mod remote;
mod watch;
mod write;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::protocol::handshake::Ref;
use gix::remote::Direction;

use crate::model::{Head, ObjectKind, Oid, RefSet};
pub use remote::{
    ALLOW_INSECURE_HTTP_ENV, BoundCredentials, Credentials, RemoteSpec, parse_remote,
    transport_allows_credentials,
};
pub use write::{PackObject, write_bare_repository, write_pack};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{input}` is not a git URL or path gitvault can back up: {reason}")]
    BadUrl {
        input: crate::redact::RedactedUrl,
        reason: String,
    },
    #[error(
        "refusing to send credentials over plain http to {url}: use https, or set \
         GITVAULT_ALLOW_INSECURE_HTTP=1 if the network to that host is trusted"
    )]
    InsecureCredentials { url: crate::redact::RedactedUrl },
    #[error("cannot reach or read the repository: {0}")]
    Fetch(String),
    /// The server says there is no such repository (or hides it from these credentials): a
    /// caller may expect this, as for a wiki that was never created.
    #[error(
        "cannot reach or read the repository: the repository does not exist or is not visible with these credentials ({0})"
    )]
    NotFound(String),
    #[error("the mirror cache at {path} is unusable ({reason}); delete it and run again")]
    Cache { path: String, reason: String },
    #[error(transparent)]
    Object(#[from] objects::ObjectError),
    #[error("writing the restored repository failed: {0}")]
    Write(String),
}

/// The whole cause chain, since gix's top-level messages ("Transport handshake failed") do not
/// say what went wrong; plus a hint for the failures users can fix themselves.
fn fetch_err(e: impl std::error::Error) -> GitError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("no credentials were returned")
        || lower.contains("status 401")
        || lower.contains("not accepted")
    {
        text = format!(
            "authentication failed (HTTP 401): set GITVAULT_TOKEN (and GITVAULT_USERNAME) to credentials the server accepts ({text})"
        );
    } else if lower.contains("status 403") {
        text = format!(
            "access denied (HTTP 403): the credentials lack access to this repository ({text})"
        );
    } else if lower.contains("status 404")
        || lower.contains("not found")
        || lower.contains("does not appear to be a git repository")
    {
        return GitError::NotFound(text);
    }
    GitError::Fetch(text)
}

/// What one contact with the server found.
pub struct FetchResult {
    pub refs: RefSet,
    /// False when the caller judged the ref set unchanged and no pack was requested.
    pub fetched: bool,
    pub objects_received: u64,
}

fn open_or_init_cache(cache: &Path) -> Result<gix::Repository, GitError> {
    let cache_err = |e: &dyn std::fmt::Display| GitError::Cache {
        path: cache.display().to_string(),
        reason: e.to_string(),
    };
    let existing = if cache.join("HEAD").exists() {
        match gix::open(cache) {
            Ok(repo) => Some(repo),
            Err(e) => {
                // The cache is only a speed-up: a damaged one is dropped and fetched anew.
                tracing::warn!(cache = %cache.display(), error = %e, "mirror cache unreadable, starting afresh");
                std::fs::remove_dir_all(cache).map_err(|e| cache_err(&e))?;
                None
            }
        }
    } else {
        None
    };
    let mut repo = if let Some(repo) = existing {
        repo
    } else {
        if let Some(parent) = cache.parent() {
            std::fs::create_dir_all(parent).map_err(|e| cache_err(&e))?;
        }
        gix::init_bare(cache).map_err(|e| cache_err(&e))?
    };
    repo.object_cache_size_if_unset(64 << 20);
    Ok(repo)
}

fn to_refset(remote_refs: &[Ref]) -> RefSet {
    let mut set = RefSet::default();
    let oid = |id: &gix::ObjectId| Oid::from_slice(id.as_slice()).unwrap_or(Oid([0; 20]));
    for r in remote_refs {
        // Each ref gives its name, what HEAD is if it is HEAD, and the object a mirror keeps
        // under its name (symbolic refs other than HEAD as the object they point at).
        let (name, head, object) = match r {
            Ref::Direct {
                full_ref_name,
                object,
            } => (
                full_ref_name,
                Some(Head::Detached(object.to_string())),
                Some(object),
            ),
            Ref::Peeled {
                full_ref_name, tag, ..
            } => (full_ref_name, None, Some(tag)),
            Ref::Symbolic {
                full_ref_name,
                target,
                tag,
                object,
            } => (
                full_ref_name,
                Some(Head::Symbolic(target.to_string())),
                Some(tag.as_ref().unwrap_or(object)),
            ),
            Ref::Unborn {
                full_ref_name,
                target,
            } => (
                full_ref_name,
                Some(Head::Symbolic(target.to_string())),
                None,
            ),
        };
        match (head, object) {
            (Some(head), _) if name == "HEAD" => set.head = Some(head),
            (_, Some(object)) => {
                set.refs.insert(name.to_string(), oid(object));
            }
            // An unborn ref other than HEAD has nothing to keep.
            (_, None) => {}
        }
    }
    set
}

/// Tries after the first when a fetch times out or its connection breaks: a server that stalls
/// or drops a connection once is asked again (the cache keeps what arrived whole), one that
/// stays hung costs `FETCH_RETRIES + 1` transport timeouts.
const FETCH_RETRIES: u32 = 2;

/// Lists the server's refs in one advertisement and, unless `unchanged` says the ref set is the
/// one already in the vault, fetches (negotiating against the cache) every object they reach
/// into the cache repository. Stalls and broken connections are retried with jittered backoff.
pub fn fetch(
    spec: &RemoteSpec,
    cache: &Path,
    credentials: Option<&Credentials>,
    unchanged: impl Fn(&RefSet) -> bool,
    watch: (&str, &dyn crate::progress::Progress),
) -> Result<FetchResult, GitError> {
    let mut attempt = 0;
    loop {
        match fetch_once(spec, cache, credentials, &unchanged, watch) {
            Err(GitError::Fetch(text)) if transient(&text) => {
                if attempt == FETCH_RETRIES {
                    return Err(GitError::Fetch(format!(
                        "{text} (tried {} times)",
                        attempt + 1
                    )));
                }
                attempt += 1;
                tracing::info!(attempt, error = %text, "git fetch broke off; retrying");
                let full = 500u64 << attempt;
                let jitter = getrandom::u64().unwrap_or(0) % (full / 2 + 1);
                std::thread::sleep(std::time::Duration::from_millis(full / 2 + jitter));
            }
            other => return other,
        }
    }
}

/// Whether a fetch failure may pass on its own: a timeout or a connection cut, not a refusal,
/// a missing repository or a corrupt pack.
fn transient(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "timed out",
        "connection reset",
        "broken pipe",
        "connection closed before",
        "connection aborted",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
}

fn fetch_once(
    spec: &RemoteSpec,
    cache: &Path,
    credentials: Option<&Credentials>,
    unchanged: &impl Fn(&RefSet) -> bool,
    watch: (&str, &dyn crate::progress::Progress),
) -> Result<FetchResult, GitError> {
    let repo = open_or_init_cache(cache)?;
    let remote = repo
        .remote_at(spec.fetch_url.as_str())
        .map_err(fetch_err)?
        .with_refspecs(Some("+refs/*:refs/*"), Direction::Fetch)
        .map_err(fetch_err)?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut connection = remote
        .connect(Direction::Fetch)
        .map_err(fetch_err)?
        // Never fall back to git's credential helpers or a terminal prompt.
        .with_credentials(|_| Ok(None));
    if let Some(creds) = credentials
        && spec.is_http
    {
        // gix sends these headers to the fetch URL only: it refuses to follow a redirect once
        // extra headers are configured, so the origin check is the scheme/host check here.
        let allowed = url::Url::parse(&spec.fetch_url)
            .is_ok_and(|u| remote::transport_allows_credentials(&u));
        if !allowed {
            return Err(GitError::InsecureCredentials {
                url: spec.display_url.clone(),
            });
        }
        let options = repo
            .transport_options(spec.fetch_url.as_str(), None)
            .map_err(fetch_err)?
            .and_then(|o| {
                o.downcast::<gix::protocol::transport::client::blocking_io::http::Options>()
                    .ok()
            });
        let mut options = options.map(|o| *o).unwrap_or_default();
        options.extra_headers.push(creds.authorization_header());
        connection = connection.with_transport_options(Box::new(options));
    }
    let options = gix::remote::ref_map::Options {
        // With the default, gix sends the literal prefix `refs/*` and servers return nothing.
        prefix_from_spec_as_filter_on_remote: false,
        ..Default::default()
    };
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, options)
        .map_err(fetch_err)?;
    let refs = to_refset(&prepare.ref_map().remote_refs);
    if unchanged(&refs) || refs.refs.is_empty() {
        drop(prepare);
        return Ok(FetchResult {
            refs,
            fetched: false,
            objects_received: 0,
        });
    }
    let (tap, relay) = watch::Tap::root();
    let received = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| relay.run(watch, &received));
        let outcome = prepare
            .with_write_packed_refs_only(true)
            .receive(tap, &AtomicBool::new(false));
        crate::hooks::point("fetch-received");
        received.store(true, std::sync::atomic::Ordering::SeqCst);
        outcome
    })
    .map_err(fetch_err)?;
    let objects_received = match outcome.status {
        gix::remote::fetch::Status::NoPackReceived { .. } => 0,
        gix::remote::fetch::Status::Change {
            write_pack_bundle, ..
        } => {
            if let Some(keep) = &write_pack_bundle.keep_path {
                let _ = std::fs::remove_file(keep);
            }
            u64::from(write_pack_bundle.index.num_objects)
        }
    };
    prune_cache_refs(&repo, &refs);
    Ok(FetchResult {
        refs,
        fetched: true,
        objects_received,
    })
}

/// Keeps the cache's refs equal to the advertisement, so that its negotiation stays small. A
/// failure here only costs a larger next fetch.
fn prune_cache_refs(repo: &gix::Repository, refs: &RefSet) {
    let Ok(platform) = repo.references() else {
        return;
    };
    let Ok(all) = platform.all() else { return };
    let stale: Vec<gix::refs::FullName> = all
        .filter_map(Result::ok)
        .filter(|r| !refs.refs.contains_key(&r.name().as_bstr().to_string()))
        .map(|r| r.name().to_owned())
        .collect();
    if stale.is_empty() {
        return;
    }
    let edits = stale
        .into_iter()
        .map(|name| gix::refs::transaction::RefEdit {
            change: gix::refs::transaction::Change::Delete {
                expected: gix::refs::transaction::PreviousValue::Any,
                log: gix::refs::transaction::RefLog::AndReference,
            },
            name,
            deref: false,
        });
    if let Err(e) = repo.edit_references(edits) {
        tracing::debug!(error = %e, "could not prune stale refs in the mirror cache");
    }
}

/// Reads objects from the mirror cache.
pub struct CacheReader {
    repo: gix::Repository,
}

impl CacheReader {
    pub fn open(cache: &Path) -> Result<CacheReader, GitError> {
        Ok(CacheReader {
            repo: open_or_init_cache(cache)?,
        })
    }

    pub fn read(&self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), GitError> {
        let id = gix::ObjectId::from_bytes_or_panic(&oid.0);
        let object = self
            .repo
            .find_object(id)
            .map_err(|_| GitError::Object(objects::ObjectError::Missing { oid: *oid }))?;
        let kind = match object.kind {
            gix::objs::Kind::Commit => ObjectKind::Commit,
            gix::objs::Kind::Tree => ObjectKind::Tree,
            gix::objs::Kind::Blob => ObjectKind::Blob,
            gix::objs::Kind::Tag => ObjectKind::Tag,
        };
        Ok((kind, object.detach().data))
    }
}

/// Sorts refs for writing: `git for-each-ref` order.
pub fn sorted_refs(refs: &RefSet) -> BTreeMap<&str, Oid> {
    refs.refs.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}
