//! A vault on the local machine: its directory layout, config, keys, index, targets and the
//! writer lock. This is the one module that knows where things live.
//!
//! ```text
//! DIR/config.toml      settings and targets (no secrets)
//! DIR/index.sqlite     the index (a cache of what the packs hold)
//! DIR/keys/<id>.age    the vault keys, encrypted to the users' recipients or a passphrase
//! DIR/lock             held (flock) by the one process writing to the vault
//! DIR/tmp/             packs being written; anything here after a crash is garbage
//! DIR/cache/           mirror caches of fetched repositories (deletable at any time)
//! DIR/data/            the default file:// target
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use serde::Serialize;

pub mod catch_up;
mod config;
pub mod index_backup;
mod keys;
mod lock;
mod object_lock;
mod reports;
pub mod repository;
mod settings;
pub mod target_lock;

pub use catch_up::CatchUpReport;
pub use config::{
    CacheConfig, Config, ConfigCheck, DaemonConfig, JobConfig, JobKind, NotifyConfig,
    NotifyUrlError, PublicParams, StoreConfig, TargetConfig, check_config, resolve_notify_url,
};
pub use lock::{ReadLease, WriteLock};
pub use object_lock::{LockCheck, LockFinding, LockUpkeep};

use crate::crypto::{self, CryptoError, KeyProtection, VaultKeys};
use crate::index::{Index, IndexError};
use crate::provider::http::{CacheError, CachedAnswer, HttpCache};
use crate::store::pack::Compression;
use crate::store::{CdcParams, ChunkReader, ChunkStore, StoreSettings};
use crate::target::{self, Body, Target, TargetError};

pub(crate) const FORMAT_VERSION: u32 = 1;
pub const CONFIG_FILE: &str = "config.toml";
const INDEX_FILE: &str = "index.sqlite";
const LOCK_FILE: &str = "lock";
const READERS_FILE: &str = "readers.lock";
const PRUNE_FILE: &str = "prune.lock";
/// The least zstd level prune's compaction writes at.
const COMPACTION_LEVEL: i32 = 9;
const KEYS_DIR: &str = "keys";
const TMP_DIR: &str = "tmp";
const CACHE_DIR: &str = "cache";
/// The vault's public parameters, on every target.
pub const PUBLIC_FILE: &str = "gitvault.json";
/// Key files and `gitvault.json` are a few hundred bytes: anything on a target larger than this
/// under those names is not read (a planted file must not exhaust memory).
pub const MAX_SMALL_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no vault at {0}: create one with `gitvault init` or point --vault / GITVAULT_VAULT at it"
    )]
    NotAVault(String),
    #[error("{0} already exists and is not empty; gitvault init needs a new or empty directory")]
    AlreadyExists(String),
    #[error(
        "vault is locked by pid {pid} since {since}: another gitvault is writing to it; wait for it to finish"
    )]
    Locked { pid: String, since: String },
    #[error("another prune is running on this vault; wait for it to finish")]
    PruneRunning,
    #[error("the vault config {path} is unreadable: {reason}")]
    BadConfig { path: String, reason: String },
    #[error("the vault at {path} has format {found}; this gitvault understands format {known}")]
    UnsupportedFormat {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("a source named `{0}` already exists")]
    SourceExists(String),
    #[error("no source named `{0}`; `gitvault source list` shows them")]
    NoSuchSource(String),
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderError),
    #[error("a target named `{0}` already exists")]
    TargetExists(String),
    #[error(
        "{url} is target `{name}` already: two names for one place would count as two replicas"
    )]
    TargetUrlTaken { url: String, name: String },
    #[error("no target named `{0}`")]
    NoSuchTarget(String),
    #[error("target names may hold letters, digits, `-` and `_` only: `{0}`")]
    BadTargetName(String),
    #[error("cannot remove `{0}`: it is the vault's last target")]
    LastTarget(String),
    #[error("target {target} already holds a different vault ({found}); use an empty location")]
    ForeignTarget { target: String, found: String },
    #[error(
        "no key to open the vault: set GITVAULT_IDENTITY_FILE (or --identity) to an age identity file, or GITVAULT_PASSPHRASE, or run on a terminal to be asked"
    )]
    NoUnlockMethod,
    #[error("no key file found in {0}/keys nor on any target")]
    NoKeyFiles(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    TargetLock(#[from] target_lock::TargetLockError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> VaultError {
    let context = context.into();
    move |source| VaultError::Io { context, source }
}

/// How a new vault's keys are protected.
#[derive(Default)]
pub struct InitOptions {
    pub recipients: Vec<String>,
    pub passphrase: Option<SecretString>,
}

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub vault: String,
    pub vault_id: String,
    /// Written down by the user; `recover --expect-vault` checks a target against it.
    pub fingerprint: String,
    pub public_key: String,
    pub key_files: Vec<String>,
    pub target: String,
}

