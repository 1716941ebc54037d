//! The SQLite index: a cache of what the packs hold (packs, their presence per target, chunk
//! locations, git objects, snapshots), for fast lookups. Everything here can be rebuilt from
//! the packs (invariant 1), so the schema may change freely between versions through the
//! migrations below, keyed on `PRAGMA user_version`.
//!
//! One writer at a time is enforced by the vault's lock, not here; SQLite's WAL lets readers
//! run beside that writer.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::crypto::ChunkId;
use crate::model::{LfsEntry, ObjectEntry, ObjectKind, Oid};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the index at {path} has schema version {found}, newer than this gitvault understands ({known}); upgrade gitvault"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the index is inconsistent: {0}; rebuild it with `gitvault recover`")]
    Inconsistent(String),
}

/// Secondary indexes that index backups leave out (a third of the file, and random ids do not
/// compress) and `open` recreates.
const DERIVED_INDEXES: &[(&str, &str)] = &[
    (
        "chunks_by_pack",
        "CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack_id)",
    ),
    (
        "chunks_by_kind",
        "CREATE INDEX IF NOT EXISTS chunks_by_kind ON chunks(kind)",
    ),
];

/// Each entry moves the schema from version i to i+1. Never edit a shipped entry: add one.
const MIGRATIONS: &[&str] = &[
    // v1
    "
    CREATE TABLE packs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        raw_bytes INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE pack_targets (
        pack_id INTEGER NOT NULL REFERENCES packs(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        PRIMARY KEY (pack_id, target)
    ) WITHOUT ROWID;
    CREATE TABLE chunks (
        id BLOB PRIMARY KEY,
        kind INTEGER NOT NULL,
        pack_id INTEGER NOT NULL REFERENCES packs(id),
        frame_offset INTEGER NOT NULL,
        frame_clen INTEGER NOT NULL,
        frame_rawlen INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX chunks_by_pack ON chunks(pack_id);
    CREATE TABLE git_objects (
        oid BLOB PRIMARY KEY,
        kind INTEGER NOT NULL,
        chunk BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE repos (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        time_ms INTEGER NOT NULL,
        manifest BLOB NOT NULL UNIQUE,
        refset BLOB NOT NULL,
        head TEXT,
        ref_count INTEGER NOT NULL,
        objects_added INTEGER NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX snapshots_by_repo_time ON snapshots(repo_id, time_ms);
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE http_cache (
        url TEXT PRIMARY KEY,
        etag TEXT NOT NULL,
        link TEXT,
        body BLOB NOT NULL
    ) WITHOUT ROWID;
    ",
    // v2: retention and prune.
    "
    CREATE TABLE repo_sources (
        repo TEXT PRIMARY KEY,
        source TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE condemned_packs (
        name TEXT PRIMARY KEY,
        since_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX chunks_by_kind ON chunks(kind);
    CREATE TABLE lfs_objects (
        sha256 BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        chunk BLOB NOT NULL
    ) WITHOUT ROWID;
    ",
    // v3: hostile targets. Where each pack's row came from (`Provenance`), and where the index
    // itself came from (`meta.origin`): packs this host wrote before the upgrade count as
    // written here; an index of unknown origin must be vouched for before prune trusts it.
    "
    ALTER TABLE packs ADD COLUMN provenance INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('origin', 'before-authentication');
    ",
];

/// Where an index's contents came from (`meta.origin`).
pub const ORIGIN_INIT: &str = "init";
pub const ORIGIN_RECOVER: &str = "recover";
/// An index from before 2026-12-04: it may have been recovered from an index backup nobody
/// could authenticate.
pub const ORIGIN_UNKNOWN: &str = "before-authentication";
pub const ORIGIN_VOUCHED: &str = "vouched";

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Where a frame lies in the pack's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub offset: u64,
    pub compressed_len: u32,
    pub raw_len: u32,
}

/// One chunk as the footer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub kind: u8,
    pub frame: u32,
    pub offset: u32,
    pub len: u32,
}

/// How a pack's index row came to be, and so what prune may do with it: only a pack whose
/// contents this vault wrote or authenticated may be judged (and deleted) by what its footer
/// lists. Ordered: higher is better known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Provenance {
    /// A format 1 footer read from a target: anyone with the public key could have made it.
    Legacy = 0,
    /// Written by this host.
    Written = 1,
    /// A format 2 footer read from a target whose MAC checked.
    Authenticated = 2,
    /// Every chunk read back and checked against its id (`verify --full`).
    Verified = 3,
}

impl Provenance {
    pub fn from_i64(v: i64) -> Provenance {
        match v {
            1 => Provenance::Written,
            2 => Provenance::Authenticated,
            3 => Provenance::Verified,
            _ => Provenance::Legacy,
        }
    }

    /// Whether prune may condemn the pack on the strength of its index rows.
    pub fn vouched(self) -> bool {
        self >= Provenance::Written
    }
}

/// A pack as the index records it: its name (BLAKE3 of its bytes), sizes, where the row comes
/// from, and the frames and chunks its footer lists (`store::pack::FinishedPack::record`).
#[derive(Debug, Clone, Copy)]
pub struct PackRecord<'a> {
    pub name: &'a str,
    pub size: u64,
    pub raw_bytes: u64,
    pub provenance: Provenance,
    pub frames: &'a [FrameInfo],
    pub entries: &'a [PackEntry],
}

/// Where a chunk lives.
#[derive(Debug, Clone)]
pub struct ChunkLocation {
    pub kind: u8,
    pub pack_id: i64,
    pub pack_name: String,
    pub frame: FrameInfo,
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug, Clone)]
pub struct PackRow {
    pub id: i64,
    pub name: String,
    pub size: u64,
    pub raw_bytes: u64,
    pub chunk_count: u64,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub packs: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub unique_bytes: u64,
    pub logical_bytes: u64,
}

pub struct Index {
    /// Behind a mutex so that one `&Index` serves the worker threads of a parallel run;
    /// SQLite itself serialises writes anyway.
    conn: Mutex<Connection>,
}

impl Index {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: transactions roll
        // back when dropped.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed snapshot row is on disk when the commit returns (NORMAL in WAL mode
        // may roll the last commits back on power loss, and a snapshot reported done must
        // survive). Commits are per pack and per snapshot, so the extra fsyncs are few.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut index = Index {
            conn: Mutex::new(conn),
        };
        index.migrate(path)?;
        // An index restored from a backup lacks them (see `backup_to`).
        for (_, create) in DERIVED_INDEXES {
            index.conn().execute_batch(create)?;
        }
        Ok(index)
    }

    fn migrate(&mut self, path: &Path) -> Result<(), IndexError> {
        let found: i64 = self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(IndexError::TooNew {
                path: path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self
                .conn
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, IndexError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
        Ok(stmt.exists(params![&id.0[..]])?)
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.kind, c.pack_id, p.name, c.frame_offset, c.frame_clen, c.frame_rawlen, c.offset, c.length
             FROM chunks c JOIN packs p ON p.id = c.pack_id WHERE c.id = ?1",
        )?;
        Ok(stmt
            .query_row(params![&id.0[..]], |r| {
                Ok(ChunkLocation {
                    kind: r.get(0)?,
                    pack_id: r.get(1)?,
                    pack_name: r.get(2)?,
                    frame: FrameInfo {
                        offset: r.get(3)?,
                        compressed_len: r.get(4)?,
                        raw_len: r.get(5)?,
                    },
                    offset: r.get(6)?,
                    len: r.get(7)?,
                })
            })
            .optional()?)
    }

    /// Targets known to hold a pack, in the order they were recorded.
    pub fn pack_targets(&self, pack_id: i64) -> Result<Vec<String>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT target FROM pack_targets WHERE pack_id = ?1 ORDER BY target")?;
        let rows = stmt.query_map(params![pack_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a pack that is durable on `targets`, with all its chunks, in one transaction.
    /// Chunks already indexed elsewhere keep their first location.
    pub fn commit_pack(
        &self,
        pack: &PackRecord<'_>,
        targets: &[String],
        logical_bytes: u64,
    ) -> Result<i64, IndexError> {
        // The vault lock guarantees one writer; an unchecked transaction lets readers share `&Index`.
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let pack_id = record_pack(&tx, pack, targets)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (id, kind, pack_id, frame_offset, frame_clen, frame_rawlen, offset, length)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in pack.entries {
                let frame = pack.frames.get(e.frame as usize).ok_or_else(|| {
                    IndexError::Inconsistent(format!("pack {} names a missing frame", pack.name))
                })?;
                insert.execute(params![
                    &e.id.0[..],
                    e.kind,
                    pack_id,
                    frame.offset,
                    frame.compressed_len,
                    frame.raw_len,
                    e.offset,
                    e.len
                ])?;
            }
        }
        add_counter(&tx, "logical_bytes", logical_bytes)?;
        tx.commit()?;
        Ok(pack_id)
    }

    pub fn add_logical_bytes(&self, bytes: u64) -> Result<(), IndexError> {
        add_counter(&self.conn(), "logical_bytes", bytes)
    }

    pub fn packs(&self) -> Result<Vec<PackRow>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, size, raw_bytes, chunk_count, provenance FROM packs ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PackRow {
                id: r.get(0)?,
                name: r.get(1)?,
                size: r.get(2)?,
                raw_bytes: r.get(3)?,
                chunk_count: r.get(4)?,
                provenance: Provenance::from_i64(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Raises what is known of a pack (never lowers it): `verify --full` vouches for a pack
    /// whose every chunk it checked.
    pub fn raise_pack_provenance(&self, name: &str, to: Provenance) -> Result<(), IndexError> {
        self.conn().execute(
            "UPDATE packs SET provenance = ?2 WHERE name = ?1 AND provenance < ?2",
            params![name, to as i64],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, IndexError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), IndexError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// Takes from an index backup (a SQLite file) only what the packs cannot give back: the
    /// HTTP cache, repository sources and counters, copied value by value into this index's
    /// own schema. Nothing else of the file is used: not its schema, triggers or views, and
    /// none of its pack, chunk or snapshot rows (those come from authenticated footers and
    /// chunks). Returns the rows taken.
    pub fn import_backup(&self, path: &Path) -> Result<u64, IndexError> {
        let conn = self.conn();
        // A backup's schema is not ours to trust: no functions with side effects from its
        // views or triggers.
        conn.pragma_update(None, "trusted_schema", false)?;
        conn.execute(
            "ATTACH DATABASE ?1 AS backup",
            params![format!("file:{}?mode=ro", path.display())],
        )
        .or_else(|_| {
            conn.execute(
                "ATTACH DATABASE ?1 AS backup",
                params![path.to_string_lossy()],
            )
        })?;
        let result = (|| -> Result<u64, IndexError> {
            let tx = conn.unchecked_transaction()?;
            let mut rows = 0u64;
            rows += tx.execute(
                "INSERT OR REPLACE INTO main.http_cache (url, etag, link, body)
                 SELECT CAST(url AS TEXT), CAST(etag AS TEXT), CAST(link AS TEXT), CAST(body AS BLOB)
                 FROM backup.http_cache WHERE url IS NOT NULL AND etag IS NOT NULL AND body IS NOT NULL",
                [],
            )? as u64;
            rows += tx.execute(
                "INSERT OR REPLACE INTO main.repo_sources (repo, source)
                 SELECT CAST(repo AS TEXT), CAST(source AS TEXT) FROM backup.repo_sources
                 WHERE repo IS NOT NULL AND source IS NOT NULL",
                [],
            )? as u64;
            rows += tx.execute(
                "INSERT OR REPLACE INTO main.counters (name, value)
                 SELECT CAST(name AS TEXT), CAST(value AS INTEGER) FROM backup.counters
                 WHERE name = 'logical_bytes' AND value >= 0",
                [],
            )? as u64;
            tx.commit()?;
            Ok(rows)
        })();
        let detached = conn.execute("DETACH DATABASE backup", []);
        let rows = result?;
        detached?;
        Ok(rows)
    }

    /// Names of the packs the index expects on a target.
    pub fn packs_on_target(&self, target: &str) -> Result<Vec<(String, u64)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.name, p.size FROM packs p JOIN pack_targets t ON t.pack_id = p.id WHERE t.target = ?1",
        )?;
        let rows = stmt.query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn totals(&self) -> Result<Totals, IndexError> {
        let (packs, stored_bytes): (u64, u64) = self.conn().query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM packs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (chunks, unique_bytes): (u64, u64) = self.conn().query_row(
            "SELECT count(*), coalesce(sum(length), 0) FROM chunks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let logical_bytes: u64 = self
            .conn()
            .query_row(
                "SELECT value FROM counters WHERE name = 'logical_bytes'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(Totals {
            packs,
            stored_bytes,
            chunks,
            unique_bytes,
            logical_bytes,
        })
    }

    /// Forgets that packs are on a target (when the target is removed from the vault).
    pub fn forget_target(&self, target: &str) -> Result<usize, IndexError> {
        Ok(self.conn().execute(
            "DELETE FROM pack_targets WHERE target = ?1",
            params![target],
        )?)
    }
}

/// An API answer kept for conditional requests: its ETag, `Link` header and body.
pub struct CachedResponse {
    pub etag: String,
    pub link: Option<String>,
    pub body: Vec<u8>,
}

/// One chunk as prune sees it.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRow {
    pub id: ChunkId,
    pub kind: u8,
    pub pack_id: i64,
    pub len: u32,
    pub frame_offset: u64,
    pub offset: u32,
}

/// What one prune changes in the index.
pub struct PruneChanges<'a> {
    pub condemned: &'a [String],
    /// Packs whose chunk rows may be judged (those that existed when prune started).
    pub judged_packs: &'a [i64],
    /// Whether a chunk row in a judged pack is dead.
    pub chunk_dead: &'a dyn Fn(&ChunkRow) -> bool,
    /// Whether a git object is live; every other object row goes.
    pub object_live: &'a dyn Fn(&Oid) -> bool,
    pub compacted: &'a [(PackRecord<'a>, Vec<String>)],
}

