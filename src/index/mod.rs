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

mod http_cache;
mod locks;
mod objects;
mod packs;
mod prune;
mod snapshots;

pub use http_cache::CachedResponse;
pub use objects::ObjectChunk;
use objects::{OID_PAGE, drop_objects_not};
pub use packs::{
    ChunkLocation, ChunkRow, Committed, FrameInfo, PackEntry, PackRecord, PackRow, Provenance,
    VanishedCounts,
};
use packs::{chunk_id_from, chunk_row, record_pack};
pub use prune::{PruneChanges, PruneCounts};
pub use snapshots::{NewSnapshot, SnapshotRow};

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
    // v4: S3 Object Lock. When each copy of a pack is locked until, as last read or renewed
    // (NULL: not known yet), so that renewal asks the target only about locks running out.
    "
    ALTER TABLE pack_targets ADD COLUMN lock_until_ms INTEGER;
    ",
];

/// Where an index's contents came from (`meta.origin`).
pub const ORIGIN_INIT: &str = "init";
pub const ORIGIN_RECOVER: &str = "recover";
/// An index from before 2026-12-04: it may have been recovered from an index backup nobody
/// could authenticate.
pub const ORIGIN_UNKNOWN: &str = "before-authentication";
pub const ORIGIN_VOUCHED: &str = "vouched";

/// SQLite page cache bound, in KiB.
const CACHE_KIB: i64 = 64 * 1024;

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub packs: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub unique_bytes: u64,
    pub logical_bytes: u64,
}

/// See `Index::read_snapshot`.
pub struct ReadSnapshot<'a> {
    index: &'a Index,
    owned: bool,
}

impl Drop for ReadSnapshot<'_> {
    fn drop(&mut self) {
        if self.owned {
            // Only reads happened: ending the transaction cannot lose anything.
            let _ = self.index.conn().execute_batch("COMMIT");
        }
    }
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
        // The default 2 MB page cache thrashes once a pack's rows go into tables of many
        // MB at random keys (object and chunk ids): every insert then reads and spills pages
        // (a first backup of 233 k objects made 1.8 M page reads and writes). A cap, not an
        // allocation: small vaults never fill it.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
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

    /// Holds one read transaction until the guard is dropped, for a long read-only pass (a
    /// restore): outside a transaction every query takes and drops SQLite's file locks, which
    /// was a fifth of a restore's time in system calls. Nothing may write through this index
    /// while the guard lives; a guard taken inside another is a no-op.
    pub fn read_snapshot(&self) -> Result<ReadSnapshot<'_>, IndexError> {
        let conn = self.conn();
        let owned = conn.is_autocommit();
        if owned {
            conn.execute_batch("BEGIN DEFERRED")?;
        }
        Ok(ReadSnapshot { index: self, owned })
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
}

impl Index {
    /// Writes an index backup to `path`: a consistent copy of the part of the index the packs
    /// cannot give back.
    pub(crate) fn backup_to(&self, path: &Path) -> Result<(), IndexError> {
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

    /// The lookups restore and prune make per object stay compiled between calls.
    #[test]
    fn hot_lookups_are_not_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        {
            let conn = index.conn();
            conn.execute(
                "INSERT INTO packs (id, name, size, raw_bytes, chunk_count, created_at)
                 VALUES (1, 'p', 1, 1, 1, 0)",
                [],
            )
            .unwrap();
            for i in 0..20u8 {
                conn.execute(
                    "INSERT INTO chunks (id, kind, pack_id, frame_offset, frame_clen,
                     frame_rawlen, offset, length) VALUES (?1, 4, 1, 0, 1, 1, 0, 1)",
                    [vec![i; 32]],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO git_objects (oid, kind, chunk) VALUES (?1, 3, ?2)",
                    [vec![i; 20], vec![i; 32]],
                )
                .unwrap();
            }
        }
        for i in 0..20u8 {
            let id = crate::crypto::ChunkId([i; 32]);
            assert_eq!(index.chunk(&id).unwrap().unwrap().pack_name, "p");
            let oid = crate::model::Oid([i; 20]);
            assert_eq!(index.git_object_chunk(&oid).unwrap().unwrap().chunk, id);
        }
        assert!(
            index
                .git_object_chunk(&crate::model::Oid([99; 20]))
                .unwrap()
                .is_none()
        );
        let conn = index.conn();
        for sql in [packs::CHUNK_SQL, objects::GIT_OBJECT_CHUNK_SQL] {
            let stmt = conn.prepare_cached(sql).unwrap();
            let recompiled = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(recompiled, 0, "{sql}");
        }
    }
}
