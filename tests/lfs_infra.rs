//! The Git LFS test infrastructure (tests/common/lfs_server.rs, tests/fixtures/lfs.sh), checked
//! with the real `git` and `git lfs` clients only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::git_server::{HttpGitServer, fixture, run_fixture};
use common::lfs_server::{LFS_FILTERS, git_in};
use common::lfs_server::{LfsFault, LfsServer};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// `git` in `dir`, isolated from the user's configuration (HOME too: git-lfs reads ~/.netrc),
/// never prompting.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "git failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixtures' `noise SEED BYTES` (tests/fixtures/lib.sh), regenerated independently.
fn fixture_noise(seed: u64, len: usize) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && noise "$2" "$3""#)
        .arg("noise")
        .arg(fixture("lib.sh"))
        .arg(seed.to_string())
        .arg(len.to_string())
        .output()
        .expect("run bash");
    assert!(out.status.success(), "noise failed");
    assert_eq!(out.stdout.len(), len);
    out.stdout
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// (oid, size) of the LFS pointer stored at `rev:path`.
fn pointer(home: &Path, repo: &Path, spec: &str) -> (String, u64) {
    let text = ok(&git_in(home, repo, &["cat-file", "-p", spec]));
    assert!(
        text.starts_with("version https://git-lfs.github.com/spec/v1\n"),
        "{spec} is not an LFS pointer:\n{text}"
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in the pointer {spec}:\n{text}"))
            .to_string()
    };
    let oid = field("oid sha256:");
    let size = field("size ").parse().unwrap();
    (oid, size)
}

struct Setup {
    tmp: tempfile::TempDir,
    home: PathBuf,
    lfs: LfsServer,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    Setup { tmp, home, lfs }
}

#[test]
fn lfs_fixture_clones_over_http_with_real_git_lfs() {
    let Setup { tmp, home, lfs } = setup();
    let git_root = tmp.path().join("git");
    let bare = git_root.join("repo.git");
    let endpoint = lfs.endpoint("org", "repo");
    assert_eq!(
        endpoint,
        format!("http://127.0.0.1:{}/org/repo.git/info/lfs", lfs.port())
    );
    run_fixture("lfs.sh", &[bare.to_str().unwrap(), &endpoint]);

    // The bare repository: refs, and .lfsconfig naming the endpoint.
    let refs = ok(&git_in(
        &home,
        &bare,
        &["for-each-ref", "--format=%(objecttype) %(refname)"],
    ));
    assert_eq!(
        refs,
        "commit refs/heads/assets\ncommit refs/heads/main\ntag refs/tags/assets-v1\n\
         commit refs/tags/v1\n"
    );
    assert_eq!(
        ok(&git_in(&home, &bare, &["show", "main:.lfsconfig"])),
        format!("[lfs]\n\turl = {endpoint}\n")
    );
    // Five distinct objects on the server, as plain files under ROOT/org/repo/.
    let stored = lfs.objects();
    assert_eq!(stored.len(), 5, "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|p| p.parent() == Some(&lfs.root().join("org/repo")))
    );
    assert!(
        lfs.requests()
            .iter()
            .any(|r| r.is_upload() && r.status == 200)
    );

    // A real clone over smart HTTP with the LFS filters: git-lfs finds the endpoint in
    // .lfsconfig and downloads the content.
    let http = HttpGitServer::start(&git_root, None);
    let work = tmp.path().join("work");
    let mut args = vec!["clone", "-q"];
    args.extend_from_slice(LFS_FILTERS);
    let url = http.url("repo");
    args.extend([url.as_str(), work.to_str().unwrap()]);
    ok(&git_in(&home, tmp.path(), &args));

    let large = std::fs::read(work.join("large.bin")).unwrap();
    assert!(large == fixture_noise(11, MIB), "large.bin content differs");
    assert_eq!(
        std::fs::read_to_string(work.join("small.bin")).unwrap(),
        "small LFS object, version 1\n"
    );
    assert!(!work.join("old.bin").exists());
    assert!(lfs.downloads() >= 2, "{}", lfs.access_log());

    ok(&git_in(&home, &work, &["checkout", "-q", "assets"]));
    assert_eq!(
        std::fs::read_to_string(work.join("small.bin")).unwrap(),
        "small LFS object, version 2 (assets)\n"
    );
    let third = std::fs::read(work.join("data/third.bin")).unwrap();
    assert!(
        third == fixture_noise(13, 65536),
        "third.bin content differs"
    );
    ok(&git_in(&home, &work, &["checkout", "-q", "main"]));

    // Every object of every ref's history (old.bin's only in main's history) downloads, and
    // fsck finds them consistent.
    ok(&git_in(&home, &work, &["lfs", "fetch", "--all", "origin"]));
    let listed = ok(&git_in(
        &home,
        &work,
        &["lfs", "ls-files", "--all", "--long"],
    ));
    let mut oids: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    oids.sort();
    oids.dedup();
    assert_eq!(oids.len(), 5, "{listed}");
    ok(&git_in(&home, &work, &["lfs", "fsck"]));
    ok(&git_in(&home, &work, &["lfs", "fsck", "assets"]));

    // object_path: where the server keeps large.bin's object.
    let (oid, size) = pointer(&home, &work, "main:large.bin");
    assert_eq!(size, MIB as u64);
    assert_eq!(oid, sha256_hex(&large));
    let path = lfs.object_path("org", "repo.git", &oid);
    assert_eq!(path, lfs.root().join("org/repo").join(&oid));
    assert!(std::fs::read(&path).unwrap() == large);
    assert_eq!(lfs.find_object(&oid), vec![path.clone()]);

    // The batch API by hand: present, then deleted on disk.
    let (status, body) = lfs.batch("org", "repo", "download", &[(&oid, size)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"download\""), "{body}");
    let (old_oid, old_size) = pointer(&home, &work, "v1:old.bin");
    std::fs::remove_file(lfs.object_path("org", "repo", &old_oid)).unwrap();
    let (status, body) = lfs.batch("org", "repo", "download", &[(&old_oid, old_size)]);
    assert_eq!(status, 404, "{body}");

    // Injected errors: the batch API, then downloads only.
    lfs.set_fault(LfsFault::BatchStatus(503));
    let (status, _) = lfs.batch("org", "repo", "download", &[(&oid, size)]);
    assert_eq!(status, 503);
    lfs.set_fault(LfsFault::DownloadStatus(500));
    let (status, _) = lfs.batch("org", "repo", "download", &[(&oid, size)]);
    assert_eq!(status, 200);
    let fresh = tmp.path().join("fresh");
    // git-lfs retries a 5xx 8 times with growing delays by default: once, at once, here.
    let mut args = vec![
        "-c",
        "lfs.transfer.maxretries=1",
        "-c",
        "lfs.transfer.maxretrydelay=0",
        "clone",
        "-q",
    ];
    args.extend_from_slice(LFS_FILTERS);
    args.extend([url.as_str(), fresh.to_str().unwrap()]);
    let failed = git_in(&home, tmp.path(), &args);
    assert!(
        !failed.status.success(),
        "a clone succeeded without LFS downloads"
    );
    assert!(
        lfs.requests()
            .iter()
            .any(|r| r.is_download() && r.status == 500)
    );
    lfs.set_fault(LfsFault::None);
    ok(&git_in(&home, &fresh, &["checkout", "-q", "-f", "main"]));
    assert!(std::fs::read(fresh.join("large.bin")).unwrap() == large);
}

