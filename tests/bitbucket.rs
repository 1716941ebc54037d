//! Whole Bitbucket Cloud workspaces: a fixture server shaped like Bitbucket's REST API 2.0
//! (tests/fixtures/bitbucket_api.py) lists a workspace of 120 repositories, in pages whose
//! `next` is in the body, with clone URLs pointing at a real git server; gitvault backs them
//! up with their metadata, with an API token (Atlassian e-mail for the API, the static git user
//! name for git) or an app password (the Bitbucket user name for both).

mod common;

use base64::Engine;
use common::git_server::HttpGitServer;
use common::provider_api::{
    FixtureApi, add_source, assert_answered, assert_not_in_files, git_base, read_json,
    restore_metadata, run_backup_with, serve_repositories, statuses,
};
use common::{TestVault, stderr};
use serde_json::{Value, json};

const EMAIL: &str = "alice@example.com";
const TOKEN: &str = "ATATT3xFfGF0fixtureApiToken0123456789abcdef";
const USERNAME: &str = "alice";
const APP_PASSWORD: &str = "ATBBfixtureAppPassword0123456789";
const TOKEN_ENV: &str = "GITVAULT_TEST_BB_TOKEN";
const USER_ENV: &str = "GITVAULT_TEST_BB_USER";

/// The fixture with a workspace of 120 repositories, accepting `login` (HTTP Basic user and
/// secret): an e-mail goes with an API token, a user name with an app password.
fn start_api(git_base: &str, login: (&str, &str)) -> FixtureApi {
    let credentials: [&str; 2] = if login.0.contains('@') {
        ["--email", "--token"]
    } else {
        ["--username", "--app-password"]
    };
    let args = [
        "--generate-org",
        "acme",
        "--repos",
        "120",
        "--git-base",
        git_base,
        credentials[0],
        login.0,
        credentials[1],
        login.1,
    ];
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", login.0, login.1));
    let auth = format!("Basic {basic}");
    FixtureApi::start("bitbucket", &args, "/2.0", ("Authorization", &auth))
}

/// Every value of a paginated list, following `next`.
fn values(api: &FixtureApi, path: &str) -> Value {
    let mut all = Vec::new();
    let mut next = Some(format!("{}{path}", api.api_url()));
    while let Some(url) = next {
        let page: Value = api.fetch(&url).json().unwrap();
        all.extend(page["values"].as_array().unwrap().iter().cloned());
        next = page["next"].as_str().map(str::to_string);
    }
    Value::Array(all)
}

/// 120 repositories for acme and the wiki of acme/repo-001 (Bitbucket serves a wiki at
/// `<repo>.git/wiki`).
fn repositories() -> Vec<String> {
    let mut paths: Vec<String> = (0..120).map(|i| format!("acme/repo-{i:03}.git")).collect();
    paths.push("acme/repo-001.git/wiki".into());
    paths
}

fn run_backup(tv: &TestVault, login: (&str, &str), args: &[&str]) -> (Option<i32>, Value, String) {
    let env = [(USER_ENV, login.0), (TOKEN_ENV, login.1)];
    run_backup_with(tv, &env, login.1, args)
}

