//! What the provider tests (tests/github.rs, gitlab.rs, gitea.rs, bitbucket.rs) share: a
//! fixture server shaped like a provider's API (tests/fixtures/*_api.py), the bare
//! repositories its clone URLs point at, `gitvault backup` runs that must not show the secret,
//! and reading back what they stored.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::git_server::{HttpGitServer, fixture, run_fixture};
use super::{TestVault, files_under, stderr, stdout};

/// A provider API fixture server on 127.0.0.1, killed on drop.
pub struct FixtureApi {
    child: Child,
    port: u16,
    /// `github`, `gitlab`…: what `--provider` takes.
    provider: String,
    /// Where the API lives under the server's root (`/api/v4`); empty for GitHub's.
    api_path: String,
    /// The header (name, value) that carries the credentials of [`FixtureApi::get`] and
    /// [`FixtureApi::fetch`].
    auth: (String, String),
    /// The `--git-base` the fixture was started with: where the clone URLs point, given to
    /// sources as `--git-url` (git credentials go to that origin only).
    git_base: Option<String>,
}

impl Drop for FixtureApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FixtureApi {
    /// Runs `python3 tests/fixtures/<provider>_api.py --port 0 <args…>` and waits for the one
    /// line `LISTENING <port>` every fixture server prints once it listens. The API is at
    /// `api_path` under the root; [`FixtureApi::get`] and [`FixtureApi::fetch`] send the
    /// header `auth` (name, value).
    pub fn start(provider: &str, args: &[&str], api_path: &str, auth: (&str, &str)) -> FixtureApi {
        let script = format!("{provider}_api.py");
        let mut child = Command::new("python3")
            .arg(fixture(&script))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 for the fixture server {script}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("fixture server said {line:?}"));
        FixtureApi {
            child,
            port,
            provider: provider.to_string(),
            api_path: api_path.to_string(),
            auth: (auth.0.to_string(), auth.1.to_string()),
            git_base: args
                .windows(2)
                .find(|w| w[0] == "--git-base")
                .map(|w| w[1].to_string()),
        }
    }

    /// The server's root: `http://127.0.0.1:<port>` (the control API is under `/_fixture/`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `--api-url` takes: the root and the API's path.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.url(), self.api_path)
    }

    /// POST `/_fixture/<path>` with a JSON body; the fixture must accept it.
    pub fn control(&self, path: &str, body: Value) {
        let r = client()
            .post(format!("{}/_fixture/{path}", self.url()))
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    /// The fixture's request counts (`/_fixture/stats`).
    pub fn stats(&self) -> Value {
        client()
            .get(format!("{}/_fixture/stats", self.url()))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// A GET of any URL with the credentials.
    pub fn fetch(&self, url: &str) -> reqwest::blocking::Response {
        client()
            .get(url)
            .header(&self.auth.0, &self.auth.1)
            .send()
            .unwrap()
    }

    /// An API answer as the server serves it (these requests are counted in the stats):
    /// `path` is under [`FixtureApi::api_url`].
    pub fn get(&self, path: &str) -> Value {
        self.fetch(&format!("{}{path}", self.api_url()))
            .json()
            .unwrap()
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// Where an [`HttpGitServer`] serves `<root>/<path>`: its URL without the path.
pub fn git_base(git: &HttpGitServer) -> String {
    git.url("x").trim_end_matches("/x.git").to_string()
}

/// Bare repositories at `<root>/<path>` for every path given (`acme/repo-000.git`), all
/// copies of one small real repository.
pub fn serve_repositories(root: &Path, paths: &[String]) {
    let template = root.join("template.git");
    run_fixture("rich.sh", &[template.to_str().unwrap()]);
    for path in paths {
        let dest = root.join(path);
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

/// What the GitHub and Gitea fixtures list with `--generate-org acme --repos 120`, as
/// repository paths: acme/repo-000 … acme/repo-119, alice/dotfiles and acme/repo-001's wiki.
pub fn acme_repositories() -> Vec<String> {
    let mut paths: Vec<String> = (0..120).map(|i| format!("acme/repo-{i:03}.git")).collect();
    paths.push("alice/dotfiles.git".into());
    paths.push("acme/repo-001.wiki.git".into());
    paths
}

/// `gitvault source add <name> --provider … --owner <owner> --api-url … --token-env
/// <token_env> <extra…>` for the provider and the API of `api`, which must succeed.
pub fn add_source(
    tv: &TestVault,
    api: &FixtureApi,
    token_env: &str,
    name: &str,
    owner: &str,
    extra: &[&str],
) {
    let api_url = api.api_url();
    let mut args = vec![
        "source",
        "add",
        name,
        "--provider",
        &api.provider,
        "--owner",
        owner,
        "--api-url",
        &api_url,
        "--token-env",
        token_env,
    ];
    if let Some(git) = &api.git_base {
        args.extend_from_slice(&["--git-url", git]);
    }
    args.extend_from_slice(extra);
    let out = tv.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `gitvault --json backup <args…>` with the token in `token_env`: the exit code, the JSON
/// report (null when there is none) and stderr. The token must not be in the output.
pub fn run_backup(
    tv: &TestVault,
    token_env: &str,
    token: &str,
    args: &[&str],
) -> (Option<i32>, Value, String) {
    run_backup_with(tv, &[(token_env, token)], token, args)
}

/// [`run_backup`] with any variables set; `secret` must not be in the output.
pub fn run_backup_with(
    tv: &TestVault,
    env: &[(&str, &str)],
    secret: &str,
    args: &[&str],
) -> (Option<i32>, Value, String) {
    let mut all = vec!["--json", "backup"];
    all.extend_from_slice(args);
    let out = tv.command(&all).envs(env.iter().copied()).output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains(secret), "the secret leaked into the output");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc, stderr(&out))
}

/// Asserts which HTTP statuses the fixture answered with since its stats were reset, in
/// their order (`["304"]`: every request was conditional and nothing changed).
pub fn assert_answered(stats: &Value, statuses: &[&str]) {
    let by_status = stats["by_status"].as_object().unwrap();
    assert_eq!(
        by_status.keys().collect::<Vec<_>>(),
        statuses,
        "{by_status:?} after {} requests",
        stats["requests"]
    );
}

/// (repository, status) of every repository of every source in a backup report.
pub fn statuses(doc: &Value) -> Vec<(String, String)> {
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

/// Asserts that no file under `dir` holds `needle` (a token, a key).
pub fn assert_not_in_files(dir: &Path, needle: &str) {
    for path in files_under(dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} found in {}",
            path.display()
        );
    }
}

/// Restores `repo` with its metadata; returns the metadata directory, `<tmp>/<dir>` (the
/// repository goes to `<tmp>/<dir>-git`).
pub fn restore_metadata(tv: &TestVault, repo: &str, dir: &str) -> PathBuf {
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

pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// An empty account of the GitHub, Gitea or GitLab fixture to restore into (Bitbucket's:
/// [`bitbucket_api`] with no repositories): each repository
/// it creates is an empty bare repository under `root`, served by `git`; it takes `token`.
pub fn empty_destination(
    provider: &str,
    root: &Path,
    git: &HttpGitServer,
    token: &str,
) -> FixtureApi {
    let base = git_base(git);
    let none = match provider {
        "gitlab" => ["--group", "acme", "--projects", "0"],
        _ => ["--generate-org", "acme", "--repos", "0"],
    };
    let mut args = none.to_vec();
    args.extend_from_slice(&[
        "--git-base",
        &base,
        "--git-root",
        root.to_str().unwrap(),
        "--token",
        token,
    ]);
    let (api_path, header, value) = match provider {
        "gitea" => ("/api/v1", "Authorization", format!("token {token}")),
        "gitlab" => ("/api/v4", "PRIVATE-TOKEN", token.to_string()),
        _ => ("", "Authorization", format!("Bearer {token}")),
    };
    FixtureApi::start(provider, &args, api_path, (header, &value))
}

/// The user name git sends with a Bitbucket API token (Atlassian's fixed name).
pub const BITBUCKET_GIT_USER: &str = "x-bitbucket-api-token-auth";

/// The Bitbucket fixture: workspace acme with `repos` repositories whose clone links point
/// at `git`; the repositories it creates are empty bare repositories under `root` (served by
/// `git`); it takes the API token `token` of the account `email` (HTTP Basic).
pub fn bitbucket_api(
    root: &Path,
    git: &HttpGitServer,
    repos: &str,
    email: &str,
    token: &str,
) -> FixtureApi {
    use base64::Engine;
    let base = git_base(git);
    let args = [
        "--generate-org",
        "acme",
        "--repos",
        repos,
        "--git-base",
        &base,
        "--git-root",
        root.to_str().unwrap(),
        "--email",
        email,
        "--token",
        token,
    ];
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"));
    let auth = format!("Basic {basic}");
    FixtureApi::start("bitbucket", &args, "/2.0", ("Authorization", &auth))
}
