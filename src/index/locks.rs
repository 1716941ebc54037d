//! What the index remembers of S3 Object Lock (docs/OBJECT-LOCK.md): when each copy of a pack
//! is locked until. A cache like the rest: a missing date is read from the target again.

use rusqlite::params;

use super::{Index, IndexError};

impl Index {
    /// Live (not condemned) packs on `target` with the date their copy there is locked until,
    /// in milliseconds (`None`: not known).
    pub fn live_pack_locks(&self, target: &str) -> Result<Vec<(String, Option<i64>)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.name, t.lock_until_ms FROM packs p JOIN pack_targets t ON t.pack_id = p.id
             WHERE t.target = ?1
               AND NOT EXISTS (SELECT 1 FROM condemned_packs d WHERE d.name = p.name)
             ORDER BY p.name",
        )?;
        let rows = stmt.query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the date a pack's copy on `target` is locked until.
    pub fn set_pack_lock(&self, pack: &str, target: &str, until_ms: i64) -> Result<(), IndexError> {
        self.conn().execute(
            "UPDATE pack_targets SET lock_until_ms = ?3
             WHERE target = ?2 AND pack_id = (SELECT id FROM packs WHERE name = ?1)",
            params![pack, target, until_ms],
        )?;
        Ok(())
    }

    /// Condemned packs and their sizes: what prune deletes once the grace period and their
    /// locks allow.
    pub fn condemned_sizes(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT d.name, COALESCE(p.size, 0) FROM condemned_packs d
             LEFT JOIN packs p ON p.name = d.name ORDER BY d.name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
