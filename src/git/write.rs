//! Writing a restored bare repository: one pack with deltas and its index, written in one
//! pass from the objects the caller streams in (`git::packfile`, `crate::delta`), then refs and
//! HEAD written by hand.

use std::collections::{HashMap, VecDeque};
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::GitError;
use super::packfile::{PackWriter, write_idx};
use crate::delta::DeltaEncoder;
use crate::model::{Head, ObjectKind, Oid, RefSet};

fn write_err(e: impl std::fmt::Display) -> GitError {
    GitError::Write(e.to_string())
}

/// One object for `write_pack`.
pub struct PackObject {
    pub oid: Oid,
    pub kind: ObjectKind,
    pub data: Vec<u8>,
    /// Hash of the path the object was reached at (0: none, for commits and tags): an object
    /// is written as a delta against the previous object of its kind and path.
    pub path_hash: u64,
}

/// Longest delta chain, as git's default `pack.depth`.
const MAX_DELTA_DEPTH: u32 = 50;
/// Bytes of earlier objects kept as delta bases; when full, the bases stored longest ago go.
const DELTA_WINDOW_BYTES: usize = 32 << 20;
/// Objects smaller than this are written whole: their delta would save next to nothing.
const MIN_DELTA_SIZE: usize = 64;

/// A possible delta base: the last object written of one (kind, path).
struct Base {
    /// Its position in the pack (the writer knows its offset).
    entry: u32,
    data: Arc<Vec<u8>>,
    depth: u32,
    /// When it was stored: the window's queue names each base by (key, stored).
    stored: u64,
}

type BaseKey = (ObjectKind, u64);

/// The delta bases, one per (kind, path), bounded by their bytes: the objects arrive grouped
/// by path, so the base stored longest ago is the one least likely to be asked for again.
struct DeltaWindow {
    bases: HashMap<BaseKey, Base>,
    /// Keys in the order their bases were stored; an entry whose base has since been replaced
    /// is stale and skipped.
    order: VecDeque<(BaseKey, u64)>,
    bytes: usize,
    budget: usize,
    stored: u64,
}

impl DeltaWindow {
    fn new(budget: usize) -> DeltaWindow {
        DeltaWindow {
            bases: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
            stored: 0,
        }
    }

    fn get(&self, key: &BaseKey) -> Option<&Base> {
        self.bases.get(key)
    }

    fn insert(&mut self, key: BaseKey, entry: u32, data: Arc<Vec<u8>>, depth: u32) {
        if let Some(old) = self.bases.remove(&key) {
            self.bytes -= old.data.len();
        }
        if data.len() > self.budget {
            return;
        }
        while self.bytes + data.len() > self.budget
            && let Some((old_key, stored)) = self.order.pop_front()
        {
            if self.bases.get(&old_key).is_some_and(|b| b.stored == stored)
                && let Some(old) = self.bases.remove(&old_key)
            {
                self.bytes -= old.data.len();
            }
        }
        self.stored += 1;
        self.bytes += data.len();
        self.order.push_back((key, self.stored));
        self.bases.insert(
            key,
            Base {
                entry,
                data,
                depth,
                stored: self.stored,
            },
        );
        // Stale entries would make the queue grow with the object count: drop them once they
        // are half of it (amortised constant time an insert).
        if self.order.len() > 2 * self.bases.len() + 64 {
            let bases = &self.bases;
            self.order
                .retain(|(k, stored)| bases.get(k).is_some_and(|b| b.stored == *stored));
        }
    }
}

/// One pack entry as the encoding thread hands it to the writing thread.
enum Encoded {
    Whole {
        oid: Oid,
        kind: ObjectKind,
        data: Arc<Vec<u8>>,
    },
    Delta {
        oid: Oid,
        base_entry: u32,
        delta: Vec<u8>,
    },
}

/// Entries handed over at once, and their bytes: one wake-up of the writing thread per batch
/// rather than per object (a tenth of a restore was spent waking threads up).
const BATCH_ENTRIES: usize = 256;
const BATCH_BYTES: usize = 2 << 20;

/// Writes `count` objects, produced one by one by `next`, as a pack with its index into
/// `bare/objects/pack/`, in one pass (`git::packfile`): each blob and tree is written as an
/// OFS_DELTA against the previous object of its path when that is less than half its size
/// (the vault hands objects over grouped by path, newest first, as git itself packs them), and
/// the `.idx` comes from the offsets, ids and CRC32s known while writing: nothing is inflated
/// again. Delta encoding runs on the calling thread, deflating and writing on a second one.
/// Memory: the delta window (at most 32 MiB), what is in flight between the two threads
/// (a few batches) and 32 bytes an object for the index.
pub fn write_pack<E>(
    bare: &Path,
    count: u32,
    mut next: impl FnMut(u64) -> Option<Result<PackObject, E>>,
) -> Result<Result<u32, E>, GitError> {
    let pack_dir = bare.join("objects").join("pack");
    std::fs::create_dir_all(&pack_dir).map_err(write_err)?;
    let tmp_pack = pack_dir.join(format!("tmp-{}.pack", std::process::id()));
    let tmp_idx = tmp_pack.with_extension("idx");
    let file = std::fs::File::create(&tmp_pack).map_err(write_err)?;
    let writer =
        PackWriter::new(BufWriter::with_capacity(1 << 20, file), count).map_err(write_err)?;
    let pack_bytes = AtomicU64::new(writer.offset());
    let (encoded, finished) = std::thread::scope(|scope| {
        let (tx, rx) = crate::flow::bounded::<Vec<Encoded>>(2, 2 * BATCH_BYTES);
        let pack_bytes = &pack_bytes;
        let writing = scope.spawn(move || write_entries(writer, &rx, pack_bytes));
        let encoded = encode_objects(&mut next, &tx, pack_bytes);
        drop(tx);
        let finished = writing
            .join()
            .map_err(|_| GitError::Write("the pack writing thread panicked".into()));
        (encoded, finished)
    });
    let (written, finished) = match (encoded, finished) {
        (Ok(written), Ok(Ok(finished))) => (written, finished),
        // The source's error first: the writer then fails only for the objects it never got.
        (Err(e), _) => {
            let _ = std::fs::remove_file(&tmp_pack);
            return Ok(Err(e));
        }
        // The writer's own error says why the encoder stopped early.
        (Ok(_), Ok(Err(e)) | Err(e)) => {
            let _ = std::fs::remove_file(&tmp_pack);
            return Err(e);
        }
    };
    let file = finished
        .out
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    let mut entries = finished.entries;
    let idx_file = std::fs::File::create(&tmp_idx).map_err(write_err)?;
    let mut idx_out = BufWriter::new(idx_file);
    write_idx(&mut entries, &finished.checksum, &mut idx_out).map_err(write_err)?;
    idx_out
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    let name = format!("pack-{}", hex::encode(finished.checksum));
    // The index last: git looks for packs through their `.idx`.
    std::fs::rename(&tmp_pack, pack_dir.join(format!("{name}.pack"))).map_err(write_err)?;
    std::fs::rename(&tmp_idx, pack_dir.join(format!("{name}.idx"))).map_err(write_err)?;
    Ok(Ok(written))
}

