//! The previous version of each path an increment changed, for the store to keep the new
//! version as a delta against it.
//!
//! An increment's new commits have parents the vault holds already (the boundary). Their trees
//! are walked along the changed paths only: a changed blob's directories are changed too, so
//! every tree on the way to it is in the increment under the same path, and unchanged
//! directories are never read.

use std::collections::{HashMap, HashSet};

use super::objects::{ObjectSource, Reached, parse_commit, parse_tree, path_hash};
use crate::model::{ObjectKind, Oid};

/// At most this many boundary commits are walked (an increment merging many old branches
/// still finds most bases in the first ones).
const MAX_BOUNDARY: usize = 32;

/// For each path hash of the increment `reached` (blobs and trees), the object the vault
/// already holds at that path in a boundary commit, if any (the first boundary commit that has
/// one wins). `known` tells whether the vault holds an object.
pub fn previous_versions<S: ObjectSource>(
    source: &mut S,
    reached: &[Reached],
) -> Result<HashMap<u64, Oid>, S::Error> {
    let new: HashSet<Oid> = reached.iter().map(|r| r.oid).collect();
    let wanted: HashSet<u64> = reached
        .iter()
        .filter(|r| matches!(r.kind, ObjectKind::Blob | ObjectKind::Tree))
        .map(|r| r.path_hash)
        .collect();
    let mut boundary = Vec::new();
    for r in reached.iter().filter(|r| r.kind == ObjectKind::Commit) {
        let (_, data) = source.read(&r.oid)?;
        let info = parse_commit(r.oid, &data)?;
        boundary.extend(info.parents.into_iter().filter(|p| !new.contains(p)));
        if boundary.len() >= MAX_BOUNDARY {
            break;
        }
    }
    boundary.sort();
    boundary.dedup();
    boundary.truncate(MAX_BOUNDARY);

    let mut found: HashMap<u64, Oid> = HashMap::new();
    let mut walked: HashSet<Oid> = HashSet::new();
    for commit in boundary {
        let (_, data) = source.read(&commit)?;
        let root = parse_commit(commit, &data)?.tree;
        let mut stack = vec![(root, true, path_hash(0, b""))];
        while let Some((oid, is_tree, path)) = stack.pop() {
            if !wanted.contains(&path) || new.contains(&oid) {
                continue;
            }
            found.entry(path).or_insert(oid);
            if !is_tree || !walked.insert(oid) {
                continue;
            }
            let (_, data) = source.read(&oid)?;
            for entry in parse_tree(oid, &data)? {
                if !entry.is_gitlink() {
                    stack.push((entry.oid, entry.is_tree(), path_hash(path, entry.name)));
                }
            }
        }
    }
    Ok(found)
}
