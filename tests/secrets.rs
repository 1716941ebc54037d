//! Credentials and secrets (issue 14, DESIGN.md invariants 5 and 9), through the real binary
//! against real servers on loopback:
//!
//! - credentials go only to the origin they were given for: an LFS endpoint named by a
//!   repository's `.lfsconfig`, and the `href`s of a batch answer, on another origin (a
//!   recording proxy in front of giftless) get no `Authorization`, while the same-origin LFS
//!   server behind the git server's own Basic auth still serves every object;
//! - a token and a URL password never show in stdout, stderr, `--json`, the run reports, any file
//!   of the vault directory, nor the command lines of the child processes gitvault starts;
//! - every file and directory of a vault is private (no group or other bits) under umask 022.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use base64::Engine;
use common::git_server::{Fault, FaultyHttpServer, HttpGitServer, file_url, run_fixture};
use common::lfs_server::{LfsServer, git_in};
use common::{TestVault, stderr, stdout};
use serde_json::Value;

const USER: &str = "backup-bot";
const TOKEN: &str = "tok-7Qd2LxW9vZk41mPe";
const WRONG_TOKEN: &str = "tok-wrongWr0ngWRONG";
const PASSWORD: &str = "pw-Hq8Zr3Tn6Yb2Vc5X";

/// What must never appear anywhere: each secret, and its Basic-auth encodings.
fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for secret in [TOKEN, WRONG_TOKEN, PASSWORD] {
        out.push(secret.to_string());
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        out.push(b64(format!("{USER}:{secret}")));
        out.push(b64(format!("x-access-token:{secret}")));
    }
    out
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for secret in forbidden() {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what} holds a secret ({secret}):\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn assert_output_clean(what: &str, out: &Output) {
    assert_clean(&format!("stdout of {what}"), &out.stdout);
    assert_clean(&format!("stderr of {what}"), &out.stderr);
}

fn assert_dir_clean(dir: &Path) {
    for path in common::files_under(dir) {
        // A file removed between the listing and the read is no leak.
        if let Ok(bytes) = std::fs::read(&path) {
            assert_clean(&path.display().to_string(), &bytes);
        }
    }
}

#[test]
fn lfs_credentials_stay_with_their_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    // The other origin: a proxy to giftless on its own port that records every request.
    let elsewhere = FaultyHttpServer::start_for_port(lfs.port(), Fault::None);
    let elsewhere_endpoint = |repo: &str| {
        format!(
            "http://127.0.0.1:{}/org/{repo}.git/info/lfs",
            elsewhere.port()
        )
    };
    let root = tmp.path().join("git");
    // `same` has no .lfsconfig: its default endpoint is on the git server, which proxies it to
    // giftless through `elsewhere` (without the Authorization header), and giftless names
    // `elsewhere` in its hrefs: a batch answer pointing at another origin without a header.
    run_fixture(
        "lfs.sh",
        &[
            root.join("org/same.git").to_str().unwrap(),
            &lfs.endpoint("org", "same"),
            "--no-lfsconfig",
        ],
    );
    // `named` has a .lfsconfig whose lfs.url names the other origin.
    run_fixture(
        "lfs.sh",
        &[
            root.join("org/named.git").to_str().unwrap(),
            &elsewhere_endpoint("named"),
        ],
    );
    let http =
        HttpGitServer::start_with_lfs_proxy(&root, Some((USER, TOKEN)), Some(elsewhere.port()));
    elsewhere.clear_request_heads();

    let tv = TestVault::new();
    let out = tv
        .command(&[
            "--json",
            "backup",
            &http.url("org/same"),
            &http.url("org/named"),
        ])
        .env("GITVAULT_USERNAME", USER)
        .env("GITVAULT_TOKEN", TOKEN)
        .output()
        .unwrap();
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{doc}\n{}", stderr(&out));
    for line in doc["repositories"].as_array().unwrap() {
        assert_eq!(line["status"], "changed", "{line}");
        // large, small v1, small v2, third, old: all five, from both servers.
        assert_eq!(line["lfs_objects_stored"], 5, "{line}");
    }

    let heads = elsewhere.request_heads();
    // The other origin was really asked: the batch of `named`, and downloads of both.
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("POST /org/named.git/info/lfs/objects/batch")),
        "{heads:#?}"
    );
    assert!(
        heads.iter().filter(|h| h.starts_with("GET ")).count() >= 10,
        "{heads:#?}"
    );
    for head in &heads {
        assert!(
            !head.to_ascii_lowercase().contains("\nauthorization:"),
            "credentials reached another origin:\n{head}"
        );
        assert_clean("a request to another origin", head.as_bytes());
    }
    assert_output_clean("backup", &out);
}

