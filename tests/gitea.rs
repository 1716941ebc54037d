//! Whole Gitea/Forgejo accounts: a fixture server shaped like Gitea's REST API
//! (tests/fixtures/gitea_api.py) lists an organisation of 120 repositories whose clone URLs
//! point at a real git server (HTTP Basic, with the token as the password as Gitea takes
//! it); gitvault backs them up with their metadata.

mod common;

use common::git_server::HttpGitServer;
use common::provider_api::{
    FixtureApi, acme_repositories, add_source, assert_answered, assert_not_in_files, git_base,
    read_json, restore_metadata, run_backup, serve_repositories, statuses,
};
use common::{TestVault, stderr};
use serde_json::{Value, json};

const TOKEN: &str = "gta_fixtureToken0123456789abcdef01234567";
const TOKEN_ENV: &str = "GITVAULT_TEST_GITEA_TOKEN";
/// The user name gitvault sends to git with a Gitea token (Gitea ignores it).
const GIT_USER: &str = "gitvault";

/// The fixture with an organisation of 120 repositories (120 for acme, one for alice, and
/// acme/repo-001's wiki, as [`acme_repositories`] serves them; repo-004 says it has a wiki but
/// never created one).
fn start_api(git_base: &str) -> FixtureApi {
    let args = [
        "--generate-org",
        "acme",
        "--repos",
        "120",
        "--git-base",
        git_base,
        "--token",
        TOKEN,
    ];
    let auth = format!("token {TOKEN}");
    FixtureApi::start("gitea", &args, "/api/v1", ("Authorization", &auth))
}

#[test]
fn a_whole_organisation_with_metadata_then_an_unchanged_run_of_304s() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &acme_repositories());
    let git = HttpGitServer::start(&root, Some((GIT_USER, TOKEN)));
    let git_base = git_base(&git);
    let api = start_api(&git_base);
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "acme",
        "acme",
        &["--no-forks", "--no-archived"],
    );
    // alice is a user, not an organisation: /orgs/alice answers 404.
    add_source(&tv, &api, TOKEN_ENV, "alice", "alice", &[]);
    let config = std::fs::read_to_string(tv.dir.join("config.toml")).unwrap();
    assert!(config.contains(TOKEN_ENV) && !config.contains(TOKEN));

    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["--jobs", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let lines = statuses(&doc);
    let acme = &doc["sources"][0];
    assert_eq!(acme["listed"], 120, "three pages of 50: {acme}");
    // 12 forks (repo-009, repo-019, …) and 7 archived (repo-016, repo-033, …).
    assert_eq!(acme["selected"], 101, "{acme}");
    let changed: Vec<_> = lines.iter().filter(|(_, s)| s == "changed").collect();
    // 101 acme repositories, the wiki of repo-001, alice's private dotfiles.
    assert_eq!(changed.len(), 103, "{lines:?}");
    let status_of = |suffix: &str| {
        lines
            .iter()
            .find(|(r, _)| r.ends_with(suffix))
            .map(|(_, s)| s.clone())
    };
    assert_eq!(status_of("acme/repo-001.wiki").as_deref(), Some("changed"));
    assert_eq!(
        status_of("acme/repo-004.wiki").as_deref(),
        Some("skipped"),
        "a wiki that was never created is skipped: {lines:?}"
    );
    assert_eq!(status_of("acme/repo-009"), None, "a fork was backed up");
    assert_eq!(status_of("acme/repo-016"), None, "an archived one too");
    assert_eq!(status_of("alice/dotfiles").as_deref(), Some("changed"));
    let first = api.stats();
    eprintln!(
        "gitea first run: {} API requests for 102 repositories",
        first["requests"]
    );

    // Metadata round trip for one repository: the documents are what the server served.
    let host = git_base.trim_start_matches("http://");
    let repo = format!("{host}/acme/repo-003");
    let meta = restore_metadata(&tv, &repo, "meta");
    let read = |p: &str| read_json(&meta.join(p));
    let issue = read("issues/1.json");
    assert_eq!(issue["issue"], api.get("/repos/acme/repo-003/issues/1"));
    assert_eq!(
        issue["comments"],
        api.get("/repos/acme/repo-003/issues/1/comments")
    );
    assert_eq!(issue["comments"][0]["body"], "Confirmed.");
    assert!(meta.join("issues/2.json").is_file());
    let pulls = common::files_under(&meta.join("pulls"));
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pull = read_json(&pulls[0]);
    assert_eq!(
        pull["pull_request"],
        api.get("/repos/acme/repo-003/pulls/3")
    );
    assert_eq!(
        pull["comments"],
        api.get("/repos/acme/repo-003/issues/3/comments")
    );
    let reviews = api.get("/repos/acme/repo-003/pulls/3/reviews");
    assert_eq!(pull["reviews"], reviews);
    let review_id = reviews[0]["id"].as_u64().unwrap();
    assert_eq!(
        pull["review_comments"],
        api.get(&format!(
            "/repos/acme/repo-003/pulls/3/reviews/{review_id}/comments"
        ))
    );
    assert_eq!(pull["review_comments"][0]["body"], "Nice touch.");
    assert_eq!(read("labels.json"), api.get("/repos/acme/repo-003/labels"));
    assert_eq!(read("labels.json")[0]["name"], "bug");
    assert_eq!(
        read("milestones.json"),
        api.get("/repos/acme/repo-003/milestones?state=all")
    );
    let releases = api.get("/repos/acme/repo-003/releases");
    let release_id = releases[0]["id"].as_u64().unwrap();
    let release = read(&format!("releases/{release_id}.json"));
    let asset = &releases[0]["assets"][0];
    let content = release["assets"][0]["gitvault_content"].as_str().unwrap();
    let mut without_content = release.clone();
    without_content["assets"][0]
        .as_object_mut()
        .unwrap()
        .remove("gitvault_content");
    assert_eq!(without_content, releases[0]);
    let bytes = std::fs::read(meta.join(content)).unwrap();
    assert_eq!(bytes.len() as u64, asset["size"].as_u64().unwrap());
    let served = api
        .fetch(asset["browser_download_url"].as_str().unwrap())
        .bytes()
        .unwrap();
    assert_eq!(bytes, served.to_vec());
    let settings = read("settings.json");
    assert_eq!(settings["full_name"], "acme/repo-003");
    assert_eq!(settings["topics"], json!(["fixture", "group-0"]));

    // Unchanged: only conditional requests, all answered 304; almost nothing added.
    let before = common::tree_size(&tv.data_dir());
    api.control("reset-stats", json!({}));
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["--jobs", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        statuses(&doc)
            .iter()
            .all(|(_, s)| s == "unchanged" || s == "skipped"),
        "{doc}"
    );
    // Every answer is a 304 but one: the organisation probe of the user account (/orgs/alice
    // answers 404, and errors are not cached).
    let stats = api.stats();
    assert_answered(&stats, &["304", "404"]);
    assert_eq!(stats["by_status"]["404"], 1);
    assert_eq!(stats["by_path"]["/api/v1/orgs/alice"], 1);
    let requests = stats["requests"].as_u64().unwrap();
    eprintln!("gitea unchanged run: {requests} API requests (304s) for 102 repositories");
    // The listing (the organisation, 3 pages, the user probe, 1 page), then per repository:
    // the repository, labels, milestones, the issue list, releases.
    assert!(
        requests <= 6 + 102 * 5,
        "an unchanged run asked {requests} times"
    );
    let growth = common::tree_size(&tv.data_dir()) - before;
    assert!(
        growth < 103 * 4096,
        "an unchanged run grew the vault by {growth} bytes"
    );

    // An updated issue is picked up by the next run.
    api.control("touch", json!({ "repo": "acme/repo-003", "issue": 1 }));
    let (code, _, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["acme"]);
    assert_eq!(code, Some(0), "{err}");
    let meta2 = restore_metadata(&tv, &repo, "meta2");
    let issue2 = read_json(&meta2.join("issues/1.json"));
    assert_eq!(issue2["issue"], api.get("/repos/acme/repo-003/issues/1"));
    assert_ne!(issue2["issue"]["body"], issue["issue"]["body"]);
    // The pull request is carried over from the earlier snapshot.
    assert_eq!(read_json(&meta2.join("pulls/3.json")), pull);

    assert_not_in_files(&tv.dir, TOKEN);
}