/// The encoding half of `write_pack`: chooses each object's delta base and encodes the delta,
/// handing entries over in batches. Stops at the first error of `next`, or when the writing
/// thread is gone (its own error is then the one reported).
fn encode_objects<E>(
    next: &mut impl FnMut(u64) -> Option<Result<PackObject, E>>,
    tx: &crate::flow::Sender<Vec<Encoded>>,
    pack_bytes: &AtomicU64,
) -> Result<u32, E> {
    let mut encoder = DeltaEncoder::new();
    let mut window = DeltaWindow::new(DELTA_WINDOW_BYTES);
    let mut batch = Vec::with_capacity(BATCH_ENTRIES);
    let mut batch_bytes = 0;
    let mut written = 0u32;
    // `next` is told how many bytes of the pack are written so far (for progress).
    while let Some(item) = next(pack_bytes.load(Ordering::Relaxed)) {
        let object = item?;
        let key = (object.kind, object.path_hash);
        let deltifiable = object.path_hash != 0
            && matches!(object.kind, ObjectKind::Blob | ObjectKind::Tree)
            && object.data.len() >= MIN_DELTA_SIZE;
        let data = Arc::new(object.data);
        let mut entry = None;
        let mut depth = 0;
        if deltifiable
            && let Some(base) = window.get(&key)
            && base.depth < MAX_DELTA_DEPTH
        {
            let mut delta = Vec::new();
            if encoder.encode(&base.data, &data, data.len() / 2, &mut delta) {
                depth = base.depth + 1;
                batch_bytes += delta.len();
                entry = Some(Encoded::Delta {
                    oid: object.oid,
                    base_entry: base.entry,
                    delta,
                });
            }
        }
        let entry = entry.unwrap_or_else(|| {
            batch_bytes += data.len();
            Encoded::Whole {
                oid: object.oid,
                kind: object.kind,
                data: data.clone(),
            }
        });
        if deltifiable {
            window.insert(key, written, data, depth);
        }
        written += 1;
        batch.push(entry);
        if batch.len() >= BATCH_ENTRIES || batch_bytes >= BATCH_BYTES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ENTRIES));
            if tx.send(full, std::mem::take(&mut batch_bytes)).is_err() {
                return Ok(written);
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch, batch_bytes);
    }
    Ok(written)
}

/// The writing half of `write_pack`: deflates and writes each entry, publishing the pack's
/// length as it grows.
fn write_entries<W: std::io::Write>(
    mut writer: PackWriter<W>,
    rx: &crate::flow::Receiver<Vec<Encoded>>,
    pack_bytes: &AtomicU64,
) -> Result<super::packfile::FinishedPack<W>, GitError> {
    while let Some(batch) = rx.recv() {
        for entry in batch {
            match entry {
                Encoded::Whole { oid, kind, data } => writer.add_whole(oid, kind, &data),
                Encoded::Delta {
                    oid,
                    base_entry,
                    delta,
                } => writer.add_ofs_delta_of(oid, base_entry as usize, &delta),
            }
            .map_err(write_err)?;
        }
        pack_bytes.store(writer.offset(), Ordering::Relaxed);
    }
    writer.finish().map_err(write_err)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_window_drops_the_bases_stored_longest_ago() {
        let mut window = DeltaWindow::new(10);
        let key = |path| (ObjectKind::Blob, path);
        window.insert(key(1), 0, Arc::new(vec![0; 4]), 0);
        window.insert(key(2), 10, Arc::new(vec![0; 4]), 0);
        // Replacing path 1's base makes it the newest; path 2's goes to make room.
        window.insert(key(1), 20, Arc::new(vec![0; 5]), 1);
        window.insert(key(3), 30, Arc::new(vec![0; 3]), 0);
        assert!(window.get(&key(2)).is_none());
        assert_eq!(window.get(&key(1)).map(|b| b.entry), Some(20));
        assert!(window.get(&key(3)).is_some());
        assert_eq!(window.bytes, 8);
        // An object larger than the whole window is not kept, and drops no other base.
        window.insert(key(4), 40, Arc::new(vec![0; 11]), 0);
        assert!(window.get(&key(4)).is_none());
        assert!(window.get(&key(1)).is_some() && window.get(&key(3)).is_some());
    }
}