/// What `apply_prune` removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct PruneCounts {
    pub dead_chunks: u64,
    pub dead_objects: u64,
    /// Packs condemned because no chunk row points into them any more.
    pub unreferenced_packs: u64,
}

/// A git object's chunk with what prune needs to know about that chunk.
#[derive(Debug, Clone, Copy)]
pub struct ObjectChunk {
    pub kind: ObjectKind,
    pub chunk: ChunkId,
    pub chunk_kind: u8,
    pub pack_id: i64,
}

const OID_PAGE: i64 = 10_000;

/// The pack's row (created unless it exists) and the targets holding it; returns its id.
fn record_pack(
    tx: &rusqlite::Transaction<'_>,
    pack: &PackRecord<'_>,
    targets: &[String],
) -> Result<i64, IndexError> {
    tx.execute(
        "INSERT INTO packs (name, size, raw_bytes, chunk_count, created_at, provenance) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(name) DO UPDATE SET provenance = max(provenance, excluded.provenance)",
        params![
            pack.name,
            pack.size,
            pack.raw_bytes,
            pack.entries.len() as i64,
            chrono::Utc::now().timestamp(),
            pack.provenance as i64
        ],
    )?;
    let pack_id: i64 = tx.query_row(
        "SELECT id FROM packs WHERE name = ?1",
        params![pack.name],
        |r| r.get(0),
    )?;
    let mut presence =
        tx.prepare_cached("INSERT OR IGNORE INTO pack_targets (pack_id, target) VALUES (?1, ?2)")?;
    for t in targets {
        presence.execute(params![pack_id, t])?;
    }
    Ok(pack_id)
}

