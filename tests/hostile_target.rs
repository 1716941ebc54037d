//! A target is hostile (DESIGN.md invariant 7): whoever can write to one (a provider, a stolen
//! S3 key) can read `gitvault.json` and encrypt anything to the vault's public key. Each case
//! plants such files on one target, on a file:// target and on an S3 server (moto), through the
//! same `Target` calls an attacker's S3 client would make, and checks that no wrong data is
//! restored (a loud error instead), no pack is deleted, and every genuine snapshot still
//! restores exactly.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::git_server::{file_url, run_fixture};
use common::s3_server::S3Server;
use common::{TestVault, fsck, ok, refs_and_head, stderr, stdout};
use gitvault::crypto::{self, IdKey, Unlock, VaultKeys};
use gitvault::store::pack::{Compression, PackWriter};
use gitvault::target::{Body, Target, open_target};

const BUCKET: &str = "hostile";

/// A vault with a local target and the hostile one, holding two repositories: alpha (two
/// snapshots) and beta (one, with a pack of several 64 KiB age STREAM chunks).
struct Fixture {
    tv: TestVault,
    /// The S3 server of the S3 case, kept alive.
    _server: Option<S3Server>,
    url: String,
    target: Box<dyn Target>,
    alpha: PathBuf,
    beta: PathBuf,
    fingerprint: String,
}

impl Fixture {
    fn new(s3: bool) -> Fixture {
        let tv = TestVault::new();
        let (server, url) = if s3 {
            let server = S3Server::moto();
            server.create_bucket(BUCKET);
            server.set_env();
            let url = server.url(BUCKET, "vault");
            (Some(server), url)
        } else {
            (None, file_url(&tv.tmp.path().join("remote")))
        };
        ok(&tv.run(&["target", "add", "remote", &url]));
        let target = open_target("remote", &url).unwrap();

        let alpha = tv.tmp.path().join("alpha.git");
        run_fixture("rich.sh", &[alpha.to_str().unwrap()]);
        let beta = tv.tmp.path().join("beta.git");
        run_fixture("rich.sh", &[beta.to_str().unwrap()]);
        for step in ["add-commit", "add-commit", "add-commit", "add-branch"] {
            run_fixture("evolve.sh", &[beta.to_str().unwrap(), step]);
        }
        ok(&tv.run(&["backup", &file_url(&alpha), "--name", "alpha"]));
        ok(&tv.run(&["backup", &file_url(&beta), "--name", "beta"]));
        run_fixture("evolve.sh", &[alpha.to_str().unwrap(), "move-tag"]);
        ok(&tv.run(&["backup", &file_url(&alpha), "--name", "alpha"]));
        let vault = tv.open();
        let keys = tv.keys(&vault);
        let fingerprint = keys.fingerprint(&vault.config().vault_id);
        Fixture {
            tv,
            _server: server,
            url,
            target,
            alpha,
            beta,
            fingerprint,
        }
    }

    fn packs(&self) -> BTreeSet<String> {
        self.target
            .list("packs/")
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect()
    }

    fn public_key(&self) -> age::x25519::Recipient {
        crypto::parse_recipient(&self.tv.open().config().public_key).unwrap()
    }

    /// Recovers a new vault from the hostile target only, as a host that lost everything.
    fn recover(&self, name: &str, extra: &[&str]) -> (TestVault, Output) {
        let into = self.tv.tmp.path().join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
            .arg("--vault")
            .arg(&into)
            .args(["--json", "recover", "--from", &self.url])
            .args(extra)
            .env("GITVAULT_IDENTITY_FILE", &self.tv.identity_file)
            .output()
            .unwrap();
        let recovered = TestVault {
            tmp: tempfile::tempdir().unwrap(),
            dir: into,
            identity_file: self.tv.identity_file.clone(),
            identity: self.tv.identity.clone(),
        };
        (recovered, out)
    }

    /// Every genuine snapshot's newest state restores exactly from `vault`.
    fn restores_exactly(&self, vault: &TestVault, tag: &str) {
        for (repo, upstream) in [("alpha", &self.alpha), ("beta", &self.beta)] {
            let to = self.tv.tmp.path().join(format!("restored-{tag}-{repo}"));
            ok(&vault.run(&["restore", repo, "--to", to.to_str().unwrap()]));
            fsck(&to);
            assert_eq!(refs_and_head(&to), refs_and_head(upstream), "{tag} {repo}");
        }
    }

