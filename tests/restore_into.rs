//! `restore REPO --to-source NAME`: a repository backed up from the GitHub fixture
//! (tests/fixtures/github_api.py, with its write endpoints in github_writes.py) recreated in
//! another account of it: the fixture's state afterwards compared field by field with the
//! original's, a run stopped by a rate limit and resumed, hostile answers and names; and into
//! the Gitea fixture (gitea_writes.py), once whole and once stopped by 429 and resumed.

mod common;

use std::path::Path;
use std::process::Output;

use common::git_server::{HttpGitServer, run_fixture};
use common::lfs_server::LfsServer;
use common::provider_api::{
    FixtureApi, add_source, assert_not_in_files, empty_destination, git_base, run_backup,
    serve_repositories,
};
use common::{TestVault, stderr, stdout};
use serde_json::{Value, json};

const TOKEN: &str = "ghp_restoreIntoToken0123456789abcd";
const TOKEN_ENV: &str = "GITVAULT_TEST_GH_TOKEN";

/// A vault holding a backup of acme/repo-000 (issues #1 and #2, pull request #3, two labels,
/// a milestone; git refs incl. refs/pull/1/head), and a source `dest` for alice's account on
/// the same fixture, whose writes are not paced.
struct World {
    tv: TestVault,
    api: FixtureApi,
    root: std::path::PathBuf,
    repo: String,
    _git: HttpGitServer,
}

fn world(dest_http: &str) -> World {
    world_of(&["acme/repo-000.git"], dest_http, None)
}

/// [`world`] with the fixture's first repositories, served at `paths` (`--repos` of them).
/// With `lfs`, acme/repo-000 is tests/fixtures/lfs.sh's repository, whose objects are on that
/// LFS server, which the git server also serves at every repository's `/info/lfs`.
fn world_of(paths: &[&str], dest_http: &str, lfs: Option<&LfsServer>) -> World {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let served: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    serve_repositories(&root, &served);
    if let Some(lfs) = lfs {
        let bare = root.join("acme/repo-000.git");
        std::fs::remove_dir_all(&bare).unwrap();
        let endpoint = lfs.endpoint("acme", "repo-000");
        run_fixture("lfs.sh", &[bare.to_str().unwrap(), &endpoint]);
    }
    // The head branch of the fixture's pull request #3, so that it can be opened again (the
    // LFS repository has no `feature`).
    for path in paths.iter().filter(|p| !p.ends_with(".wiki.git")) {
        if lfs.is_none() {
            common::git(
                &root.join(path),
                &["update-ref", "refs/heads/feature-x", "refs/heads/feature"],
            );
        }
    }
    let count = paths
        .iter()
        .filter(|p| !p.ends_with(".wiki.git"))
        .count()
        .to_string();
    let git = HttpGitServer::start_with_lfs_proxy(
        &root,
        Some(("x-access-token", TOKEN)),
        lfs.map(LfsServer::port),
    );
    let base = git_base(&git);
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
        TOKEN,
    ];
    let bearer = format!("Bearer {TOKEN}");
    let api = FixtureApi::start("github", &args, "", ("Authorization", &bearer));
    add_source(&tv, &api, TOKEN_ENV, "acme", "acme", &[]);
    let (code, _, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    add_source(&tv, &api, TOKEN_ENV, "dest", "alice", &[]);
    let config = tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[source.http]\ncreate_interval_ms = 0\n{dest_http}"
    ));
    std::fs::write(&config, text).unwrap();
    let repo = format!("{}/acme/repo-000", base.trim_start_matches("http://"));
    World {
        tv,
        api,
        root,
        repo,
        _git: git,
    }
}

impl World {
    /// `gitvault --json restore REPO --to-source dest <extra…>`; the token must not show.
    fn restore(&self, extra: &[&str]) -> (Output, Value) {
        self.restore_to("dest", (TOKEN_ENV, TOKEN), extra)
    }

