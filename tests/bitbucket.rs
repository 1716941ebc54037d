//! Whole Bitbucket Cloud workspaces: a fixture server shaped like Bitbucket's REST API 2.0
//! (tests/fixtures/bitbucket_api.py) lists a workspace of 120 repositories, in pages whose
//! `next` is in the body, with clone URLs pointing at a real git server; gitvault backs them
//! up with their metadata, with an API token (Atlassian e-mail for the API, the static git user
//! name for git) or an app password (the Bitbucket user name for both).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::git_server::{HttpGitServer, run_fixture};
use common::{TestVault, stderr, stdout};
use serde_json::{Value, json};

const EMAIL: &str = "alice@example.com";
const TOKEN: &str = "ATATT3xFfGF0fixtureApiToken0123456789abcdef";
const USERNAME: &str = "alice";
const APP_PASSWORD: &str = "ATBBfixtureAppPassword0123456789";
const TOKEN_ENV: &str = "GITVAULT_TEST_BB_TOKEN";
const USER_ENV: &str = "GITVAULT_TEST_BB_USER";

struct Api {
    child: Child,
    port: u16,
    /// HTTP Basic user and secret the fixture accepts.
    login: (&'static str, &'static str),
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    fn start(git_base: &str, login: (&'static str, &'static str)) -> Api {
        let credentials: [&str; 2] = if login.0.contains('@') {
            ["--email", "--token"]
        } else {
            ["--username", "--app-password"]
        };
        let mut child = Command::new("python3")
            .arg(common::git_server::fixture("bitbucket_api.py"))
            .args(["--port", "0", "--generate-org", "acme", "--repos", "120"])
            .args(["--git-base", git_base])
            .args([credentials[0], login.0, credentials[1], login.1])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the Bitbucket fixture server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("fixture server said {line:?}"));
        Api { child, port, login }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/2.0", self.port)
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

    fn fetch(&self, url: &str) -> reqwest::blocking::Response {
        Self::client()
            .get(url)
            .basic_auth(self.login.0, Some(self.login.1))
            .send()
            .unwrap()
    }

    /// GET of an API path (`/repositories/…`).
    fn get(&self, path: &str) -> Value {
        self.fetch(&format!("{}{path}", self.api_url()))
            .json()
            .unwrap()
    }

    /// Every value of a paginated list, following `next`.
    fn values(&self, path: &str) -> Value {
        let mut all = Vec::new();
        let mut next = Some(format!("{}{path}", self.api_url()));
        while let Some(url) = next {
            let page: Value = self.fetch(&url).json().unwrap();
            all.extend(page["values"].as_array().unwrap().iter().cloned());
            next = page["next"].as_str().map(str::to_string);
        }
        Value::Array(all)
    }
}

/// 120 repositories for acme and the wiki of acme/repo-001 (Bitbucket serves a wiki at
/// `<repo>.git/wiki`), all copies of one small real repository.
fn serve_repositories(root: &Path) {
    let template = root.join("template.git");
    run_fixture("rich.sh", &[template.to_str().unwrap()]);
    let mut names: Vec<String> = (0..120).map(|i| format!("acme/repo-{i:03}.git")).collect();
    names.push("acme/repo-001.git/wiki".into());
    for name in names {
        let dest = root.join(name);
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
        "bitbucket",
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

fn run_backup(tv: &TestVault, login: (&str, &str), args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["--json", "backup"];
    all.extend_from_slice(args);
    let out = tv
        .command(&all)
        .env(USER_ENV, login.0)
        .env(TOKEN_ENV, login.1)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains(login.1), "the secret leaked into the output");
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

fn assert_no_secret_in(dir: &Path, secret: &str) {
    for path in common::files_under(dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret found in {}",
            path.display()
        );
    }
}

fn restore_metadata(tv: &TestVault, repo: &str, dir: &str) -> PathBuf {
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
fn a_whole_workspace_with_an_api_token_then_an_unchanged_run_of_304s() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root);
    // Git over HTTPS takes an API token with Atlassian's static user name.
    let git = HttpGitServer::start(&root, Some(("x-bitbucket-api-token-auth", TOKEN)));
    let git_base = git.url("x").trim_end_matches("/x.git").to_string();
    let login = (EMAIL, TOKEN);
    let api = Api::start(&git_base, login);
    add_source(
        &tv,
        &api,
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
        api.values(&format!("{base}/issues/1/comments?pagelen=100"))
    );
    assert_eq!(issue["comments"][0]["content"]["raw"], "Confirmed.");
    assert!(meta.join("issues/2.json").is_file());
    let pull = read("pulls/1.json");
    assert_eq!(
        pull["pull_request"],
        api.get(&format!("{base}/pullrequests/1"))
    );
    assert_eq!(pull["pull_request"]["participants"][0]["approved"], true);
    let comments = api.values(&format!("{base}/pullrequests/1/comments?pagelen=100"));
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
        api.values(&format!("{base}/pullrequests/1/activity?pagelen=50"))
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
    let listed = api.values(&format!("{base}/downloads"));
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
    let by_status = stats["by_status"].as_object().unwrap();
    assert_eq!(
        by_status.keys().collect::<Vec<_>>(),
        vec!["304"],
        "{by_status:?} after {} requests",
        stats["requests"]
    );
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

    assert_no_secret_in(&tv.dir, TOKEN);
}

#[test]
fn an_app_password_rate_limits_errors_and_missing_workspaces() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root);
    // App passwords go with the Bitbucket user name, for the API and for git.
    let git = HttpGitServer::start(&root, Some((USERNAME, APP_PASSWORD)));
    let git_base = git.url("x").trim_end_matches("/x.git").to_string();
    let login = (USERNAME, APP_PASSWORD);
    let api = Api::start(&git_base, login);
    add_source(
        &tv,
        &api,
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
        "ghost",
        "nobody-here",
        &["--username-env", USER_ENV],
    );
    let (code, doc, err) = run_backup(&tv, login, &["ghost"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(doc.to_string().contains("not found"), "{doc}");

    // A token without the user name it goes with: told what is missing.
    add_source(&tv, &api, "nameless", "acme", &[]);
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
    assert_no_secret_in(&tv.dir, APP_PASSWORD);
}
