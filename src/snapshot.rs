//! Snapshots: the manifest of one repository at one moment, the ref set it captured, the
//! object maps that make the index rebuildable, and the rule for "as of date D".
//!
//! A snapshot is exact (invariant 6): its ref set is one advertisement of the server, and the
//! vault holds every object those refs reach. The ref set is its own chunk, so an unchanged
//! repository's new snapshot points at the ref set already stored and costs one small manifest.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::ChunkId;
use crate::model::map_entries;
pub use crate::model::{DamagedRefSet, Head, ObjectEntry, ObjectKind, Oid, RefSet};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("`{0}` is not a date: use RFC 3339 (2026-11-22T10:00:00Z) or YYYY-MM-DD")]
    BadDate(String),
    #[error(
        "repository name `{0}` is not allowed: use segments of letters, digits, `.`, `_`, `-` (and `:` in the first) separated by `/`, without `.` or `..` segments"
    )]
    BadRepoName(String),
    #[error("snapshot document is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    RefSet(#[from] DamagedRefSet),
}

/// Checks a repository name given by a user or derived from a URL.
pub fn check_repo_name(name: &str) -> Result<(), SnapshotError> {
    if crate::model::valid_repo_name(name) {
        Ok(())
    } else {
        Err(SnapshotError::BadRepoName(name.to_string()))
    }
}

/// The manifest of one snapshot, stored as a chunk (kind `Manifest`) in the packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub repo: String,
    pub time: DateTime<Utc>,
    /// Where the repository was fetched from, without credentials.
    pub source: String,
    /// Chunk id of the ref set.
    pub refset: String,
    pub ref_count: usize,
    pub head: Option<Head>,
    /// Chunk ids of the object maps for the objects this snapshot added to the vault.
    pub object_maps: Vec<String>,
    pub objects_added: u64,
    /// Chunk id of the platform metadata map (provider sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Chunk id of the LFS map: the LFS objects of the pointer blobs this repository has
    /// shown (this snapshot's and, carried forward, its predecessors').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<String>,
    /// The configured source (its name) that listed the repository: another host catching
    /// up learns from it which source's retention applies (none before 2026-12-05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, SnapshotError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| SnapshotError::Damaged(format!("manifest: {e}")))?;
        if m.format != 1 {
            return Err(SnapshotError::Damaged(format!(
                "unknown manifest format {}",
                m.format
            )));
        }
        Ok(m)
    }

    pub(crate) fn refset_id(&self) -> Result<ChunkId, SnapshotError> {
        self.refset
            .parse()
            .map_err(|e: String| SnapshotError::Damaged(e))
    }
}

impl ObjectKind {
    pub fn chunk_kind(self) -> crate::store::ChunkKind {
        use crate::store::ChunkKind;
        match self {
            ObjectKind::Commit => ChunkKind::GitCommit,
            ObjectKind::Tree => ChunkKind::GitTree,
            ObjectKind::Blob => ChunkKind::GitBlob,
            ObjectKind::Tag => ChunkKind::GitTag,
        }
    }
}

/// The first byte of an encoded object map.
pub const OBJECT_MAP_VERSION: u8 = 1;
const OBJECT_ENTRY_LEN: usize = 20 + 1 + 32;

/// Object maps: `u8 version` then entries of `[20]u8 oid, u8 kind, [32]u8 chunk id`.
pub fn encode_object_map(entries: &[ObjectEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * OBJECT_ENTRY_LEN);
    out.push(OBJECT_MAP_VERSION);
    for e in entries {
        push_object_entry(&mut out, e);
    }
    out
}

/// Appends one entry in the object map encoding.
pub fn push_object_entry(out: &mut Vec<u8>, e: &ObjectEntry) {
    out.extend_from_slice(&e.oid.0);
    out.push(e.kind as u8);
    out.extend_from_slice(&e.chunk.0);
}

pub fn decode_object_map(bytes: &[u8]) -> Result<Vec<ObjectEntry>, SnapshotError> {
    let words = ["empty object map", "bad object map"];
    let entries = map_entries(bytes, OBJECT_MAP_VERSION, OBJECT_ENTRY_LEN, words)
        .map_err(|e| SnapshotError::Damaged(e.into()))?;
    entries
        .map(|e| {
            let kind = ObjectKind::from_u8(e[20])
                .ok_or_else(|| SnapshotError::Damaged("bad object kind".into()))?;
            let mut oid = [0u8; 20];
            oid.copy_from_slice(&e[..20]);
            let mut chunk = [0u8; 32];
            chunk.copy_from_slice(&e[21..]);
            Ok(ObjectEntry {
                oid: Oid(oid),
                kind,
                chunk: ChunkId(chunk),
            })
        })
        .collect()
}

