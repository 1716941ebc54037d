//! Index lookups in a vault of 1,000,000 git objects: `Index::git_object` (what backup's walk
//! and restore ask per object) next to the same query sent straight through rusqlite on the same
//! database, so the wrapper's cost shows as a ratio (docs/PERFORMANCE.md). The objects' chunks
//! are recorded too, as a backup records them, since a git object row names its chunk by a
//! prefix resolved in the chunks table.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gitvault::crypto::ChunkId;
use gitvault::index::{FrameInfo, Index, NewSnapshot, PackEntry, PackRecord, Provenance};
use gitvault::snapshot::{ObjectEntry, ObjectKind, Oid};

/// A million under `cargo bench`; a smoke-test size under `cargo test --benches` (CI).
fn objects() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn oid(i: usize) -> Oid {
    let h = blake3::hash(&(i as u64).to_le_bytes());
    let mut o = [0u8; 20];
    o.copy_from_slice(&h.as_bytes()[..20]);
    Oid(o)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("index.sqlite");
    let index = Index::open(&path).expect("an index");
    let objects = objects();
    let entries: Vec<ObjectEntry> = (0..objects)
        .map(|i| ObjectEntry {
            oid: oid(i),
            kind: ObjectKind::Blob,
            chunk: ChunkId(*blake3::hash(&(i as u64).to_be_bytes()).as_bytes()),
        })
        .collect();
    let frames = [FrameInfo {
        offset: 0,
        compressed_len: 1,
        raw_len: 1,
    }];
    let chunks: Vec<PackEntry> = entries
        .iter()
        .map(|e| PackEntry {
            id: e.chunk,
            kind: 4,
            frame: 0,
            offset: 0,
            len: 1,
        })
        .collect();
    let pack = PackRecord {
        name: "bench",
        size: 1,
        raw_bytes: 1,
        provenance: Provenance::Written,
        frames: &frames,
        entries: &chunks,
    };
    index
        .commit_pack(&pack, &["bench".to_string()], 0)
        .expect("a pack");
    index
        .insert_snapshot(&NewSnapshot {
            repo: "bench",
            time: chrono::Utc::now(),
            manifest: ChunkId([1; 32]),
            refset: ChunkId([2; 32]),
            head: None,
            ref_count: 0,
            source: "bench",
            new_objects: &entries,
            new_lfs: &[],
            replace_objects: false,
        })
        .expect("a snapshot");
    let raw = rusqlite::Connection::open(&path).expect("a second connection");

    let mut g = c.benchmark_group(format!("{objects} objects"));
    let mut i = 0usize;
    g.bench_function("raw rusqlite lookup", |b| {
        b.iter(|| {
            i = (i + 7919) % objects;
            let o = oid(i);
            let mut stmt = raw
                .prepare_cached(gitvault::index::GIT_OBJECT_SQL)
                .expect("a statement");
            let row: (u8, Vec<u8>) = stmt
                .query_row([&o.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("a row");
            black_box(row)
        })
    });
    g.bench_function("Index::git_object", |b| {
        b.iter(|| {
            i = (i + 7919) % objects;
            black_box(index.git_object(&oid(i)).expect("a lookup"))
        })
    });
    g.bench_function("Index::git_object (absent)", |b| {
        b.iter(|| {
            i = (i + 7919) % objects;
            black_box(index.git_object(&oid(objects + i)).expect("a lookup"))
        })
    });
    g.bench_function("Index::chunk", |b| {
        b.iter(|| {
            i = (i + 7919) % objects;
            black_box(index.chunk(&entries[i].chunk).expect("a lookup"))
        })
    });
    g.bench_function("oid hash alone", |b| {
        b.iter(|| {
            i = (i + 7919) % objects;
            black_box(oid(i))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
