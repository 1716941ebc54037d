//! Sharded runs (issue 17): `backup --shard I/N` (or `GITVAULT_SHARD`, or `--shards N` with
//! Kubernetes' `JOB_COMPLETION_INDEX`) backs up a disjoint part of the configured sources'
//! repositories; the N parts together are the whole account.

mod common;

use std::collections::BTreeSet;

use common::git_server::HttpGitServer;
use common::provider_api::{
    FixtureApi, add_source, git_base, run_backup_with, serve_repositories, statuses,
};
use common::s3_server::S3Server;
use common::{TestVault, git, ok, refs_and_head, stderr};

const TOKEN: &str = "ghp_shardFixtureToken1234567890";
const TOKEN_ENV: &str = "GITVAULT_TEST_GH_TOKEN";

/// A git server for the repositories under `root` and a GitHub fixture listing `repos` of
/// them as the organisation acme.
fn acme_account(root: &std::path::Path, repos: usize) -> (HttpGitServer, FixtureApi) {
    let git = HttpGitServer::start(root, Some(("x-access-token", TOKEN)));
    let base = git_base(&git);
    let bearer = format!("Bearer {TOKEN}");
    let count = repos.to_string();
    let args = [
        "--generate-org",
        "acme",
        "--repos",
        &count,
        "--git-base",
        &base,
        "--token",
        TOKEN,
    ];
    let api = FixtureApi::start("github", &args, "", ("Authorization", &bearer));
    (git, api)
}

/// The repositories a run backed up (wikis folded into their repository).
fn backed_up(doc: &serde_json::Value) -> BTreeSet<String> {
    statuses(doc)
        .into_iter()
        .map(|(repo, status)| {
            assert_eq!(status, "changed", "{repo}");
            repo.trim_end_matches(".wiki").to_string()
        })
        .collect()
}

