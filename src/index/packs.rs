//! Packs, where they are (`pack_targets`), and the chunks they hold.

use std::collections::HashSet;

use super::*;

const MISSING_PACKS: &str = "missing_packs";

/// What [`Index::commit_pack_moving`] recorded.
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    pub pack_id: i64,
    /// Chunk rows added (chunks the index did not know).
    pub inserted: u64,
    /// Chunk rows moved here out of vanished packs.
    pub moved: u64,
}

/// What [`Index::drop_vanished_packs`] removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct VanishedCounts {
    pub chunks: u64,
    pub objects: u64,
    pub snapshots: u64,
}

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

impl PackRecord<'_> {
    /// Where a footer entry's chunk lies, as a chunk row records it: frame offset, offset in
    /// the frame, length (the frame's lengths are in `frames`). The footer was checked when it
    /// was decoded; a record built by hand may still name a missing frame.
    pub(super) fn placement(&self, e: &PackEntry) -> Result<(u64, u32, u32), IndexError> {
        let frame = self.frames.get(e.frame as usize).ok_or_else(|| {
            IndexError::Inconsistent(format!("pack {} names a missing frame", self.name))
        })?;
        Ok((frame.offset, e.offset, e.len))
    }
}

/// Where a chunk lies, without its pack's name and its frame's lengths, which a reader looks up
/// once a frame (`Index::frame`) rather than once a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlace {
    pub kind: u8,
    pub pack_id: i64,
    pub frame_offset: u64,
    pub offset: u32,
    pub len: u32,
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

/// The pack's row (created unless it exists) and the targets holding it; returns its id.
pub(super) fn record_pack(
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
    // Keyed by offset, not by the footer's frame index: an index migrated from v4 knew only
    // the offsets of the frames its chunk rows pointed into.
    let mut frame = tx.prepare_cached(
        "INSERT OR IGNORE INTO frames (pack_id, offset, clen, rawlen) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for f in pack.frames {
        frame.execute(params![pack_id, f.offset, f.compressed_len, f.raw_len])?;
    }
    Ok(pack_id)
}

