//! The chunk store through the library: round trips, dedup, encryption at rest, tampering and
//! missing packs, against a real vault on disk.

mod common;

use std::io::Write;

use common::{NoiseReader, TestVault, noise, pack_files, tree_size};
use gitvault::ChunkKind;
use gitvault::store::StoreError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Random inputs of many sizes (including empty and several chunks' worth), some
/// compressible, survive put → flush → get.
#[test]
fn round_trip_of_random_inputs() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let strategy = (0usize..6_000_000, any::<u64>(), any::<bool>());
    runner
        .run(&strategy, |(len, seed, compressible)| {
            let data = if compressible {
                let mut d = noise(seed, len / 64 + 1).repeat(64);
                d.truncate(len);
                d
            } else {
                noise(seed, len)
            };
            let mut store = vault.store(&keys, &lock);
            let id = store.put(ChunkKind::Data, &data).unwrap();
            store.flush().unwrap();
            let back = store.get(&id).unwrap();
            prop_assert_eq!(back.len(), data.len());
            prop_assert!(back == data);
            // The same bytes through the streaming path get the same id.
            let (again, n) = store.put_reader(ChunkKind::Data, data.as_slice()).unwrap();
            prop_assert_eq!(again, id);
            prop_assert_eq!(n, data.len() as u64);
            Ok(())
        })
        .unwrap();
}

#[test]
fn empty_input_round_trips() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let mut store = vault.store(&keys, &lock);
    let id = store.put(ChunkKind::Data, &[]).unwrap();
    let (id2, n) = store.put_reader(ChunkKind::Data, std::io::empty()).unwrap();
    assert_eq!((id, n), (id2, 0));
    store.flush().unwrap();
    assert_eq!(store.get(&id).unwrap(), Vec::<u8>::new());
}

/// A 101 MiB input streams in and out without being held in memory whole.
#[test]
fn input_over_100_mib_round_trips() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let len = 101 * 1024 * 1024 + 17;
    let mut store = vault.store(&keys, &lock);
    let (id, n) = store
        .put_reader(ChunkKind::Data, NoiseReader::new(42, len))
        .unwrap();
    assert_eq!(n, len);
    store.flush().unwrap();
    let packs = pack_files(&tv.data_dir());
    assert!(
        packs.len() >= 2,
        "a 101 MiB input must span several packs: {packs:?}"
    );

    struct HashWriter(blake3::Hasher, u64);
    impl Write for HashWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            self.1 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = HashWriter(blake3::Hasher::new(), 0);
    let reader = vault.reader(&keys);
    assert_eq!(reader.get_to(&id, &mut out).unwrap(), len);
    let mut expected = blake3::Hasher::new();
    std::io::copy(&mut NoiseReader::new(42, len), &mut expected).unwrap();
    assert_eq!(out.1, len);
    assert_eq!(out.0.finalize(), expected.finalize());
}

/// Storing the same 50 MiB twice adds nothing; an edit in the middle adds about one chunk.
#[test]
fn dedup_same_input_and_small_edit() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let mut data = noise(7, 50 << 20);
    let mut store = vault.store(&keys, &lock);
    let first = store.put(ChunkKind::Data, &data).unwrap();
    store.flush().unwrap();
    let after_first = tree_size(&tv.data_dir());
    assert!(after_first > 50 << 20);

    let second = store.put(ChunkKind::Data, &data).unwrap();
    store.flush().unwrap();
    let after_second = tree_size(&tv.data_dir());
    assert_eq!(first, second);
    assert!(
        after_second - after_first < 4096,
        "re-storing grew the target by {}",
        after_second - after_first
    );

    for b in &mut data[25 << 20..(25 << 20) + 100] {
        *b ^= 0x5a;
    }
    let edited = store.put(ChunkKind::Data, &data).unwrap();
    store.flush().unwrap();
    let growth = tree_size(&tv.data_dir()) - after_second;
    assert_ne!(edited, first);
    // The chunker's maximum chunk is 4 MiB and the average 1 MiB: one edit re-stores one or two
    // chunks plus a new chunk list.
    assert!(
        growth > 0 && growth < 5 << 20,
        "a 100-byte edit grew the target by {growth} bytes"
    );
    assert_eq!(store.get(&edited).unwrap(), data);
    assert_eq!(store.get(&first).unwrap().len(), data.len());
}

