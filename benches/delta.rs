//! Git delta encoding and decoding on a realistic pair (docs/PERFORMANCE.md): 200 KB of this
//! crate's own source, and the same text after a few edits (lines changed, a function
//! inserted, a block deleted), as between two versions of a file in a restore.
//!
//! `cargo bench --bench delta`. Also prints the delta's size once, to compare with
//! `git verify-pack -v` on the same pair.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitvault::delta::{DeltaEncoder, apply_delta};

const LEN: usize = 200_000;

fn pair() -> (Vec<u8>, Vec<u8>) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths: Vec<_> = std::fs::read_dir(&src)
        .expect("src/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    paths.sort();
    let mut base = Vec::new();
    for p in paths {
        base.extend(std::fs::read(p).expect("source file is readable"));
        if base.len() >= LEN {
            break;
        }
    }
    base.truncate(LEN);
    let mut lines: Vec<Vec<u8>> = base
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let n = lines.len();
    for at in [n / 10, n / 3, n / 2, 4 * n / 5] {
        lines[at] = b"        let changed = compute(&mut state, 42)?;\n".to_vec();
    }
    let inserted: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            format!("    // a new helper, line {i}\n    let x{i} = y.get({i});\n").into_bytes()
        })
        .collect();
    lines.splice(n / 4..n / 4, inserted);
    lines.drain(2 * n / 3..2 * n / 3 + 40);
    (base, lines.concat())
}

fn bench(c: &mut Criterion) {
    let (base, target) = pair();
    let mut encoder = DeltaEncoder::new();
    let mut delta = Vec::new();
    assert!(encoder.encode(&base, &target, target.len() / 2, &mut delta));
    // git itself stores the older version as a delta of the newer: report both directions.
    let mut reverse = Vec::new();
    assert!(encoder.encode(&target, &base, base.len() / 2, &mut reverse));
    eprintln!(
        "delta of {} -> {} bytes: {} bytes; reverse: {} bytes",
        base.len(),
        target.len(),
        delta.len(),
        reverse.len()
    );
    let mut group = c.benchmark_group("delta");
    group.throughput(Throughput::Bytes(target.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            delta.clear();
            black_box(encoder.encode(
                black_box(&base),
                black_box(&target),
                target.len() / 2,
                &mut delta,
            ))
        })
    });
    group.bench_function("apply", |b| {
        b.iter(|| black_box(apply_delta(black_box(&base), black_box(&delta))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
