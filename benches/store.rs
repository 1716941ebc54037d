//! Throughput of the chunk store next to the raw libraries it is built from, on the same
//! input, so that our own overhead shows as a ratio (docs/PERFORMANCE.md).
//!
//! `cargo bench --bench store`. Input: 32 MiB that compresses about 3:1 (pseudo-random words
//! with repetition), roughly like source code.

use std::hint::black_box;
use std::io::Write;

use age::secrecy::ExposeSecret;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gitvault::ChunkKind;
use gitvault::Vault;
use gitvault::crypto::Unlock;
use gitvault::vault::InitOptions;

const LEN: usize = 32 << 20;

fn input() -> Vec<u8> {
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let len = 2 + (next() % 10) as usize;
            (0..len).map(|_| b'a' + (next() % 26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(LEN + 16);
    while out.len() < LEN {
        let w = &words[(next() % words.len() as u64) as usize];
        out.extend_from_slice(w);
        out.push(if next() % 12 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(LEN);
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    vault: Vault,
    identity: age::x25519::Identity,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let dir = tmp.path().join("vault");
    Vault::init(
        &dir,
        InitOptions {
            recipients: vec![identity.to_public().to_string()],
            passphrase: None,
        },
    )
    .unwrap();
    let _ = identity.to_string().expose_secret().len();
    Fixture {
        vault: Vault::open(&dir).unwrap(),
        _tmp: tmp,
        identity,
    }
}

fn bench(c: &mut Criterion) {
    let data = input();
    let mut g = c.benchmark_group("32MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LEN as u64));

    let key = [7u8; 32];
    g.bench_function("raw blake3 keyed", |b| {
        b.iter(|| black_box(blake3::keyed_hash(&key, &data)))
    });
    g.bench_function("raw fastcdc", |b| {
        b.iter(|| {
            black_box(fastcdc::v2020::FastCDC::new(&data, 256 << 10, 1 << 20, 4 << 20).count())
        })
    });
    g.bench_function("raw zstd-3 ldm", |b| {
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        z.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(
            true,
        ))
        .unwrap();
        z.set_parameter(zstd::zstd_safe::CParameter::WindowLog(25))
            .unwrap();
        b.iter(|| black_box(z.compress(&data).unwrap().len()))
    });
    let recipient = age::x25519::Identity::generate().to_public();
    g.bench_function("raw age encrypt", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(LEN + 65536);
            let enc =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .unwrap();
            let mut w = enc.wrap_output(&mut out).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap();
            black_box(out.len())
        })
    });
    g.bench_function("store put+flush", |b| {
        b.iter_batched(
            fixture,
            |f| {
                let keys = f
                    .vault
                    .unlock(&Unlock::Identities(vec![Box::new(f.identity.clone())]))
                    .unwrap();
                let lock = f.vault.lock().unwrap();
                let mut store = f.vault.store(&keys, &lock);
                black_box(store.put(ChunkKind::Data, &data).unwrap());
                store.flush().unwrap();
                drop(store);
                f
            },
            BatchSize::PerIteration,
        )
    });
    let f = fixture();
    let keys = f
        .vault
        .unlock(&Unlock::Identities(vec![Box::new(f.identity.clone())]))
        .unwrap();
    let id = {
        let lock = f.vault.lock().unwrap();
        let mut store = f.vault.store(&keys, &lock);
        let id = store.put(ChunkKind::Data, &data).unwrap();
        store.flush().unwrap();
        id
    };
    g.bench_function("store get", |b| {
        b.iter(|| {
            // A fresh reader each time: no frame cache carried over.
            let reader = f.vault.reader(&keys);
            black_box(reader.get(&id).unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
