//! What the `restore --to-source` tests (tests/restore_into*.rs) share: a repository backed
//! up from the GitHub fixture, writes not paced, refs compared, attribution lines.

use std::path::{Path, PathBuf};

use super::TestVault;
use super::git_server::{HttpGitServer, run_fixture};
use super::lfs_server::LfsServer;
use super::provider_api::{FixtureApi, add_source, git_base, run_backup, serve_repositories};

/// acme/repo-000 backed up from the GitHub fixture through the source `acme`.
pub struct GitHubBackup {
    pub tv: TestVault,
    pub github: FixtureApi,
    /// Where the git servers serve from (created repositories go there too).
    pub root: PathBuf,
    /// The vault's name of the repository.
    pub repo: String,
    pub git: HttpGitServer,
}

/// acme/repo-000 of the GitHub fixture (issues #1 and #2, pull request #3 from feature-x,
/// labels bug and enhancement, milestone v1.0, release v1.0.0 with an asset) backed up with
/// `token` in `token_env`. With `lfs`, the repository is tests/fixtures/lfs.sh's, whose
/// objects are on that LFS server (served at every `/info/lfs` of the git server).
pub fn github_backup(token: &str, token_env: &str, lfs: Option<&LfsServer>) -> GitHubBackup {
    github_backup_of(&["acme/repo-000.git"], "repo-000", token, token_env, lfs)
}

/// acme/repo-001 of the GitHub fixture and its wiki (acme/repo-001.wiki.git, with a branch
/// `wiki-only` the repository lacks), backed up as [`github_backup`] does.
pub fn github_wiki_backup(token: &str, token_env: &str) -> GitHubBackup {
    let paths = [
        "acme/repo-000.git",
        "acme/repo-001.git",
        "acme/repo-001.wiki.git",
    ];
    github_backup_of(&paths, "repo-001", token, token_env, None)
}

/// The fixture's repositories at `paths` backed up; the one of `slug` is the backup's.
fn github_backup_of(
    paths: &[&str],
    slug: &str,
    token: &str,
    token_env: &str,
    lfs: Option<&LfsServer>,
) -> GitHubBackup {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let served: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    serve_repositories(&root, &served);
    for wiki in paths.iter().filter(|p| p.ends_with(".wiki.git")) {
        let wiki = root.join(wiki);
        super::git(
            &wiki,
            &["update-ref", "refs/heads/wiki-only", "refs/heads/dev"],
        );
    }
    let original = root.join(format!("acme/{slug}.git"));
    if let Some(lfs) = lfs {
        std::fs::remove_dir_all(&original).unwrap();
        let endpoint = lfs.endpoint("acme", slug);
        run_fixture("lfs.sh", &[original.to_str().unwrap(), &endpoint]);
    } else {
        // The head branch of pull request #3, so that it can be opened again.
        super::git(
            &original,
            &["update-ref", "refs/heads/feature-x", "refs/heads/feature"],
        );
    }
    let git = HttpGitServer::start_with_lfs_proxy(
        &root,
        Some(("x-access-token", token)),
        lfs.map(LfsServer::port),
    );
    let base = git_base(&git);
    let count = paths.iter().filter(|p| !p.ends_with(".wiki.git")).count();
    let count = count.to_string();
    let args = [
        "--generate-org",
        "acme",
        "--repos",
        &count,
        "--git-base",
        &base,
        "--git-root",
        root.to_str().unwrap(),
        "--token",
        token,
    ];
    let bearer = format!("Bearer {token}");
    let github = FixtureApi::start("github", &args, "", ("Authorization", &bearer));
    add_source(&tv, &github, token_env, "acme", "acme", &[]);
    let (code, _, err) = run_backup(&tv, token_env, token, &[]);
    assert_eq!(code, Some(0), "{err}");
    let repo = format!("{}/acme/{slug}", base.trim_start_matches("http://"));
    GitHubBackup {
        tv,
        github,
        root,
        repo,
        git,
    }
}

/// Writes not paced (`create_interval_ms = 0`): the fixtures do not limit content creation.
pub fn set_unpaced(tv: &TestVault) {
    let config = tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[source.http]\ncreate_interval_ms = 0\n");
    std::fs::write(&config, text).unwrap();
}

/// Every ref of a bare repository, `oid name`, sorted.
pub fn refs(repo: &Path) -> Vec<String> {
    let text = super::git(repo, &["for-each-ref", "--format=%(objectname) %(refname)"]);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The refs of the original at `repo` as a restore pushes them: read-only namespaces under
/// refs/gitvault/.
pub fn pushed_refs(repo: &Path) -> Vec<String> {
    let mut lines: Vec<String> = refs(repo)
        .iter()
        .map(|l| {
            l.replace(" refs/pull/", " refs/gitvault/pull/")
                .replace(" refs/merge-requests/", " refs/gitvault/merge-requests/")
        })
        .collect();
    lines.sort();
    lines
}

/// The first line of everything a restore recreates, and the original's text.
pub fn attributed(
    what: &str,
    login: &serde_json::Value,
    at: &serde_json::Value,
    text: &str,
) -> String {
    format!(
        "*{what} by @{} on {}*\n\n{text}",
        login.as_str().unwrap(),
        at.as_str().unwrap()
    )
}

/// `gitvault --json restore REPO --to-source SOURCE <extra…>` with the variables `env` set:
/// its output and JSON report (null when there is none). No value of `env` (the tokens) may
/// show in the output or in any file of the vault.
pub fn restore_to(
    tv: &TestVault,
    repo: &str,
    source: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let mut args = vec!["--json", "restore", repo, "--to-source", source];
    args.extend_from_slice(extra);
    let out = tv
        .command(&args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", super::stdout(&out), super::stderr(&out));
    for (_, secret) in env {
        assert!(!text.contains(secret), "a secret leaked into the output");
        super::provider_api::assert_not_in_files(&tv.dir, secret);
    }
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, doc)
}
