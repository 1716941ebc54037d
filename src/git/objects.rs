//! Just enough parsing of git objects to walk from refs to everything they reach: a commit's
//! tree, parents and committer time; a tree's entries; a tag's target. The same walk serves the
//! backup (over the mirror cache) and the restore (over the vault), so both agree on what a
//! snapshot holds.

use std::collections::HashSet;

use crate::model::{ObjectKind, Oid};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {oid} is missing")]
    Missing { oid: Oid },
    #[error("object {oid} ({kind}) is malformed: {reason}")]
    Malformed {
        oid: Oid,
        kind: &'static str,
        reason: String,
    },
    #[error("object {oid} is a {found}, but a {expected} was expected")]
    WrongKind {
        oid: Oid,
        found: &'static str,
        expected: &'static str,
    },
}

pub struct CommitInfo {
    pub tree: Oid,
    pub parents: Vec<Oid>,
    pub time: i64,
}

fn malformed(oid: Oid, kind: &'static str, reason: &str) -> ObjectError {
    ObjectError::Malformed {
        oid,
        kind,
        reason: reason.to_string(),
    }
}

fn header_oid(line: &[u8], oid: Oid, kind: &'static str) -> Result<Oid, ObjectError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(Oid::from_hex)
        .ok_or_else(|| malformed(oid, kind, "bad object id in header"))
}

pub fn parse_commit(oid: Oid, data: &[u8]) -> Result<CommitInfo, ObjectError> {
    let mut tree = None;
    let mut parents = Vec::new();
    let mut time = 0;
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            break; // end of headers
        }
        if let Some(rest) = line.strip_prefix(b"tree ") {
            tree = Some(header_oid(rest, oid, "commit")?);
        } else if let Some(rest) = line.strip_prefix(b"parent ") {
            parents.push(header_oid(rest, oid, "commit")?);
        } else if let Some(rest) = line.strip_prefix(b"committer ") {
            // "Name <email> 1700000000 +0100": the time is the second field from the end.
            let mut fields = rest.rsplit(|&b| b == b' ');
            let _tz = fields.next();
            time = fields
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
        }
    }
    let tree = tree.ok_or_else(|| malformed(oid, "commit", "no tree header"))?;
    Ok(CommitInfo {
        tree,
        parents,
        time,
    })
}

/// A tree entry: its mode says whether it is a subtree, a blob, or a submodule commit.
pub struct TreeEntry<'a> {
    pub mode: &'a [u8],
    pub name: &'a [u8],
    pub oid: Oid,
}

impl TreeEntry<'_> {
    pub fn is_tree(&self) -> bool {
        self.mode == b"40000" || self.mode == b"040000"
    }
    /// Submodule commits live in another repository: not part of this one's closure.
    pub fn is_gitlink(&self) -> bool {
        self.mode == b"160000"
    }
}

pub fn parse_tree(oid: Oid, data: &[u8]) -> Result<Vec<TreeEntry<'_>>, ObjectError> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed(oid, "tree", "entry without mode"))?;
        let mode = &rest[..space];
        rest = &rest[space + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(oid, "tree", "entry without name"))?;
        let name = &rest[..nul];
        rest = &rest[nul + 1..];
        if rest.len() < 20 {
            return Err(malformed(oid, "tree", "truncated entry"));
        }
        let entry_oid =
            Oid::from_slice(&rest[..20]).ok_or_else(|| malformed(oid, "tree", "bad oid"))?;
        rest = &rest[20..];
        entries.push(TreeEntry {
            mode,
            name,
            oid: entry_oid,
        });
    }
    Ok(entries)
}

pub fn parse_tag_target(oid: Oid, data: &[u8]) -> Result<(Oid, ObjectKind), ObjectError> {
    let mut target = None;
    let mut kind = None;
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(rest) = line.strip_prefix(b"object ") {
            target = Some(header_oid(rest, oid, "tag")?);
        } else if let Some(rest) = line.strip_prefix(b"type ") {
            kind = match rest {
                b"commit" => Some(ObjectKind::Commit),
                b"tree" => Some(ObjectKind::Tree),
                b"blob" => Some(ObjectKind::Blob),
                b"tag" => Some(ObjectKind::Tag),
                _ => return Err(malformed(oid, "tag", "unknown target type")),
            };
        }
    }
    match (target, kind) {
        (Some(t), Some(k)) => Ok((t, k)),
        _ => Err(malformed(oid, "tag", "no object/type header")),
    }
}

