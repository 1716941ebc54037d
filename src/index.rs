//! The SQLite index: a cache of what the packs hold (packs, their presence per target, chunk
//! locations, git objects, snapshots), for fast lookups. Everything here can be rebuilt from
//! the packs (invariant 1), so the schema may change freely between versions through the
//! migrations below, keyed on `PRAGMA user_version`.
//!
//! One writer at a time is enforced by the vault's lock, not here; SQLite's WAL lets readers
//! run beside that writer.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::crypto::ChunkId;
use crate::store::pack::{FinishedPack, FrameInfo};

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
        time INTEGER NOT NULL,
        manifest BLOB NOT NULL,
        head TEXT,
        ref_count INTEGER NOT NULL
    );
    CREATE INDEX snapshots_by_repo_time ON snapshots(repo_id, time);
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

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
    conn: Connection,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode keeps the database consistent on power loss; the last commits may
        // roll back, which is safe because packs are durable before the index refers to them.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut index = Index { conn };
        index.migrate(path)?;
        Ok(index)
    }

    fn migrate(&mut self, path: &Path) -> Result<(), IndexError> {
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(IndexError::TooNew {
                path: path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, IndexError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
        Ok(stmt.exists(params![&id.0[..]])?)
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, IndexError> {
        let mut stmt = self.conn.prepare_cached(
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
        let mut stmt = self
            .conn
            .prepare_cached("SELECT target FROM pack_targets WHERE pack_id = ?1 ORDER BY target")?;
        let rows = stmt.query_map(params![pack_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a pack that is durable on `targets`, with all its chunks, in one transaction.
    /// Chunks already indexed elsewhere keep their first location.
    pub fn commit_pack(
        &self,
        pack: &FinishedPack,
        targets: &[String],
        logical_bytes: u64,
    ) -> Result<i64, IndexError> {
        // The vault lock guarantees one writer; an unchecked transaction lets readers share `&Index`.
        let tx = self.conn.unchecked_transaction()?;
        let created = chrono::Utc::now().timestamp();
        tx.execute(
            "INSERT INTO packs (name, size, raw_bytes, chunk_count, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO NOTHING",
            params![pack.name, pack.size, pack.raw_bytes, pack.footer.entries.len() as i64, created],
        )?;
        let pack_id: i64 = tx.query_row(
            "SELECT id FROM packs WHERE name = ?1",
            params![pack.name],
            |r| r.get(0),
        )?;
        {
            let mut presence = tx.prepare_cached(
                "INSERT OR IGNORE INTO pack_targets (pack_id, target) VALUES (?1, ?2)",
            )?;
            for t in targets {
                presence.execute(params![pack_id, t])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (id, kind, pack_id, frame_offset, frame_clen, frame_rawlen, offset, length)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in &pack.footer.entries {
                let frame = pack.footer.frames.get(e.frame as usize).ok_or_else(|| {
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
        add_counter(&self.conn, "logical_bytes", bytes)
    }

    pub fn packs(&self) -> Result<Vec<PackRow>, IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, size, raw_bytes, chunk_count FROM packs ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(PackRow {
                id: r.get(0)?,
                name: r.get(1)?,
                size: r.get(2)?,
                raw_bytes: r.get(3)?,
                chunk_count: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Names of the packs the index expects on a target.
    pub fn packs_on_target(&self, target: &str) -> Result<Vec<(String, u64)>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT p.name, p.size FROM packs p JOIN pack_targets t ON t.pack_id = p.id WHERE t.target = ?1",
        )?;
        let rows = stmt.query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn totals(&self) -> Result<Totals, IndexError> {
        let (packs, stored_bytes): (u64, u64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM packs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (chunks, unique_bytes): (u64, u64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(length), 0) FROM chunks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let logical_bytes: u64 = self
            .conn
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
        Ok(self.conn.execute(
            "DELETE FROM pack_targets WHERE target = ?1",
            params![target],
        )?)
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
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(index);
        assert!(matches!(Index::open(&path), Err(IndexError::TooNew { .. })));
    }
}