/// The index keeps the providers' conditional-request cache (`http_cache`, kept in index
/// backups); providers see it only through this trait.
impl HttpCache for Index {
    fn cached(&self, url: &str) -> Result<Option<CachedAnswer>, CacheError> {
        self.http_cached(url)
            .map(|found| {
                found.map(|c| CachedAnswer {
                    etag: c.etag,
                    link: c.link,
                    body: c.body,
                })
            })
            .map_err(|e| CacheError(e.to_string()))
    }

    fn store(&self, url: &str, answer: &CachedAnswer) -> Result<(), CacheError> {
        self.http_store(url, &answer.etag, answer.link.as_deref(), &answer.body)
            .map_err(|e| CacheError(e.to_string()))
    }
}

/// An open vault (no secrets loaded).
pub struct Vault {
    dir: PathBuf,
    config: Config,
    index: Index,
    targets: Vec<Box<dyn Target>>,
}

impl Vault {
    pub fn init(dir: &Path, options: InitOptions) -> Result<InitReport, VaultError> {
        if options.recipients.is_empty() && options.passphrase.is_none() {
            return Err(CryptoError::NoRecipients.into());
        }
        for r in &options.recipients {
            crypto::parse_recipient(r)?;
        }
        ensure_empty(dir)?;
        create_private(dir)?;
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", dir.display())))?;
        let keys = VaultKeys::generate()?;
        let vault_id = crypto::random_hex(16)?;
        let mut sealed = Vec::new();
        if !options.recipients.is_empty() {
            sealed.push(keys.seal(&vault_id, KeyProtection::Recipients(&options.recipients))?);
        }
        if let Some(pass) = &options.passphrase {
            sealed.push(keys.seal(&vault_id, KeyProtection::Passphrase(pass))?);
        }
        let mut key_files = Vec::new();
        for bytes in &sealed {
            let name = key_file_name(bytes);
            write_atomic(&dir.join(KEYS_DIR).join(&name), bytes)?;
            key_files.push(format!("{KEYS_DIR}/{name}"));
        }
        let data = dir.join("data");
        let data_url = url::Url::from_directory_path(&data)
            .map(|u| u.to_string().trim_end_matches('/').to_string())
            .map_err(|_| VaultError::BadConfig {
                path: data.display().to_string(),
                reason: "not an absolute path".into(),
            })?;
        let config = Config {
            format: FORMAT_VERSION,
            vault_id: vault_id.clone(),
            public_key: keys.public_key(),
            cdc: CdcParams::default(),
            store: StoreConfig::default(),
            retention: None,
            notify: None,
            targets: vec![TargetConfig::new("local", &data_url)],
            sources: Vec::new(),
            jobs: Vec::new(),
            daemon: None,
            cache: CacheConfig::default(),
        };
        let local = target::open_target("local", &data_url)?;
        let vault = Vault {
            dir: dir.clone(),
            index: Index::open(&dir.join(INDEX_FILE))?,
            targets: Vec::new(),
            config,
        };
        vault.prepare_target(local.as_ref())?;
        vault.save_config()?;
        vault.index.set_meta("origin", crate::index::ORIGIN_INIT)?;
        Ok(InitReport {
            vault: dir.display().to_string(),
            fingerprint: keys.fingerprint(&vault_id),
            vault_id,
            public_key: vault.config.public_key.clone(),
            key_files,
            target: data_url,
        })
    }