/// One object the walk reached, with the hints the backup uses to group similar objects.
#[derive(Debug, Clone, Copy)]
pub struct Reached {
    pub oid: Oid,
    pub kind: ObjectKind,
    /// Hash of the path the object was first seen at (blobs, trees); 0 for commits and tags.
    pub path_hash: u64,
    /// Committer time of the commit through which the object was first reached.
    pub time: i64,
}

impl Reached {
    /// The order objects go into the store, which decides what zstd sees side by side: blobs
    /// grouped by path (newest first), trees and commits by time (a restore walks them that
    /// way), tags last. Backup sorts each increment by it; prune's compaction sorts what it
    /// regroups by it.
    pub fn group_key(&self) -> GroupKey {
        // Newest first: an order-reversing map of the signed time onto u64.
        let newest_first = u64::MAX - ((self.time as u64) ^ (1 << 63));
        match self.kind {
            ObjectKind::Blob => GroupKey(0, self.path_hash, newest_first),
            ObjectKind::Tree => GroupKey(1, newest_first, self.path_hash),
            ObjectKind::Commit => GroupKey(2, newest_first, 0),
            ObjectKind::Tag => GroupKey(3, newest_first, 0),
        }
    }
}

/// See `Reached::group_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey(pub u8, pub u64, pub u64);

impl GroupKey {
    /// For a chunk that is no git object (or whose path is unknown): after every object,
    /// grouped by the chunk's kind.
    pub fn after_objects(chunk_kind: u8) -> GroupKey {
        GroupKey(u8::MAX - 32 + (chunk_kind & 31), 0, 0)
    }
}

/// A git object's id: SHA-1 of `<type> <len>\0` and the content. Plain SHA-1, without the
/// collision detection gix uses: what is hashed here came out of the vault, whose keyed ids
/// authenticate it already, so the id only has to agree with git's (and this is a tenth of a
/// restore's time with detection).
pub fn object_id(kind: ObjectKind, data: &[u8]) -> Oid {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(format!("{} {}\0", kind.name(), data.len()).as_bytes());
    h.update(data);
    let mut out = [0u8; 20];
    out.copy_from_slice(&h.finalize());
    Oid(out)
}

/// Where the walk reads objects from.
pub trait ObjectSource {
    type Error: From<ObjectError>;
    /// The object's kind and content (without the `type len\0` header).
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), Self::Error>;
    /// True when the object and everything it reaches need not be walked (already in the vault).
    fn known(&mut self, oid: &Oid) -> Result<bool, Self::Error>;
}

/// A path's hash from its parent directory's and its name. It only groups versions of a path
/// (store order, delta bases) and is never stored, so it need not resist anyone: a collision
/// a repository's author contrives pairs two paths' versions, which costs compression, not
/// correctness. A multiply-xorshift over 8-byte words, since the walks hash every entry of
/// every tree they read (BLAKE3's setup per call was a twentieth of a restore).
pub(crate) fn path_hash(parent: u64, name: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, word: u64| {
        let h = (h ^ word).wrapping_mul(K);
        h ^ (h >> 29)
    };
    let mut h = mix(parent, name.len() as u64);
    let mut words = name.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        h = mix(h, u64::from_le_bytes(bytes));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(mix(h, u64::from_le_bytes(tail)), K)
}

/// Walks from `tips` to every object they reach that `source.known` does not cut off. Blobs are
/// not read (their content does not lead anywhere). Returns the objects in walk order.
pub fn walk<S: ObjectSource>(source: &mut S, tips: &[Oid]) -> Result<Vec<Reached>, S::Error> {
    let mut out = Vec::new();
    walk_each(source, tips, |_, r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// `walk`, calling `visit` with the source for each object reached (once each), right after
/// the source read it (commits, trees, tags) or found it is a blob.
pub fn walk_each<S: ObjectSource>(
    source: &mut S,
    tips: &[Oid],
    mut visit: impl FnMut(&mut S, Reached) -> Result<(), S::Error>,
) -> Result<(), S::Error> {
    let mut seen = Seen {
        inner: source,
        seen: HashSet::new(),
    };
    walk_visit(&mut seen, tips, |s, r| visit(s.inner, r))
}

/// Adds "already reached in this walk" to a source's own cut-off.
struct Seen<'a, S> {
    inner: &'a mut S,
    seen: HashSet<Oid>,
}

impl<S: ObjectSource> ObjectSource for Seen<'_, S> {
    type Error = S::Error;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), S::Error> {
        self.inner.read(oid)
    }
    fn known(&mut self, oid: &Oid) -> Result<bool, S::Error> {
        Ok(!self.seen.insert(*oid) || self.inner.known(oid)?)
    }
}