/// No plaintext reaches the target or the index: a marker written through the store appears
/// in no file.
#[test]
fn no_plaintext_on_the_target() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let marker = b"GITVAULT-PLAINTEXT-MARKER-93b1c7e2";
    let mut data = Vec::new();
    for i in 0..20_000 {
        data.extend_from_slice(marker);
        data.extend_from_slice(format!(" line {i}\n").as_bytes());
    }
    let mut store = vault.store(&keys, &lock);
    store.put(ChunkKind::Data, &data).unwrap();
    store.put(ChunkKind::Data, marker).unwrap();
    store.flush().unwrap();
    drop(store);
    let files = common::files_under(&tv.dir);
    assert!(
        files
            .iter()
            .any(|p| p.starts_with(tv.data_dir().join("packs")))
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "plaintext marker found in {}",
            path.display()
        );
    }
}

fn one_pack_vault(tv: &TestVault) -> (gitvault::ChunkId, Vec<u8>, std::path::PathBuf) {
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let data = noise(99, 3 << 20);
    let mut store = vault.store(&keys, &lock);
    let id = store.put(ChunkKind::Data, &data).unwrap();
    store.flush().unwrap();
    let packs = pack_files(&tv.data_dir());
    assert_eq!(packs.len(), 1);
    (id, data, packs[0].clone())
}

#[test]
fn flipped_byte_in_a_pack_is_detected_and_names_the_pack() {
    let tv = TestVault::new();
    let (id, _, pack) = one_pack_vault(&tv);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&pack, bytes).unwrap();

    let vault = tv.open();
    let keys = tv.keys(&vault);
    let err = vault.reader(&keys).get(&id).unwrap_err();
    assert!(matches!(err, StoreError::CorruptPack { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&name), "error does not name the pack: {msg}");
}

#[test]
fn missing_pack_is_reported_as_missing() {
    let tv = TestVault::new();
    let (id, _, pack) = one_pack_vault(&tv);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(&pack).unwrap();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let err = vault.reader(&keys).get(&id).unwrap_err();
    assert!(matches!(err, StoreError::MissingPack { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&name) && msg.contains("missing"), "{msg}");
}

#[test]
fn reads_survive_a_lost_local_index_copy_of_keys() {
    // The key files are replicated to the target: losing DIR/keys still lets the vault open.
    let tv = TestVault::new();
    let (id, data, _) = one_pack_vault(&tv);
    std::fs::remove_dir_all(tv.dir.join("keys")).unwrap();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    assert_eq!(vault.reader(&keys).get(&id).unwrap(), data);
}

#[test]
fn wrong_identity_is_refused_clearly() {
    let tv = TestVault::new();
    let vault = tv.open();
    let other = age::x25519::Identity::generate();
    let err = vault
        .unlock(&gitvault::Unlock::Identities(vec![Box::new(other)]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("wrong passphrase or wrong identity"), "{msg}");
}

/// A pack that misses the replication policy is not acknowledged, and its chunks are not
/// treated as stored afterwards (the next put stores them again).
#[test]
fn a_pack_that_misses_the_policy_is_forgotten() {
    let tv = TestVault::new();
    let broken = tv.tmp.path().join("broken");
    std::fs::write(&broken, b"a file where a directory should be").unwrap();
    let mut vault = tv.open();
    {
        let lock = vault.lock().unwrap();
        vault
            .add_target("broken", &format!("file://{}", broken.display()), &lock)
            .unwrap_err();
    }
    // Add it while it works, then break it.
    std::fs::remove_file(&broken).unwrap();
    {
        let lock = vault.lock().unwrap();
        vault
            .add_target("broken", &format!("file://{}", broken.display()), &lock)
            .unwrap();
    }
    std::fs::remove_dir_all(&broken).unwrap();
    std::fs::write(&broken, b"broken again").unwrap();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let mut store = vault.store(&keys, &lock);
    let data = noise(11, 300_000);
    let id = store.put(ChunkKind::Data, &data).unwrap();
    let err = store.flush().unwrap_err();
    assert!(matches!(err, StoreError::NotEnoughReplicas { .. }), "{err}");
    assert!(
        !store.contains(&id).unwrap(),
        "a chunk of an unacknowledged pack counts as stored"
    );
    assert!(matches!(store.get(&id), Err(StoreError::UnknownChunk(_))));
}