/// Parses a DATE argument that ends a range (`--at`, `--until`): RFC 3339, or `YYYY-MM-DD`
/// meaning the end of that day (UTC), so that the day itself is included.
pub fn parse_date(text: &str) -> Result<DateTime<Utc>, SnapshotError> {
    parse_day_bound(text, (23, 59, 59, 999))
}

/// Parses a DATE argument that starts a range (`--since`): RFC 3339, or `YYYY-MM-DD` meaning
/// the start of that day (UTC), so that the day itself is included.
pub fn parse_date_start(text: &str) -> Result<DateTime<Utc>, SnapshotError> {
    parse_day_bound(text, (0, 0, 0, 0))
}

fn parse_day_bound(
    text: &str,
    (h, m, s, ms): (u32, u32, u32, u32),
) -> Result<DateTime<Utc>, SnapshotError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| SnapshotError::BadDate(text.to_string()))?;
    let at = day
        .and_hms_milli_opt(h, m, s, ms)
        .ok_or_else(|| SnapshotError::BadDate(text.to_string()))?;
    Ok(Utc.from_utc_datetime(&at))
}

/// The content of a prune record chunk (docs/FORMAT.md): written by every prune, read by the
/// next prune and by `recover`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneRecord {
    pub format: u32,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Manifests (hex chunk ids) of forgotten snapshots still present in packs.
    pub forgotten: Vec<String>,
    /// Object map (hex chunk id) of live objects no kept snapshot's object map lists.
    pub orphan_objects: Option<String>,
}

/// The newest prune record among the indexed chunks, and its chunk. Older records are dead:
/// the newest carries their forgotten manifests forward.
pub fn newest_prune_record(
    index: &crate::index::Index,
    store: &crate::store::ChunkReader<'_>,
) -> Result<Option<(ChunkId, PruneRecord)>, crate::store::StoreError> {
    let mut newest: Option<(ChunkId, PruneRecord)> = None;
    for id in index.chunks_of_kind(crate::store::ChunkKind::PruneRecord as u8)? {
        let Ok(record) = serde_json::from_slice::<PruneRecord>(&store.get(&id)?) else {
            tracing::warn!(chunk = %id, "unreadable prune record");
            continue;
        };
        if newest.as_ref().is_none_or(|(_, n)| record.time > n.time) {
            newest = Some((id, record));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refset_round_trips_canonically() {
        let mut set = RefSet {
            head: Some(Head::Symbolic("refs/heads/main".into())),
            ..RefSet::default()
        };
        set.refs.insert("refs/tags/v1".into(), Oid([2; 20]));
        set.refs.insert("refs/heads/main".into(), Oid([1; 20]));
        let bytes = set.encode();
        assert_eq!(RefSet::decode(&bytes).unwrap(), set);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.find("refs/heads/main").unwrap() < text.find("refs/tags/v1").unwrap());
        assert!(RefSet::decode(b"garbage").is_err());
    }

    #[test]
    fn dates_parse_as_documented() {
        let d = parse_date("2026-01-02").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-01-02T23:59:59.999+00:00");
        let t = parse_date("2026-01-02T10:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T08:00:00+00:00");
        assert!(parse_date("yesterday").is_err());
        let s = parse_date_start("2026-01-02").unwrap();
        assert_eq!(s.to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert_eq!(
            parse_date_start("2026-01-02T10:00:00Z").unwrap(),
            parse_date("2026-01-02T10:00:00Z").unwrap()
        );
    }

    #[test]
    fn hostile_repo_names_are_refused() {
        for bad in [
            "../../etc",
            "a/../b",
            "/abs",
            "a//b",
            "",
            "a/b c",
            "x/.",
            "a\0b",
            "a/b:c",
        ] {
            assert!(check_repo_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "github.com/owner/repo",
            "127.0.0.1:8080/o/r.wiki",
            "local/srv/git/x",
        ] {
            check_repo_name(good).unwrap();
        }
    }

    #[test]
    fn object_map_round_trips() {
        let entries = vec![ObjectEntry {
            oid: Oid([3; 20]),
            kind: ObjectKind::Tree,
            chunk: ChunkId([4; 32]),
        }];
        assert_eq!(
            decode_object_map(&encode_object_map(&entries)).unwrap(),
            entries
        );
        assert!(decode_object_map(&[1, 2, 3]).is_err());
    }
}