/// The walk without memory of its own: `visit` is called once for each object reached, right
/// after `source.known` said no and before anything below it is looked at, so a source whose
/// `known` remembers what `visit` saw (prune's mark) walks each object once and holds no
/// second set or list of the objects.
pub fn walk_visit<S: ObjectSource>(
    source: &mut S,
    tips: &[Oid],
    mut visit: impl FnMut(&mut S, Reached) -> Result<(), S::Error>,
) -> Result<(), S::Error> {
    let reached = |oid, kind, path_hash, time| Reached {
        oid,
        kind,
        path_hash,
        time,
    };
    // (oid, expected kind if known from the parent, path hash, time)
    let mut stack: Vec<(Oid, Option<ObjectKind>, u64, i64)> =
        tips.iter().rev().map(|t| (*t, None, 0, i64::MAX)).collect();
    while let Some((oid, expected, path, time)) = stack.pop() {
        if source.known(&oid)? {
            continue;
        }
        if expected == Some(ObjectKind::Blob) {
            visit(source, reached(oid, ObjectKind::Blob, path, time))?;
            continue;
        }
        let (kind, data) = source.read(&oid)?;
        if let Some(expected) = expected
            && expected != kind
        {
            return Err(ObjectError::WrongKind {
                oid,
                found: kind.name(),
                expected: expected.name(),
            }
            .into());
        }
        match kind {
            ObjectKind::Commit => {
                let info = parse_commit(oid, &data)?;
                visit(source, reached(oid, kind, 0, info.time))?;
                for p in info.parents.iter().rev() {
                    stack.push((*p, Some(ObjectKind::Commit), 0, info.time));
                }
                stack.push((
                    info.tree,
                    Some(ObjectKind::Tree),
                    path_hash(0, b""),
                    info.time,
                ));
            }
            ObjectKind::Tree => {
                visit(source, reached(oid, kind, path, time))?;
                for entry in parse_tree(oid, &data)? {
                    if entry.is_gitlink() {
                        continue;
                    }
                    let kind = if entry.is_tree() {
                        ObjectKind::Tree
                    } else {
                        ObjectKind::Blob
                    };
                    stack.push((entry.oid, Some(kind), path_hash(path, entry.name), time));
                }
            }
            ObjectKind::Blob => visit(source, reached(oid, kind, path, time))?,
            ObjectKind::Tag => {
                let (target, target_kind) = parse_tag_target(oid, &data)?;
                visit(source, reached(oid, kind, 0, time))?;
                stack.push((target, Some(target_kind), 0, time));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_agree_with_git() {
        assert_eq!(
            object_id(ObjectKind::Blob, b"").to_hex(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            object_id(ObjectKind::Tree, b"").to_hex(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            object_id(ObjectKind::Blob, b"hello\n").to_hex(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn path_hashes_tell_names_and_parents_apart() {
        let root = path_hash(0, b"");
        let names: [&[u8]; 6] = [b"a", b"b", b"ab", b"a\0", b"src/lib.rs", b"12345678"];
        let mut seen = HashSet::new();
        for name in names {
            assert!(seen.insert(path_hash(root, name)));
            assert!(seen.insert(path_hash(path_hash(root, b"dir"), name)));
        }
        assert_eq!(path_hash(root, b"a"), path_hash(root, b"a"));
    }

    #[test]
    fn parses_commit_headers() {
        let tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let parent = "1111111111111111111111111111111111111111";
        let text = format!(
            "tree {tree}\nparent {parent}\nauthor A <a@x> 1000 +0000\ncommitter C <c@x> 1700000000 +0100\n\nmsg\ntree fake\n"
        );
        let c = parse_commit(Oid([0; 20]), text.as_bytes()).unwrap();
        assert_eq!(c.tree.to_hex(), tree);
        assert_eq!(c.parents.len(), 1);
        assert_eq!(c.time, 1_700_000_000);
        assert!(parse_commit(Oid([0; 20]), b"parent x\n").is_err());
    }

    #[test]
    fn parses_tree_entries_and_rejects_truncation() {
        let mut data = b"100644 a.txt\0".to_vec();
        data.extend_from_slice(&[1; 20]);
        data.extend_from_slice(b"40000 dir\0");
        data.extend_from_slice(&[2; 20]);
        let entries = parse_tree(Oid([0; 20]), &data).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(!entries[0].is_tree() && entries[1].is_tree());
        assert!(parse_tree(Oid([0; 20]), &data[..data.len() - 1]).is_err());
    }
}