/// A directory of wrappers for `git` and `ssh` that log their command line, then run the real
/// program: whatever gitvault passes to a child process on its command line ends up in the log.
fn spy_path(dir: &Path) -> (String, PathBuf) {
    let bin = dir.join("spy-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("spy.log");
    let path = std::env::var("PATH").unwrap_or_default();
    for program in ["git", "ssh", "git-upload-pack", "git-receive-pack"] {
        let real = std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file());
        let Some(real) = real else { continue };
        let script = bin.join(program);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (format!("{}:{path}", bin.display()), log)
}

#[test]
fn tokens_and_url_passwords_never_leak() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let repo = root.join("r.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let pushed = root.join("pushed.git");
    git_in(
        tv.tmp.path(),
        tv.tmp.path(),
        &["init", "-q", "--bare", pushed.to_str().unwrap()],
    );
    // The server accepts the URL password and the token alike.
    let http = HttpGitServer::start(&root, Some((USER, PASSWORD)));
    let with_password = |name: &str| {
        http.url(name)
            .replacen("http://", &format!("http://{USER}:{PASSWORD}@"), 1)
    };
    let (path, spy_log) = spy_path(tv.tmp.path());
    let run = |args: &[&str], token: Option<&str>| -> Output {
        let mut cmd = tv.command(args);
        cmd.env("PATH", &path)
            .env("GITVAULT_USERNAME", USER)
            .env_remove("GITVAULT_TOKEN")
            .env_remove("GITVAULT_ALLOW_INSECURE_HTTP");
        if let Some(t) = token {
            cmd.env("GITVAULT_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        assert_output_clean(&format!("{args:?}"), &out);
        out
    };

    // A password in the URL, the same URL twice (a "skipped" row), as JSON and as text.
    let url = with_password("r");
    for json in [true, false] {
        let mut args = vec!["backup", url.as_str(), url.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let out = run(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        if json {
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
            let lines = doc["repositories"].as_array().unwrap();
            assert_eq!(lines.len(), 2, "{doc}");
            assert_eq!(lines[1]["status"], "skipped", "{doc}");
            assert!(lines[0]["url"].as_str().unwrap().contains("127.0.0.1"));
        }
    }
    // Bad port, scp form, ssh URL: refused, and the refusals do not quote the password.
    for bad in [
        format!("https://{USER}:{PASSWORD}@127.0.0.1:99999/x.git"),
        format!("{USER}:{PASSWORD}@127.0.0.1:x.git"),
        format!("ssh://{USER}:{PASSWORD}@127.0.0.1:1/x.git"),
    ] {
        for json in [true, false] {
            let mut args = vec!["backup", bad.as_str()];
            if json {
                args.insert(0, "--json");
            }
            let out = run(&args, None);
            assert!(!out.status.success(), "{bad} was accepted");
        }
    }
    // The token from the environment, right and wrong.
    let out = run(
        &["--json", "backup", &http.url("r"), "--name", "by-token"],
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &["backup", &http.url("r"), "--name", "wrong"],
        Some(WRONG_TOKEN),
    );
    assert!(!out.status.success());
    // Credentials over plain http to a host that is not loopback are refused before any
    // connection (192.0.2.0/24 is TEST-NET: nothing answers there anyway).
    let out = run(
        &[
            "--json",
            "backup",
            "http://192.0.2.1:9/x.git",
            "--name",
            "far",
        ],
        Some(TOKEN),
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = doc["repositories"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("GITVAULT_ALLOW_INSECURE_HTTP"), "{doc}");

    // Restore and push with credentials: git runs as a child process.
    let to = tv.tmp.path().join("restored.git");
    let out = run(
        &[
            "--json",
            "restore",
            "by-token",
            "--to",
            to.to_str().unwrap(),
            "--push",
            &with_password("pushed"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let heads = git_in(tv.tmp.path(), &pushed, &["for-each-ref"]);
    assert!(!heads.stdout.is_empty(), "nothing was pushed");

    let spied = std::fs::read(&spy_log).unwrap_or_default();
    assert!(!spied.is_empty(), "no child process was seen");
    assert_clean("the command line of a child process", &spied);
    // Run reports, index, config, caches: every byte of the vault directory.
    assert!(tv.dir.join("reports").is_dir());
    assert_dir_clean(&tv.dir);
    assert_dir_clean(&to);
    // The repository's name comes from the host and path only.
    let listed = run(&["--json", "snapshots"], None);
    assert!(stdout(&listed).contains("127.0.0.1"), "{}", stdout(&listed));
}

/// Runs the binary under umask 022, the common default that made vaults world-readable.
fn run_umask_022(vault: &Path, identity: &Path, args: &[&str]) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(vault)
        .args(args)
        .env("GITVAULT_IDENTITY_FILE", identity)
        .env_remove("GITVAULT_PASSPHRASE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Every path under `dir` (itself included) whose mode has group or other bits.
fn not_private(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            bad.push(format!("{:o} {}", mode & 0o7777, p.display()));
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    bad
}

#[test]
fn the_vault_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let identity_file = tmp.path().join("identity.txt");
    std::fs::write(
        &identity_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let repo = tmp.path().join("r.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let vault = tmp.path().join("vault");
    let recipient = identity.to_public().to_string();
    run_umask_022(&vault, &identity_file, &["init", "--recipient", &recipient]);
    run_umask_022(
        &vault,
        &identity_file,
        &["backup", &file_url(&repo), "--name", "r"],
    );
    let to = tmp.path().join("restored.git");
    run_umask_022(
        &vault,
        &identity_file,
        &["restore", "r", "--to", to.to_str().unwrap()],
    );
    run_umask_022(&vault, &identity_file, &["verify"]);
    for dir in ["cache", "reports", "keys", "data"] {
        assert!(vault.join(dir).is_dir(), "{dir} was not made");
    }
    assert_eq!(not_private(&vault), Vec::<String>::new());

    // A vault left open by an older version is tightened by the next command.
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_umask_022(&vault, &identity_file, &["snapshots"]);
    assert_eq!(not_private(&vault), Vec::<String>::new());
}
