//! Whole GitHub accounts: a fixture server shaped like GitHub's REST API
//! (tests/fixtures/github_api.py) lists an organisation of 120 repositories whose clone URLs
//! point at a real git server; gitvault backs them all up with their metadata.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::git_server::HttpGitServer;
use common::provider_api::{
    FixtureApi, acme_repositories, add_source, assert_answered, assert_not_in_files, client,
    git_base, read_json, restore_metadata, run_backup, serve_repositories, statuses,
};
use common::{TestVault, stderr};
use serde_json::Value;

const TOKEN: &str = "ghp_fixtureToken1234567890abcdef";
const TOKEN_ENV: &str = "GITVAULT_TEST_GH_TOKEN";

/// The fixture with an organisation of 120 repositories (120 for acme, one for alice, and
/// acme/repo-001's wiki, as [`acme_repositories`] serves them).
fn start_api(git_base: &str, extra: &[&str]) -> FixtureApi {
    let mut args = vec!["--generate-org", "acme", "--repos", "120"];
    args.extend_from_slice(&["--git-base", git_base]);
    args.extend_from_slice(extra);
    let bearer = format!("Bearer {TOKEN}");
    FixtureApi::start("github", &args, "", ("Authorization", &bearer))
}

#[test]
fn a_whole_organisation_with_metadata_then_an_unchanged_run_of_304s() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &acme_repositories());
    let git = HttpGitServer::start(&root, Some(("x-access-token", TOKEN)));
    let git_base = git_base(&git);
    let api = start_api(&git_base, &["--token", TOKEN]);
    add_source(&tv, &api, TOKEN_ENV, "acme", "acme", &["--no-forks"]);
    add_source(&tv, &api, TOKEN_ENV, "alice", "alice", &[]);
    let config = std::fs::read_to_string(tv.dir.join("config.toml")).unwrap();
    assert!(config.contains(TOKEN_ENV) && !config.contains(TOKEN));

    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    let lines = statuses(&doc);
    let acme = &doc["sources"][0];
    assert_eq!(acme["listed"], 120, "{acme}");
    assert_eq!(acme["selected"], 108, "forks are excluded: {acme}");
    let changed: Vec<_> = lines.iter().filter(|(_, s)| s == "changed").collect();
    // 108 acme repositories, the wiki of repo-001, alice/dotfiles.
    assert_eq!(changed.len(), 110, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(r, s)| r.ends_with("acme/repo-001.wiki") && s == "changed"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|(r, _)| r.ends_with("acme/repo-009")),
        "a fork was backed up"
    );
    assert!(lines.iter().any(|(r, _)| r.ends_with("alice/dotfiles")));
    // The run report is stored beside the vault for monitoring.
    let reports = common::files_under(&tv.dir.join("reports"));
    assert_eq!(reports.len(), 1);
    let stored = read_json(&reports[0]);
    assert_eq!(stored["sources"][0]["selected"], 108);

    // Metadata round trip for one repository.
    let host = git_base.trim_start_matches("http://");
    let repo = format!("{host}/acme/repo-003");
    let meta = restore_metadata(&tv, &repo, "meta");
    let read = |p: &str| read_json(&meta.join(p));
    let issue = read("issues/1.json");
    assert_eq!(issue["issue"], api.get("/repos/acme/repo-003/issues/1"));
    assert_eq!(
        issue["comments"],
        Value::Array(api_all(&api, "/repos/acme/repo-003/issues/1/comments"))
    );
    let pulls: Vec<PathBuf> = common::files_under(&meta.join("pulls"));
    assert_eq!(pulls.len(), 1);
    let pull = read_json(&pulls[0]);
    let number = pull["pull_request"]["number"].as_u64().unwrap();
    assert_eq!(
        pull["pull_request"],
        api.get(&format!("/repos/acme/repo-003/pulls/{number}"))
    );
    assert_eq!(
        pull["review_comments"],
        Value::Array(api_all(
            &api,
            &format!("/repos/acme/repo-003/pulls/{number}/comments")
        ))
    );
    assert_eq!(pull["reviews"].as_array().unwrap().len(), 1);
    assert_eq!(
        read("labels.json"),
        Value::Array(api_all(&api, "/repos/acme/repo-003/labels"))
    );
    assert_eq!(
        read("milestones.json"),
        Value::Array(api_all(&api, "/repos/acme/repo-003/milestones?state=all"))
    );
    let releases = api_all(&api, "/repos/acme/repo-003/releases");
    let release_id = releases[0]["id"].as_u64().unwrap();
    let release = read(&format!("releases/{release_id}.json"));
    assert_eq!(release["tag_name"], releases[0]["tag_name"]);
    let asset = &releases[0]["assets"][0];
    let content = release["assets"][0]["gitvault_content"].as_str().unwrap();
    let bytes = std::fs::read(meta.join(content)).unwrap();
    assert_eq!(bytes.len() as u64, asset["size"].as_u64().unwrap());
    let served = client()
        .get(asset["browser_download_url"].as_str().unwrap())
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(bytes, served.to_vec());
    assert_eq!(read("settings.json")["full_name"], "acme/repo-003");

    // Unchanged: only conditional requests, all answered 304; almost nothing added.
    let before = common::tree_size(&tv.data_dir());
    api.control("reset-stats", serde_json::json!({}));
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        statuses(&doc)
            .iter()
            .all(|(_, s)| s == "unchanged" || s == "skipped"),
        "{doc}"
    );
    assert_answered(&api.stats(), &["304"]);
    let growth = common::tree_size(&tv.data_dir()) - before;
    assert!(
        growth < 110 * 4096,
        "an unchanged run grew the vault by {growth} bytes"
    );

    // An updated issue is picked up by the next run.
    api.control(
        "touch",
        serde_json::json!({ "repo": "acme/repo-003", "issue": 1 }),
    );
    let (code, _, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["acme"]);
    assert_eq!(code, Some(0), "{err}");
    let meta2 = restore_metadata(&tv, &repo, "meta2");
    let issue2 = read_json(&meta2.join("issues/1.json"));
    assert_eq!(issue2["issue"], api.get("/repos/acme/repo-003/issues/1"));
    assert_ne!(issue2["issue"]["body"], issue["issue"]["body"]);

    assert_not_in_files(&tv.dir, TOKEN);
}