#[test]
fn rate_limits_errors_and_missing_owners() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &acme_repositories());
    let git = HttpGitServer::start(&root, Some((GIT_USER, TOKEN)));
    let git_base = git_base(&git);
    let api = start_api(&git_base);
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "acme",
        "acme",
        &["--include", "repo-00*"],
    );

    // 5xx answers are retried; a repository hidden from the token is not listed; a listed
    // repository that cannot be fetched fails alone: exit 3.
    api.control(
        "mode",
        json!({ "fail_5xx": 2, "deny_repo": "acme/repo-006" }),
    );
    std::fs::remove_dir_all(root.join("acme/repo-005.git")).unwrap();
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(doc["sources"][0]["listed"], 119, "{doc}");
    let lines = statuses(&doc);
    // repo-000 to repo-009 without repo-005 and repo-006, and repo-001's wiki.
    assert_eq!(
        lines.iter().filter(|(_, s)| s == "changed").count(),
        9,
        "{lines:?}"
    );
    assert!(!lines.iter().any(|(r, _)| r.ends_with("repo-006")));
    let failed: Vec<_> = lines
        .iter()
        .filter(|(r, _)| r.ends_with("repo-005"))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, "failed");
    assert!(api.stats()["by_status"]["502"] == 2, "{}", api.stats());

    // Rate limited far into the future (429 with Retry-After): the run stops cleanly and says
    // when to resume. Without Retry-After, as some proxies answer, the same.
    for retry_after in [json!(3600), Value::Null] {
        api.control("mode", json!({ "clear": true }));
        api.control(
            "mode",
            json!({ "rate_limited": true, "retry_after": retry_after }),
        );
        let started = std::time::Instant::now();
        let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
        assert!(
            started.elapsed().as_secs() < 60,
            "a rate limit must not hang the run"
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(doc.to_string().contains("rate limited until"), "{doc}");
    }

    // A short Retry-After is waited for: the run goes on.
    api.control("mode", json!({ "clear": true }));
    api.control("mode", json!({ "rate_limited": true, "retry_after": 1 }));
    let release = {
        let mode = format!("{}/_fixture/mode", api.url());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            reqwest::blocking::Client::new()
                .post(mode)
                .json(&json!({ "rate_limited": false }))
                .send()
                .unwrap();
        })
    };
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    release.join().unwrap();
    assert_eq!(code, Some(3), "only repo-005 fails: {err}");
    assert!(!doc.to_string().contains("rate limited"), "{doc}");

    // An owner that does not exist: 404 on /orgs and on /users, a clear error.
    add_source(&tv, &api, TOKEN_ENV, "ghost", "nobody-here", &[]);
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["ghost"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(doc.to_string().contains("not found"), "{doc}");

    // Bad token: a clear error, no secret in it.
    let out = tv
        .command(&["backup", "acme"])
        .env(TOKEN_ENV, "gta_wrongTokenButStillSecret999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the token"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("gta_wrongTokenButStillSecret999"));
    assert_not_in_files(&tv.dir, TOKEN);
}
