//! Git objects and LFS objects: which chunk holds each.

use super::*;

/// A git object's chunk with what prune needs to know about that chunk.
#[derive(Debug, Clone, Copy)]
pub struct ObjectChunk {
    pub kind: ObjectKind,
    pub chunk: ChunkId,
    pub chunk_kind: u8,
    pub pack_id: i64,
}

pub(super) const OID_PAGE: i64 = 10_000;

// How a git object names its chunk (schema v5): `git_objects.chunk` holds the chunk id's first
// 8 bytes when the index has exactly one chunk with those bytes and it is that chunk, else the
// whole 32-byte id. Both are found by one range over the chunks' primary key: an 8-byte value
// sorts before every id it begins, and `|| FF…` after. Collisions are kept exact rather than
// made unlikely: a chunk whose first 8 bytes another chunk already has widens every reference
// to that other chunk to its whole id first (`widen_refs_sharing_prefix`, the only insert of
// chunk rows being `Index::commit_pack_moving`). Object ids stay whole: the backup skips an
// object the index has, and a repository's author chooses its object ids.

/// The chunk rows (alias `c`) a git object row (alias `g`) names: exactly one, or none when
/// the chunk is gone.
macro_rules! chunk_of_object {
    () => {
        "c.id BETWEEN g.chunk AND CAST(g.chunk || X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' AS BLOB)"
    };
}
pub(super) use chunk_of_object;

