//! Sharded runs (issue 17): `backup --shard I/N` (or `GITVAULT_SHARD`, or `--shards N` with
//! Kubernetes' `JOB_COMPLETION_INDEX`) backs up a disjoint part of the configured sources'
//! repositories; the N parts together are the whole account.

mod common;

use std::collections::BTreeSet;

use common::git_server::HttpGitServer;
use common::provider_api::{
    FixtureApi, add_source, git_base, run_backup_with, serve_repositories, statuses,
};
use common::{TestVault, stderr};

const TOKEN: &str = "ghp_shardFixtureToken1234567890";
const TOKEN_ENV: &str = "GITVAULT_TEST_GH_TOKEN";

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
    let git = HttpGitServer::start(&root, Some(("x-access-token", TOKEN)));
    let base = git_base(&git);
    let bearer = format!("Bearer {TOKEN}");
    let api = FixtureApi::start(
        "github",
        &[
            "--generate-org",
            "acme",
            "--repos",
            "12",
            "--git-base",
            &base,
            "--token",
            TOKEN,
        ],
        "",
        ("Authorization", &bearer),
    );
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
