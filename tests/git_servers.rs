//! The test git servers (tests/common/git_server.rs) and fixture scripts (tests/fixtures/),
//! checked with the plain `git` command.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::git_server::{
    Fault, FaultyHttpServer, GitDaemon, HttpGitServer, RequestKind, basic_auth_header, file_url,
    run_fixture,
};

/// `git` isolated from the user's configuration, never prompting.
fn git(args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env_remove("SSH_ASKPASS")
        .output()
        .expect("run git")
}

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

fn for_each_ref(repo: &Path) -> String {
    ok(&git(&["-C", repo.to_str().unwrap(), "for-each-ref"]))
}

/// A temp dir holding `rich.git` built by rich.sh.
fn rich_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    run_fixture("rich.sh", &[root.path().join("rich.git").to_str().unwrap()]);
    root
}

#[test]
fn http_with_auth_clones_with_credentials_and_refuses_without() {
    let root = rich_root();
    let server = HttpGitServer::start(root.path(), Some(("alice", "s3cret pass")));
    let url = server.url("rich");
    assert!(!url.contains("alice"));
    let dest = tempfile::tempdir().unwrap();

    let header = format!(
        "http.extraHeader={}",
        basic_auth_header("alice", "s3cret pass")
    );
    let mirror = dest.path().join("with.git");
    ok(&git(&[
        "-c",
        &header,
        "clone",
        "--mirror",
        "-q",
        &url,
        mirror.to_str().unwrap(),
    ]));
    assert_eq!(
        for_each_ref(&mirror),
        for_each_ref(&root.path().join("rich.git"))
    );

    let out = git(&[
        "clone",
        "--mirror",
        "-q",
        &url,
        dest.path().join("without.git").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let wrong = format!("http.extraHeader={}", basic_auth_header("alice", "wrong"));
    let out2 = git(&["-c", &wrong, "ls-remote", &url]);
    assert!(!out2.status.success());
    let statuses: Vec<u16> = server.requests().iter().map(|e| e.status).collect();
    assert!(statuses.contains(&401), "{}", server.access_log());
    let users: Vec<String> = server
        .requests()
        .iter()
        .filter(|e| e.status == 200)
        .map(|e| e.remote_user.clone())
        .collect();
    assert!(!users.is_empty() && users.iter().all(|u| u == "alice"));
}

#[test]
fn http_accepts_pushes_when_enabled() {
    let root = rich_root();
    let repo = root.path().join("rich.git");
    ok(&git(&[
        "-C",
        repo.to_str().unwrap(),
        "config",
        "http.receivepack",
        "true",
    ]));
    let server = HttpGitServer::start(root.path(), None);
    let work = tempfile::tempdir().unwrap();
    let clone = work.path().join("clone");
    ok(&git(&[
        "clone",
        "-q",
        &server.url("rich"),
        clone.to_str().unwrap(),
    ]));
    ok(&git(&[
        "-C",
        clone.to_str().unwrap(),
        "push",
        "-q",
        "origin",
        "main:refs/heads/pushed",
    ]));
    assert!(for_each_ref(&repo).contains("refs/heads/pushed"));

    // A push bigger than http.postBuffer (1 MiB) goes out chunked.
    std::fs::write(clone.join("big.bin"), common::noise(7, 3 << 20)).unwrap();
    let c = clone.to_str().unwrap();
    ok(&git(&["-C", c, "add", "big.bin"]));
    ok(&git(&[
        "-C",
        c,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        "big",
    ]));
    ok(&git(&[
        "-C",
        c,
        "push",
        "-q",
        "origin",
        "HEAD:refs/heads/big",
    ]));
    ok(&git(&["-C", repo.to_str().unwrap(), "fsck", "--strict"]));
    assert!(for_each_ref(&repo).contains("refs/heads/big"));
    assert!(
        server
            .requests()
            .iter()
            .any(|e| e.kind() == RequestKind::Push && e.method == "POST" && e.status == 200)
    );
}

#[test]
fn git_daemon_clone() {
    let root = rich_root();
    let daemon = GitDaemon::start(root.path());
    let dest = tempfile::tempdir().unwrap();
    let mirror = dest.path().join("m.git");
    let url = daemon.url("rich");
    assert!(url.starts_with("git://127.0.0.1:"));
    ok(&git(&[
        "clone",
        "--mirror",
        "-q",
        &url,
        mirror.to_str().unwrap(),
    ]));
    assert_eq!(
        for_each_ref(&mirror),
        for_each_ref(&root.path().join("rich.git"))
    );
    // Pushes are refused (receive-pack is not enabled).
    let out = git(&[
        "-C",
        mirror.to_str().unwrap(),
        "push",
        &url,
        "main:refs/heads/x",
    ]);
    assert!(!out.status.success());
}

#[test]
fn file_url_clone() {
    let root = rich_root();
    let dest = tempfile::tempdir().unwrap();
    let url = file_url(&root.path().join("rich.git"));
    assert!(url.starts_with("file:///"));
    ok(&git(&[
        "clone",
        "--mirror",
        "-q",
        &url,
        dest.path().join("m.git").to_str().unwrap(),
    ]));
}

#[test]
fn access_log_tells_pack_transfer_from_ref_listing() {
    let root = rich_root();
    let server = HttpGitServer::start(root.path(), None);
    assert_eq!(server.access_log(), "", "readiness probes are not logged");

    // Protocol v2 ls-remote: capabilities + ls-refs, no pack.
    ok(&git(&[
        "-c",
        "protocol.version=2",
        "ls-remote",
        &server.url("rich"),
    ]));
    let kinds: Vec<RequestKind> = server.requests().iter().map(|e| e.kind()).collect();
    assert!(
        kinds.contains(&RequestKind::LsRefs),
        "{}",
        server.access_log()
    );
    assert_eq!(server.pack_fetches(), 0, "{}", server.access_log());

    // Protocol v0 ls-remote: only the GET advertisement.
    server.clear_access_log();
    ok(&git(&[
        "-c",
        "protocol.version=0",
        "ls-remote",
        &server.url("rich"),
    ]));
    assert_eq!(server.pack_fetches(), 0, "{}", server.access_log());
    assert!(!server.requests().is_empty());

    // A clone transfers a pack.
    server.clear_access_log();
    let dest = tempfile::tempdir().unwrap();
    let mirror = dest.path().join("m.git");
    ok(&git(&[
        "-c",
        "protocol.version=2",
        "clone",
        "--mirror",
        "-q",
        &server.url("rich"),
        mirror.to_str().unwrap(),
    ]));
    assert_eq!(server.pack_fetches(), 1, "{}", server.access_log());
    let fetch = server
        .requests()
        .into_iter()
        .find(|e| e.kind() == RequestKind::Fetch)
        .unwrap();
    let body = fetch.body().unwrap();
    assert!(String::from_utf8_lossy(&body).contains("want "));
    assert!(fetch.bytes_sent > 65536, "the pack holds the 64 KiB blob");

    // Fetching again with nothing new sends no fetch command.
    server.clear_access_log();
    ok(&git(&[
        "-C",
        mirror.to_str().unwrap(),
        "-c",
        "protocol.version=2",
        "fetch",
        "-q",
    ]));
    assert_eq!(server.pack_fetches(), 0, "{}", server.access_log());
    assert!(!server.requests().is_empty());
}

#[test]
fn faulty_proxy_breaks_pack_transfers_only() {
    let root = rich_root();
    let server = HttpGitServer::start(root.path(), None);
    let proxy = FaultyHttpServer::start(&server, Fault::TruncatePack);
    let dest = tempfile::tempdir().unwrap();

    // Ref listing passes through.
    let refs = ok(&git(&["ls-remote", &proxy.url("rich")]));
    assert!(refs.contains("refs/pull/1/head"));
    assert_eq!(proxy.faults_applied(), 0);

    for (i, fault) in [
        Fault::TruncatePack,
        Fault::ClosePackEarly,
        Fault::FlipByteInPack,
    ]
    .into_iter()
    .enumerate()
    {
        proxy.set_fault(fault);
        let before = proxy.faults_applied();
        let out = git(&[
            "clone",
            "--mirror",
            "-q",
            &proxy.url("rich"),
            dest.path().join(format!("bad{i}.git")).to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{fault:?}: clone succeeded");
        assert_eq!(proxy.faults_applied(), before + 1, "{fault:?}");
    }

    proxy.set_fault(Fault::None);
    ok(&git(&[
        "clone",
        "--mirror",
        "-q",
        &proxy.url("rich"),
        dest.path().join("good.git").to_str().unwrap(),
    ]));

    for status in [401, 403, 404, 500] {
        proxy.set_fault(Fault::Status(status));
        let out = git(&["ls-remote", &proxy.url("rich")]);
        assert!(!out.status.success(), "status {status}");
    }
}

#[test]
fn rich_fixture_has_expected_refs() {
    let root = rich_root();
    let repo = root.path().join("rich.git");
    let refs = for_each_ref(&repo);
    for name in [
        "refs/heads/main",
        "refs/heads/dev",
        "refs/heads/feature",
        "refs/tags/v0.1",
        "refs/tags/v1.0",
        "refs/tags/v1.0-rc",
        "refs/notes/commits",
        "refs/pull/1/head",
    ] {
        assert!(
            refs.contains(&format!("\t{name}\n")),
            "{name} missing:\n{refs}"
        );
    }
    assert_eq!(refs.lines().count(), 8, "{refs}");
    let head = ok(&git(&[
        "-C",
        repo.to_str().unwrap(),
        "symbolic-ref",
        "HEAD",
    ]));
    assert_eq!(head.trim(), "refs/heads/main");
    ok(&git(&["-C", repo.to_str().unwrap(), "fsck", "--strict"]));

    let many = root.path().join("many.git");
    run_fixture("rich.sh", &[many.to_str().unwrap(), "--many-refs", "10000"]);
    assert!(for_each_ref(&many).lines().count() > 10_000);
}

#[test]
fn rich_fixture_is_deterministic() {
    let a = rich_root();
    let b = rich_root();
    let refs = for_each_ref(&a.path().join("rich.git"));
    assert_eq!(refs, for_each_ref(&b.path().join("rich.git")));
    // Pinned: the fixture must not change by accident (tests may rely on these ids).
    assert!(
        refs.contains("e4a7b825331f9707853b99fcd69e558f2e243e46 commit\trefs/heads/main"),
        "{refs}"
    );
}

#[test]
fn empty_and_evolve_fixtures() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty.git");
    run_fixture("empty.sh", &[empty.to_str().unwrap()]);
    assert_eq!(for_each_ref(&empty), "");

    let repo = root.path().join("rich.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let r = repo.to_str().unwrap();
    let main = || ok(&git(&["-C", r, "rev-parse", "main"])).trim().to_string();
    let original = main();
    run_fixture("evolve.sh", &[r, "add-commit"]);
    let added = main();
    assert_ne!(added, original);
    assert_eq!(ok(&git(&["-C", r, "rev-parse", "main~1"])).trim(), original);
    run_fixture("evolve.sh", &[r, "force-push"]);
    assert_eq!(main(), original);
    run_fixture("evolve.sh", &[r, "delete-branch"]);
    assert!(!for_each_ref(&repo).contains("refs/heads/dev"));
    // Same steps, same ids.
    run_fixture("evolve.sh", &[r, "add-commit"]);
    assert_eq!(main(), added);
}

#[test]
fn access_log_decodes_gzipped_fetch_requests() {
    // 40 branches on distinct commits: the fetch request lists 40 wants (> 1 KiB), which git
    // sends gzipped.
    let root = rich_root();
    let repo = root.path().join("rich.git");
    let script = r#"
        set -euo pipefail
        export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
        export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b
        export GIT_AUTHOR_DATE="1700000000 +0000" GIT_COMMITTER_DATE="1700000000 +0000"
        tree=$(git rev-parse 'main^{tree}')
        for i in $(seq 1 40); do
          c=$(echo "branch $i" | git commit-tree "$tree" -p main)
          git update-ref "refs/heads/b$i" "$c"
        done
    "#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(&repo)
        .output()
        .unwrap();
    ok(&out);
    let server = HttpGitServer::start(root.path(), None);
    let dest = tempfile::tempdir().unwrap();
    ok(&git(&[
        "-c",
        "protocol.version=2",
        "clone",
        "--mirror",
        "-q",
        &server.url("rich"),
        dest.path().join("m.git").to_str().unwrap(),
    ]));
    let requests = server.requests();
    let fetch: Vec<_> = requests
        .iter()
        .filter(|e| e.kind() == RequestKind::Fetch)
        .collect();
    assert_eq!(fetch.len(), 1, "{}", server.access_log());
    assert_eq!(fetch[0].content_encoding, "gzip", "{}", server.access_log());
    let body = String::from_utf8_lossy(&fetch[0].body().unwrap()).into_owned();
    assert!(body.contains("command=fetch"), "{body}");
    assert!(body.matches("want ").count() > 40, "{body}");
}
