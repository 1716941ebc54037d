//! What prune changes in one transaction, and the packs it condemned.

use super::*;

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

impl Index {
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
            // Pack by pack and page by page (a page of `pack_chunks` is a range scan, each of
            // its prefixes a lookup): the dead rows are never all in memory.
            let mut in_pack = tx.prepare_cached(
                "SELECT prefix FROM pack_chunks WHERE pack_id = ?1 AND prefix > ?2
                 ORDER BY prefix LIMIT ?3",
            )?;
            let mut with_prefix = tx.prepare_cached(
                "SELECT id, kind, pack_id, length, frame_offset, offset FROM chunks
                 WHERE id BETWEEN ?1 AND CAST(?1 || X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' AS BLOB)
                     AND pack_id = ?2",
            )?;
            let mut drop_chunk = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
            let mut drop_lfs = tx.prepare_cached("DELETE FROM lfs_objects WHERE chunk = ?1")?;
            for pack in changes.judged_packs {
                let mut after: Vec<u8> = Vec::new();
                loop {
                    let prefixes: Vec<Vec<u8>> = in_pack
                        .query_map(params![pack, after, OID_PAGE], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    let Some(last) = prefixes.last() else { break };
                    after = last.clone();
                    let mut rows: Vec<ChunkRow> = Vec::new();
                    for prefix in &prefixes {
                        for row in with_prefix.query_map(params![prefix, pack], chunk_row)? {
                            rows.push(row?);
                        }
                    }
                    for row in rows.iter().filter(|r| (changes.chunk_dead)(r)) {
                        drop_chunk.execute(params![&row.id.0[..]])?;
                        drop_lfs.execute(params![&row.id.0[..]])?;
                        counts.dead_chunks += 1;
                    }
                }
            }
            counts.dead_objects = drop_objects_not(&tx, changes.object_live)?;
        }
        for (pack, targets) in changes.compacted {
            let pack_id = record_pack(&tx, pack, targets)?;
            // A chunk moves only out of a condemned pack; elsewhere the copy is a duplicate
            // (and its pack, pointed into by nothing, is condemned below).
            let mut repoint = tx.prepare_cached(
                "UPDATE chunks SET pack_id = ?2, frame_offset = ?3, offset = ?4, length = ?5
                 WHERE id = ?1 AND pack_id IN
                     (SELECT p.id FROM packs p JOIN condemned_packs c ON c.name = p.name)",
            )?;
            for e in pack.entries {
                let (frame, offset, len) = pack.placement(e)?;
                let id = &e.id.0[..];
                if repoint.execute(params![id, pack_id, frame, offset, len])? > 0 {
                    note_in_pack(&tx, pack_id, &e.id)?;
                }
            }
        }
        // A pack nothing points into holds nothing a snapshot can reach: an unused compaction
        // copy, or a pack whose rows all went.
        counts.unreferenced_packs = tx.execute(
            concat!(
                "INSERT OR IGNORE INTO condemned_packs (name, since_ms)
                 SELECT p.name, ?1 FROM packs p
                 WHERE NOT EXISTS (SELECT 1 FROM ",
                in_pack!("p.id"),
                ")
                   AND p.provenance >= 1
                   AND NOT EXISTS (SELECT 1 FROM condemned_packs d WHERE d.name = p.name)"
            ),
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
}
