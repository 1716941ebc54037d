//! The delta encoder and pack writer against git itself: deltas round-trip for any pair, and a
//! pack of whole objects and OFS_DELTA chains that we write is one git verifies, indexes to the
//! same `.idx`, reads back byte for byte and finds consistent under `fsck --strict`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::git;
use gitvault::delta::{self, DeltaError, apply_delta};
use gitvault::git::packfile::{PackWriter, write_idx};
use gitvault::snapshot::{ObjectKind, Oid};
use proptest::prelude::*;

fn object_id(kind: ObjectKind, data: &[u8]) -> Oid {
    let kind = match kind {
        ObjectKind::Commit => gix::objs::Kind::Commit,
        ObjectKind::Tree => gix::objs::Kind::Tree,
        ObjectKind::Blob => gix::objs::Kind::Blob,
        ObjectKind::Tag => gix::objs::Kind::Tag,
    };
    let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data).unwrap();
    Oid::from_slice(id.as_slice()).unwrap()
}

/// Pseudo-random text with enough repetition to look like source code.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words = [
        "fn ", "let ", "mut ", "self", ".push(", ");\n", "    ", "match ", "=> ", "Some(", "None",
        "if ", "else {\n", "}\n", "return ", "Ok(", "Err(e)", "&mut ", "usize", "vec![",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = next();
        if r % 5 == 0 {
            out.extend_from_slice(format!("x{} ", r % 100_000).as_bytes());
        } else {
            out.extend_from_slice(words[(r % words.len() as u64) as usize].as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A few insertions, deletions and replacements spread over `base`.
fn edit(base: &[u8], seed: u64, edits: usize) -> Vec<u8> {
    let mut out = base.to_vec();
    for i in 0..edits as u64 {
        if out.is_empty() {
            out.extend_from_slice(b"fresh");
            continue;
        }
        let at =
            ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % out.len() as u64) as usize;
        let end = (at + 1 + (i as usize * 13) % 200).min(out.len());
        match i % 3 {
            0 => {
                out.splice(at..at, format!("inserted {i} {seed}\n").into_bytes());
            }
            1 => {
                out.drain(at..end);
            }
            _ => {
                out.splice(at..end, text(seed + i, 40));
            }
        }
    }
    out
}

fn unbounded(base: &[u8], target: &[u8]) -> Vec<u8> {
    delta::encode_within(base, target, usize::MAX).expect("an unbounded delta always fits")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edited_pairs_round_trip(seed in any::<u64>(), len in 0usize..20_000, edits in 0usize..12) {
        let base = text(seed, len);
        let target = edit(&base, seed, edits);
        prop_assert_eq!(apply_delta(&base, &unbounded(&base, &target)).unwrap(), target);
    }

    #[test]
    fn arbitrary_pairs_round_trip(
        base in proptest::collection::vec(0u8..4, 0..3000),
        target in proptest::collection::vec(0u8..4, 0..3000),
    ) {
        // A four-letter alphabet makes hash hits and short false matches frequent.
        prop_assert_eq!(apply_delta(&base, &unbounded(&base, &target)).unwrap(), target);
    }

    #[test]
    fn capped_deltas_respect_the_cap(seed in any::<u64>(), len in 0usize..5000, edits in 0usize..40) {
        let base = text(seed, len);
        let target = edit(&base, seed ^ 1, edits);
        if let Some(d) = delta::encode(&base, &target) {
            prop_assert!(d.len() <= target.len() / 2);
            prop_assert_eq!(apply_delta(&base, &d).unwrap(), target);
        }
    }

    #[test]
    fn garbage_deltas_never_panic(base in proptest::collection::vec(any::<u8>(), 0..64),
                                  garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = apply_delta(&base, &garbage);
        let mut headed = vec![base.len() as u8 & 0x7f, 20];
        headed.extend_from_slice(&garbage);
        if base.len() < 128 {
            let _ = apply_delta(&base, &headed);
        }
    }
}

#[test]
fn special_pairs_round_trip() {
    let big = text(7, 17 << 20);
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (vec![], vec![]),
        (vec![], text(1, 1000)),
        (text(1, 1000), vec![]),
        (text(2, 50_000), text(2, 50_000)),
        (text(3, 50_000), text(4, 50_000)),
        (vec![b'a'; 100_000], vec![b'a'; 100_001]),
        (big.clone(), edit(&big, 9, 20)),
    ];
    for (base, target) in cases {
        let d = unbounded(&base, &target);
        assert_eq!(
            apply_delta(&base, &d).unwrap(),
            target,
            "{} -> {}",
            base.len(),
            target.len()
        );
        if base == target && !base.is_empty() {
            assert!(d.len() < 10 + base.len() / 0x10000 * 6);
        }
    }
}