pub(super) fn chunk_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkRow> {
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

pub(super) fn chunk_id_from(bytes: &[u8]) -> ChunkId {
    let mut id = [0u8; 32];
    if bytes.len() == 32 {
        id.copy_from_slice(bytes);
    }
    ChunkId(id)
}

// Which chunks lie in which pack: `pack_chunks` holds (pack, first 8 bytes of the chunk id)
// for every chunk row, and may hold more: rows of chunks since deleted or moved to another
// pack stay until their pack goes. Every query through it therefore checks the chunk row's
// own `pack_id`. (An index on `chunks(pack_id)` held each whole id again: 44 bytes a chunk,
// against 17.)

/// The chunk rows (alias `c`) in the pack whose id is bound as `$p`.
macro_rules! in_pack {
    ($p:literal) => {
        concat!(
            "pack_chunks pc JOIN chunks c ON c.id BETWEEN pc.prefix
                 AND CAST(pc.prefix || X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' AS BLOB)
             WHERE pc.pack_id = ",
            $p,
            " AND c.pack_id = ",
            $p
        )
    };
}
pub(super) use in_pack;

/// Records that chunk `id` lies in pack `pack_id` (`in_pack`).
pub(super) fn note_in_pack(
    tx: &rusqlite::Transaction<'_>,
    pack_id: i64,
    id: &ChunkId,
) -> Result<(), IndexError> {
    tx.prepare_cached("INSERT OR IGNORE INTO pack_chunks (pack_id, prefix) VALUES (?1, ?2)")?
        .execute(params![pack_id, &id.0[..8]])?;
    Ok(())
}

/// Forgets which chunks lay in the pack called `?1` (the pack row goes too).
const FORGET_PACK_CHUNKS_SQL: &str =
    "DELETE FROM pack_chunks WHERE pack_id IN (SELECT id FROM packs WHERE name = ?1)";

/// Forgets the frames of the pack called `?1` (the pack row goes too).
const FORGET_FRAMES_SQL: &str =
    "DELETE FROM frames WHERE pack_id IN (SELECT id FROM packs WHERE name = ?1)";

/// Deletes the chunk rows pointing into the pack called `?1`.
const DELETE_CHUNKS_OF_PACK_SQL: &str = concat!(
    "DELETE FROM chunks WHERE id IN (SELECT c.id FROM ",
    in_pack!("(SELECT id FROM packs WHERE name = ?1)"),
    ")"
);

/// The chunk rows (`chunk_row`) in the pack whose id is bound as `?1`.
pub(super) const CHUNKS_OF_PACK_SQL: &str = concat!(
    "SELECT c.id, c.kind, c.pack_id, c.length, c.frame_offset, c.offset FROM ",
    in_pack!("?1")
);

/// No JOIN, for the reason given at `objects::GIT_OBJECT_CHUNK_SQL`.
pub(crate) const CHUNK_SQL: &str =
    "SELECT c.kind, c.pack_id, (SELECT p.name FROM packs p WHERE p.id = c.pack_id),
            c.frame_offset,
            (SELECT f.clen FROM frames f WHERE f.pack_id = c.pack_id AND f.offset = c.frame_offset),
            (SELECT f.rawlen FROM frames f WHERE f.pack_id = c.pack_id AND f.offset = c.frame_offset),
            c.offset, c.length
     FROM chunks c WHERE c.id = ?1";

pub(crate) const FRAME_SQL: &str =
    "SELECT (SELECT p.name FROM packs p WHERE p.id = f.pack_id), f.clen, f.rawlen
     FROM frames f WHERE f.pack_id = ?1 AND f.offset = ?2";

impl Index {
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
        Ok(stmt.exists(params![&id.0[..]])?)
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(CHUNK_SQL)?;
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

    /// The name of pack `pack_id` and where its frame at `offset` lies, or None when either
    /// row is gone.
    pub fn frame(
        &self,
        pack_id: i64,
        offset: u64,
    ) -> Result<Option<(String, FrameInfo)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(FRAME_SQL)?;
        let row: Option<(Option<String>, u32, u32)> = stmt
            .query_row(params![pack_id, offset], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        Ok(row.and_then(|(name, clen, rawlen)| {
            Some((
                name?,
                FrameInfo {
                    offset,
                    compressed_len: clen,
                    raw_len: rawlen,
                },
            ))
        }))
    }

    /// Targets known to hold a pack, in the order they were recorded.
    pub(crate) fn pack_targets(&self, pack_id: i64) -> Result<Vec<String>, IndexError> {
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
        Ok(self
            .commit_pack_moving(pack, targets, logical_bytes, (&HashSet::new(), true))?
            .pack_id)
    }

    /// [`Index::commit_pack`] for a pack another host wrote (catch-up): a chunk whose row
    /// points into one of the packs `moving_from` (gone from every target) takes its place in
    /// this pack instead of keeping its first location. Without `add_new`, only such rows
    /// move and no chunk is added (a pack the index knows, read again for its copies).
    pub fn commit_pack_moving(
        &self,
        pack: &PackRecord<'_>,
        targets: &[String],
        logical_bytes: u64,
        (moving_from, add_new): (&HashSet<i64>, bool),
    ) -> Result<Committed, IndexError> {
        // The vault lock guarantees one writer; an unchecked transaction lets readers share `&Index`.
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let pack_id = record_pack(&tx, pack, targets)?;
        let (mut inserted, mut moved) = (0, 0);
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (id, kind, pack_id, frame_offset, offset, length)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut holder = tx.prepare_cached("SELECT pack_id FROM chunks WHERE id = ?1")?;
            let mut repoint = tx.prepare_cached(
                "UPDATE chunks SET pack_id = ?2, frame_offset = ?3, offset = ?4, length = ?5
                 WHERE id = ?1",
            )?;
            // In id order, for the reason given in `insert_snapshot`.
            let mut in_order: Vec<&PackEntry> = pack.entries.iter().collect();
            in_order.sort_unstable_by_key(|e| e.id.0);
            for e in in_order {
                let (frame, offset, len) = pack.placement(e)?;
                let id = &e.id.0[..];
                if add_new && insert.execute(params![id, e.kind, pack_id, frame, offset, len])? > 0
                {
                    objects::widen_refs_sharing_prefix(&tx, &e.id)?;
                    note_in_pack(&tx, pack_id, &e.id)?;
                    inserted += 1;
                    continue;
                }
                if moving_from.is_empty() {
                    continue;
                }
                let now: Option<i64> = holder.query_row(params![id], |r| r.get(0)).optional()?;
                if now.is_some_and(|now| moving_from.contains(&now)) {
                    repoint.execute(params![id, pack_id, frame, offset, len])?;
                    note_in_pack(&tx, pack_id, &e.id)?;
                    moved += 1;
                }
            }
        }
        add_counter(&tx, "logical_bytes", logical_bytes)?;
        tx.commit()?;
        Ok(Committed {
            pack_id,
            inserted,
            moved,
        })
    }

    /// Packs whose footers list chunks whose rows point elsewhere (copies, duplicates another
    /// host wrote at the same time) or are gone (dead): the only packs that can hold another
    /// copy of a chunk.
    pub fn packs_with_foreign_chunks(&self) -> Result<Vec<String>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(concat!(
            "SELECT p.name FROM packs p
             WHERE p.chunk_count > (SELECT COUNT(*) FROM ",
            in_pack!("p.id"),
            ") ORDER BY p.name"
        ))?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Takes packs gone from every target (another host's prune deleted them) out of the
    /// index, in one transaction, with what depended on them: chunk rows still pointing into
    /// them, LFS and git object rows whose chunk is gone (so that backups store those objects
    /// again rather than deduplicate against nothing) and snapshots whose manifest is gone.
    pub fn drop_vanished_packs(&self, names: &[String]) -> Result<VanishedCounts, IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let mut counts = VanishedCounts::default();
        {
            let mut chunks = tx.prepare_cached(DELETE_CHUNKS_OF_PACK_SQL)?;
            let mut pack_chunks = tx.prepare_cached(FORGET_PACK_CHUNKS_SQL)?;
            let mut frames = tx.prepare_cached(FORGET_FRAMES_SQL)?;
            let mut presence = tx.prepare_cached(
                "DELETE FROM pack_targets WHERE pack_id IN (SELECT id FROM packs WHERE name = ?1)",
            )?;
            let mut pack = tx.prepare_cached("DELETE FROM packs WHERE name = ?1")?;
            let mut condemned = tx.prepare_cached("DELETE FROM condemned_packs WHERE name = ?1")?;
            for name in names {
                counts.chunks += chunks.execute(params![name])? as u64;
                pack_chunks.execute(params![name])?;
                frames.execute(params![name])?;
                presence.execute(params![name])?;
                pack.execute(params![name])?;
                condemned.execute(params![name])?;
            }
        }
        if counts.chunks > 0 {
            let gone = |table: &str, column: &str| {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = {table}.{column})"
                    ),
                    [],
                )
            };
            gone("lfs_objects", "chunk")?;
            counts.objects = tx.execute(
                concat!(
                    "DELETE FROM git_objects AS g WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE ",
                    objects::chunk_of_object!(),
                    ")"
                ),
                [],
            )? as u64;
            counts.snapshots = gone("snapshots", "manifest")? as u64;
        }
        tx.commit()?;
        Ok(counts)
    }

    /// Packs the index keeps although no target holds them (a catch-up found them gone with
    /// no prune record to explain it), by name. Kept in `meta` (one name a line): a handful
    /// at most, and no schema change.
    pub fn missing_packs(&self) -> Result<Vec<String>, IndexError> {
        Ok(self
            .meta(MISSING_PACKS)?
            .map(|v| v.lines().map(str::to_string).collect())
            .unwrap_or_default())
    }

    pub fn set_missing_packs(&self, names: &[String]) -> Result<(), IndexError> {
        self.set_meta(MISSING_PACKS, &names.join("\n"))
    }

    /// The row ids of [`Index::missing_packs`] still in the index: backups must not count on
    /// their chunks.
    pub fn missing_pack_ids(&self) -> Result<HashSet<i64>, IndexError> {
        let mut ids = HashSet::new();
        for name in self.missing_packs()? {
            if let Some(id) = self.pack_id(&name)? {
                ids.insert(id);
            }
        }
        Ok(ids)
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

    /// Names of the packs the index expects on a target.
    pub fn packs_on_target(&self, target: &str) -> Result<Vec<(String, u64)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.name, p.size FROM packs p JOIN pack_targets t ON t.pack_id = p.id WHERE t.target = ?1",
        )?;
        let rows = stmt.query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets that packs are on a target (when the target is removed from the vault).
    pub fn forget_target(&self, target: &str) -> Result<usize, IndexError> {
        Ok(self.conn().execute(
            "DELETE FROM pack_targets WHERE target = ?1",
            params![target],
        )?)
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
        let mut stmt = conn.prepare_cached(CHUNKS_OF_PACK_SQL)?;
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
        let mut stmt = conn.prepare_cached(CHUNKS_OF_PACK_SQL)?;
        let mut rows = stmt.query(params![pack_id])?;
        while let Some(r) = rows.next()? {
            if !f(&chunk_row(r)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The ids of every chunk of one kind (manifests, prune records).
    /// Quick for manifests and prune records (`chunks_by_rare_kind`); any other kind is a
    /// scan of every chunk.
    pub fn chunks_of_kind(&self, kind: u8) -> Result<Vec<ChunkId>, IndexError> {
        let conn = self.conn();
        // The repeated condition lets SQLite use the partial index: it cannot know a bound
        // value before planning.
        let rare = INDEXED_CHUNK_KINDS.contains(&kind);
        let mut stmt = conn.prepare_cached(if rare {
            "SELECT id FROM chunks WHERE kind = ?1 AND kind IN (7, 11)"
        } else {
            "SELECT id FROM chunks WHERE kind = ?1"
        })?;
        let rows = stmt.query_map(params![kind], |r| {
            let id: Vec<u8> = r.get(0)?;
            Ok(chunk_id_from(&id))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many chunk rows still point into a pack (a condemned pack must have none).
    pub fn chunks_in_pack(&self, name: &str) -> Result<u64, IndexError> {
        Ok(self.conn().query_row(
            concat!(
                "SELECT COUNT(*) FROM ",
                in_pack!("(SELECT id FROM packs WHERE name = ?1)")
            ),
            params![name],
            |r| r.get(0),
        )?)
    }

    /// Forgets a pack deleted from every target.
    /// Takes a pack out of the index with every chunk row pointing into it (recover found it
    /// to be a replay after recording it).
    pub fn unrecord_pack(&self, name: &str) -> Result<(), IndexError> {
        self.conn()
            .execute(DELETE_CHUNKS_OF_PACK_SQL, params![name])?;
        self.drop_pack(name)
    }

    pub fn drop_pack(&self, name: &str) -> Result<(), IndexError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM pack_targets WHERE pack_id IN (SELECT id FROM packs WHERE name = ?1)",
            params![name],
        )?;
        tx.execute(FORGET_PACK_CHUNKS_SQL, params![name])?;
        tx.execute(FORGET_FRAMES_SQL, params![name])?;
        tx.execute("DELETE FROM packs WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM condemned_packs WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(())
    }
}