fn api_all(api: &FixtureApi, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    api.get(&format!("{path}{sep}per_page=100"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn rate_limits_errors_and_denied_repositories() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &acme_repositories());
    let git = HttpGitServer::start(&root, Some(("x-access-token", TOKEN)));
    let git_base = git_base(&git);
    let api = start_api(&git_base, &["--token", TOKEN]);
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "acme",
        "acme",
        &["--include", "repo-00*"],
    );

    // 5xx answers are retried; a listed repository that cannot be fetched (as with an
    // SSO-protected repository) fails alone: exit 3.
    api.control("mode", serde_json::json!({ "fail_5xx": 2 }));
    std::fs::remove_dir_all(root.join("acme/repo-005.git")).unwrap();
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(3), "{err}");
    let lines = statuses(&doc);
    // repo-000 to repo-009 without repo-005, and repo-001's wiki.
    assert_eq!(
        lines.iter().filter(|(_, s)| s == "changed").count(),
        10,
        "{lines:?}"
    );
    let denied: Vec<_> = lines
        .iter()
        .filter(|(r, _)| r.ends_with("repo-005"))
        .collect();
    assert_eq!(denied.len(), 1);
    assert_ne!(denied[0].1, "changed");

    // Primary rate limit far in the future: the run stops cleanly and says when to resume.
    api.control("mode", serde_json::json!({ "clear": true }));
    api.control(
        "mode",
        serde_json::json!({ "rate_limited": true, "reset_in": 3600 }),
    );
    let started = std::time::Instant::now();
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert!(
        started.elapsed().as_secs() < 60,
        "a rate limit must not hang the run"
    );
    assert!(matches!(code, Some(1) | Some(3)), "{err}");
    assert!(doc.to_string().contains("rate limited until"), "{doc}");

    // Bad token: a clear error, no secret in it.
    api.control("mode", serde_json::json!({ "clear": true }));
    let out = tv
        .command(&["backup"])
        .env(TOKEN_ENV, "ghp_wrongTokenButStillSecret999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the token"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("ghp_wrongTokenButStillSecret999"));
    assert_not_in_files(&tv.dir, TOKEN);
}

/// A GitHub App instead of a token: the app's JWT (RS256, checked by the fixture with the
/// `openssl` CLI against the public key) buys installation tokens, which expire; with a
/// lifetime barely above the renewal margin, a run must renew them as it goes.
#[test]
fn a_github_app_authenticates_and_renews_its_installation_token() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &acme_repositories());
    // Installation tokens are minted by the fixture, so the git server cannot know them.
    let git = HttpGitServer::start(&root, None);
    let git_base = git_base(&git);
    let key = tv.tmp.path().join("app.pem");
    let public = tv.tmp.path().join("app.pub.pem");
    // -traditional: the PKCS#1 form GitHub hands out ("BEGIN RSA PRIVATE KEY").
    let ok = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let api = start_api(
        &git_base,
        &[
            "--token",
            TOKEN,
            "--app-id",
            "31337",
            "--app-public-key",
            public.to_str().unwrap(),
            // Renewal starts when less than ten minutes remain: these tokens need renewing
            // one second after they are issued.
            "--installation-token-ttl",
            "601",
        ],
    );
    let add = |key_file: &Path, app_id: &str| {
        tv.run(&[
            "source",
            "add",
            "acme-app",
            "--provider",
            "github",
            "--owner",
            "acme",
            "--api-url",
            &api.url(),
            "--git-url",
            &git_base,
            "--app-id",
            app_id,
            "--app-key-file",
            key_file.to_str().unwrap(),
            "--include",
            "repo-00[0-7]",
        ])
    };
    let out = add(&key, "31337");
    assert!(out.status.success(), "{}", stderr(&out));

    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    let lines = statuses(&doc);
    assert_eq!(
        lines.iter().filter(|(_, s)| s == "changed").count(),
        9,
        "8 repositories and repo-001's wiki: {lines:?}"
    );
    let stats = api.stats();
    assert!(
        stats["app_tokens_issued"].as_u64().unwrap() >= 2,
        "the installation token was never renewed: {stats}"
    );
    // Restored metadata came through the installation token.
    let repo = lines[0].0.clone();
    let meta = restore_metadata(&tv, &repo, "meta");
    assert!(meta.join("issues/1.json").is_file());
    // Neither installation tokens nor the key reach the vault or the output.
    let pem = std::fs::read_to_string(&key).unwrap();
    let key_line = pem.lines().nth(1).unwrap().to_string();
    for needle in ["ghs_", key_line.as_str()] {
        assert_not_in_files(&tv.dir, needle);
    }
    assert!(!doc.to_string().contains("ghs_") && !err.contains("ghs_"));

    // A key the fixture does not know: a clear error, nothing else breaks.
    let other = tv.tmp.path().join("other.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&other)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let out = tv.run(&["source", "remove", "acme-app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = add(&other, "31337");
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_ne!(code, Some(0), "{doc}");
    let message = doc["sources"][0]["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("401") || message.contains("refused"),
        "{message} {err}"
    );
}
