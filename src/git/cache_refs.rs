//! The mirror cache's refs: one `packed-refs` file written whole after each fetch, equal to
//! the advertisement. Only the next fetch's negotiation reads them (as the objects we have).

use std::io::Write;
use std::path::Path;

use crate::model::RefSet;

/// Replaces the cache's refs with `refs`. Names git would not accept as refs are left out
/// (a hostile server could otherwise add lines to the file); loose refs, which only older
/// versions wrote and which would override the packed ones, are removed.
pub(super) fn write(cache: &Path, refs: &RefSet) -> std::io::Result<()> {
    let mut text = String::from("# pack-refs with: sorted \n");
    // BTreeMap order is byte order, which is what `sorted` promises.
    for (name, oid) in &refs.refs {
        if name.starts_with("refs/") && gix::refs::FullName::try_from(name.as_str()).is_ok() {
            text.push_str(&format!("{} {name}\n", oid.to_hex()));
        }
    }
    let temporary = cache.join("packed-refs.gitvault-tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, cache.join("packed-refs"))?;
    remove_loose(&cache.join("refs"), true)
}

/// Removes every file below `dir` and the directories left empty, but keeps `refs/` itself
/// and its `heads` and `tags` (git recognises a repository by them).
fn remove_loose(dir: &Path, top: bool) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_loose(&path, false)?;
            let keep = top && matches!(entry.file_name().to_str(), Some("heads" | "tags"));
            if !keep {
                // Not empty only when something else writes here meanwhile: left for later.
                let _ = std::fs::remove_dir(&path);
            }
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Oid;

    #[test]
    fn writes_sorted_valid_refs_and_drops_loose_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        std::fs::create_dir_all(cache.join("refs/heads")).unwrap();
        std::fs::create_dir_all(cache.join("refs/tags")).unwrap();
        std::fs::create_dir_all(cache.join("refs/pull/7")).unwrap();
        std::fs::write(cache.join("refs/pull/7/head"), "stale\n").unwrap();
        std::fs::write(cache.join("refs/heads/main"), "stale\n").unwrap();
        let mut refs = RefSet::default();
        for name in [
            "refs/tags/v1",
            "refs/heads/main",
            "refs/heads/bad\nline",
            "refs/heads/..",
            "NOT_A_REF",
        ] {
            refs.refs.insert(name.to_string(), Oid([7; 20]));
        }
        write(cache, &refs).unwrap();
        let text = std::fs::read_to_string(cache.join("packed-refs")).unwrap();
        let hex = Oid([7; 20]).to_hex();
        assert_eq!(
            text,
            format!("# pack-refs with: sorted \n{hex} refs/heads/main\n{hex} refs/tags/v1\n")
        );
        assert!(!cache.join("refs/pull").exists());
        assert!(!cache.join("refs/heads/main").exists());
        assert!(cache.join("refs/heads").is_dir() && cache.join("refs/tags").is_dir());
    }
}