    /// `prune` after the attack deletes no pack: nothing was forgotten.
    fn prune_deletes_nothing(&self, vault: &TestVault, packs_before: &BTreeSet<String>) {
        let out = ok(&vault.run(&["--json", "prune"]));
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["packs_deleted"], 0, "{doc}");
        let after = self.packs();
        assert!(
            packs_before.is_subset(&after),
            "prune deleted {:?}",
            packs_before.difference(&after).collect::<Vec<_>>()
        );
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// age-encrypts `plain` to `recipient`, as anyone holding `gitvault.json` can.
fn encrypt_to(recipient: &age::x25519::Recipient, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = crypto::encrypting_writer(recipient, &mut out).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap();
    out
}

/// The local index, altered: what a forger puts in an index backup of the old format.
fn tampered_index(f: &Fixture, sql: &str) -> Vec<u8> {
    let copy =
        f.tv.tmp
            .path()
            .join(format!("tampered-{}.sqlite", sql.len()));
    let _ = std::fs::remove_file(&copy);
    {
        let conn = rusqlite::Connection::open(f.tv.dir.join("index.sqlite")).unwrap();
        conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    std::fs::read(&copy).unwrap()
}

fn index_backups_are_authenticated(s3: bool) {
    let f = Fixture::new(s3);
    let packs = f.packs();
    let genuine: Vec<String> = f
        .target
        .list("index/")
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(genuine.len(), 1, "{genuine:?}");
    let genuine_bytes = f.target.get(&genuine[0]).unwrap();
    let public = f.public_key();

    // 1. The two attacks of the issue, in the old format (a bare zstd frame): alpha and beta
    //    swapped, and every table emptied (which made prune delete every pack). Named to sort
    //    newest.
    let swapped = tampered_index(
        &f,
        "UPDATE snapshots SET repo_id = CASE repo_id WHEN 1 THEN 2 ELSE 1 END",
    );
    let emptied = tampered_index(
        &f,
        "DELETE FROM git_objects; DELETE FROM chunks; DELETE FROM snapshots;",
    );
    for (name, plain) in [
        ("index/99999999999999999999-aaaaaaaa.age", &swapped),
        ("index/99999999999999999998-aaaaaaaa.age", &emptied),
    ] {
        let frame = zstd::encode_all(plain.as_slice(), 3).unwrap();
        f.target
            .put(name, Body::Bytes(&encrypt_to(&public, &frame)))
            .unwrap();
    }
    // 2. The new format's magic with a MAC the forger had to guess.
    let mut forged = b"GVIDXB02".to_vec();
    forged.extend(zstd::encode_all(swapped.as_slice(), 3).unwrap());
    forged.extend([0x5a; 32]);
    f.target
        .put(
            "index/99999999999999999997-aaaaaaaa.age",
            Body::Bytes(&encrypt_to(&public, &forged)),
        )
        .unwrap();
    // 3. The genuine backup, replayed under a newer name; and truncated.
    f.target
        .put(
            "index/99999999999999999996-aaaaaaaa.age",
            Body::Bytes(&genuine_bytes),
        )
        .unwrap();
    f.target
        .put(
            "index/99999999999999999995-aaaaaaaa.age",
            Body::Bytes(&genuine_bytes[..genuine_bytes.len() - 40]),
        )
        .unwrap();

    let (recovered, out) = f.recover("recovered", &["--expect-vault", &f.fingerprint]);
    let doc = json(&out);
    assert_eq!(doc["index_backup"], genuine[0].as_str(), "{doc}");
    let ignored = doc["index_backups_ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 5, "{doc}");
    assert_eq!(doc["snapshots_total"], 3, "{doc}");
    assert_eq!(doc["fingerprint"], f.fingerprint.as_str());
    f.restores_exactly(&recovered, "after-forged-index");
    f.prune_deletes_nothing(&recovered, &packs);
    f.restores_exactly(&recovered, "after-prune");
    // The planted names sort newest, but the index backup prune wrote was kept: a later
    // recover uses it.
    let (_, out) = f.recover("recovered-again", &[]);
    let doc = json(&out);
    let used = doc["index_backup"].as_str().unwrap_or_default();
    assert!(
        used.starts_with("index/") && used > genuine[0].as_str(),
        "{doc}"
    );
    // A replay of an older genuine backup (the newer ones deleted): it authenticates and is
    // used, and holds nothing that could point at data: every snapshot comes back whole.
    for l in f.target.list("index/").unwrap() {
        if !l.key.starts_with("index/9999") {
            f.target.delete(&l.key).unwrap();
        }
    }
    f.target
        .put(&genuine[0], Body::Bytes(&genuine_bytes))
        .unwrap();
    let (older, out) = f.recover("recovered-from-older", &[]);
    let doc = json(&out);
    assert_eq!(doc["index_backup"], genuine[0].as_str(), "{doc}");
    assert_eq!(doc["snapshots_total"], 3, "{doc}");
    f.restores_exactly(&older, "older-backup");
    // Nothing the reader could not authenticate was deleted by it either.
    let left: Vec<String> = f
        .target
        .list("index/")
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .filter(|k| k.starts_with("index/9999"))
        .collect();
    assert!(!left.is_empty());
}

#[test]
fn index_backups_are_authenticated_file() {
    index_backups_are_authenticated(false);
}

#[test]
fn index_backups_are_authenticated_s3() {
    index_backups_are_authenticated(true);
}

fn forged_and_replayed_packs(s3: bool) {
    let f = Fixture::new(s3);
    let packs = f.packs();
    let vault = f.tv.open();
    let keys = f.tv.keys(&vault);
    // The strongest forger: knows a genuine manifest's id (it cannot: footers are encrypted)
    // and writes a pack to the vault's public key claiming to hold it, with a footer sealed
    // under a key of its own.
    let manifest = vault.index().snapshots(Some("alpha"), None, None).unwrap()[0].manifest;
    let forger = IdKey::generate().unwrap();
    let lie = br#"{"format":1,"repo":"alpha","time":"2026-12-01T00:00:00Z","source":"x","refset":"00","ref_count":0,"head":null,"object_maps":[],"objects_added":0}"#;
    let forged = common::write_pack(
        f.tv.tmp.path(),
        &keys,
        &forger.auth_key(),
        &[(manifest, gitvault::ChunkKind::Manifest as u8, lie)],
    );
    let forged_key = gitvault::store::pack_key(&forged.name);
    f.target.put(&forged_key, Body::File(&forged.path)).unwrap();

    // A replay: the biggest genuine pack with one byte flipped inside a middle 64 KiB STREAM
    // chunk, so that its (authentic) footer still reads, under the name of its new bytes.
    let biggest = f
        .target
        .list("packs/")
        .unwrap()
        .into_iter()
        .max_by_key(|l| l.size)
        .unwrap();
    assert!(biggest.size > 3 * 65_552, "need a pack of 3+ STREAM chunks");
    let genuine_bytes = f.target.get(&biggest.key).unwrap();
    // Listed before the genuine pack, so recover meets (and records) the replay first and
    // must take it out again: the harder order.
    let genuine_name = blake3::hash(&genuine_bytes).to_hex().to_string();
    let (bytes, replay_name) = (1..=255u8)
        .map(|bit| {
            let mut bytes = genuine_bytes.clone();
            bytes[65_552 + 1_000] ^= bit;
            let name = blake3::hash(&bytes).to_hex().to_string();
            (bytes, name)
        })
        .find(|(_, name)| name < &genuine_name)
        .unwrap();
    let replay_key = gitvault::store::pack_key(&replay_name);
    f.target.put(&replay_key, Body::Bytes(&bytes)).unwrap();

    let (recovered, out) = f.recover("recovered", &[]);
    let doc = json(&out);
    let forged_list: BTreeSet<String> = doc["packs_forged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        forged_list,
        BTreeSet::from([forged.name.clone(), replay_name.clone()]),
        "{doc}"
    );
    assert_eq!(doc["snapshots_total"], 3, "{doc}");
    // Without --expect-vault, recover says what it trusted.
    assert!(
        stderr(&out).contains("trusted as found"),
        "{}",
        stderr(&out)
    );
    f.restores_exactly(&recovered, "after-forged-pack");
    f.prune_deletes_nothing(&recovered, &packs);
    // The planted files are left for a human to look at, not deleted by the reader.
    let after = f.packs();
    assert!(after.contains(&forged_key) && after.contains(&replay_key));
    f.restores_exactly(&recovered, "after-prune");
    // verify names them as packs the index does not know.
    let verify = stdout(&recovered.run(&["--json", "verify"]));
    assert!(verify.contains(&forged.name), "{verify}");
}

#[test]
fn forged_and_replayed_packs_file() {
    forged_and_replayed_packs(false);
}

#[test]
fn forged_and_replayed_packs_s3() {
    forged_and_replayed_packs(true);
}

fn planted_key_files(s3: bool) {
    let f = Fixture::new(s3);
    let vault = f.tv.open();
    let params_bytes = f.target.get("gitvault.json").unwrap();
    let params: serde_json::Value = serde_json::from_slice(&params_bytes).unwrap();
    let vault_id = params["vault_id"].as_str().unwrap().to_string();
    // The user's recipient is public: an attacker seals keys of its own to it.
    let user = vec![f.tv.identity.to_public().to_string()];
    let attacker = VaultKeys::generate().unwrap();
    let planted = attacker
        .seal(&vault_id, crypto::KeyProtection::Recipients(&user))
        .unwrap();
    f.target
        .put("keys/0000000000000000.age", Body::Bytes(&planted))
        .unwrap();

    // Beside the genuine key files, with gitvault.json intact: ignored, the vault opens.
    let (recovered, out) = f.recover("with-planted-key", &["--expect-vault", &f.fingerprint]);
    let doc = json(&out);
    assert_eq!(doc["snapshots_total"], 3, "{doc}");
    f.restores_exactly(&recovered, "planted-key");

    // gitvault.json rewritten to the attacker's public key: the vault that opens is the
    // attacker's, and --expect-vault refuses it before anything is written.
    let mut fake = params.clone();
    fake["public_key"] = attacker.public_key().into();
    f.target
        .put(
            "gitvault.json",
            Body::Bytes(&serde_json::to_vec(&fake).unwrap()),
        )
        .unwrap();
    let (refused, out) = f.recover("with-planted-vault", &["--expect-vault", &f.fingerprint]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not the expected"),
        "{}",
        stderr(&out)
    );
    assert!(!refused.dir.exists());
    // Without it, the warning shows a fingerprint that is not the one init printed.
    let (_, out) = f.recover("with-planted-vault-unchecked", &[]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_ne!(doc["fingerprint"], f.fingerprint.as_str());
    assert!(
        stderr(&out).contains("trusted as found"),
        "{}",
        stderr(&out)
    );
    f.target
        .put("gitvault.json", Body::Bytes(&params_bytes))
        .unwrap();
    drop(vault);

    // An oversized file under a key file's name is not read; the vault still opens.
    f.target
        .put(
            "keys/ffffffffffffffff.age",
            Body::Bytes(&vec![b'x'; 2 << 20]),
        )
        .unwrap();
    let (recovered, out) = f.recover("with-oversized-key", &["--expect-vault", &f.fingerprint]);
    assert_eq!(json(&out)["snapshots_total"], 3);
    assert!(
        stderr(&out).contains("oversized key file ignored"),
        "{}",
        stderr(&out)
    );
    f.restores_exactly(&recovered, "oversized-key");

    // A key file whose scrypt work factor would need 1 TiB of memory is refused at once.
    let heavy = heavy_scrypt_key_file();
    let started = Instant::now();
    let err = VaultKeys::open(
        "heavy",
        &heavy,
        &Unlock::Passphrase("correct horse".to_string().into()),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.to_string().contains("heavy"), "{err}");
}

/// An age header with one scrypt stanza of work factor 30 (2^30 × 1 KiB), which age would
/// compute before it could notice the rest is nonsense.
fn heavy_scrypt_key_file() -> Vec<u8> {
    let b64 = |n: usize| "A".repeat(n);
    format!(
        "age-encryption.org/v1\n-> scrypt {} 30\n{}\n--- {}\n",
        b64(22),
        b64(43),
        b64(43)
    )
    .into_bytes()
    .into_iter()
    .chain([0u8; 64])
    .collect()
}

#[test]
fn planted_key_files_file() {
    planted_key_files(false);
}

#[test]
fn planted_key_files_s3() {
    planted_key_files(true);
}

/// The local index says a snapshot is alpha's but points at beta's manifest (an index rebuilt
/// from a forged backup by an older gitvault): restore refuses before writing anything.
#[test]
fn manifests_swapped_between_snapshots_are_refused() {
    let f = Fixture::new(false);
    {
        let conn = rusqlite::Connection::open(f.tv.dir.join("index.sqlite")).unwrap();
        conn.execute_batch("UPDATE snapshots SET repo_id = CASE repo_id WHEN 1 THEN 2 ELSE 1 END")
            .unwrap();
    }
    for repo in ["alpha", "beta"] {
        let to = f.tv.tmp.path().join(format!("swapped-{repo}"));
        let out = f.tv.run(&["restore", repo, "--to", to.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("manifest disagrees"),
            "{}",
            stderr(&out)
        );
        assert!(
            !to.exists() || std::fs::read_dir(&to).unwrap().next().is_none(),
            "restore wrote into {}",
            to.display()
        );
    }
    {
        let conn = rusqlite::Connection::open(f.tv.dir.join("index.sqlite")).unwrap();
        conn.execute_batch("UPDATE snapshots SET repo_id = CASE repo_id WHEN 1 THEN 2 ELSE 1 END")
            .unwrap();
    }
    f.restores_exactly(&f.tv, "unswapped");
}

/// A target that serves other bytes under a pack's name (bytes that decrypt and decompress,
/// but are not the chunk) makes the reader use the next target, not fail.
#[test]
fn a_replica_with_wrong_bytes_is_passed_over() {
    let tv = TestVault::new();
    let remote = tv.tmp.path().join("remote");
    ok(&tv.run(&["target", "add", "remote", &file_url(&remote)]));
    let file = tv.tmp.path().join("noise");
    let data = common::noise(7, 100_000);
    std::fs::write(&file, &data).unwrap();
    let out = json(&tv.run(&["--json", "chunk", "put", file.to_str().unwrap()]));
    let id = out["stored"][0]["id"].as_str().unwrap().to_string();
    let local_packs = common::pack_files(&tv.data_dir());
    assert_eq!(local_packs.len(), 1);
    let genuine = local_packs[0].clone();

    // The same layout (one incompressible chunk of the same length, so the same frame offset
    // and size), other bytes, encrypted to the vault's public key.
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let other = common::noise(8, 100_000);
    let mut w = PackWriter::create(
        tv.tmp.path(),
        &keys.identity().to_public(),
        &IdKey::generate().unwrap().auth_key(),
        Compression {
            level: 3,
            frame_size: 32 << 20,
        },
    )
    .unwrap();
    w.add(keys.id_key().chunk_id(&other), 0, &other).unwrap();
    let fake = w.finish().unwrap();
    let index_frame = vault.index().chunk(&id.parse().unwrap()).unwrap().unwrap();
    assert_eq!(fake.footer.frames[0].offset, index_frame.frame.offset);
    assert_eq!(
        fake.footer.frames[0].compressed_len,
        index_frame.frame.compressed_len
    );
    std::fs::copy(&fake.path, &genuine).unwrap();
    drop(vault);

    let to = tv.tmp.path().join("out");
    let out = tv.run(&["chunk", "cat", &id, "--output", to.to_str().unwrap()]);
    ok(&out);
    assert_eq!(std::fs::read(&to).unwrap(), data);
}

/// Packs whose footers could not be authenticated (layout 1, read by `recover`) are never
/// judged by prune until `verify --full` has checked their every chunk; an index made before
/// authentication existed is not pruned until vouched for.
#[test]
fn prune_judges_only_packs_it_can_vouch_for() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("repo.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "r"]));
    let file = tv.tmp.path().join("blob");
    std::fs::write(&file, common::noise(9, 50_000)).unwrap();
    // A pack no snapshot needs: prune would delete it.
    ok(&tv.run(&["chunk", "put", file.to_str().unwrap()]));
    let packs_before = common::pack_files(&tv.data_dir());
    let sql = |q: &str| {
        let conn = rusqlite::Connection::open(tv.dir.join("index.sqlite")).unwrap();
        conn.execute_batch(q).unwrap();
    };

    // An index of unknown origin: refused, then vouched for once.
    sql("UPDATE meta SET value = 'before-authentication' WHERE key = 'origin'");
    let out = tv.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--trust-index"), "{}", stderr(&out));
    assert_eq!(common::pack_files(&tv.data_dir()), packs_before);

    // Every pack of legacy provenance: nothing is judged.
    sql("UPDATE packs SET provenance = 0");
    let doc = json(&tv.run(&["--json", "prune", "--trust-index"]));
    assert_eq!(doc["packs_deleted"], 0, "{doc}");
    assert_eq!(doc["packs_unvouched"], packs_before.len(), "{doc}");
    let after = common::pack_files(&tv.data_dir());
    assert!(packs_before.iter().all(|p| after.contains(p)), "{after:?}");

    // verify --full reads them whole and vouches for them; the next prune (no flag needed
    // any more) deletes the unneeded pack and keeps the snapshot whole.
    ok(&tv.run(&["verify", "--full"]));
    let doc = json(&tv.run(&["--json", "prune"]));
    assert_eq!(doc["packs_unvouched"], 0, "{doc}");
    assert!(doc["packs_deleted"].as_u64().unwrap() >= 1, "{doc}");
    let to = tv.tmp.path().join("restored");
    ok(&tv.run(&["restore", "r", "--to", to.to_str().unwrap()]));
    fsck(&to);
    assert_eq!(refs_and_head(&to), refs_and_head(&repo));
}

/// Packs no index row names are read by prune's catch-up (issue 17): those this vault wrote
/// (authenticated) join the index and are judged like any pack, so uploads of killed runs,
/// old or fresh, go with their dead chunks (a run still going would hold a lock, and its
/// snapshot would be marked before the decision), even one holding a manifest that does not
/// read; a pack it cannot vouch for is reported and left in place.
#[test]
fn prune_judges_unindexed_packs_it_wrote_and_leaves_forged_ones() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("repo.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "r"]));
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let day_old = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    // Writes a pack with one chunk of `kind` under `auth` into the local target, dated
    // `when`; returns its path.
    let plant =
        |auth: &crypto::AuthKey, kind: u8, seed: u64, when: Option<std::time::SystemTime>| {
            let mut w = PackWriter::create(
                tv.tmp.path(),
                &keys.identity().to_public(),
                auth,
                Compression {
                    level: 3,
                    frame_size: 1 << 20,
                },
            )
            .unwrap();
            let data = common::noise(seed, 5_000);
            w.add(keys.id_key().chunk_id(&data), kind, &data).unwrap();
            let done = w.finish().unwrap();
            let path = tv
                .data_dir()
                .join("packs")
                .join(&done.name[..2])
                .join(&done.name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::copy(&done.path, &path).unwrap();
            if let Some(t) = when {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
            path
        };
    let ours = keys.auth_key();
    let theirs = IdKey::generate().unwrap().auth_key();
    let killed_upload = plant(&ours, 3, 1, Some(day_old));
    let fresh_upload = plant(&ours, 3, 2, None);
    let forged = plant(&theirs, 3, 3, Some(day_old));
    drop(vault);

    let doc = json(&tv.run(&["--json", "prune"]));
    assert_eq!(doc["caught_up"]["packs_scanned"], 3, "{doc}");
    assert_eq!(doc["packs_deleted"], 2, "{doc}");
    assert!(!killed_upload.exists() && !fresh_upload.exists());
    assert!(
        forged.exists(),
        "a pack this vault cannot vouch for is never deleted"
    );
    let forged_name = forged.file_name().unwrap().to_str().unwrap();
    assert_eq!(doc["caught_up"]["packs_forged"][0], forged_name, "{doc}");
    assert_eq!(doc["unindexed_kept"][0], forged_name, "{doc}");

    // A day-old pack whose manifest does not read is no snapshot: it goes too.
    let other_killed = plant(&ours, 3, 4, Some(day_old));
    let with_manifest = plant(&ours, gitvault::ChunkKind::Manifest as u8, 5, Some(day_old));
    let doc = json(&tv.run(&["--json", "prune"]));
    assert_eq!(doc["caught_up"]["snapshots_added"], 0, "{doc}");
    assert!(!other_killed.exists() && !with_manifest.exists(), "{doc}");
    assert!(forged.exists());
    let to = tv.tmp.path().join("restored");
    ok(&tv.run(&["restore", "r", "--to", to.to_str().unwrap()]));
    fsck(&to);
    assert_eq!(refs_and_head(&to), refs_and_head(&repo));
}