fn chunk_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkRow> {
    let id: Vec<u8> = r.get(0)?;
    Ok(ChunkRow {
        id: chunk_id_from(&id),
        kind: r.get(1)?,
        pack_id: r.get(2)?,
        len: r.get(3)?,
        frame_offset: r.get(4)?,
        offset: r.get(5)?,
    })
}

fn chunk_id_from(bytes: &[u8]) -> ChunkId {
    let mut id = [0u8; 32];
    if bytes.len() == 32 {
        id.copy_from_slice(bytes);
    }
    ChunkId(id)
}

/// One snapshot as the index records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRow {
    #[serde(skip)]
    pub row_id: i64,
    /// The user-facing id: the first 16 hex digits of the manifest's chunk id.
    pub id: String,
    pub repo: String,
    pub time: chrono::DateTime<chrono::Utc>,
    #[serde(skip)]
    pub manifest: ChunkId,
    #[serde(skip)]
    pub refset: ChunkId,
    pub head: Option<String>,
    pub ref_count: u64,
    pub objects_added: u64,
    pub source: String,
}

/// What `insert_snapshot` records.
pub struct NewSnapshot<'a> {
    pub repo: &'a str,
    pub time: chrono::DateTime<chrono::Utc>,
    pub manifest: ChunkId,
    pub refset: ChunkId,
    pub head: Option<String>,
    pub ref_count: u64,
    pub source: &'a str,
    pub new_objects: &'a [ObjectEntry],
    /// LFS objects stored for this snapshot (recorded with it, like its git objects).
    pub new_lfs: &'a [LfsEntry],
}

