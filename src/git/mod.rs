//! Git: where a repository is (URLs, credentials), one ref advertisement plus a negotiated
//! mirror fetch into a local cache (gix), reading objects from that cache, and writing a
//! restored repository (a real pack and index, refs, HEAD).
//!
//! This module knows nothing of packs of the vault or targets: the backup and restore modules
//! connect it to the chunk store.

mod cache_refs;
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

/// Leaves at `cache` nothing, an empty directory, or a directory that may be a repository of
/// ours: not a symlink (which would send our writes, and our trust, elsewhere) and with none of
/// git's entries a symlink. Anything else is removed (a symlink itself, never what it names).
fn clear_foreign(cache: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(cache) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        tracing::warn!(cache = %cache.display(), "mirror cache is not a directory (a symlink?); removing it");
        return std::fs::remove_file(cache);
    }
    let linked = [
        "HEAD",
        "config",
        "objects",
        "refs",
        "packed-refs",
        "objects/pack",
    ]
    .iter()
    .any(|e| std::fs::symlink_metadata(cache.join(e)).is_ok_and(|m| m.file_type().is_symlink()));
    let repository = cache.join("HEAD").is_file() && cache.join("objects").is_dir();
    let empty = std::fs::read_dir(cache)?.next().is_none();
    if linked || !(repository || empty) {
        tracing::warn!(cache = %cache.display(), "mirror cache is not a repository of ours; removing it");
        std::fs::remove_dir_all(cache)?;
    }
    Ok(())
}

/// Whether a cache has neither refs (written after every fetch) nor a pack.
fn holds_nothing(cache: &Path) -> bool {
    let packs = std::fs::read_dir(cache.join("objects").join("pack")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .count()
    });
    !cache.join("packed-refs").exists() && packs == 0
}

/// The mirror cache, and whether it holds nothing yet (it was missing or unusable).
fn open_or_init_cache(cache: &Path) -> Result<(gix::Repository, bool), GitError> {
    let cache_err = |e: &dyn std::fmt::Display| GitError::Cache {
        path: cache.display().to_string(),
        reason: e.to_string(),
    };
    clear_foreign(cache).map_err(|e| cache_err(&e))?;
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
    // A cache that holds nothing yet: made just now, or made for a ref listing that found
    // nothing to fetch (an unchanged repository) after the cache had been dropped.
    let fresh = existing.is_none() || holds_nothing(cache);
    let mut repo = if let Some(repo) = existing {
        repo
    } else {
        if let Some(parent) = cache.parent() {
            std::fs::create_dir_all(parent).map_err(|e| cache_err(&e))?;
        }
        gix::init_bare(cache).map_err(|e| cache_err(&e))?
    };
    repo.object_cache_size_if_unset(64 << 20);
    Ok((repo, fresh))
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
///
/// When the cache holds nothing (missing, unusable, or left empty) and objects are to be
/// fetched, `seed` may first put a repository at the cache's path (the previous snapshot, from
/// the vault) so that only what is new crosses the network; it returns whether it did.
pub fn fetch(
    spec: &RemoteSpec,
    cache: &Path,
    credentials: Option<&Credentials>,
    unchanged: impl Fn(&RefSet) -> bool,
    seed: &dyn Fn(&Path) -> bool,
    watch: (&str, &dyn crate::progress::Progress),
) -> Result<FetchResult, GitError> {
    let mut attempt = 0;
    loop {
        match fetch_once(spec, cache, credentials, &unchanged, seed, watch) {
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
    seed: &dyn Fn(&Path) -> bool,
    watch: (&str, &dyn crate::progress::Progress),
) -> Result<FetchResult, GitError> {
    let (mut repo, fresh) = open_or_init_cache(cache)?;
    let options = || gix::remote::ref_map::Options {
        // With the default, gix sends the literal prefix `refs/*` and servers return nothing.
        prefix_from_spec_as_filter_on_remote: false,
        ..Default::default()
    };
    let refs = {
        let listing = remote_for(&repo, spec, ["+refs/*:refs/*".to_string()])?;
        let (ref_map, _) = connect(&listing, spec, credentials)?
            .ref_map(gix::progress::Discard, options())
            .map_err(fetch_err)?;
        to_refset(&ref_map.remote_refs)
    };
    if unchanged(&refs) || refs.refs.is_empty() {
        return Ok(FetchResult {
            refs,
            fetched: false,
            objects_received: 0,
        });
    }
    // Seeded only now: an unchanged repository needs no cache at all.
    if fresh && seed(cache) {
        repo = open_or_init_cache(cache)?.0;
    }
    // The objects are wanted by id, with no local ref to update: gix's ref update locks each
    // ref with a file of its own (9,640 directories and lock files for cargo's pull requests,
    // a quarter of a first backup's time). The cache's refs are written below in one file.
    // Wanting an advertised tip by id is what every protocol version does anyway.
    let mut wants: Vec<String> = refs.refs.values().map(Oid::to_hex).collect();
    wants.sort_unstable();
    wants.dedup();
    let wanting = remote_for(&repo, spec, wants)?;
    let prepare = connect(&wanting, spec, credentials)?
        .prepare_fetch(gix::progress::Discard, options())
        .map_err(fetch_err)?;
    let (tap, relay) = watch::Tap::root();
    let received = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| relay.run(watch, &received));
        let outcome = prepare.receive(tap, &AtomicBool::new(false));
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
    // Only negotiation reads these refs: a failure costs a larger next fetch, nothing else.
    if let Err(e) = cache_refs::write(cache, &refs) {
        tracing::debug!(error = %e, "could not write the mirror cache's refs");
    }
    Ok(FetchResult {
        refs,
        fetched: true,
        objects_received,
    })
}

/// A remote for fetching with `refspecs`.
fn remote_for<'r>(
    repo: &'r gix::Repository,
    spec: &RemoteSpec,
    refspecs: impl IntoIterator<Item = String>,
) -> Result<gix::Remote<'r>, GitError> {
    repo.remote_at(spec.fetch_url.as_str())
        .map_err(fetch_err)?
        .with_refspecs(
            refspecs.into_iter().map(gix::bstr::BString::from),
            Direction::Fetch,
        )
        .map_err(fetch_err)
        .map(|r| r.with_fetch_tags(gix::remote::fetch::Tags::None))
}

type Transport = Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>;

/// Connects to `remote`, never asking git's credential helpers or a terminal, and sending
/// `credentials` only where they may go.
fn connect<'a, 'r>(
    remote: &'a gix::Remote<'r>,
    spec: &RemoteSpec,
    credentials: Option<&Credentials>,
) -> Result<gix::remote::Connection<'a, 'static, 'r, Transport>, GitError> {
    let mut connection = remote
        .connect(Direction::Fetch)
        .map_err(fetch_err)?
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
        let options = remote
            .repo()
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
    Ok(connection)
}

/// Reads objects from the mirror cache.
pub struct CacheReader {
    repo: gix::Repository,
}

impl CacheReader {
    pub fn open(cache: &Path) -> Result<CacheReader, GitError> {
        Ok(CacheReader {
            repo: open_or_init_cache(cache)?.0,
        })
    }

    /// For a pass that reads each object once: no cache of whole objects (git's delta bases
    /// are still cached), which would only hold memory.
    pub fn open_for_one_pass(cache: &Path) -> Result<CacheReader, GitError> {
        let mut repo = open_or_init_cache(cache)?.0;
        repo.object_cache_size(None);
        Ok(CacheReader { repo })
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