    /// Lays out a vault directory for `recover`: config from a target's public parameters, that
    /// target as the only one, and the key files found there. Returns the directory's path.
    pub fn create_recovered(
        dir: &Path,
        params: &PublicParams,
        target: TargetConfig,
        key_files: &[(String, Vec<u8>)],
    ) -> Result<PathBuf, VaultError> {
        if params.format != FORMAT_VERSION {
            return Err(VaultError::UnsupportedFormat {
                path: target.url.clone(),
                found: params.format,
                known: FORMAT_VERSION,
            });
        }
        ensure_empty(dir)?;
        create_private(dir)?;
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", dir.display())))?;
        for (name, bytes) in key_files {
            let file = Path::new(name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".age") && !n.starts_with('.'))
                .ok_or_else(|| VaultError::BadConfig {
                    path: name.clone(),
                    reason: "not a key file name".into(),
                })?;
            write_atomic(&dir.join(KEYS_DIR).join(file), bytes)?;
        }
        let vault = Vault {
            dir: dir.clone(),
            index: Index::open(&dir.join(INDEX_FILE))?,
            targets: Vec::new(),
            config: Config {
                format: FORMAT_VERSION,
                vault_id: params.vault_id.clone(),
                public_key: params.public_key.clone(),
                cdc: params.cdc,
                store: StoreConfig::default(),
                retention: None,
                notify: None,
                targets: vec![target],
                sources: Vec::new(),
                jobs: Vec::new(),
                daemon: None,
                cache: CacheConfig::default(),
            },
        };
        vault.save_config()?;
        // The index is created empty here and replaced by an index backup when one is usable.
        drop(vault);
        let _ = fs::remove_file(dir.join(INDEX_FILE));
        let _ = fs::remove_file(dir.join("index.sqlite-wal"));
        let _ = fs::remove_file(dir.join("index.sqlite-shm"));
        Ok(dir)
    }

    /// `DIR/config.toml` alone, for callers that need a setting before (or without) opening
    /// the vault, such as the notifications sent around a command. Unknown keys are left to
    /// [`Vault::open`] to warn about, so that a command warns once.
    pub fn read_config(dir: &Path) -> Result<Config, VaultError> {
        Ok(Self::read_config_and_unknown_keys(dir)?.0)
    }

    fn read_config_and_unknown_keys(dir: &Path) -> Result<(Config, Vec<String>), VaultError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = match fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VaultError::NotAVault(dir.display().to_string()));
            }
            Err(e) => return Err(io_err(format!("reading {}", config_path.display()))(e)),
        };
        config::parse(&text).map_err(|e| VaultError::BadConfig {
            path: config_path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn open(dir: &Path) -> Result<Vault, VaultError> {
        let (config, unknown) = Self::read_config_and_unknown_keys(dir)?;
        for key in unknown {
            tracing::warn!(%key, "config.toml: unknown key ignored (see `gitvault config check`)");
        }
        if config.format != FORMAT_VERSION {
            return Err(VaultError::UnsupportedFormat {
                path: dir.display().to_string(),
                found: config.format,
                known: FORMAT_VERSION,
            });
        }
        if let Err(e) = make_private(dir) {
            // A reader that does not own the directory cannot tighten it; the owner's next
            // command will.
            tracing::warn!(error = %e, "the vault directory could not be made private");
        }
        let targets = config
            .targets
            .iter()
            .map(TargetConfig::open)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Vault {
            dir: dir.to_path_buf(),
            index: Index::open(&dir.join(INDEX_FILE))?,
            targets,
            config,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn targets(&self) -> &[Box<dyn Target>] {
        &self.targets
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join(TMP_DIR)
    }

    /// Mirror caches of backed-up repositories: only a speed-up (negotiation), never the truth;
    /// deleting it costs one full fetch per repository.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join(CACHE_DIR)
    }

    /// Overrides the replication policy for this process (`backup --min-replicas`).
    pub fn set_min_replicas(&mut self, n: usize) {
        self.config.store.min_replicas = n;
    }

    pub fn store_settings(&self) -> StoreSettings {
        let s = &self.config.store;
        StoreSettings {
            compression: Compression {
                level: s.compression_level.clamp(1, 22),
                frame_size: s.frame_size.clamp(64 << 10, 512 << 20) as usize,
            },
            pack_size: s.pack_size.max(1 << 10),
            cdc: self.config.cdc,
            min_replicas: s.min_replicas,
        }
    }

    /// A chunk store over this vault. Writing through it requires holding `lock()`.
    pub fn store<'a>(&'a self, keys: &'a VaultKeys, _lock: &'a WriteLock) -> ChunkStore<'a> {
        ChunkStore::new(
            &self.index,
            &self.targets,
            keys,
            self.tmp_dir(),
            self.store_settings(),
        )
    }

    /// A chunk store for prune's compaction: writes packs without a lock and without
    /// indexing them (prune records them under the lock).
    pub fn compaction_store<'a>(&'a self, keys: &'a VaultKeys) -> ChunkStore<'a> {
        let mut settings = self.store_settings();
        // Compaction runs in the background and writes what stays for years: it pays for a
        // higher zstd level (DESIGN.md measured regrouped frames at level 9 at 0.84 of level 3).
        settings.compression.level = settings.compression.level.max(COMPACTION_LEVEL);
        let mut store = ChunkStore::new(&self.index, &self.targets, keys, self.tmp_dir(), settings);
        store.defer_indexing();
        store
    }

    /// A chunk reader; needs no lock.
    pub fn reader<'a>(&'a self, keys: &'a VaultKeys) -> ChunkReader<'a> {
        ChunkReader::new(&self.index, &self.targets, keys)
    }
}

/// A new vault goes into a directory that is absent or empty, never over anything.
fn ensure_empty(dir: &Path) -> Result<(), VaultError> {
    if dir.exists() {
        let mut entries =
            fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
        if entries.next().is_some() {
            return Err(VaultError::AlreadyExists(dir.display().to_string()));
        }
    }
    Ok(())
}

/// Key file names are derived from their content, so copies on targets never collide.
fn key_file_name(sealed: &[u8]) -> String {
    format!("{}.age", &blake3::hash(sealed).to_hex()[..16])
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The vault directory reveals repository and ref names, cached API answers and plaintext
/// mirror caches (docs/KEYS.md), so it is owner-only whatever the umask: created so (with its
/// key directory), and tightened whenever a vault made by an older version is opened. The
/// binary also sets umask 077, so that every file and directory inside is private too.
fn create_private(dir: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join(KEYS_DIR))
        .map_err(io_err(format!("creating {}", dir.display())))?;
    make_private(dir)
}

fn make_private(dir: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir)
        .map_err(io_err(format!("reading {}", dir.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("making {} private", dir.display())))?;
    }
    Ok(())
}

/// Temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", file_name(path)));
    let result = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(io_err(format!("writing {}", path.display())))
}