    /// `gitvault --json restore REPO --to-source <source> <extra…>` with `token` in its
    /// variable; no token may show.
    fn restore_to(&self, source: &str, token: (&str, &str), extra: &[&str]) -> (Output, Value) {
        let mut args = vec!["--json", "restore", &self.repo, "--to-source", source];
        args.extend_from_slice(extra);
        let out = self
            .tv
            .command(&args)
            .env(TOKEN_ENV, TOKEN)
            .env(token.0, token.1)
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains(TOKEN) && !text.contains(token.1),
            "a token leaked into the output"
        );
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, doc)
    }

    fn mode(&self, mode: Value) {
        self.api.control("mode", mode);
    }

    fn list(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        match self.api.get(&format!("{path}{sep}per_page=100")) {
            Value::Array(items) => items,
            other => panic!("{path}: {other}"),
        }
    }
}

/// Every ref of a bare repository: `oid name` lines.
fn refs(repo: &Path) -> Vec<String> {
    let text = common::git(repo, &["for-each-ref", "--format=%(objectname) %(refname)"]);
    text.lines().map(str::to_string).collect()
}

/// The restored alice/repo-000 on the GitHub fixture against acme/repo-000.
fn assert_same(w: &World) {
    let restored = |path: &str| w.list(&format!("/repos/alice/repo-000{path}"));
    let download = |url: &str| w.api.fetch(url).bytes().unwrap().to_vec();
    assert_restored(w, &w.api.get("/repos/alice/repo-000"), &restored, &download);
}

/// A restored repository (its repository object, and `restored` listing what is under it
/// on its API) against acme/repo-000, field by field, and exactly one copy of everything.
fn assert_restored(
    w: &World,
    repo: &Value,
    restored: &dyn Fn(&str) -> Vec<Value>,
    download: &dyn Fn(&str) -> Vec<u8>,
) {
    let orig = "/repos/acme/repo-000";
    assert_eq!(repo["private"], true);
    let original = w.api.get(orig);
    assert_eq!(repo["description"], original["description"]);
    assert_eq!(repo["default_branch"], original["default_branch"]);
    assert_eq!(repo["topics"], original["topics"]);
    assert!(!repo["topics"].as_array().unwrap().is_empty());
    let pick = |items: Vec<Value>, keys: &[&str]| -> Vec<Value> {
        let mut rows: Vec<Value> = items
            .iter()
            .map(|i| Value::Array(keys.iter().map(|k| instant(&i[*k])).collect()))
            .collect();
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    let label_keys = ["name", "color", "description"];
    assert_eq!(
        pick(restored("/labels"), &label_keys),
        pick(w.list(&format!("{orig}/labels")), &label_keys)
    );
    let ms_keys = ["title", "state", "description", "due_on"];
    assert_eq!(
        pick(restored("/milestones?state=all"), &ms_keys),
        pick(w.list(&format!("{orig}/milestones?state=all")), &ms_keys)
    );
    let originals = w.list(&format!("{orig}/issues?state=all&direction=asc"));
    let mut restored_issues = restored("/issues?state=all");
    restored_issues.sort_by_key(|i| i["number"].as_u64());
    let restored_comments = |n: u64| restored(&format!("/issues/{n}/comments"));
    compare_issues(w, &originals, &restored_issues, &restored_comments);
    compare_releases(w, &restored("/releases"), download);
    // Every ref, the read-only ones under refs/gitvault/.
    let want: Vec<String> = refs(&w.root.join("acme/repo-000.git"))
        .iter()
        .map(|l| l.replace(" refs/pull/", " refs/gitvault/pull/"))
        .collect();
    let mut got = refs(&w.root.join("alice/repo-000.git"));
    let mut want_sorted = want.clone();
    got.sort();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
    assert!(
        got.iter()
            .any(|l| l.ends_with(" refs/gitvault/pull/1/head"))
    );
}

/// Releases: tag, name, attributed body, and every asset's name and bytes.
fn compare_releases(w: &World, restored: &[Value], download: &dyn Fn(&str) -> Vec<u8>) {
    let originals = w.list("/repos/acme/repo-000/releases");
    assert_eq!(restored.len(), originals.len(), "one copy of every release");
    for o in &originals {
        let tag = &o["tag_name"];
        let r = restored.iter().find(|r| r["tag_name"] == *tag).unwrap();
        assert_eq!(r["name"], o["name"]);
        let by = format!(
            "*Released by @{} on {}*\n\n{}",
            o["author"]["login"].as_str().unwrap(),
            o["published_at"].as_str().unwrap(),
            o["body"].as_str().unwrap()
        );
        assert_eq!(r["body"], by.as_str());
        let assets = |v: &Value| v["assets"].as_array().unwrap().clone();
        assert_eq!(assets(r).len(), assets(o).len(), "{tag}");
        for (ra, oa) in assets(r).iter().zip(&assets(o)) {
            assert_eq!(ra["name"], oa["name"]);
            let bytes = |a: &Value| a["browser_download_url"].as_str().unwrap().to_string();
            let original = w.api.fetch(&bytes(oa)).bytes().unwrap().to_vec();
            assert_eq!(original.len() as u64, oa["size"].as_u64().unwrap());
            assert!(
                download(&bytes(ra)) == original,
                "{tag}: the asset's bytes differ"
            );
        }
    }
}

/// A time in any zone as UTC seconds, anything else as it is (Gitea renders times in its
/// server's zone).
fn instant(v: &Value) -> Value {
    match v
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => Value::from(t.timestamp()),
        None => v.clone(),
    }
}