const SNAPSHOT_COLUMNS: &str =
    "s.id, r.name, s.time_ms, s.manifest, s.refset, s.head, s.ref_count, s.objects_added, s.source";

fn snapshot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    let blob = |i: usize| -> rusqlite::Result<ChunkId> {
        let v: Vec<u8> = r.get(i)?;
        ChunkId::from_slice(&v).ok_or(rusqlite::Error::InvalidColumnType(
            i,
            "chunk id".into(),
            rusqlite::types::Type::Blob,
        ))
    };
    let manifest = blob(3)?;
    let time_ms: i64 = r.get(2)?;
    Ok(SnapshotRow {
        row_id: r.get(0)?,
        id: manifest.to_hex()[..16].to_string(),
        repo: r.get(1)?,
        time: chrono::DateTime::from_timestamp_millis(time_ms).unwrap_or_default(),
        manifest,
        refset: blob(4)?,
        head: r.get(5)?,
        ref_count: r.get(6)?,
        objects_added: r.get(7)?,
        source: r.get(8)?,
    })
}

impl Index {
    /// Records a snapshot and the git objects it added, in one transaction. Called only after
    /// every pack the snapshot needs is durable (invariant 2).
    pub fn insert_snapshot(&self, snap: &NewSnapshot<'_>) -> Result<SnapshotRow, IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO repos (name) VALUES (?1)",
            params![snap.repo],
        )?;
        let repo_id: i64 = tx.query_row(
            "SELECT id FROM repos WHERE name = ?1",
            params![snap.repo],
            |r| r.get(0),
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO git_objects (oid, kind, chunk) VALUES (?1, ?2, ?3)",
            )?;
            for o in snap.new_objects {
                insert.execute(params![&o.oid.0[..], o.kind as u8, &o.chunk.0[..]])?;
            }
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO lfs_objects (sha256, size, chunk) VALUES (?1, ?2, ?3)",
            )?;
            for e in snap.new_lfs {
                insert.execute(params![
                    &e.pointer.sha256[..],
                    e.pointer.size,
                    &e.chunk.0[..]
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO snapshots (repo_id, time_ms, manifest, refset, head, ref_count, objects_added, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                repo_id,
                snap.time.timestamp_millis(),
                &snap.manifest.0[..],
                &snap.refset.0[..],
                snap.head,
                snap.ref_count,
                snap.new_objects.len() as u64,
                snap.source
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.snapshot_by_manifest(&snap.manifest)?
            .ok_or_else(|| IndexError::Inconsistent("a snapshot vanished after insertion".into()))
    }

    fn snapshot_by_manifest(&self, manifest: &ChunkId) -> Result<Option<SnapshotRow>, IndexError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots s JOIN repos r ON r.id = s.repo_id WHERE s.manifest = ?1"
        );
        Ok(self
            .conn()
            .query_row(&sql, params![&manifest.0[..]], snapshot_row)
            .optional()?)
    }

    /// Snapshots, oldest first, optionally of one repository and within a time range.
    pub fn snapshots(
        &self,
        repo: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
        until: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<SnapshotRow>, IndexError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots s JOIN repos r ON r.id = s.repo_id
             WHERE (?1 IS NULL OR r.name = ?1) AND s.time_ms >= ?2 AND s.time_ms <= ?3
             ORDER BY r.name, s.time_ms, s.id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![
                repo,
                since.map_or(i64::MIN, |t| t.timestamp_millis()),
                until.map_or(i64::MAX, |t| t.timestamp_millis())
            ],
            snapshot_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest snapshot of `repo` taken at or before `at` (or the newest of all).
    pub fn snapshot_as_of(
        &self,
        repo: &str,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<SnapshotRow>, IndexError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots s JOIN repos r ON r.id = s.repo_id
             WHERE r.name = ?1 AND s.time_ms <= ?2 ORDER BY s.time_ms DESC, s.id DESC LIMIT 1"
        );
        let at = at.map_or(i64::MAX, |t| t.timestamp_millis());
        Ok(self
            .conn()
            .query_row(&sql, params![repo, at], snapshot_row)
            .optional()?)
    }

    /// Snapshots of `repo` whose id starts with `prefix`.
    pub fn snapshots_by_prefix(
        &self,
        repo: &str,
        prefix: &str,
    ) -> Result<Vec<SnapshotRow>, IndexError> {
        Ok(self
            .snapshots(Some(repo), None, None)?
            .into_iter()
            .filter(|s| s.id.starts_with(&prefix.to_ascii_lowercase()))
            .collect())
    }

    pub fn repos(&self) -> Result<Vec<String>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM repos ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn git_object(&self, oid: &Oid) -> Result<Option<(ObjectKind, ChunkId)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT kind, chunk FROM git_objects WHERE oid = ?1")?;
        let row: Option<(u8, Vec<u8>)> = stmt
            .query_row(params![&oid.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(None),
            Some((kind, chunk)) => {
                let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
                    IndexError::Inconsistent(format!("object {oid} has unknown kind {kind}"))
                })?;
                let chunk = ChunkId::from_slice(&chunk).ok_or_else(|| {
                    IndexError::Inconsistent(format!("object {oid} has a bad chunk id"))
                })?;
                Ok(Some((kind, chunk)))
            }
        }
    }

    /// The object's chunk joined with the chunk's row: one lookup where prune's mark would
    /// otherwise need two.
    pub fn git_object_chunk(&self, oid: &Oid) -> Result<Option<ObjectChunk>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT g.kind, g.chunk, c.kind, c.pack_id FROM git_objects g
             JOIN chunks c ON c.id = g.chunk WHERE g.oid = ?1",
        )?;
        let row: Option<(u8, Vec<u8>, u8, i64)> = stmt
            .query_row(params![&oid.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((kind, chunk, chunk_kind, pack_id)) = row else {
            return Ok(None);
        };
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            IndexError::Inconsistent(format!("object {oid} has unknown kind {kind}"))
        })?;
        let chunk = ChunkId::from_slice(&chunk)
            .ok_or_else(|| IndexError::Inconsistent(format!("object {oid} has a bad chunk id")))?;
        Ok(Some(ObjectChunk {
            kind,
            chunk,
            chunk_kind,
            pack_id,
        }))
    }

    pub fn pack_targets_by_name(&self, name: &str) -> Result<Vec<String>, IndexError> {
        match self.pack_id(name)? {
            Some(id) => self.pack_targets(id),
            None => Ok(Vec::new()),
        }
    }

    pub fn pack_id(&self, name: &str) -> Result<Option<i64>, IndexError> {
        Ok(self
            .conn()
            .query_row("SELECT id FROM packs WHERE name = ?1", params![name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Records that `target` holds (or no longer holds) a pack.
    pub fn set_presence(&self, pack: &str, target: &str, present: bool) -> Result<(), IndexError> {
        let Some(id) = self.pack_id(pack)? else {
            return Ok(());
        };
        if present {
            self.conn().execute(
                "INSERT OR IGNORE INTO pack_targets (pack_id, target) VALUES (?1, ?2)",
                params![id, target],
            )?;
        } else {
            self.conn().execute(
                "DELETE FROM pack_targets WHERE pack_id = ?1 AND target = ?2",
                params![id, target],
            )?;
        }
        Ok(())
    }

    /// Forgets every presence record (recover sets them anew from listings).
    pub fn clear_presence(&self) -> Result<(), IndexError> {
        self.conn().execute("DELETE FROM pack_targets", [])?;
        Ok(())
    }

    pub fn has_snapshot(&self, manifest: &ChunkId) -> Result<bool, IndexError> {
        Ok(self.snapshot_by_manifest(manifest)?.is_some())
    }

    /// Writes an index backup to `path`: a consistent copy of the part of the index the packs
    /// cannot give back.
    pub fn backup_to(&self, path: &Path) -> Result<(), IndexError> {
        let _ = std::fs::remove_file(path);
        self.conn()
            .execute("VACUUM INTO ?1", params![path.to_string_lossy()])?;
        // Every backup is stored on every target and uploaded after every run: leave out what
        // `recover` rebuilds from the packs anyway (pack footers give the chunks, manifests
        // and object maps the snapshots and objects) — ~100 bytes an object, as much as the
        // footers and maps themselves — and what `open` rebuilds. What stays is small and
        // not in the packs: the HTTP cache, repository sources, condemned packs, counters.
        let copy = Connection::open(path)?;
        copy.execute_batch(
            "DELETE FROM git_objects; DELETE FROM lfs_objects; DELETE FROM chunks;
             DELETE FROM pack_targets; DELETE FROM packs; DELETE FROM snapshots;
             DELETE FROM repos;",
        )?;
        for (name, _) in DERIVED_INDEXES {
            copy.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
        }
        copy.execute_batch("VACUUM")?;
        Ok(())
    }

    /// A cached API response (conditional requests).
    pub fn http_cached(&self, url: &str) -> Result<Option<CachedResponse>, IndexError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT etag, link, body FROM http_cache WHERE url = ?1")?;
        Ok(stmt
            .query_row(params![url], |r| {
                Ok(CachedResponse {
                    etag: r.get(0)?,
                    link: r.get(1)?,
                    body: r.get(2)?,
                })
            })
            .optional()?)
    }

    pub fn http_store(
        &self,
        url: &str,
        etag: &str,
        link: Option<&str>,
        body: &[u8],
    ) -> Result<(), IndexError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO http_cache (url, etag, link, body) VALUES (?1, ?2, ?3, ?4)",
            params![url, etag, link, body],
        )?;
        Ok(())
    }

    /// Remembers which configured source a repository was last backed up through (retention
    /// set per source applies to it).
    pub fn set_repo_source(&self, repo: &str, source: &str) -> Result<(), IndexError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO repo_sources (repo, source) VALUES (?1, ?2)",
            params![repo, source],
        )?;
        Ok(())
    }

    pub fn repo_sources(&self) -> Result<std::collections::HashMap<String, String>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT repo, source FROM repo_sources")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes snapshot rows (forget), in one transaction. The packs keep their chunks until
    /// prune: nothing else in the index changes.
    pub fn delete_snapshots(&self, manifests: &[ChunkId]) -> Result<usize, IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let mut deleted = 0;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM snapshots WHERE manifest = ?1")?;
            for m in manifests {
                deleted += stmt.execute(params![&m.0[..]])?;
            }
        }
        tx.commit()?;
        Ok(deleted)
    }

    /// Every chunk row, in the order chunks lie in the packs (prune's view of the store).
    /// Calls `f` for every chunk row, in no particular order, without holding them all. `f`
    /// must not use the index (its connection is busy).
    pub fn for_each_chunk(&self, mut f: impl FnMut(&ChunkRow)) -> Result<(), IndexError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, kind, pack_id, length, frame_offset, offset FROM chunks")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(&chunk_row(r)?);
        }
        Ok(())
    }

    /// The chunk rows of one pack that `keep` accepts, in the order they lie in the pack.
    /// `keep` must not use the index (its connection is busy).
    pub fn chunks_of_pack(
        &self,
        pack_id: i64,
        mut keep: impl FnMut(&ChunkRow) -> bool,
    ) -> Result<Vec<ChunkRow>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, pack_id, length, frame_offset, offset FROM chunks WHERE pack_id = ?1",
        )?;
        let mut rows = stmt.query(params![pack_id])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = chunk_row(r)?;
            if keep(&row) {
                out.push(row);
            }
        }
        out.sort_unstable_by_key(|c| (c.frame_offset, c.offset));
        Ok(out)
    }

    /// Whether every chunk row of one pack satisfies `f` (stops at the first that does not).
    pub fn all_chunks_of_pack(
        &self,
        pack_id: i64,
        mut f: impl FnMut(&ChunkRow) -> bool,
    ) -> Result<bool, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, pack_id, length, frame_offset, offset FROM chunks WHERE pack_id = ?1",
        )?;
        let mut rows = stmt.query(params![pack_id])?;
        while let Some(r) = rows.next()? {
            if !f(&chunk_row(r)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The ids of every chunk of one kind (manifests, prune records).
    pub fn chunks_of_kind(&self, kind: u8) -> Result<Vec<ChunkId>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id FROM chunks WHERE kind = ?1")?;
        let rows = stmt.query_map(params![kind], |r| {
            let id: Vec<u8> = r.get(0)?;
            Ok(chunk_id_from(&id))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records objects whose chunks are present (recover applying a prune record).
    pub fn add_git_objects(&self, entries: &[ObjectEntry]) -> Result<(), IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO git_objects (oid, kind, chunk)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?3)",
            )?;
            for e in entries {
                insert.execute(params![&e.oid.0[..], e.kind as u8, &e.chunk.0[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The chunk holding an LFS object, when the vault has it.
    pub fn lfs_object(&self, sha256: &[u8; 32]) -> Result<Option<ChunkId>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT chunk FROM lfs_objects WHERE sha256 = ?1")?;
        let chunk: Option<Vec<u8>> = stmt
            .query_row(params![&sha256[..]], |r| r.get(0))
            .optional()?;
        Ok(chunk.map(|c| chunk_id_from(&c)))
    }

    /// Every recorded git object id.
    /// Up to `limit` git object rows with ids above `after`, in id order: a walk through all
    /// objects that holds one page at a time and lets the caller use the index in between.
    pub fn git_objects_after(
        &self,
        after: &Oid,
        limit: usize,
    ) -> Result<Vec<ObjectEntry>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT oid, kind, chunk FROM git_objects WHERE oid > ?1 ORDER BY oid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![&after.0[..], limit as i64], |r| {
            let oid: Vec<u8> = r.get(0)?;
            let kind: u8 = r.get(1)?;
            let chunk: Vec<u8> = r.get(2)?;
            Ok((oid, kind, chunk))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (oid, kind, chunk) = row?;
            let bad = || IndexError::Inconsistent("a git object row is malformed".into());
            out.push(ObjectEntry {
                oid: Oid::from_slice(&oid).ok_or_else(bad)?,
                kind: ObjectKind::from_u8(kind).ok_or_else(bad)?,
                chunk: ChunkId::from_slice(&chunk).ok_or_else(bad)?,
            });
        }
        Ok(out)
    }

    /// Counts the git object rows `live` rejects (prune's dry run).
    pub fn count_dead_objects(&self, live: &dyn Fn(&Oid) -> bool) -> Result<u64, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT oid FROM git_objects")?;
        let mut rows = stmt.query([])?;
        let mut dead = 0;
        while let Some(r) = rows.next()? {
            let oid: Vec<u8> = r.get(0)?;
            if Oid::from_slice(&oid).is_some_and(|o| !live(&o)) {
                dead += 1;
            }
        }
        Ok(dead)
    }

    /// Records what prune decided, in one transaction: compacted packs (their chunks take the
    /// new location when their old pack is condemned), dead chunk and object rows removed,
    /// packs condemned.
    pub fn apply_prune(&self, changes: &PruneChanges<'_>) -> Result<PruneCounts, IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut counts = PruneCounts::default();
        {
            let mut condemn = tx.prepare_cached(
                "INSERT OR IGNORE INTO condemned_packs (name, since_ms) VALUES (?1, ?2)",
            )?;
            for name in changes.condemned {
                condemn.execute(params![name, now])?;
            }
            // Pack by pack and page by page (the pack index holds each row's id too, so a
            // page is a range scan): the dead rows are never all in memory.
            let mut in_pack = tx.prepare_cached(
                "SELECT id, kind, pack_id, length, frame_offset, offset FROM chunks
                 WHERE pack_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let mut drop_chunk = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
            let mut drop_lfs = tx.prepare_cached("DELETE FROM lfs_objects WHERE chunk = ?1")?;
            for pack in changes.judged_packs {
                let mut after: Vec<u8> = Vec::new();
                loop {
                    let rows: Vec<ChunkRow> = in_pack
                        .query_map(params![pack, after, OID_PAGE], chunk_row)?
                        .collect::<Result<_, _>>()?;
                    let Some(last) = rows.last() else { break };
                    after = last.id.0.to_vec();
                    for row in rows.iter().filter(|r| (changes.chunk_dead)(r)) {
                        drop_chunk.execute(params![&row.id.0[..]])?;
                        drop_lfs.execute(params![&row.id.0[..]])?;
                        counts.dead_chunks += 1;
                    }
                }
            }
            let mut page = tx.prepare_cached(
                "SELECT oid FROM git_objects WHERE oid > ?1 ORDER BY oid LIMIT ?2",
            )?;
            let mut drop_object = tx.prepare_cached("DELETE FROM git_objects WHERE oid = ?1")?;
            let mut after: Vec<u8> = Vec::new();
            loop {
                let oids: Vec<Vec<u8>> = page
                    .query_map(params![after, OID_PAGE], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let Some(last) = oids.last() else { break };
                after = last.clone();
                for oid in &oids {
                    if Oid::from_slice(oid).is_none_or(|o| !(changes.object_live)(&o)) {
                        drop_object.execute(params![oid])?;
                        counts.dead_objects += 1;
                    }
                }
            }
        }
        for (pack, targets) in changes.compacted {
            let pack_id = record_pack(&tx, pack, targets)?;
            // A chunk moves only out of a condemned pack; elsewhere the copy is a duplicate
            // (and its pack, pointed into by nothing, is condemned below).
            let mut repoint = tx.prepare_cached(
                "UPDATE chunks SET pack_id = ?2, frame_offset = ?3, frame_clen = ?4, frame_rawlen = ?5,
                     offset = ?6, length = ?7
                 WHERE id = ?1 AND pack_id IN
                     (SELECT p.id FROM packs p JOIN condemned_packs c ON c.name = p.name)",
            )?;
            for e in pack.entries {
                let frame = pack.frames.get(e.frame as usize).ok_or_else(|| {
                    IndexError::Inconsistent(format!("pack {} names a missing frame", pack.name))
                })?;
                repoint.execute(params![
                    &e.id.0[..],
                    pack_id,
                    frame.offset,
                    frame.compressed_len,
                    frame.raw_len,
                    e.offset,
                    e.len
                ])?;
            }
        }
        // A pack nothing points into holds nothing a snapshot can reach: an unused compaction
        // copy, or a pack whose rows all went.
        counts.unreferenced_packs = tx.execute(
            "INSERT OR IGNORE INTO condemned_packs (name, since_ms)
             SELECT p.name, ?1 FROM packs p
             WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.pack_id = p.id)
               AND p.provenance >= 1
               AND NOT EXISTS (SELECT 1 FROM condemned_packs d WHERE d.name = p.name)",
            params![now],
        )? as u64;
        tx.commit()?;
        Ok(counts)
    }

    /// Packs condemned by prune and when.
    pub fn condemned_packs(&self) -> Result<Vec<(String, i64)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, since_ms FROM condemned_packs ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many chunk rows still point into a pack (a condemned pack must have none).
    pub fn chunks_in_pack(&self, name: &str) -> Result<u64, IndexError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM chunks c JOIN packs p ON p.id = c.pack_id WHERE p.name = ?1",
            params![name],
            |r| r.get(0),
        )?)
    }

    /// Forgets a pack deleted from every target.
    /// Takes a pack out of the index with every chunk row pointing into it (recover found it
    /// to be a replay after recording it).
    pub fn unrecord_pack(&self, name: &str) -> Result<(), IndexError> {
        self.conn().execute(
            "DELETE FROM chunks WHERE pack_id IN (SELECT id FROM packs WHERE name = ?1)",
            params![name],
        )?;
        self.drop_pack(name)
    }

    pub fn drop_pack(&self, name: &str) -> Result<(), IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM pack_targets WHERE pack_id IN (SELECT id FROM packs WHERE name = ?1)",
            params![name],
        )?;
        tx.execute("DELETE FROM packs WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM condemned_packs WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(())
    }

    pub fn has_git_object(&self, oid: &Oid) -> Result<bool, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM git_objects WHERE oid = ?1")?;
        Ok(stmt.exists(params![&oid.0[..]])?)
    }
}

fn add_counter(conn: &Connection, name: &str, delta: u64) -> Result<(), IndexError> {
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        params![name, delta as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let index = Index::open(&path).unwrap();
        assert_eq!(index.schema_version().unwrap(), SCHEMA_VERSION);
        drop(index);
        let index = Index::open(&path).unwrap();
        assert_eq!(index.totals().unwrap().packs, 0);
        index
            .conn()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(index);
        assert!(matches!(Index::open(&path), Err(IndexError::TooNew { .. })));
    }
}
