//! Whole Gitea/Forgejo accounts: a fixture server shaped like Gitea's REST API
//! (tests/fixtures/gitea_api.py) lists an organisation of 120 repositories whose clone URLs
//! point at a real git server (HTTP Basic, with the token as the password as Gitea takes
//! it); gitvault backs them up with their metadata.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::git_server::{HttpGitServer, run_fixture};
use common::{TestVault, stderr, stdout};
use serde_json::{Value, json};

const TOKEN: &str = "gta_fixtureToken0123456789abcdef01234567";
const TOKEN_ENV: &str = "GITVAULT_TEST_GITEA_TOKEN";
/// The user name gitvault sends to git with a Gitea token (Gitea ignores it).
const GIT_USER: &str = "gitvault";

struct Api {
    child: Child,
    port: u16,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    fn start(git_base: &str) -> Api {
        let mut child = Command::new("python3")
            .arg(common::git_server::fixture("gitea_api.py"))
            .args(["--port", "0", "--generate-org", "acme", "--repos", "120"])
            .args(["--git-base", git_base, "--token", TOKEN])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the Gitea fixture server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("fixture server said {line:?}"));
        Api { child, port }
    }

    /// The API URL a source is configured with.
    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.port)
    }

    fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::new()
    }

    fn control(&self, path: &str, body: Value) {
        let r = Self::client()
            .post(format!("http://127.0.0.1:{}/_fixture/{path}", self.port))
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    fn stats(&self) -> Value {
        Self::client()
            .get(format!("http://127.0.0.1:{}/_fixture/stats", self.port))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// GET of an API path (`/repos/…`) with the token.
    fn get(&self, path: &str) -> Value {
        Self::client()
            .get(format!("{}{path}", self.api_url()))
            .header("Authorization", format!("token {TOKEN}"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

/// 120 repositories for acme, one for alice, and acme/repo-001's wiki (repo-004 says it has a
/// wiki but never created one), all copies of one small real repository.
fn serve_repositories(root: &Path) {
    let template = root.join("template.git");
    run_fixture("rich.sh", &[template.to_str().unwrap()]);
    let mut names: Vec<String> = (0..120).map(|i| format!("acme/repo-{i:03}")).collect();
    names.push("alice/dotfiles".into());
    names.push("acme/repo-001.wiki".into());
    for name in names {
        let dest = root.join(format!("{name}.git"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&dest)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

fn add_source(tv: &TestVault, api: &Api, name: &str, owner: &str, extra: &[&str]) {
    let api_url = api.api_url();
    let mut args = vec![
        "source",
        "add",
        name,
        "--provider",
        "gitea",
        "--owner",
        owner,
        "--api-url",
        &api_url,
        "--token-env",
        TOKEN_ENV,
    ];
    args.extend_from_slice(extra);
    let out = tv.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn run_backup(tv: &TestVault, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["--json", "backup"];
    all.extend_from_slice(args);
    let out = tv.command(&all).env(TOKEN_ENV, TOKEN).output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains(TOKEN), "the token leaked into the output");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc, stderr(&out))
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["repositories"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["repo"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_no_token_in(dir: &Path) {
    for path in common::files_under(dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token found in {}",
            path.display()
        );
    }
}

fn restore_metadata(tv: &TestVault, repo: &str, dir: &str) -> std::path::PathBuf {
    let restored = tv.tmp.path().join(format!("{dir}-git"));
    let meta = tv.tmp.path().join(dir);
    let out = tv.run(&[
        "restore",
        repo,
        "--to",
        restored.to_str().unwrap(),
        "--metadata-to",
        meta.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    meta
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_whole_organisation_with_metadata_then_an_unchanged_run_of_304s() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root);
    let git = HttpGitServer::start(&root, Some((GIT_USER, TOKEN)));
    let git_base = git.url("x").trim_end_matches("/x.git").to_string();
    let api = Api::start(&git_base);
    add_source(&tv, &api, "acme", "acme", &["--no-forks", "--no-archived"]);
    // alice is a user, not an organisation: /orgs/alice answers 404.
    add_source(&tv, &api, "alice", "alice", &[]);
    let config = std::fs::read_to_string(tv.dir.join("config.toml")).unwrap();
    assert!(config.contains(TOKEN_ENV) && !config.contains(TOKEN));

    let (code, doc, err) = run_backup(&tv, &["--jobs", "2"]);
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
    let served = Api::client()
        .get(asset["browser_download_url"].as_str().unwrap())
        .header("Authorization", format!("token {TOKEN}"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(bytes, served.to_vec());
    let settings = read("settings.json");
    assert_eq!(settings["full_name"], "acme/repo-003");
    assert_eq!(settings["topics"], json!(["fixture", "group-0"]));

    // Unchanged: only conditional requests, all answered 304; almost nothing added.
    let before = common::tree_size(&tv.data_dir());
    api.control("reset-stats", json!({}));
    let (code, doc, err) = run_backup(&tv, &["--jobs", "2"]);
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
    let by_status = stats["by_status"].as_object().unwrap();
    assert_eq!(
        by_status.keys().collect::<Vec<_>>(),
        vec!["304", "404"],
        "{by_status:?} after {} requests",
        stats["requests"]
    );
    assert_eq!(by_status["404"], 1);
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
    let (code, _, err) = run_backup(&tv, &["acme"]);
    assert_eq!(code, Some(0), "{err}");
    let meta2 = restore_metadata(&tv, &repo, "meta2");
    let issue2 = read_json(&meta2.join("issues/1.json"));
    assert_eq!(issue2["issue"], api.get("/repos/acme/repo-003/issues/1"));
    assert_ne!(issue2["issue"]["body"], issue["issue"]["body"]);
    // The pull request is carried over from the earlier snapshot.
    assert_eq!(read_json(&meta2.join("pulls/3.json")), pull);

    assert_no_token_in(&tv.dir);
}

#[test]
fn rate_limits_errors_and_missing_owners() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root);
    let git = HttpGitServer::start(&root, Some((GIT_USER, TOKEN)));
    let git_base = git.url("x").trim_end_matches("/x.git").to_string();
    let api = Api::start(&git_base);
    add_source(&tv, &api, "acme", "acme", &["--include", "repo-00*"]);

    // 5xx answers are retried; a repository hidden from the token is not listed; a listed
    // repository that cannot be fetched fails alone: exit 3.
    api.control(
        "mode",
        json!({ "fail_5xx": 2, "deny_repo": "acme/repo-006" }),
    );
    std::fs::remove_dir_all(root.join("acme/repo-005.git")).unwrap();
    let (code, doc, err) = run_backup(&tv, &[]);
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
        let (code, doc, err) = run_backup(&tv, &[]);
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
        let port = api.port;
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            reqwest::blocking::Client::new()
                .post(format!("http://127.0.0.1:{port}/_fixture/mode"))
                .json(&json!({ "rate_limited": false }))
                .send()
                .unwrap();
        })
    };
    let (code, doc, err) = run_backup(&tv, &[]);
    release.join().unwrap();
    assert_eq!(code, Some(3), "only repo-005 fails: {err}");
    assert!(!doc.to_string().contains("rate limited"), "{doc}");

    // An owner that does not exist: 404 on /orgs and on /users, a clear error.
    add_source(&tv, &api, "ghost", "nobody-here", &[]);
    let (code, doc, err) = run_backup(&tv, &["ghost"]);
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
    assert_no_token_in(&tv.dir);
}