fn compare_issues(
    w: &World,
    originals: &[Value],
    restored: &[Value],
    restored_comments: &dyn Fn(u64) -> Vec<Value>,
) {
    let orig = "/repos/acme/repo-000";
    assert_eq!(restored.len(), originals.len(), "one copy of every issue");
    for (o, r) in originals.iter().zip(restored) {
        let n = o["number"].as_u64().unwrap();
        assert_eq!(r["number"], n);
        assert_eq!(r["title"], o["title"], "#{n}");
        assert_eq!(r["state"], o["state"], "#{n}");
        let by = format!(
            "*Opened by @{} on {}*\n\n",
            o["user"]["login"].as_str().unwrap(),
            o["created_at"].as_str().unwrap()
        );
        let body = r["body"].as_str().unwrap();
        assert!(body.starts_with(&by), "#{n}: {body}");
        assert!(body.contains(o["body"].as_str().unwrap()), "#{n}: {body}");
        let names = |i: &Value| -> Vec<Value> {
            i["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["name"].clone())
                .collect()
        };
        assert_eq!(names(r), names(o), "#{n}");
        assert_eq!(r["milestone"]["title"], o["milestone"]["title"], "#{n}");
        let comments = restored_comments(n);
        let original_comments = w.list(&format!("{orig}/issues/{n}/comments"));
        if o.get("pull_request").is_none() {
            assert_eq!(comments.len(), original_comments.len(), "#{n}");
        } else {
            // A pull request again; its comments, then its review and its review comment.
            assert!(r["pull_request"].is_object(), "#{n}: {r}");
            assert!(body.contains("Pull request #3 from `feature-x`"), "{body}");
            assert_eq!(comments.len(), original_comments.len() + 2, "#{n}");
            let review_comment = comments[2]["body"].as_str().unwrap();
            assert!(
                review_comment.starts_with("*Review comment on `src/lib.rs` line 2 by @alice on ")
                    && review_comment.ends_with("*\n\nNice touch."),
                "{review_comment}"
            );
            assert!(
                comments[1]["body"]
                    .as_str()
                    .unwrap()
                    .starts_with("*Review (APPROVED) by @alice")
            );
        }
        for (c, oc) in comments.iter().zip(&original_comments) {
            let by = format!(
                "*Comment by @{} on {}*\n\n{}",
                oc["user"]["login"].as_str().unwrap(),
                oc["created_at"].as_str().unwrap(),
                oc["body"].as_str().unwrap()
            );
            assert_eq!(c["body"], by.as_str(), "#{n}");
        }
    }
}

#[test]
fn a_github_repository_restored_into_another_account_then_a_dry_run_finds_it() {
    let w = world("");
    let (out, plan) = w.restore(&["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(plan["exists"], false, "{plan}");
    let counts = &plan["plan"];
    assert_eq!(counts["issues"], 2, "{plan}");
    assert_eq!(counts["pull_requests"], 1);
    assert_eq!(counts["pull_requests_as_issues"], 0);
    assert_eq!(counts["placeholders"], 0);
    assert_eq!(counts["labels"], 2);
    assert_eq!(counts["milestones"], 1);
    assert_eq!(counts["comments"], 5);
    assert_eq!(counts["releases"], 1);
    assert_eq!(counts["assets"], 1);
    assert_eq!(counts["moved_refs"], 1);
    assert_eq!(counts["branches"], 4);
    assert!(
        w.api
            .fetch(&format!("{}/repos/alice/repo-000", w.api.url()))
            .status()
            == 404
    );

    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["created"]["repository"], true, "{report}");
    assert_eq!(report["created"]["issues"], 2);
    assert_eq!(report["created"]["pull_requests"], 1);
    assert_eq!(report["created"]["comments"], 5);
    assert_eq!(report["created"]["releases"], 1);
    assert_eq!(report["created"]["assets"], 1);
    assert_eq!(report["numbers_match"], true);
    assert_same(&w);
    let pull = w.api.get("/repos/alice/repo-000/pulls/3");
    assert_eq!(pull["head"]["ref"], "feature-x", "{pull}");
    assert_eq!(pull["base"]["ref"], "main");
    assert_eq!(pull["state"], "closed");

    // Run again: nothing is created twice.
    let (out, again) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(again["resumed"], true);
    assert_eq!(again["created"]["issues"], 0, "{again}");
    assert_eq!(again["created"]["comments"], 0);
    assert_same(&w);

    // Another name that is taken: the dry run says so, the restore refuses.
    let before = w.list("/repos/alice/dotfiles/issues?state=all");
    let (out, plan) = w.restore(&["--name", "dotfiles", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(plan["exists"], true);
    let text =
        w.tv.command(&[
            "restore",
            &w.repo,
            "--to-source",
            "dest",
            "--name",
            "dotfiles",
            "--dry-run",
        ])
        .env(TOKEN_ENV, TOKEN)
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(text.contains("would restore"), "{text}");
    assert!(text.contains("1 releases with 1 assets"), "{text}");
    assert!(
        text.contains("conflict: alice/dotfiles exists already"),
        "{text}"
    );
    let (out, _) = w.restore(&["--name", "dotfiles"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    assert_eq!(w.list("/repos/alice/dotfiles/issues?state=all"), before);
    assert_not_in_files(&w.tv.dir, TOKEN);
}

#[test]
fn a_restore_stopped_by_a_rate_limit_resumes_to_one_copy_of_everything() {
    let w = world("");
    // The repository, its topics, two labels, the milestone and issue #1 pass; its comment
    // meets the limit.
    w.mode(json!({ "creations_before_limit": 6, "reset_in": 3600 }));
    let (out, _) = w.restore(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("rate limited until"), "{err}");
    assert!(err.contains("continues where this one stopped"), "{err}");
    w.mode(json!({ "clear": true }));
    assert_eq!(w.list("/repos/alice/repo-000/issues?state=all").len(), 1);

    // Again, stopped at the release's asset this time: the comment of #1, #2 with its
    // comment and state, pull request #3 (opened, labelled, three comments, closed) and the
    // release pass.
    w.mode(json!({ "creations_before_limit": 11, "reset_in": 3600 }));
    let (out, report) = w.restore(&[]);
    assert!(!out.status.success(), "{report}");
    w.mode(json!({ "clear": true }));
    let releases = w.list("/repos/alice/repo-000/releases");
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0]["assets"].as_array().unwrap().len(), 0);

    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["resumed"], true);
    let created = &report["created"];
    assert_eq!(created["repository"], false);
    assert_eq!(created["labels"], 0);
    assert_eq!(created["issues"], 0, "{report}");
    assert_eq!(created["pull_requests"], 0, "{report}");
    assert_eq!(created["comments"], 0);
    assert_eq!(created["releases"], 0);
    assert_eq!(created["assets"], 1);
    assert_same(&w);
    assert_not_in_files(&w.tv.dir, TOKEN);
}

#[test]
fn hostile_answers_and_names_leave_nothing_inconsistent() {
    let w = world("max_answer_bytes = 1048576\n");
    for name in ["../acme", "a/b", ".git", "x.git"] {
        let (out, _) = w.restore(&["--name", name]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("not a repository name"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!w.tv.dir.join("restore-into").exists());

    // A clone URL off the source's git origin is never pushed to (the token goes along).
    let api_url = w.api.api_url();
    let out = w.tv.run(&[
        "source",
        "add",
        "elsewhere",
        "--provider",
        "github",
        "--owner",
        "alice",
        "--api-url",
        &api_url,
        "--token-env",
        TOKEN_ENV,
        "--git-url",
        "http://127.0.0.1:9",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, _) = w.restore_to("elsewhere", (TOKEN_ENV, TOKEN), &["--name", "other"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not on the source's git origin"),
        "{}",
        stderr(&out)
    );
    assert!(refs(&w.root.join("alice/other.git")).is_empty());

    // The repository is created but the answer is too large, then not JSON: each run stops
    // with a clear error, and the next asks the server what became of the write.
    w.mode(json!({ "create_answer": "huge" }));
    let (out, _) = w.restore(&[]);
    assert!(
        stderr(&out).contains("larger than 1048576 bytes"),
        "{}",
        stderr(&out)
    );
    w.mode(json!({ "create_answer": "garbage" }));
    let (out, _) = w.restore(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unexpected answer"),
        "{}",
        stderr(&out)
    );
    w.mode(json!({ "create_answer": null }));
    // A second run at once would send the same next write: it is refused while one holds
    // the ledger's lock.
    let (_, plan) = w.restore(&["--dry-run"]);
    let ledger = std::path::PathBuf::from(plan["ledger"].as_str().unwrap());
    let held = std::fs::File::create(ledger.with_extension("lock")).unwrap();
    held.lock().unwrap();
    let (out, _) = w.restore(&[]);
    assert!(
        stderr(&out).contains("another restore into alice/repo-000 is running"),
        "{}",
        stderr(&out)
    );
    drop(held);
    let (out, _) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same(&w);
    assert_not_in_files(&w.tv.dir, TOKEN);
}

const GITEA_TOKEN: &str = "gitea0123456789restoreIntoTokenabcdef";
const GITEA_ENV: &str = "GITVAULT_TEST_GITEA_TOKEN";

/// An empty Gitea fixture with its git server, whose account alice is the source `gitea`
/// (writes not paced).
fn gitea_destination(w: &World) -> (FixtureApi, HttpGitServer) {
    // Gitea takes the token as the password of any user name: gitvault sends `gitvault`.
    let git = HttpGitServer::start(&w.root, Some(("gitvault", GITEA_TOKEN)));
    let gitea = empty_destination("gitea", &w.root, &git, GITEA_TOKEN);
    add_source(&w.tv, &gitea, GITEA_ENV, "gitea", "alice", &[]);
    let config = w.tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[source.http]\ncreate_interval_ms = 0\n");
    std::fs::write(&config, text).unwrap();
    (gitea, git)
}

/// alice/repo-000 on the Gitea fixture against acme/repo-000, field by field, and exactly
/// one copy of everything.
fn assert_same_in_gitea(w: &World, gitea: &FixtureApi) {
    let pull = gitea.get("/repos/alice/repo-000/pulls/3");
    assert_eq!(pull["head"]["ref"], "feature-x", "{pull}");
    assert_eq!(pull["base"]["ref"], "main");
    assert_eq!(pull["state"], "closed");
    let restored = |path: &str| {
        let sep = if path.contains('?') { '&' } else { '?' };
        match gitea.get(&format!("/repos/alice/repo-000{path}{sep}limit=50")) {
            Value::Array(items) => items,
            other => panic!("{path}: {other}"),
        }
    };
    let download = |url: &str| gitea.fetch(url).bytes().unwrap().to_vec();
    assert_restored(w, &gitea.get("/repos/alice/repo-000"), &restored, &download);
    assert_not_in_files(&w.tv.dir, GITEA_TOKEN);
    assert_not_in_files(&w.tv.dir, TOKEN);
}

#[test]
fn a_github_repository_restored_into_a_gitea_account() {
    let w = world("");
    let (gitea, _git) = gitea_destination(&w);
    let (out, report) = w.restore_to("gitea", (GITEA_ENV, GITEA_TOKEN), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["created"]["issues"], 2, "{report}");
    assert_eq!(report["created"]["pull_requests"], 1, "{report}");
    assert_eq!(report["numbers_match"], true);
    assert_same_in_gitea(&w, &gitea);
}

#[test]
fn a_restore_into_gitea_stopped_by_429_resumes_to_one_copy_of_everything() {
    let w = world("");
    let (gitea, _git) = gitea_destination(&w);
    // The repository, its topics, two labels, the milestone and issue #1 pass; its comment
    // meets the limit (429 with Retry-After, as Gitea's limiter answers).
    gitea.control("mode", json!({ "writes_before_limit": 6 }));
    let (out, _) = w.restore_to("gitea", (GITEA_ENV, GITEA_TOKEN), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("rate"), "{err}");
    gitea.control("mode", json!({ "writes_before_limit": null }));
    let issues = gitea.get("/repos/alice/repo-000/issues?state=all&limit=50");
    assert_eq!(issues.as_array().map(Vec::len), Some(1), "{issues}");

    // Again: the comment of #1, #2 with its comment and state, pull request #3 opened with
    // its three comments pass; closing it meets the limit.
    gitea.control("mode", json!({ "writes_before_limit": 8 }));
    let (out, report) = w.restore_to("gitea", (GITEA_ENV, GITEA_TOKEN), &[]);
    assert!(!out.status.success(), "{report}");
    gitea.control("mode", json!({ "writes_before_limit": null }));
    let pull = gitea.get("/repos/alice/repo-000/pulls/3");
    assert_eq!(
        (&pull["state"], &pull["comments"]),
        (&json!("open"), &json!(3))
    );
    let releases = gitea.get("/repos/alice/repo-000/releases?limit=50");
    assert_eq!(releases, json!([]));

    let (out, report) = w.restore_to("gitea", (GITEA_ENV, GITEA_TOKEN), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["resumed"], true, "{report}");
    let created = &report["created"];
    assert_eq!(created["repository"], false, "{report}");
    assert_eq!(created["labels"], 0, "{report}");
    assert_eq!(created["issues"], 0, "{report}");
    assert_same_in_gitea(&w, &gitea);
    // A fourth run finds everything done and creates nothing.
    let (out, report) = w.restore_to("gitea", (GITEA_ENV, GITEA_TOKEN), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created = &report["created"];
    for kind in ["issues", "pull_requests", "comments", "releases", "assets"] {
        assert_eq!(created[kind], 0, "{kind}: {report}");
    }
    assert_same_in_gitea(&w, &gitea);
}

#[test]
fn the_wiki_of_the_restored_snapshot_goes_along() {
    let mut w = world_of(
        &[
            "acme/repo-000.git",
            "acme/repo-001.git",
            "acme/repo-001.wiki.git",
        ],
        "",
        None,
    );
    w.repo = w.repo.replace("repo-000", "repo-001");
    let first = w.tv.run(&["--json", "snapshots", &w.repo]);
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let first = first[0]["id"].as_str().unwrap().to_string();
    // A wiki ref that only the second backup holds; and pull request #3's head merged, so
    // that the destination refuses it as a pull request (no commits between).
    common::git(
        &w.root.join("acme/repo-001.wiki.git"),
        &["update-ref", "refs/heads/wiki-only", "refs/heads/dev"],
    );
    common::git(
        &w.root.join("acme/repo-001.git"),
        &["update-ref", "refs/heads/feature-x", "refs/heads/main"],
    );
    // Runs are far apart beside the seconds between a repository and its wiki in one run:
    // the wiki restored is the one nearest in time.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (code, _, err) = run_backup(&w.tv, TOKEN_ENV, TOKEN, &["acme"]);
    assert_eq!(code, Some(0), "{err}");

    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["wiki"], "pushed", "{report}");
    let mut want = refs(&w.root.join("acme/repo-001.wiki.git"));
    let mut got = refs(&w.root.join("alice/repo-001.wiki.git"));
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(got.iter().any(|l| l.ends_with(" refs/heads/wiki-only")));
    assert_eq!(report["plan"]["pull_requests"], 1, "{report}");
    assert_eq!(report["created"]["pull_requests"], 0, "{report}");
    assert_eq!(report["created"]["issues"], 3, "{report}");
    let third = w.api.get("/repos/alice/repo-001/issues/3");
    assert!(third.get("pull_request").is_none(), "{third}");
    assert!(
        third["body"]
            .as_str()
            .unwrap()
            .contains("Pull request #3 from `feature-x`")
    );

    // The first snapshot brings the wiki as it was then.
    let (out, report) = w.restore(&["--snapshot", &first, "--name", "older"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["wiki"], "pushed", "{report}");
    let older = refs(&w.root.join("alice/older.wiki.git"));
    assert_eq!(older.len(), want.len() - 1, "{older:?}");
    assert!(!older.iter().any(|l| l.ends_with(" refs/heads/wiki-only")));
}

#[test]
fn lfs_objects_are_uploaded_to_the_new_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    let w = world_of(&["acme/repo-000.git"], "", Some(&lfs));
    let held = lfs.objects();
    assert_eq!(held.len(), 5, "{held:?}");
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["lfs_uploaded"], 5, "{report}");
    // Through the new repository's own endpoint (`<clone URL>/info/lfs`), not the one the
    // restored .lfsconfig names.
    for object in &held {
        let oid = object.file_name().unwrap().to_str().unwrap();
        let copy = lfs.object_path("alice", "repo-000", oid);
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(object).unwrap()
        );
    }
    assert_not_in_files(&w.tv.dir, TOKEN);
}

#[test]
fn a_gitlab_backup_restored_into_github_brings_its_metadata() {
    const GL_TOKEN: &str = "glpat-restoreIntoToken1234567890";
    const GL_ENV: &str = "GITVAULT_TEST_GL_TOKEN";
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &["acme/proj-000.git".to_string()]);
    let gl_git = HttpGitServer::start(&root, Some(("oauth2", GL_TOKEN)));
    let args = [
        "--group",
        "acme",
        "--projects",
        "1",
        "--git-base",
        &git_base(&gl_git),
        "--token",
        GL_TOKEN,
    ];
    let gitlab = FixtureApi::start("gitlab", &args, "/api/v4", ("PRIVATE-TOKEN", GL_TOKEN));
    add_source(&tv, &gitlab, GL_ENV, "gl", "acme", &[]);
    let (code, _, err) = run_backup(&tv, GL_ENV, GL_TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");

    let gh_git = HttpGitServer::start(&root, Some(("x-access-token", TOKEN)));
    let github = empty_destination("github", &root, &gh_git, TOKEN);
    add_source(&tv, &github, TOKEN_ENV, "dest", "alice", &[]);
    let repo = format!(
        "{}/acme/proj-000",
        git_base(&gl_git).trim_start_matches("http://")
    );
    let out = tv
        .command(&["--json", "restore", &repo, "--to-source", "dest"])
        .env(TOKEN_ENV, TOKEN)
        .output()
        .unwrap();
    // Partly done: the release's tag (v1.0.0, on a commit the fixture invents) is not in the
    // repository, so GitHub refuses the release and the report names it.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["skipped_releases"], json!(["v1.0.0"]), "{report}");
    assert!(report["metadata_skipped"].is_null(), "{report}");
    // Issues #1 and #2 keep their numbers; merge request !1 (its branch feature-x is not in
    // this repository) follows them as an issue that says what it was.
    assert_eq!(report["numbers_match"], true, "{report}");
    assert_eq!(report["created"]["issues"], 3, "{report}");
    let issue = github.get("/repos/alice/proj-000/issues/1");
    assert!(
        issue["body"]
            .as_str()
            .unwrap()
            .starts_with("*Opened by @bob on "),
        "{issue}"
    );
    let third = github.get("/repos/alice/proj-000/issues/3");
    assert!(
        third["body"]
            .as_str()
            .unwrap()
            .contains("Merge request !1 from `feature-x` ("),
        "{third}"
    );
    assert_eq!(third["state"], "closed");
    let mut want: Vec<String> = refs(&root.join("acme/proj-000.git"))
        .iter()
        .map(|l| l.replace(" refs/pull/", " refs/gitvault/pull/"))
        .collect();
    let mut got = refs(&root.join("alice/proj-000.git"));
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_not_in_files(&tv.dir, TOKEN);
    assert_not_in_files(&tv.dir, GL_TOKEN);
}
