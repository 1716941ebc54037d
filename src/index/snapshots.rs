//! Repositories, their snapshots, and which source each repository came through.

use super::*;

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
    /// The snapshot's objects replace the rows of the same objects (else rows stay as they
    /// are): while packs are missing, a backup stores again objects whose rows point into
    /// them, and the new copies must be the ones read.
    pub replace_objects: bool,
}

pub(super) const SNAPSHOT_COLUMNS: &str =
    "s.id, r.name, s.time_ms, s.manifest, s.refset, s.head, s.ref_count, s.objects_added, s.source";

pub(super) fn snapshot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
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
            let mut insert = tx.prepare_cached(if snap.replace_objects {
                objects::REPLACE_GIT_OBJECT_SQL
            } else {
                objects::INSERT_GIT_OBJECT_SQL
            })?;
            // In id order: appended runs fill the table's pages where random order leaves
            // them a third empty (a first backup's index is the size of a vacuumed one).
            let mut in_order: Vec<&ObjectEntry> = snap.new_objects.iter().collect();
            in_order.sort_unstable_by_key(|o| o.oid.0);
            for o in in_order {
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

    /// Each repository with the time (ms) of its newest snapshot: when it was last backed up.
    pub fn newest_snapshot_times(&self) -> Result<Vec<(String, i64)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT r.name, MAX(s.time_ms) FROM snapshots s JOIN repos r ON r.id = s.repo_id
             GROUP BY r.name ORDER BY r.name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn repos(&self) -> Result<Vec<String>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM repos ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn has_snapshot(&self, manifest: &ChunkId) -> Result<bool, IndexError> {
        Ok(self.snapshot_by_manifest(manifest)?.is_some())
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
}
