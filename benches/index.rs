//! Index lookups in a vault of 1,000,000 git objects: `Index::git_object` (what backup's walk
//! and restore ask per object) next to the same query sent straight through rusqlite on the same
//! database, so the wrapper's cost shows as a ratio (docs/PERFORMANCE.md).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gitvault::crypto::ChunkId;
use gitvault::index::{Index, NewSnapshot};
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
                .prepare_cached("SELECT kind, chunk FROM git_objects WHERE oid = ?1")
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