#[test]
fn a_whole_workspace_with_an_api_token_then_an_unchanged_run_of_304s() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &repositories());
    // Git over HTTPS takes an API token with Atlassian's static user name.
    let git = HttpGitServer::start(&root, Some(("x-bitbucket-api-token-auth", TOKEN)));
    let git_base = git_base(&git);
    let login = (EMAIL, TOKEN);
    let api = start_api(&git_base, login);
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "acme",
        "acme",
        &["--username-env", USER_ENV, "--no-forks", "--no-archived"],
    );
    let config = std::fs::read_to_string(tv.dir.join("config.toml")).unwrap();
    assert!(config.contains(USER_ENV) && !config.contains(TOKEN) && !config.contains(EMAIL));

    let (code, doc, err) = run_backup(&tv, login, &["--jobs", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let lines = statuses(&doc);
    let acme = &doc["sources"][0];
    assert_eq!(acme["listed"], 120, "two pages of 100: {acme}");
    // 12 forks; Bitbucket has no archived repositories, so --no-archived drops nothing.
    assert_eq!(acme["selected"], 108, "{acme}");
    let changed: Vec<_> = lines.iter().filter(|(_, s)| s == "changed").collect();
    assert_eq!(
        changed.len(),
        109,
        "108 and the wiki of repo-001: {lines:?}"
    );
    let status_of = |suffix: &str| {
        lines
            .iter()
            .find(|(r, _)| r.ends_with(suffix))
            .map(|(_, s)| s.clone())
    };
    assert_eq!(status_of("acme/repo-001.wiki").as_deref(), Some("changed"));
    assert_eq!(status_of("acme/repo-009"), None, "a fork was backed up");
    let first = api.stats();
    eprintln!(
        "bitbucket first run: {} API requests for 108 repositories",
        first["requests"]
    );
    // No issue tracker, no question about issues.
    assert!(
        first["by_path"]
            .get("/2.0/repositories/acme/repo-002/issues")
            .is_none(),
        "{}",
        first["by_path"]
    );

    // Metadata round trip for one repository: the documents are what the server served.
    let host = git_base.trim_start_matches("http://");
    let repo = format!("{host}/acme/repo-003");
    let meta = restore_metadata(&tv, &repo, "meta");
    let read = |p: &str| read_json(&meta.join(p));
    let base = "/repositories/acme/repo-003";
    let issue = read("issues/1.json");
    assert_eq!(issue["issue"], api.get(&format!("{base}/issues/1")));
    assert_eq!(
        issue["comments"],
        values(&api, &format!("{base}/issues/1/comments?pagelen=100"))
    );
    assert_eq!(issue["comments"][0]["content"]["raw"], "Confirmed.");
    assert!(meta.join("issues/2.json").is_file());
    let pull = read("pulls/1.json");
    assert_eq!(
        pull["pull_request"],
        api.get(&format!("{base}/pullrequests/1"))
    );
    assert_eq!(pull["pull_request"]["participants"][0]["approved"], true);
    let comments = values(&api, &format!("{base}/pullrequests/1/comments?pagelen=100"));
    assert_eq!(pull["comments"], comments);
    let inline: Vec<_> = comments
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("inline").is_some())
        .collect();
    assert_eq!(inline.len(), 1, "the review comment on a line is kept");
    assert_eq!(inline[0]["inline"]["path"], "src/lib.rs");
    assert_eq!(
        pull["activity"],
        values(&api, &format!("{base}/pullrequests/1/activity?pagelen=50"))
    );
    assert!(
        pull["activity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.get("approval").is_some())
    );
    let open = read("pulls/2.json");
    assert_eq!(open["pull_request"]["state"], "OPEN");
    assert_eq!(open["comments"], json!([]));
    let downloads = read("downloads.json");
    let listed = values(&api, &format!("{base}/downloads"));
    let content = downloads[0]["gitvault_content"].as_str().unwrap();
    let mut without_content = downloads.clone();
    without_content[0]
        .as_object_mut()
        .unwrap()
        .remove("gitvault_content");
    assert_eq!(without_content, listed);
    let bytes = std::fs::read(meta.join(content)).unwrap();
    let served = api
        .fetch(listed[0]["links"]["self"]["href"].as_str().unwrap())
        .bytes()
        .unwrap();
    assert_eq!(bytes.len(), 10240);
    assert_eq!(bytes, served.to_vec());
    assert_eq!(read("settings.json")["full_name"], "acme/repo-003");
    let no_tracker = restore_metadata(&tv, &format!("{host}/acme/repo-002"), "meta-002");
    assert!(no_tracker.join("pulls/1.json").is_file());
    assert!(!no_tracker.join("issues").exists());

    // Unchanged: only conditional requests, all answered 304; almost nothing added.
    let before = common::tree_size(&tv.data_dir());
    api.control("reset-stats", json!({}));
    let (code, doc, err) = run_backup(&tv, login, &["--jobs", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        statuses(&doc).iter().all(|(_, s)| s == "unchanged"),
        "{doc}"
    );
    let stats = api.stats();
    assert_answered(&stats, &["304"]);
    let requests = stats["requests"].as_u64().unwrap();
    eprintln!("bitbucket unchanged run: {requests} API requests, all 304, for 108 repositories");
    // The repository, its pull requests, its issues (2 in 3 have a tracker), its downloads.
    assert!(
        requests <= 2 + 108 * 4,
        "an unchanged run asked {requests} times"
    );
    let growth = common::tree_size(&tv.data_dir()) - before;
    assert!(
        growth < 109 * 4096,
        "an unchanged run grew the vault by {growth} bytes"
    );

    // An updated issue and an updated pull request are picked up by the next run.
    api.control("touch", json!({ "repo": "acme/repo-003", "issue": 1 }));
    api.control("touch", json!({ "repo": "acme/repo-003", "pull": 1 }));
    let (code, _, err) = run_backup(&tv, login, &[]);
    assert_eq!(code, Some(0), "{err}");
    let meta2 = restore_metadata(&tv, &repo, "meta2");
    let issue2 = read_json(&meta2.join("issues/1.json"));
    assert_eq!(issue2["issue"], api.get(&format!("{base}/issues/1")));
    assert_ne!(issue2["issue"]["content"], issue["issue"]["content"]);
    let pull2 = read_json(&meta2.join("pulls/1.json"));
    assert_eq!(
        pull2["pull_request"],
        api.get(&format!("{base}/pullrequests/1"))
    );
    assert_ne!(
        pull2["pull_request"]["description"],
        pull["pull_request"]["description"]
    );
    assert_eq!(read_json(&meta2.join("pulls/2.json")), open);

    assert_not_in_files(&tv.dir, TOKEN);
}

#[test]
fn an_app_password_rate_limits_errors_and_missing_workspaces() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &repositories());
    // App passwords go with the Bitbucket user name, for the API and for git.
    let git = HttpGitServer::start(&root, Some((USERNAME, APP_PASSWORD)));
    let git_base = git_base(&git);
    let login = (USERNAME, APP_PASSWORD);
    let api = start_api(&git_base, login);
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "acme",
        "acme",
        &["--username-env", USER_ENV, "--include", "repo-00*"],
    );

    // 5xx answers are retried; a repository hidden from the caller is not listed; a listed
    // repository that cannot be fetched fails alone: exit 3.
    api.control(
        "mode",
        json!({ "fail_5xx": 2, "deny_repo": "acme/repo-006" }),
    );
    std::fs::remove_dir_all(root.join("acme/repo-005.git")).unwrap();
    let (code, doc, err) = run_backup(&tv, login, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(doc["sources"][0]["listed"], 119, "{doc}");
    let lines = statuses(&doc);
    // repo-000 to repo-009 (a fork included) without repo-005 and repo-006, and the wiki.
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

    // Rate limited (429), with a far Retry-After or none at all: the run stops cleanly and
    // says when to resume.
    for retry_after in [json!(3600), Value::Null] {
        api.control("mode", json!({ "clear": true }));
        api.control(
            "mode",
            json!({ "rate_limited": true, "retry_after": retry_after }),
        );
        let started = std::time::Instant::now();
        let (code, doc, err) = run_backup(&tv, login, &[]);
        assert!(
            started.elapsed().as_secs() < 60,
            "a rate limit must not hang the run"
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(doc.to_string().contains("rate limited until"), "{doc}");
    }
    api.control("mode", json!({ "clear": true }));

    // A workspace that does not exist: 404, a clear error.
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "ghost",
        "nobody-here",
        &["--username-env", USER_ENV],
    );
    let (code, doc, err) = run_backup(&tv, login, &["ghost"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(doc.to_string().contains("not found"), "{doc}");

    // A token without the user name it goes with: told what is missing.
    add_source(&tv, &api, TOKEN_ENV, "nameless", "acme", &[]);
    let (code, doc, err) = run_backup(&tv, login, &["nameless"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(doc.to_string().contains("--username-env"), "{doc}");

    // A wrong app password: a clear error, no secret in it.
    let wrong = "ATBBwrongPasswordButStillSecret999";
    let out = tv
        .command(&["backup", "acme"])
        .env(USER_ENV, USERNAME)
        .env(TOKEN_ENV, wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the token (HTTP 401: Unauthorized)"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(wrong));
    assert_not_in_files(&tv.dir, APP_PASSWORD);
}
