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
pub use objects::{GIT_OBJECT_SQL, GitObjectRow, ObjectChunk};
use objects::{OID_PAGE, drop_objects_not};
pub use packs::{
    ChunkLocation, ChunkPlace, ChunkRow, Committed, FrameInfo, PackEntry, PackRecord, PackRow,
    Provenance, VanishedCounts,
};
use packs::{chunk_id_from, chunk_row, in_pack, note_in_pack, record_pack};
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

/// Secondary indexes that index backups leave out and `open` recreates.
const DERIVED_INDEXES: &[(&str, &str)] = &[
    // Only the kinds `chunks_of_kind` looks for: indexing every chunk's kind cost 44 bytes a
    // git object (a fifth of the index) for a few thousand manifests.
    (
        "chunks_by_rare_kind",
        "CREATE INDEX IF NOT EXISTS chunks_by_rare_kind ON chunks(kind) WHERE kind IN (7, 11)",
    ),
];

/// The chunk kinds `chunks_by_rare_kind` holds: `store::ChunkKind::Manifest` and
/// `PruneRecord` (the index is below the store; a store test checks the numbers).
pub const INDEXED_CHUNK_KINDS: [u8; 2] = [7, 11];

/// The schema version whose migration rewrites `git_objects` (and so leaves a file worth
/// compacting once).
const FOOTPRINT_VERSION: i64 = 5;

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
    // v5: a smaller index (docs/PERFORMANCE.md, "Index footprint"). A git object names its
    // chunk by the chunk id's first 8 bytes when exactly that chunk has them, else by the
    // whole id (see `objects::chunk_ref`); the full index of chunk kinds gives way to a
    // partial one (`DERIVED_INDEXES`); the index of chunks by pack (which repeated each whole
    // id) to `pack_chunks` (see `packs::in_pack`); each frame's lengths move from every chunk
    // row to one `frames` row. Rows are copied in key order, which fills pages.
    "
    DROP INDEX IF EXISTS chunks_by_kind;
    DROP INDEX IF EXISTS chunks_by_pack;
    CREATE TABLE frames (
        pack_id INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        clen INTEGER NOT NULL,
        rawlen INTEGER NOT NULL,
        PRIMARY KEY (pack_id, offset)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO frames (pack_id, offset, clen, rawlen)
        SELECT DISTINCT pack_id, frame_offset, frame_clen, frame_rawlen FROM chunks ORDER BY 1, 2;
    CREATE TABLE chunks_v5 (
        id BLOB PRIMARY KEY,
        kind INTEGER NOT NULL,
        pack_id INTEGER NOT NULL REFERENCES packs(id),
        frame_offset INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO chunks_v5 (id, kind, pack_id, frame_offset, offset, length)
        SELECT id, kind, pack_id, frame_offset, offset, length FROM chunks ORDER BY id;
    DROP TABLE chunks;
    ALTER TABLE chunks_v5 RENAME TO chunks;
    CREATE TABLE pack_chunks (
        pack_id INTEGER NOT NULL,
        prefix BLOB NOT NULL,
        PRIMARY KEY (pack_id, prefix)
    ) WITHOUT ROWID;
    INSERT INTO pack_chunks (pack_id, prefix)
        SELECT DISTINCT pack_id, substr(id, 1, 8) FROM chunks ORDER BY 1, 2;
    CREATE TABLE git_objects_v5 (
        oid BLOB PRIMARY KEY,
        kind INTEGER NOT NULL,
        chunk BLOB NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO git_objects_v5 (oid, kind, chunk)
        SELECT g.oid, g.kind,
            CASE WHEN (SELECT min(c.id) = g.chunk AND max(c.id) = g.chunk FROM chunks c
                       WHERE c.id BETWEEN substr(g.chunk, 1, 8)
                           AND CAST(substr(g.chunk, 1, 8) || X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' AS BLOB))
                 THEN substr(g.chunk, 1, 8) ELSE g.chunk END
        FROM git_objects g ORDER BY g.oid;
    DROP TABLE git_objects;
    ALTER TABLE git_objects_v5 RENAME TO git_objects;
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
        if (1..FOOTPRINT_VERSION).contains(&found) {
            // The rewritten tables left their old pages free inside the file: give them back
            // once (VACUUM cannot run inside the migration's transaction).
            self.conn().execute_batch("VACUUM")?;
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

    /// Gives back the memory of SQLite's page cache (up to `CACHE_KIB`): for a phase that
    /// will not ask the index much more, such as a restore's pack writing after its walk.
    pub fn shrink_memory(&self) -> Result<(), IndexError> {
        self.conn().execute_batch("PRAGMA shrink_memory")?;
        Ok(())
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
             DELETE FROM pack_chunks; DELETE FROM frames;
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
            conn.execute(
                "INSERT INTO frames (pack_id, offset, clen, rawlen) VALUES (1, 0, 1, 1)",
                [],
            )
            .unwrap();
            for i in 0..20u8 {
                conn.execute(
                    "INSERT INTO chunks (id, kind, pack_id, frame_offset, offset, length)
                     VALUES (?1, 4, 1, 0, 0, 1)",
                    [vec![i; 32]],
                )
                .unwrap();
                // Half by the whole chunk id, half by its first 8 bytes.
                let chunk = vec![i; if i % 2 == 0 { 32 } else { 8 }];
                conn.execute(
                    "INSERT INTO git_objects (oid, kind, chunk) VALUES (?1, 3, ?2)",
                    [vec![i; 20], chunk],
                )
                .unwrap();
            }
        }
        for i in 0..20u8 {
            let id = crate::crypto::ChunkId([i; 32]);
            assert_eq!(index.chunk(&id).unwrap().unwrap().pack_name, "p");
            let oid = crate::model::Oid([i; 20]);
            assert_eq!(index.git_object_chunk(&oid).unwrap().unwrap().chunk, id);
            assert_eq!(index.git_object(&oid).unwrap().unwrap().1, id);
            let row = index.git_object_row(&oid).unwrap().unwrap().unwrap();
            assert_eq!((row.chunk, row.place.pack_id, row.place.len), (id, 1, 1));
            assert_eq!(index.frame(1, 0).unwrap().unwrap().1.raw_len, 1);
        }
        assert!(
            index
                .git_object_row(&crate::model::Oid([99; 20]))
                .unwrap()
                .is_none()
        );
        assert!(
            index
                .git_object_chunk(&crate::model::Oid([99; 20]))
                .unwrap()
                .is_none()
        );
        let conn = index.conn();
        for sql in [
            packs::CHUNK_SQL,
            GIT_OBJECT_SQL,
            objects::GIT_OBJECT_CHUNK_SQL,
            objects::GIT_OBJECT_REF_SQL,
            objects::CHUNK_PLACE_SQL,
            packs::FRAME_SQL,
        ] {
            let stmt = conn.prepare_cached(sql).unwrap();
            let recompiled = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(recompiled, 0, "{sql}");
        }
    }

    fn id_with_prefix(prefix: u8, rest: u8) -> ChunkId {
        let mut id = [rest; 32];
        id[..8].copy_from_slice(&[prefix; 8]);
        ChunkId(id)
    }

    fn entry(id: ChunkId) -> PackEntry {
        PackEntry {
            id,
            kind: 4,
            frame: 0,
            offset: 0,
            len: 1,
        }
    }

    fn commit(index: &Index, name: &str, ids: &[ChunkId]) {
        let frames = [FrameInfo {
            offset: 0,
            compressed_len: 1,
            raw_len: 1,
        }];
        let entries: Vec<PackEntry> = ids.iter().copied().map(entry).collect();
        let record = PackRecord {
            name,
            size: 1,
            raw_bytes: 1,
            provenance: Provenance::Written,
            frames: &frames,
            entries: &entries,
        };
        index.commit_pack(&record, &["t".to_string()], 0).unwrap();
    }

    fn object(i: u8, chunk: ChunkId) -> ObjectEntry {
        ObjectEntry {
            oid: Oid([i; 20]),
            kind: ObjectKind::Blob,
            chunk,
        }
    }

    /// Bytes stored for each git object's chunk reference, by object id.
    fn ref_widths(index: &Index) -> Vec<(u8, usize)> {
        let conn = index.conn();
        let mut stmt = conn
            .prepare("SELECT oid, length(chunk) FROM git_objects ORDER BY oid")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?[0], r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A chunk whose first 8 bytes another chunk already has makes the references to that
    /// chunk whole: no object ever resolves to the wrong chunk, whatever the order of writes.
    #[test]
    fn chunks_sharing_a_prefix_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        // b sorts before a: a range lookup that did not tell them apart would find b.
        let (a, b, c) = (
            id_with_prefix(1, 2),
            id_with_prefix(1, 1),
            id_with_prefix(3, 3),
        );
        commit(&index, "p1", &[a, c]);
        index
            .add_git_objects(&[object(1, a), object(3, c)])
            .unwrap();
        assert_eq!(ref_widths(&index), [(1, 8), (3, 8)]);

        // b arrives in another pack: object 1 must keep naming a, not b.
        commit(&index, "p2", &[b]);
        index.add_git_objects(&[object(2, b)]).unwrap();
        assert_eq!(ref_widths(&index), [(1, 32), (2, 32), (3, 8)]);
        for (i, want) in [(1, a), (2, b), (3, c)] {
            let oid = Oid([i; 20]);
            assert_eq!(index.git_object(&oid).unwrap().unwrap().1, want);
            assert_eq!(index.git_object_chunk(&oid).unwrap().unwrap().chunk, want);
            assert!(index.has_git_object(&oid).unwrap());
        }
        let all = index.git_objects_after(&Oid([0; 20]), 10).unwrap();
        let chunks: Vec<ChunkId> = all.iter().map(|e| e.chunk).collect();
        assert_eq!(chunks, [a, b, c]);

        // p1 gone: the objects of a and c go, b's stays.
        let gone = index.drop_vanished_packs(&["p1".to_string()]).unwrap();
        assert_eq!(gone.objects, 2);
        assert!(!index.has_git_object(&Oid([1; 20])).unwrap());
        assert_eq!(index.git_object(&Oid([2; 20])).unwrap().unwrap().1, b);
        assert!(!index.has_git_object(&Oid([3; 20])).unwrap());
        // Nothing else has b's prefix now, but its reference stays whole (still exact).
        assert_eq!(ref_widths(&index), [(2, 32)]);
    }

    /// An index of schema version 4 (full chunk ids, every chunk's kind indexed) opens as
    /// version 5 with the same answers.
    #[test]
    fn a_version_4_index_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let (a, b, c, missing) = (
            id_with_prefix(1, 1),
            id_with_prefix(1, 2),
            id_with_prefix(3, 3),
            id_with_prefix(4, 4),
        );
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute(
                "INSERT INTO packs (id, name, size, raw_bytes, chunk_count, created_at)
                 VALUES (1, 'p', 1, 1, 3, 0)",
                [],
            )
            .unwrap();
            for (id, kind) in [(a, 4u8), (b, 4), (c, 7)] {
                conn.execute(
                    "INSERT INTO chunks (id, kind, pack_id, frame_offset, frame_clen,
                     frame_rawlen, offset, length) VALUES (?1, ?2, 1, 10, 20, 30, 5, 1)",
                    params![&id.0[..], kind],
                )
                .unwrap();
            }
            for (i, chunk) in [(1u8, a), (2, b), (3, c), (4, missing)] {
                conn.execute(
                    "INSERT INTO git_objects (oid, kind, chunk) VALUES (?1, 3, ?2)",
                    params![&[i; 20][..], &chunk.0[..]],
                )
                .unwrap();
            }
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(ref_widths(&index), [(1, 32), (2, 32), (3, 8), (4, 32)]);
        for (i, want) in [(1, a), (2, b), (3, c), (4, missing)] {
            let (kind, chunk) = index.git_object(&Oid([i; 20])).unwrap().unwrap();
            assert_eq!((kind, chunk), (ObjectKind::Blob, want));
        }
        assert!(index.git_object_chunk(&Oid([4; 20])).unwrap().is_none());
        assert!(matches!(
            index.git_object_row(&Oid([4; 20])).unwrap(),
            Some(None)
        ));
        let place = index
            .git_object_row(&Oid([2; 20]))
            .unwrap()
            .unwrap()
            .unwrap()
            .place;
        assert_eq!(
            (place.pack_id, place.frame_offset, place.offset),
            (1, 10, 5)
        );
        assert!(index.git_object_row(&Oid([9; 20])).unwrap().is_none());
        let at = index.chunk(&b).unwrap().unwrap();
        let frame = FrameInfo {
            offset: 10,
            compressed_len: 20,
            raw_len: 30,
        };
        assert_eq!(
            (at.pack_name.as_str(), at.frame, at.offset),
            ("p", frame, 5)
        );
        assert_eq!(index.chunks_of_kind(7).unwrap(), [c]);
        assert_eq!(index.chunks_of_kind(4).unwrap(), [a, b]);
        let names: Vec<String> = {
            let conn = index.conn();
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE 'chunks_by%' ORDER BY name")
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(names, ["chunks_by_rare_kind"]);
        let mut in_pack: Vec<ChunkId> = index
            .chunks_of_pack(1, |_| true)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        in_pack.sort_unstable_by_key(|c| c.0);
        assert_eq!(in_pack, [a, b, c]);
    }

    /// `pack_chunks` keeps a moved chunk's old (pack, prefix) row: every per-pack question
    /// still answers by where each chunk row points now.
    #[test]
    fn chunks_of_a_pack_follow_moves() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let (a, c) = (id_with_prefix(1, 1), id_with_prefix(3, 3));
        commit(&index, "p1", &[a, c]);
        let p1 = index.pack_id("p1").unwrap().unwrap();
        let frames = [FrameInfo {
            offset: 0,
            compressed_len: 1,
            raw_len: 1,
        }];
        let entries = [entry(a)];
        let p2 = index
            .commit_pack_moving(
                &PackRecord {
                    name: "p2",
                    size: 1,
                    raw_bytes: 1,
                    provenance: Provenance::Written,
                    frames: &frames,
                    entries: &entries,
                },
                &["t".to_string()],
                0,
                (&std::collections::HashSet::from([p1]), false),
            )
            .unwrap();
        assert_eq!(p2.moved, 1);
        let ids = |pack: i64| -> Vec<ChunkId> {
            index
                .chunks_of_pack(pack, |_| true)
                .unwrap()
                .iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(ids(p1), [c]);
        assert_eq!(ids(p2.pack_id), [a]);
        assert!(index.all_chunks_of_pack(p1, |row| row.id == c).unwrap());
        assert_eq!(index.chunks_in_pack("p1").unwrap(), 1);
        assert_eq!(index.packs_with_foreign_chunks().unwrap(), ["p1"]);
        index.unrecord_pack("p1").unwrap();
        assert!(!index.has_chunk(&c).unwrap());
        assert_eq!(index.chunk(&a).unwrap().unwrap().pack_name, "p2");
        assert_eq!(ids(p2.pack_id), [a]);
        let gone = index.drop_vanished_packs(&["p2".to_string()]).unwrap();
        assert_eq!(gone.chunks, 1);
        assert_eq!(index.totals().unwrap().chunks, 0);
    }
}