#[test]
fn lfs_fixture_big_file_and_one_mib_edit() {
    let Setup { tmp, home, lfs } = setup();
    let bare = tmp.path().join("big.git");
    let endpoint = lfs.endpoint("org", "big");
    let size_mib = 4;
    run_fixture(
        "lfs.sh",
        &[
            "big",
            bare.to_str().unwrap(),
            &endpoint,
            &size_mib.to_string(),
        ],
    );
    let (before, size) = pointer(&home, &bare, "main:big.bin");
    assert_eq!(size, (size_mib * MIB) as u64);
    let original = std::fs::read(lfs.object_path("org", "big", &before)).unwrap();
    assert!(original == fixture_noise(100, size_mib * MIB));

    run_fixture("lfs.sh", &["big-edit", bare.to_str().unwrap(), &endpoint]);
    let (after, size) = pointer(&home, &bare, "main:big.bin");
    assert_eq!(size, (size_mib * MIB) as u64);
    assert_ne!(before, after);
    assert_eq!(pointer(&home, &bare, "main~1:big.bin").0, before);
    let edited = std::fs::read(lfs.object_path("org", "big", &after)).unwrap();
    assert_eq!(sha256_hex(&edited), after);
    // Only the MiB at floor(SIZE/2) MiB changed, to noise seed 101.
    let at = size_mib / 2 * MIB;
    assert!(edited[..at] == original[..at]);
    assert!(edited[at + MIB..] == original[at + MIB..]);
    assert!(edited[at..at + MIB] == fixture_noise(101, MIB)[..]);
    assert_eq!(lfs.objects().len(), 2);
    // Nothing was downloaded: the content is regenerated.
    assert_eq!(lfs.downloads(), 0, "{}", lfs.access_log());
}