#[test]
fn shards_split_an_account_without_overlap() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let mut paths: Vec<String> = (0..12).map(|i| format!("acme/repo-{i:03}.git")).collect();
    paths.push("acme/repo-001.wiki.git".into());
    serve_repositories(&root, &paths);
    let (_git, api) = acme_account(&root, 12);
    add_source(&tv, &api, TOKEN_ENV, "acme", "acme", &[]);
    let env = [(TOKEN_ENV, TOKEN)];

    let mut union = BTreeSet::new();
    let mut parts = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let (code, doc, err) = run_backup_with(&tv, &env, TOKEN, &["--shard", &shard]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(doc["sources"][0]["listed"], 12, "{doc}");
        let part = backed_up(&doc);
        assert!(part.is_disjoint(&union), "shard {shard} overlaps: {part:?}");
        union.extend(part.iter().cloned());
        parts.push(part);
    }
    assert_eq!(union.len(), 12, "{union:?}");
    assert!(parts.iter().all(|p| !p.is_empty()), "{parts:?}");

    // The same shard by environment and by an Indexed Job's completion index, in a new vault.
    let other = TestVault::new();
    add_source(&other, &api, TOKEN_ENV, "acme", "acme", &[]);
    let (code, doc, err) = run_backup_with(
        &other,
        &[(TOKEN_ENV, TOKEN), ("GITVAULT_SHARD", "1/3")],
        TOKEN,
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(backed_up(&doc), parts[1]);
    let third = TestVault::new();
    add_source(&third, &api, TOKEN_ENV, "acme", "acme", &[]);
    let (code, doc, err) = run_backup_with(
        &third,
        &[(TOKEN_ENV, TOKEN), ("JOB_COMPLETION_INDEX", "2")],
        TOKEN,
        &["--shards", "3"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(backed_up(&doc), parts[2]);

    // The three runs' reports merge into one account-wide summary.
    let mut reports: Vec<_> = std::fs::read_dir(tv.dir.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    reports.sort();
    assert_eq!(reports.len(), 3);
    let paths: Vec<&str> = reports.iter().map(|p| p.to_str().unwrap()).collect();
    let report = |args: &[&str]| {
        let mut all = vec!["--json", "report"];
        all.extend_from_slice(args);
        let out = tv.run(&all);
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        (out.status.success(), doc)
    };
    let (good, doc) = report(&paths);
    assert!(good, "{doc}");
    assert_eq!(doc["sources"]["acme"]["listed"], 12, "{doc}");
    assert_eq!(doc["sources"]["acme"]["selected"], 12, "{doc}");
    assert!(doc["repeated"].as_array().unwrap().is_empty());
    // A report given twice is an overlap.
    let (good, doc) = report(&[paths[0], paths[1], paths[2], paths[0]]);
    assert!(!good);
    assert!(!doc["repeated"].as_array().unwrap().is_empty(), "{doc}");
    // Vault directories stand for their newest report.
    let (good, doc) = report(&[other.dir.to_str().unwrap(), third.dir.to_str().unwrap()]);
    assert!(good, "{doc}");
    assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
    // Something that is not a report is named.
    let junk = tv.tmp.path().join("junk.json");
    std::fs::write(&junk, b"[1, 2]").unwrap();
    let out = tv.run(&["report", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("junk.json"), "{}", stderr(&out));
}

#[test]
fn bad_shards_are_refused_before_anything_runs() {
    let tv = TestVault::new();
    for bad in ["3/3", "1/0", "x/2"] {
        let out = tv.run(&["backup", "--shard", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("I/N"), "{}", stderr(&out));
    }
    let out = tv.run(&["backup", "--shards", "3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("JOB_COMPLETION_INDEX"),
        "{}",
        stderr(&out)
    );
}

/// Repositories in the four-host test: the 200 (tiny ones: the rich fixture plus one
/// commit each). Measured on this machine (2 cores shared with other builds, load 5): 50–85 s
/// in all, of which 11–17 s the four concurrent backups and 35–55 s the fifth host's 201
/// restores with fsck; within the ~90 s one such test may take.
const HOSTS_REPOS: usize = 200;

/// Another host's directory on the vault `first` made, joined from `url` with `verb`
/// (`init --join` or `recover --from`), with the file:// target added too.
fn another_host(first: &TestVault, verb: &[&str], files_url: &str) -> TestVault {
    let tmp = tempfile::tempdir().unwrap();
    let host = TestVault {
        dir: tmp.path().join("vault"),
        tmp,
        identity_file: first.identity_file.clone(),
        identity: first.identity.clone(),
    };
    ok(&host.run(verb));
    ok(&host.run(&["target", "add", "files", files_url]));
    host
}

/// Four hosts (four vault directories, four processes at once) share one S3 target and one
/// file:// target and back up a provider account sharded four ways; a fifth host joined with
/// `recover --from` then restores every repository exactly and `verify --full` passes.
#[test]
fn four_hosts_back_up_one_account_in_shards_and_a_fifth_restores_it() {
    let started = std::time::Instant::now();
    let first = TestVault::new();
    let server = S3Server::moto();
    server.create_bucket("shared");
    server.set_env();
    let s3_url = server.url("shared", "vault");
    let files_url = format!("file://{}", first.tmp.path().join("shared-files").display());
    ok(&first.run(&["target", "add", "s3", &s3_url]));
    ok(&first.run(&["target", "add", "files", &files_url]));
    ok(&first.run(&["target", "remove", "local"]));

    // Tiny repositories, each with a commit of its own on top of the rich fixture.
    let root = first.tmp.path().join("served");
    let names: Vec<String> = (0..HOSTS_REPOS)
        .map(|i| format!("acme/repo-{i:03}.git"))
        .collect();
    let mut paths = names.clone();
    paths.push("acme/repo-001.wiki.git".into());
    serve_repositories(&root, &paths);
    for (i, name) in names.iter().enumerate() {
        let repo = root.join(name);
        let commit = git(
            &repo,
            &[
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.com",
                "commit-tree",
                "main^{tree}",
                "-p",
                "main",
                "-m",
                &format!("repository {i}"),
            ],
        );
        git(&repo, &["update-ref", "refs/heads/main", commit.trim()]);
    }
    let (_git, api) = acme_account(&root, HOSTS_REPOS);
    let mut hosts = vec![first];
    for _ in 1..4 {
        hosts.push(another_host(
            &hosts[0],
            &["init", "--join", &s3_url],
            &files_url,
        ));
    }
    for host in &hosts {
        add_source(host, &api, TOKEN_ENV, "acme", "acme", &[]);
    }
    let prepared = started.elapsed();

    // The four shards at once, each on its own host.
    let runs: Vec<std::process::Child> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            host.command(&["--json", "backup", "--shard", &format!("{i}/4")])
                .env(TOKEN_ENV, TOKEN)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut union = BTreeSet::new();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let failed: Vec<_> = statuses(&doc)
            .into_iter()
            .filter(|(_, status)| status != "changed")
            .collect();
        assert_eq!(out.status.code(), Some(0), "{failed:?} {}", stderr(&out));
        let part = backed_up(&doc);
        assert!(part.is_disjoint(&union), "{part:?}");
        union.extend(part);
    }
    assert_eq!(union.len(), HOSTS_REPOS, "{union:?}");
    let backed = started.elapsed();

    // A fifth host joins from S3 alone (then adds the file:// target) and restores everything.
    let fifth = another_host(&hosts[0], &["recover", "--from", &s3_url], &files_url);
    let snapshots: serde_json::Value = serde_json::from_slice(
        &fifth
            .command(&["--json", "snapshots"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let repos: BTreeSet<String> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["repo"].as_str().unwrap().to_string())
        .collect();
    // Every repository and the wiki, each once.
    assert_eq!(repos.len(), HOSTS_REPOS + 1, "{repos:?}");
    assert_eq!(snapshots.as_array().unwrap().len(), HOSTS_REPOS + 1);
    for repo in &repos {
        let served = paths
            .iter()
            .find(|p| repo.ends_with(p.trim_end_matches(".git")))
            .unwrap_or_else(|| panic!("{repo} is not served"));
        let to = fifth.tmp.path().join("restored").join(served);
        ok(&fifth.run(&["restore", repo, "--to", to.to_str().unwrap()]));
        git(&to, &["fsck", "--full", "--strict"]);
        assert_eq!(
            refs_and_head(&to),
            refs_and_head(&root.join(served)),
            "{repo}"
        );
    }
    ok(&fifth.run(&["verify", "--full"]));
    eprintln!(
        "{HOSTS_REPOS} repositories: prepared in {:.1}s, backed up by four hosts in {:.1}s, all restored and verified by {:.1}s",
        prepared.as_secs_f64(),
        (backed - prepared).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// A host applies a source's retention to the repositories another host backed up from that
/// source (the snapshots say which source listed them): with the vault-wide policy instead,
/// a `forget` on one shard's host would thin out the other shards' history.
#[test]
fn forget_applies_the_sources_retention_to_other_hosts_repositories() {
    let first = TestVault::new();
    let files_url = format!("file://{}", first.tmp.path().join("shared").display());
    ok(&first.run(&["target", "add", "files", &files_url]));
    ok(&first.run(&["target", "remove", "local"]));
    let root = first.tmp.path().join("served");
    let mut paths: Vec<String> = (0..4).map(|i| format!("acme/repo-{i:03}.git")).collect();
    paths.push("acme/repo-001.wiki.git".into());
    serve_repositories(&root, &paths);
    let (_git, api) = acme_account(&root, 4);
    // The second host names the shared directory twice, spelled two ways (the target it
    // joined from, and `files`): a lock attempt meets its own lock through the other name,
    // which once made every repository's lease wait for itself. The same spelling twice is
    // refused.
    let second = another_host(
        &first,
        &["init", "--join", &files_url],
        &format!("{files_url}/."),
    );
    let out = second.run(&["target", "add", "again", &format!("{files_url}/")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already"), "{}", stderr(&out));
    for host in [&first, &second] {
        add_source(host, &api, TOKEN_ENV, "acme", "acme", &[]);
        // The source keeps three snapshots; anything else only the newest.
        let config = host.dir.join("config.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[source.retention]\nkeep_last = 3\n\n[retention]\nkeep_last = 1\n");
        std::fs::write(&config, text).unwrap();
    }
    let env = [(TOKEN_ENV, TOKEN)];
    for day in 1..=2 {
        let now = format!("2026-11-0{day}T03:00:00Z");
        for (i, host) in [&first, &second].into_iter().enumerate() {
            let out = host
                .command(&["--json", "backup", "--shard", &format!("{i}/2")])
                .envs(env)
                .env("GITVAULT_NOW", &now)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
    }
    // Each host's own repositories and the other's: every one under the source's policy.
    for host in [&first, &second] {
        let out = host.run(&["forget", "--dry-run"]);
        ok(&out);
        let text = common::stdout(&out);
        for i in 0..4 {
            let line = format!("acme/repo-{i:03} (policy of source acme)");
            assert!(text.contains(&line), "{line:?} missing:\n{text}");
        }
        assert!(
            text.contains("dry run: 0 snapshots would be forgotten"),
            "{text}"
        );
    }
}
