//! Writing a restored bare repository: one pack (and its index) built with gix-pack from the
//! objects the caller streams in, then refs and HEAD written by hand.

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::GitError;
use crate::model::{Head, ObjectKind, Oid, RefSet};

fn write_err(e: impl std::fmt::Display) -> GitError {
    GitError::Write(e.to_string())
}

fn gix_kind(kind: ObjectKind) -> gix::objs::Kind {
    match kind {
        ObjectKind::Commit => gix::objs::Kind::Commit,
        ObjectKind::Tree => gix::objs::Kind::Tree,
        ObjectKind::Blob => gix::objs::Kind::Blob,
        ObjectKind::Tag => gix::objs::Kind::Tag,
    }
}

/// Writes `count` objects, produced one by one by `next`, as a pack with its index into
/// `bare/objects/pack/`. The pack is encoded on this thread and indexed on another, joined by a
/// pipe, so memory stays bounded by one object.
pub fn write_pack<E>(
    bare: &Path,
    count: u32,
    mut next: impl FnMut() -> Option<Result<(Oid, ObjectKind, Vec<u8>), E>>,
) -> Result<Result<u32, E>, GitError> {
    let pack_dir = bare.join("objects").join("pack");
    std::fs::create_dir_all(&pack_dir).map_err(write_err)?;
    let (reader, writer) = std::io::pipe().map_err(write_err)?;
    std::thread::scope(|s| {
        let indexer = s.spawn(move || {
            let mut input = BufReader::with_capacity(1 << 20, reader);
            gix_pack::Bundle::write_to_directory(
                &mut input,
                Some(&pack_dir),
                &mut gix::progress::Discard,
                &AtomicBool::new(false),
                None::<gix::objs::find::Never>,
                gix::hash::Kind::Sha1,
                gix_pack::bundle::write::Options::default(),
            )
        });
        let mut source_error = None;
        let produced = {
            let entries = std::iter::from_fn(|| {
                let item = next()?;
                let (oid, kind, data) = match item {
                    Ok(v) => v,
                    Err(e) => {
                        source_error = Some(e);
                        return None;
                    }
                };
                let id = gix::ObjectId::from_bytes_or_panic(&oid.0);
                let count = gix_pack::data::output::Count::from_data(id, None);
                let entry = gix_pack::data::output::Entry::from_data(
                    &count,
                    &gix::objs::Data::new(&data, gix_kind(kind), gix::hash::Kind::Sha1),
                    // Level 1: restores are bound by zlib; the pack is a transport copy, `git gc` can shrink it later.
                    gix::zlib::Compression::BEST_SPEED,
                );
                Some(entry.map(|e| vec![e]))
            });
            let mut out = BufWriter::with_capacity(1 << 20, writer);
            let mut result = Ok(());
            for written in gix_pack::data::output::bytes::FromEntriesIter::new(
                entries,
                &mut out,
                count,
                gix_pack::data::Version::V2,
                gix::hash::Kind::Sha1,
            ) {
                if let Err(e) = written {
                    result = Err(write_err(e));
                    break;
                }
            }
            let flushed = out.flush().map_err(write_err);
            drop(out); // closes the pipe: the indexer sees the end of the pack
            result.and(flushed)
        };
        let indexed = indexer
            .join()
            .map_err(|_| GitError::Write("pack indexer panicked".into()))?;
        if let Some(e) = source_error {
            return Ok(Err(e));
        }
        produced?;
        let outcome = indexed.map_err(write_err)?;
        if let Some(keep) = &outcome.keep_path {
            let _ = std::fs::remove_file(keep);
        }
        Ok(Ok(outcome.index.num_objects))
    })
}

/// Initialises `bare` as a bare repository holding exactly `refs` and HEAD (objects are written
/// separately with `write_pack`). The directory must be empty or absent.
pub fn write_bare_repository(bare: &Path, refs: &RefSet) -> Result<(), GitError> {
    for dir in [
        "objects/info",
        "objects/pack",
        "refs/heads",
        "refs/tags",
        "info",
    ] {
        std::fs::create_dir_all(bare.join(dir)).map_err(write_err)?;
    }
    std::fs::write(
        bare.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n",
    )
    .map_err(write_err)?;
    std::fs::write(bare.join("description"), "Restored by gitvault.\n").map_err(write_err)?;
    // Sorted, without a `peeled` claim: git peels tags itself when it needs to.
    let mut packed = String::from("# pack-refs with: sorted \n");
    for (name, oid) in &refs.refs {
        if name.contains(['\n', '\0'])
            || name.starts_with('/')
            || name.split('/').any(|s| s == "..")
        {
            return Err(GitError::Write(format!(
                "refusing a hostile ref name {name:?}"
            )));
        }
        packed.push_str(&format!("{oid} {name}\n"));
    }
    std::fs::write(bare.join("packed-refs"), packed).map_err(write_err)?;
    let head = match &refs.head {
        Some(Head::Symbolic(target)) => format!("ref: {target}\n"),
        Some(Head::Detached(oid)) => format!("{oid}\n"),
        None => "ref: refs/heads/main\n".to_string(),
    };
    std::fs::write(bare.join("HEAD"), head).map_err(write_err)
}