#[test]
fn hostile_deltas_are_errors_not_panics() {
    let base = text(11, 10_000);
    let target = edit(&base, 11, 6);
    let good = unbounded(&base, &target);
    for cut in 0..good.len() {
        assert!(
            apply_delta(&base, &good[..cut]).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
    assert!(matches!(
        apply_delta(&base[..9_999], &good),
        Err(DeltaError::BaseSizeMismatch { .. })
    ));
    // Header for this base and a 16-byte result, then a copy of 16 bytes at offset 0xffff.
    let mut out_of_range = good[..2].to_vec();
    out_of_range.extend_from_slice(&[16, 0x93, 0xff, 0xff, 16]);
    assert!(matches!(
        apply_delta(&base, &out_of_range),
        Err(DeltaError::CopyOutOfRange { .. })
    ));
}

/// One object of the test pack and how it is stored.
struct Planned {
    kind: ObjectKind,
    data: Vec<u8>,
    /// Index of the earlier object it is a delta against.
    base: Option<usize>,
}

fn tree(entries: &[(&str, &str, &Oid)]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| e.1);
    let mut out = Vec::new();
    for (mode, name, oid) in sorted {
        out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        out.extend_from_slice(&oid.0);
    }
    out
}

fn commit(tree: &Oid, parent: Option<&Oid>, message: &str) -> Vec<u8> {
    let mut out = format!("tree {}\n", tree.to_hex());
    if let Some(p) = parent {
        out.push_str(&format!("parent {}\n", p.to_hex()));
    }
    out.push_str("author A U Thor <author@example.com> 1700000000 +0000\n");
    out.push_str("committer A U Thor <author@example.com> 1700000000 +0000\n\n");
    out.push_str(message);
    out.into_bytes()
}

/// Blobs v1..v4 (each a delta of the one before: a chain of depth 3), a pair over 16 MiB, trees of
/// two commits (the second a delta of the first) and the commits, all in dependency order.
fn plan() -> Vec<Planned> {
    let mut objects: Vec<Planned> = Vec::new();
    let push = |objects: &mut Vec<Planned>, kind, data, base| {
        objects.push(Planned { kind, data, base });
        objects.len() - 1
    };
    let v1 = text(21, 60_000);
    let v2 = edit(&v1, 22, 5);
    let v3 = edit(&v2, 23, 5);
    let v4 = edit(&v3, 24, 5);
    let b1 = push(&mut objects, ObjectKind::Blob, v1, None);
    let b2 = push(&mut objects, ObjectKind::Blob, v2, Some(b1));
    let b3 = push(&mut objects, ObjectKind::Blob, v3, Some(b2));
    let b4 = push(&mut objects, ObjectKind::Blob, v4, Some(b3));
    let large = text(25, 17 << 20);
    let large2 = edit(&large, 26, 10);
    let l1 = push(&mut objects, ObjectKind::Blob, large, None);
    let l2 = push(&mut objects, ObjectKind::Blob, large2, Some(l1));
    let empty = push(&mut objects, ObjectKind::Blob, Vec::new(), None);
    let id = |objects: &Vec<Planned>, i: usize| object_id(objects[i].kind, &objects[i].data);
    let names: Vec<String> = (0..40).map(|i| format!("file{i:02}.rs")).collect();
    let tree_of = |objects: &Vec<Planned>, main: usize, large: usize| {
        let (main, large, empty) = (id(objects, main), id(objects, large), id(objects, empty));
        // The older versions stay reachable, so that fsck sees every object of the pack.
        let (old1, old2) = (id(objects, b1), id(objects, b2));
        let mut entries: Vec<(&str, &str, &Oid)> = vec![
            ("100644", "main.rs", &main),
            ("100755", "large.txt", &large),
            ("100644", "v1.rs", &old1),
            ("100644", "v2.rs", &old2),
        ];
        for n in &names {
            entries.push(("100644", n, &empty));
        }
        tree(&entries)
    };
    let t1_data = tree_of(&objects, b3, l1);
    let t2_data = tree_of(&objects, b4, l2);
    let t1 = push(&mut objects, ObjectKind::Tree, t1_data, None);
    let t2 = push(&mut objects, ObjectKind::Tree, t2_data, Some(t1));
    let c1_data = commit(&id(&objects, t1), None, "first\n");
    let c1 = push(&mut objects, ObjectKind::Commit, c1_data, None);
    let c2_data = commit(&id(&objects, t2), Some(&id(&objects, c1)), "second\n");
    push(&mut objects, ObjectKind::Commit, c2_data, None);
    objects
}

#[test]
fn git_reads_the_pack_we_write() {
    let objects = plan();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", repo.to_str().unwrap()],
    );

    let mut pack = Vec::new();
    let mut writer = PackWriter::new(&mut pack, objects.len() as u32).unwrap();
    let mut offsets = Vec::new();
    let mut deltas = 0;
    for o in &objects {
        let oid = object_id(o.kind, &o.data);
        let offset = match o.base {
            Some(b) => {
                let base = &objects[b].data;
                let d = delta::encode(base, &o.data).expect("an edit is a small delta");
                deltas += 1;
                writer.add_ofs_delta(oid, offsets[b], &d).unwrap()
            }
            None => writer.add_whole(oid, o.kind, &o.data).unwrap(),
        };
        offsets.push(offset);
    }
    assert_eq!(deltas, 5);
    let finished = writer.finish().unwrap();
    let mut entries = finished.entries;
    let mut idx = Vec::new();
    write_idx(&mut entries, &finished.checksum, &mut idx).unwrap();

    let pack_dir = repo.join("objects/pack");
    let name = format!("pack-{}", hex::encode(finished.checksum));
    std::fs::write(pack_dir.join(format!("{name}.pack")), &pack).unwrap();
    std::fs::write(pack_dir.join(format!("{name}.idx")), &idx).unwrap();

    // verify-pack inflates and applies every entry and checks the index against it.
    let idx_path = pack_dir.join(format!("{name}.idx"));
    let verify = git(&repo, &["verify-pack", "-v", idx_path.to_str().unwrap()]);
    assert!(verify.contains("chain length = 3: 1 object"), "{verify}");

    // git's own indexer, given only the pack, writes the very same index.
    let copy = tmp.path().join("copy.pack");
    std::fs::write(&copy, &pack).unwrap();
    git(tmp.path(), &["index-pack", "-o", "copy.idx", "copy.pack"]);
    let theirs = std::fs::read(tmp.path().join("copy.idx")).unwrap();
    assert!(theirs == idx, "git index-pack wrote a different .idx");

    // Every object byte for byte, with its type.
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let requests: String = objects
        .iter()
        .map(|o| format!("{}\n", object_id(o.kind, &o.data).to_hex()))
        .collect();
    let feeder = std::thread::spawn(move || stdin.write_all(requests.as_bytes()));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    let mut rest = out.stdout.as_slice();
    for o in &objects {
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap();
        let header = String::from_utf8(rest[..line_end].to_vec()).unwrap();
        let kind = match o.kind {
            ObjectKind::Blob => "blob",
            ObjectKind::Tree => "tree",
            ObjectKind::Commit => "commit",
            ObjectKind::Tag => "tag",
        };
        let oid = object_id(o.kind, &o.data).to_hex();
        assert_eq!(header, format!("{oid} {kind} {}", o.data.len()));
        rest = &rest[line_end + 1..];
        assert!(rest[..o.data.len()] == o.data[..], "{oid} differs");
        rest = &rest[o.data.len() + 1..];
    }
    assert!(rest.is_empty());

    let tip = object_id(ObjectKind::Commit, &objects[objects.len() - 1].data).to_hex();
    git(&repo, &["update-ref", "refs/heads/main", &tip]);
    git(&repo, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    git(&repo, &["fsck", "--full", "--strict", "--no-dangling"]);
    let count = git(&repo, &["rev-list", "--objects", "--all"]);
    assert_eq!(count.lines().count(), objects.len());
}