/// What `git_objects.chunk` stores for the whole chunk id bound as `$p`.
macro_rules! chunk_ref {
    ($p:literal) => {
        concat!(
            "CASE WHEN (SELECT min(c.id) = ",
            $p,
            " AND max(c.id) = ",
            $p,
            " FROM chunks c
                 WHERE c.id BETWEEN substr(",
            $p,
            ", 1, 8)
                     AND CAST(substr(",
            $p,
            ", 1, 8) || X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' AS BLOB))
             THEN substr(",
            $p,
            ", 1, 8) ELSE ",
            $p,
            " END"
        )
    };
}

/// Records a git object (`?1` id, `?2` kind, `?3` whole chunk id) unless the index has it.
pub(super) const INSERT_GIT_OBJECT_SQL: &str = concat!(
    "INSERT OR IGNORE INTO git_objects (oid, kind, chunk) VALUES (?1, ?2, ",
    chunk_ref!("?3"),
    ")"
);

/// Records a git object, replacing the index's row for it (an object stored again because
/// its earlier copy lies only in a missing pack).
pub(super) const REPLACE_GIT_OBJECT_SQL: &str = concat!(
    "INSERT INTO git_objects (oid, kind, chunk) VALUES (?1, ?2, ",
    chunk_ref!("?3"),
    ") ON CONFLICT (oid) DO UPDATE SET kind = excluded.kind, chunk = excluded.chunk"
);

/// The git object's kind and whole chunk id (its stored reference when the chunk is gone).
/// Scalar subqueries, not a JOIN: SQLite marks a JOIN's statement as depending on the bound
/// value (constant propagation), and a statement returned to rusqlite's cache with its
/// bindings cleared is then compiled again on every use (measured: 23 % of a restore's time
/// when `chunk` was written as a JOIN). `tests::hot_lookups_are_not_recompiled` checks these.
#[doc(hidden)]
pub const GIT_OBJECT_SQL: &str = concat!(
    "SELECT g.kind, coalesce((SELECT c.id FROM chunks c WHERE ",
    chunk_of_object!(),
    "), g.chunk) FROM git_objects g WHERE g.oid = ?1"
);

/// Columns of the chunk row a git object row (alias `g`) names, one scalar subquery each.
macro_rules! chunk_columns {
    ($($col:literal),+) => {
        concat!($(
            "(SELECT c.", $col, " FROM chunks c WHERE ", chunk_of_object!(), "), ",
        )+)
    };
}

pub(crate) const GIT_OBJECT_CHUNK_SQL: &str = concat!(
    "SELECT ",
    chunk_columns!("id", "kind", "pack_id"),
    "g.kind FROM git_objects g WHERE g.oid = ?1"
);

/// A git object's row with its chunk's place: what a restore needs to read the object without
/// asking the index again.
#[derive(Debug, Clone, Copy)]
pub struct GitObjectRow {
    pub kind: ObjectKind,
    pub chunk: ChunkId,
    pub place: ChunkPlace,
}

pub(crate) const GIT_OBJECT_REF_SQL: &str = "SELECT kind, chunk FROM git_objects WHERE oid = ?1";

/// The chunk rows whose ids lie between `?1` and `?2`: a git object's reference and that
/// reference padded with `FF` bytes.
pub(crate) const CHUNK_PLACE_SQL: &str =
    "SELECT id, kind, pack_id, frame_offset, offset, length FROM chunks
     WHERE id BETWEEN ?1 AND ?2 LIMIT 2";

/// The smallest and largest chunk id beginning with `id`'s first 8 bytes.
fn prefix_range(id: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut lo = [0u8; 32];
    lo[..8].copy_from_slice(&id[..8]);
    let mut hi = [0xFFu8; 32];
    hi[..8].copy_from_slice(&id[..8]);
    (lo, hi)
}

/// Before chunk `id` gets its row: git objects naming another chunk by the 8 bytes `id`
/// begins with name it by its whole id from now on. Runs a scan of `git_objects` only when
/// two chunk ids share their first 8 bytes (never, short of a 64-bit collision of keyed
/// hashes); the lookup before it is one range probe.
pub(super) fn widen_refs_sharing_prefix(
    tx: &rusqlite::Transaction<'_>,
    id: &ChunkId,
) -> Result<(), IndexError> {
    let (lo, hi) = prefix_range(&id.0);
    let mut namesakes =
        tx.prepare_cached("SELECT id FROM chunks WHERE id BETWEEN ?1 AND ?2 AND id <> ?3")?;
    let others: Vec<Vec<u8>> = namesakes
        .query_map(params![&lo[..], &hi[..], &id.0[..]], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if others.is_empty() {
        return Ok(());
    }
    let mut widen = tx.prepare_cached("UPDATE git_objects SET chunk = ?2 WHERE chunk = ?1")?;
    for other in others {
        widen.execute(params![&id.0[..8], other])?;
    }
    Ok(())
}

impl Index {
    pub fn git_object(&self, oid: &Oid) -> Result<Option<(ObjectKind, ChunkId)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(GIT_OBJECT_SQL)?;
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
                    IndexError::Inconsistent(format!("object {oid} names a chunk that is gone"))
                })?;
                Ok(Some((kind, chunk)))
            }
        }
    }

    /// The object's kind, chunk and the chunk's place, in two primary-key probes (the object's
    /// row, then the chunk rows its reference covers), where `git_object` and then
    /// `chunk` make about eight: a restore asks this once per object. `None` without the
    /// object, `Some(None)` when its chunk is gone.
    pub fn git_object_row(&self, oid: &Oid) -> Result<Option<Option<GitObjectRow>>, IndexError> {
        let conn = self.conn();
        let mut object = conn.prepare_cached(GIT_OBJECT_REF_SQL)?;
        let Some((kind, reference)) = object
            .query_row(params![&oid.0[..]], |r| {
                Ok((r.get::<_, u8>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?
        else {
            return Ok(None);
        };
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            IndexError::Inconsistent(format!("object {oid} has unknown kind {kind}"))
        })?;
        let mut hi = reference.clone();
        hi.resize(32, 0xFF);
        let mut chunks = conn.prepare_cached(CHUNK_PLACE_SQL)?;
        let rows: Vec<(Vec<u8>, ChunkPlace)> = chunks
            .query_map(params![reference, hi], |r| {
                Ok((
                    r.get(0)?,
                    ChunkPlace {
                        kind: r.get(1)?,
                        pack_id: r.get(2)?,
                        frame_offset: r.get(3)?,
                        offset: r.get(4)?,
                        len: r.get(5)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        match rows.as_slice() {
            [] => Ok(Some(None)),
            [(id, place)] => {
                let chunk = ChunkId::from_slice(id).ok_or_else(|| {
                    IndexError::Inconsistent(format!("object {oid} has a bad chunk id"))
                })?;
                Ok(Some(Some(GitObjectRow {
                    kind,
                    chunk,
                    place: *place,
                })))
            }
            _ => Err(IndexError::Inconsistent(format!(
                "object {oid} names a chunk prefix two chunks share"
            ))),
        }
    }

    /// The object's chunk with the chunk's row: one call where prune's mark would otherwise
    /// need two (see `GIT_OBJECT_CHUNK_SQL` for why it is no JOIN).
    pub fn git_object_chunk(&self, oid: &Oid) -> Result<Option<ObjectChunk>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(GIT_OBJECT_CHUNK_SQL)?;
        // (object kind, chunk id, chunk kind, pack id); the last three are NULL without a
        // chunk row.
        type Row = (u8, Option<Vec<u8>>, Option<u8>, Option<i64>);
        let row: Option<Row> = stmt
            .query_row(params![&oid.0[..]], |r| {
                Ok((r.get(3)?, r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((kind, Some(chunk), Some(chunk_kind), Some(pack_id))) = row else {
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

    /// Records objects whose chunks are present (recover applying a prune record).
    pub fn add_git_objects(&self, entries: &[ObjectEntry]) -> Result<(), IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(concat!(
                "INSERT OR IGNORE INTO git_objects (oid, kind, chunk)
                 SELECT ?1, ?2, ",
                chunk_ref!("?3"),
                " WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?3)"
            ))?;
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
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT g.oid, g.kind, coalesce((SELECT c.id FROM chunks c WHERE ",
            chunk_of_object!(),
            "), g.chunk) FROM git_objects g WHERE g.oid > ?1 ORDER BY g.oid LIMIT ?2"
        ))?;
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

    /// Deletes every git object row `live` rejects, in one transaction; returns how many went.
    pub fn drop_git_objects_except(&self, live: &dyn Fn(&Oid) -> bool) -> Result<u64, IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let dropped = drop_objects_not(&tx, live)?;
        tx.commit()?;
        Ok(dropped)
    }

    pub fn has_git_object(&self, oid: &Oid) -> Result<bool, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM git_objects WHERE oid = ?1")?;
        Ok(stmt.exists(params![&oid.0[..]])?)
    }
}

/// Deletes the git object rows `live` rejects inside `tx`, page by page (never all ids in
/// memory); returns how many went.
pub(super) fn drop_objects_not(
    tx: &rusqlite::Transaction<'_>,
    live: &dyn Fn(&Oid) -> bool,
) -> Result<u64, IndexError> {
    let mut page =
        tx.prepare_cached("SELECT oid FROM git_objects WHERE oid > ?1 ORDER BY oid LIMIT ?2")?;
    let mut drop = tx.prepare_cached("DELETE FROM git_objects WHERE oid = ?1")?;
    let mut after: Vec<u8> = Vec::new();
    let mut dropped = 0;
    loop {
        let oids: Vec<Vec<u8>> = page
            .query_map(params![after, OID_PAGE], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let Some(last) = oids.last() else { break };
        after = last.clone();
        for oid in &oids {
            if Oid::from_slice(oid).is_none_or(|o| !live(&o)) {
                drop.execute(params![oid])?;
                dropped += 1;
            }
        }
    }
    Ok(dropped)
}
