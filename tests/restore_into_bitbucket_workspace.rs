//! `restore REPO --to-source NAME` into a Bitbucket Cloud workspace: the Bitbucket fixture
//! (tests/fixtures/bitbucket_api.py with its write endpoints in bitbucket_writes.py) as the
//! destination of a GitHub backup and of a Bitbucket backup, its state afterwards compared
//! field by field with the original's; a run stopped by a 429 and resumed; hostile answers;
//! LFS objects.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::git_server::HttpGitServer;
use common::lfs_server::LfsServer;
use common::provider_api::{
    BITBUCKET_GIT_USER, FixtureApi, add_source, bitbucket_api, git_base, run_backup_with,
    serve_repositories,
};
use common::restore_into::{
    GitHubBackup, attributed, github_backup, github_wiki_backup, pushed_refs, refs, restore_to,
    set_unpaced,
};
use common::{TestVault, stderr, stdout};
use serde_json::{Value, json};

const GH_TOKEN: &str = "ghp_restoreIntoBitbucket0123456789a";
const GH_ENV: &str = "GITVAULT_TEST_GH_TOKEN";
const BB_EMAIL: &str = "alice@example.com";
const BB_TOKEN: &str = "ATATT3xFfGF0intoBitbucketToken987654";
const BB_TOKEN_ENV: &str = "GITVAULT_TEST_BB_TOKEN";
const BB_USER_ENV: &str = "GITVAULT_TEST_BB_USER";

/// A vault with one backed-up repository, and the Bitbucket fixture whose workspace `alice`
/// (source `bbdest`, writes not paced) is the destination.
struct World {
    tv: TestVault,
    /// The GitHub fixture, when the backup is of GitHub.
    github: Option<FixtureApi>,
    bb: FixtureApi,
    root: PathBuf,
    repo: String,
    _git: Vec<HttpGitServer>,
}

fn bitbucket(root: &Path, repos: &str, lfs: Option<&LfsServer>) -> (FixtureApi, HttpGitServer) {
    let git = HttpGitServer::start_with_lfs_proxy(
        root,
        Some((BITBUCKET_GIT_USER, BB_TOKEN)),
        lfs.map(LfsServer::port),
    );
    (bitbucket_api(root, &git, repos, BB_EMAIL, BB_TOKEN), git)
}

fn add_destination(tv: &TestVault, bb: &FixtureApi) {
    let user = ["--username-env", BB_USER_ENV];
    add_source(tv, bb, BB_TOKEN_ENV, "bbdest", "alice", &user);
    set_unpaced(tv);
}

/// acme/repo-000 backed up from the GitHub fixture (see [`github_backup`]), to be restored
/// into the workspace alice of an empty Bitbucket fixture.
fn from_github(lfs: Option<&LfsServer>) -> World {
    into_bitbucket(github_backup(GH_TOKEN, GH_ENV, lfs), lfs)
}

/// A GitHub backup, to be restored into the workspace alice of an empty Bitbucket fixture.
fn into_bitbucket(b: GitHubBackup, lfs: Option<&LfsServer>) -> World {
    let (bb, bb_git) = bitbucket(&b.root, "0", lfs);
    add_destination(&b.tv, &bb);
    World {
        tv: b.tv,
        github: Some(b.github),
        bb,
        root: b.root,
        repo: b.repo,
        _git: vec![b.git, bb_git],
    }
}

/// acme/repo-000 backed up from the Bitbucket fixture (issues #1 new and #2 resolved, pull
/// requests #1 merged from feature-x and #2 open from improve), to be restored into the
/// workspace alice of the same fixture.
fn from_bitbucket() -> World {
    bitbucket_backup(&["acme/repo-000.git"], "repo-000")
}

/// The page [`bitbucket_backup`] writes into every wiki.
const WIKI_PAGE: &str = "# Home\n\nThe wiki's own page.\n";

/// The fixture's repositories at `paths` (a wiki at `<repo>.git/wiki`) backed up from the
/// Bitbucket fixture, `slug` given the branches its pull requests come from; the world's
/// repository is acme/`slug`.
fn bitbucket_backup(paths: &[&str], slug: &str) -> World {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let served: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    serve_repositories(&root, &served);
    let bare = root.join(format!("acme/{slug}.git"));
    for branch in ["feature-x", "improve"] {
        let name = format!("refs/heads/{branch}");
        common::git(&bare, &["update-ref", &name, "refs/heads/feature"]);
    }
    // feature-x gains the file pull request #1's inline comment is on (src/lib.rs line 2),
    // so that it can be an inline comment again.
    let work = tv.tmp.path().join("work");
    let (bare_path, work_path) = (bare.to_str().unwrap(), work.to_str().unwrap());
    common::git(
        tv.tmp.path(),
        &["clone", "-q", "-b", "feature-x", bare_path, work_path],
    );
    std::fs::create_dir_all(work.join("src")).unwrap();
    std::fs::write(work.join("src/lib.rs"), "fn main() {\n    feature();\n}\n").unwrap();
    common::git(&work, &["add", "src/lib.rs"]);
    let who = ["-c", "user.name=Bob", "-c", "user.email=bob@example.com"];
    common::git(
        &work,
        &[&who[..], &["commit", "-q", "-m", "Add src/lib.rs"]].concat(),
    );
    common::git(&work, &["push", "-q", "origin", "feature-x"]);
    // A wiki gets a page of its own, so that its refs are not its repository's (a wiki
    // pushed into the repository, or the repository into the wiki, cannot pass).
    for wiki in paths.iter().filter(|p| p.ends_with("/wiki")) {
        let page = tv.tmp.path().join("wiki-work");
        let (wiki, page_path) = (root.join(wiki), page.to_str().unwrap());
        common::git(
            tv.tmp.path(),
            &["clone", "-q", wiki.to_str().unwrap(), page_path],
        );
        std::fs::write(page.join("Home.md"), WIKI_PAGE).unwrap();
        common::git(&page, &["add", "Home.md"]);
        common::git(&page, &[&who[..], &["commit", "-q", "-m", "Home"]].concat());
        common::git(&page, &["push", "-q", "origin", "HEAD:refs/heads/home"]);
    }
    let count = paths.iter().filter(|p| !p.ends_with("/wiki")).count();
    let (bb, git) = bitbucket(&root, &count.to_string(), None);
    let user = ["--username-env", BB_USER_ENV];
    add_source(&tv, &bb, BB_TOKEN_ENV, "bb", "acme", &user);
    let env = [(BB_USER_ENV, BB_EMAIL), (BB_TOKEN_ENV, BB_TOKEN)];
    let (code, _, err) = run_backup_with(&tv, &env, BB_TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    add_destination(&tv, &bb);
    let repo = format!(
        "{}/acme/{slug}",
        git_base(&git).trim_start_matches("http://")
    );
    World {
        tv,
        github: None,
        bb,
        root,
        repo,
        _git: vec![git],
    }
}

impl World {
    /// `gitvault --json restore REPO --to-source bbdest <extra…>`; no token may show, in the
    /// output or in any file of the vault.
    fn restore(&self, extra: &[&str]) -> (Output, Value) {
        let env = [
            (GH_ENV, GH_TOKEN),
            (BB_TOKEN_ENV, BB_TOKEN),
            (BB_USER_ENV, BB_EMAIL),
        ];
        restore_to(&self.tv, &self.repo, "bbdest", &env, extra)
    }

    /// Every value of a list of the fixture's (one page here).
    fn values(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = self.bb.get(&format!("{path}{sep}pagelen=50"));
        assert!(page.get("next").is_none(), "{path}: more than one page");
        page["values"].as_array().unwrap().clone()
    }

    fn github(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let api = self.github.as_ref().unwrap();
        match api.get(&format!("{path}{sep}per_page=100")) {
            Value::Array(items) => items,
            other => panic!("{path}: {other}"),
        }
    }

    /// How many issues and pull requests of every state alice/repo-000 has.
    fn counts(&self) -> (usize, usize) {
        let dest = "/repositories/alice/repo-000";
        let pulls = format!("{dest}/pullrequests?state=OPEN&state=MERGED&state=DECLINED");
        (
            self.values(&format!("{dest}/issues")).len(),
            self.values(&pulls).len(),
        )
    }
}

const DEST: &str = "/repositories/alice/repo-000";
const ALL_PULLS: &str = "pullrequests?state=OPEN&state=MERGED&state=DECLINED&sort=id";

/// The comments' texts of an issue or pull request of alice/repo-000.
fn comment_texts(w: &World, kind: &str, id: u64) -> Vec<String> {
    w.values(&format!("{DEST}/{kind}/{id}/comments"))
        .iter()
        .map(|c| c["content"]["raw"].as_str().unwrap().to_string())
        .collect()
}

/// One copy of every issue and pull request of the GitHub backup, and of every comment.
fn assert_one_copy(w: &World) {
    assert_eq!(w.counts(), (3, 1));
    for (kind, n, want) in [("issues", 1, 1), ("issues", 2, 1), ("pullrequests", 1, 3)] {
        assert_eq!(comment_texts(w, kind, n).len(), want, "{kind} {n}");
    }
}

#[test]
fn a_github_repository_restored_into_a_bitbucket_workspace() {
    let w = from_github(None);
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["numbers_match"], true, "{report}");
    assert_eq!(report["created"]["pull_requests"], 1, "{report}");
    assert_eq!(report["created"]["labels"], 0, "{report}");
    assert_eq!(report["created"]["milestones"], 0, "{report}");
    // Bitbucket Cloud has no releases: the tag is pushed, the assets go to Downloads.
    assert_eq!(report["skipped_releases"], json!([]), "{report}");
    assert_eq!(report["created"]["releases"], 0, "{report}");
    assert_eq!(report["created"]["assets"], 1, "{report}");

    let original = w.github.as_ref().unwrap().get("/repos/acme/repo-000");
    let repo = w.bb.get(DEST);
    assert_eq!(repo["is_private"], true);
    assert_eq!(repo["has_issues"], true);
    assert_eq!(repo["description"], original["description"]);
    assert_eq!(repo["mainbranch"]["name"], original["default_branch"]);

    // Issues #1 and #2 with their numbers, labels as Bitbucket's kind where they are one,
    // the milestone in the text; #3 a closed pointer to pull request #1.
    let orig = "/repos/acme/repo-000";
    let originals = w.github(&format!("{orig}/issues?state=all&direction=asc"));
    let issues = w.values(&format!("{DEST}/issues?sort=id"));
    assert_eq!(issues.len(), originals.len(), "one copy of every issue");
    for (o, r) in originals.iter().zip(&issues) {
        let n = o["number"].as_u64().unwrap();
        assert_eq!(r["id"], n);
        let state = if o["state"] == "open" {
            "new"
        } else {
            "resolved"
        };
        assert_eq!(r["state"], state, "#{n}");
        if o.get("pull_request").is_some() {
            let title = format!("#{n}: {}", o["title"].as_str().unwrap());
            assert_eq!(r["title"], title.as_str());
            continue;
        }
        assert_eq!(r["title"], o["title"], "#{n}");
        assert_eq!(r["kind"], o["labels"][0]["name"], "#{n}");
        let mut body = attributed(
            "Opened",
            &o["user"]["login"],
            &o["created_at"],
            o["body"].as_str().unwrap(),
        );
        if let Some(title) = o["milestone"]["title"].as_str() {
            body.push_str(&format!("\n\n*In the original: milestone {title}.*"));
        }
        assert_eq!(r["content"]["raw"], body.as_str(), "#{n}");
        let want: Vec<String> = w
            .github(&format!("{orig}/issues/{n}/comments"))
            .iter()
            .map(|c| {
                attributed(
                    "Comment",
                    &c["user"]["login"],
                    &c["created_at"],
                    c["body"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(comment_texts(&w, "issues", n), want, "#{n}");
    }

    // The merged pull request, opened again and declined: its text says it was merged.
    let pulls = w.values(&format!("{DEST}/{ALL_PULLS}"));
    assert_eq!(pulls.len(), 1, "one copy of the pull request");
    let (pr, o) = (&pulls[0], &originals[2]);
    assert_eq!(pr["id"], 1);
    assert_eq!(pr["title"], o["title"]);
    assert_eq!(pr["state"], "DECLINED");
    assert_eq!(pr["source"]["branch"]["name"], "feature-x");
    assert_eq!(pr["destination"]["branch"]["name"], "main");
    let body = pr["description"].as_str().unwrap();
    let by = attributed("Opened", &o["user"]["login"], &o["created_at"], "");
    assert!(body.starts_with(&by), "{body}");
    assert!(body.contains("Pull request #3 from `feature-x`"), "{body}");
    assert!(body.contains(", merged on "), "{body}");
    let comments = comment_texts(&w, "pullrequests", 1);
    // Its comment, then its review and its review comment with file and line.
    assert_eq!(comments.len(), 3, "{comments:?}");
    assert!(comments[0].ends_with("\n\nThanks!"), "{comments:?}");
    assert!(comments[1].starts_with("*Review (APPROVED) by @alice"));
    assert!(comments[2].starts_with("*Review comment on `src/lib.rs` line 2 by @alice"));
    // The head has no src/lib.rs: Bitbucket refuses it inline, so it is a general comment.
    let restored = w.values(&format!("{DEST}/pullrequests/1/comments"));
    assert!(
        restored.iter().all(|c| c.get("inline").is_none()),
        "{restored:?}"
    );

    // Every release asset's bytes, in Downloads.
    let downloads = w.values(&format!("{DEST}/downloads"));
    let mut names = Vec::new();
    for release in w.github(&format!("{orig}/releases")) {
        for a in release["assets"].as_array().unwrap() {
            let api = w.github.as_ref().unwrap();
            let url = a["browser_download_url"].as_str().unwrap();
            let want = api.fetch(url).bytes().unwrap();
            let name = a["name"].as_str().unwrap();
            let link = format!("{}{DEST}/downloads/{name}", w.bb.api_url());
            let got = w.bb.fetch(&link).bytes().unwrap();
            assert!(got == want, "{name}: the asset's bytes differ");
            names.push(name.to_string());
        }
    }
    let held: Vec<&str> = downloads
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(held, names);

    // Every ref.
    let want = pushed_refs(&w.root.join("acme/repo-000.git"));
    assert_eq!(refs(&w.root.join("alice/repo-000.git")), want);

    // Once more: nothing is made twice.
    let (out, again) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(again["created"]["issues"], 0, "{again}");
    assert_eq!(again["created"]["comments"], 0, "{again}");
    assert_eq!(w.counts(), (3, 1));
}

#[test]
fn a_bitbucket_repository_restored_into_another_workspace_keeps_its_fields() {
    let w = from_bitbucket();
    // Into the workspace it came from: the name is taken, the dry run says so (exit 1), the
    // restore refuses before writing anything.
    let there = ["--owner", "acme", "--name", "repo-000"];
    let (out, plan) = w.restore(&[&there[..], &["--dry-run"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(plan["exists"], true, "{plan}");
    w.bb.control("reset-stats", json!({}));
    let (out, _) = w.restore(&there);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    let stats = w.bb.stats();
    assert!(stats["by_method"].get("POST").is_none(), "{stats}");
    assert!(stats["by_method"].get("PUT").is_none(), "{stats}");

    let (out, plan) = w.restore(&["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(plan["exists"], false, "{plan}");
    let counts = &plan["plan"];
    assert_eq!(
        (counts["issues"].as_u64(), counts["pull_requests"].as_u64()),
        (Some(2), Some(2))
    );
    // Bitbucket has no labels and its API makes no milestones: none are planned.
    assert_eq!(
        (counts["labels"].as_u64(), counts["milestones"].as_u64()),
        (Some(0), Some(0))
    );
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["created"]["issues"], 2, "{report}");
    assert_eq!(report["created"]["pull_requests"], 2, "{report}");
    assert_eq!(report["numbers_match"], true, "{report}");
    assert_eq!(report["merge_request_numbers_match"], true, "{report}");

    let orig = "/repositories/acme/repo-000";
    let original = w.bb.get(orig);
    let repo = w.bb.get(DEST);
    assert_eq!(repo["is_private"], true);
    assert_eq!(repo["description"], original["description"]);
    assert_eq!(repo["mainbranch"], original["mainbranch"]);

    let originals = w.values(&format!("{orig}/issues?sort=id"));
    let issues = w.values(&format!("{DEST}/issues?sort=id"));
    assert_eq!(issues.len(), originals.len(), "one copy of every issue");
    for (o, r) in originals.iter().zip(&issues) {
        let n = o["id"].as_u64().unwrap();
        assert_eq!(r["id"], n);
        for field in ["title", "state", "kind", "priority"] {
            assert_eq!(r[field], o[field], "#{n} {field}");
        }
        let body = attributed(
            "Opened",
            &o["reporter"]["nickname"],
            &o["created_on"],
            o["content"]["raw"].as_str().unwrap(),
        );
        assert_eq!(r["content"]["raw"], body.as_str(), "#{n}");
        let want: Vec<String> = w
            .values(&format!("{orig}/issues/{n}/comments"))
            .iter()
            .map(|c| {
                attributed(
                    "Comment",
                    &c["user"]["nickname"],
                    &c["created_on"],
                    c["content"]["raw"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(comment_texts(&w, "issues", n), want, "#{n}");
    }

    let originals = w.values(&format!("{orig}/{ALL_PULLS}"));
    let pulls = w.values(&format!("{DEST}/{ALL_PULLS}"));
    assert_eq!(
        pulls.len(),
        originals.len(),
        "one copy of every pull request"
    );
    for (o, r) in originals.iter().zip(&pulls) {
        let n = o["id"].as_u64().unwrap();
        assert_eq!(r["id"], n);
        assert_eq!(r["title"], o["title"], "#{n}");
        // A merged one cannot be merged again: declined, its text says it was merged.
        let state = if o["state"] == "OPEN" {
            "OPEN"
        } else {
            "DECLINED"
        };
        assert_eq!(r["state"], state, "#{n}");
        for side in ["source", "destination"] {
            assert_eq!(r[side]["branch"], o[side]["branch"], "#{n} {side}");
        }
        let body = r["description"].as_str().unwrap();
        let by = attributed("Opened", &o["author"]["nickname"], &o["created_on"], "");
        assert!(body.starts_with(&by), "#{n}: {body}");
        assert!(body.contains(o["description"].as_str().unwrap()), "#{n}");
        assert_eq!(
            body.contains(", merged on "),
            o["state"] == "MERGED",
            "#{n}"
        );
        // Its comment, its approval, its inline comment (file and line in the text).
        let comments = comment_texts(&w, "pullrequests", n);
        let said = w.values(&format!("{orig}/pullrequests/{n}/comments"));
        let approvals = o["participants"].as_array().map_or(0, Vec::len);
        let full = w.bb.get(&format!("{orig}/pullrequests/{n}"));
        let approvals = approvals.max(full["participants"].as_array().map_or(0, Vec::len));
        assert_eq!(comments.len(), said.len() + approvals, "#{n}: {comments:?}");
        // An inline comment is one again, at the same file and line.
        let restored = w.values(&format!("{DEST}/pullrequests/{n}/comments"));
        for c in said.iter().filter(|c| c.get("inline").is_some()) {
            let place = format!(
                "*Review comment on `{}` line {} by @{}",
                c["inline"]["path"].as_str().unwrap(),
                c["inline"]["to"],
                c["user"]["nickname"].as_str().unwrap()
            );
            let r = restored
                .iter()
                .find(|r| r["content"]["raw"].as_str().unwrap().starts_with(&place))
                .unwrap_or_else(|| panic!("{place}: {comments:?}"));
            assert_eq!(r["inline"]["path"], c["inline"]["path"]);
            assert_eq!(r["inline"]["to"], c["inline"]["to"]);
        }
        let inline = restored
            .iter()
            .filter(|r| r.get("inline").is_some())
            .count();
        let want = said.iter().filter(|c| c.get("inline").is_some()).count();
        assert_eq!(inline, want, "#{n}");
    }
    assert_eq!(
        refs(&w.root.join("alice/repo-000.git")),
        pushed_refs(&w.root.join("acme/repo-000.git"))
    );
}

#[test]
fn a_restore_stopped_by_429_resumes_to_one_copy_of_everything() {
    let w = from_github(None);
    // The repository, its main branch, issues #1 to #3 with comments and closes, the pull
    // request and its first comment: the limit falls between two comments of one item.
    w.bb.control("mode", json!({"writes_before_limit": 11}));
    let (out, report) = w.restore(&[]);
    assert!(!out.status.success(), "{report}");
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("rate"), "{err}");
    w.bb.control("mode", json!({"writes_before_limit": null}));
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["resumed"], true, "{report}");
    assert_one_copy(&w);
    // A third run finds everything done and creates nothing.
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["created"]["issues"], 0, "{report}");
    assert_eq!(report["created"]["comments"], 0, "{report}");
    assert_eq!(w.counts(), (3, 1));
}

#[test]
fn hostile_answers_stop_the_restore_and_nothing_goes_to_another_origin() {
    let w = from_github(None);
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let foreign = format!("http://{}/alice/elsewhere.git", trap.local_addr().unwrap());
    w.bb.control("mode", json!({"foreign_clone_url": foreign}));
    let (out, _) = w.restore(&["--name", "elsewhere"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not on the source's git origin"), "{err}");
    assert!(
        trap.accept().is_err(),
        "something connected to the foreign origin"
    );

    // An answer that is JSON but not the repository asked for: a clear error.
    w.bb.control(
        "mode",
        json!({"foreign_clone_url": null, "create_answer": "forged"}),
    );
    let (out, _) = w.restore(&["--name", "forged"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("repository answer: no full_name"), "{err}");

    // The repository is made but the answer is too large, then the next write's is not
    // JSON: each run stops with a clear error, and the next asks what became of the write.
    let config = w.tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("max_answer_bytes = 1048576\n");
    std::fs::write(&config, text).unwrap();
    w.bb.control(
        "mode",
        json!({"foreign_clone_url": null, "create_answer": "huge"}),
    );
    let (out, _) = w.restore(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
    w.bb.control("mode", json!({"create_answer": "garbage"}));
    let (out, _) = w.restore(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unexpected answer"), "{err}");
    w.bb.control("mode", json!({"create_answer": null}));
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["resumed"], true, "{report}");
    assert_one_copy(&w);
}

#[test]
fn lfs_objects_go_to_the_new_repositorys_lfs_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    let w = from_github(Some(&lfs));
    let held = lfs.objects();
    assert_eq!(held.len(), 5, "{held:?}");
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["lfs_uploaded"], 5, "{report}");
    for object in &held {
        let oid = object.file_name().unwrap().to_str().unwrap();
        let copy = lfs.object_path("alice", "repo-000", oid);
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(object).unwrap()
        );
    }
}

#[test]
fn every_lost_answer_is_found_again_and_nothing_is_made_twice() {
    // Every second, then every third write takes effect but its answer is lost: each run
    // stops at one, and the next asks Bitbucket what became of it (between them: the
    // repository, its main branch, an issue, a pull request, a comment, a resolve, a
    // decline).
    for every in [2, 3] {
        lost_answers(every);
    }
}

fn lost_answers(every: u64) {
    let w = from_bitbucket();
    w.bb.control("mode", json!({ "garbage_every": every }));
    let mut runs = 0;
    loop {
        runs += 1;
        let (out, _) = w.restore(&[]);
        if out.status.success() {
            break;
        }
        let err = stderr(&out);
        assert!(err.contains("unexpected answer"), "{err}");
        assert!(runs < 40, "no progress");
    }
    assert!(runs > 3, "{runs}");
    w.bb.control("mode", json!({"garbage_every": null}));
    assert_eq!(w.counts(), (2, 2));
    let orig = "/repositories/acme/repo-000";
    let issues = w.values(&format!("{DEST}/issues?sort=id"));
    for (o, r) in w
        .values(&format!("{orig}/issues?sort=id"))
        .iter()
        .zip(&issues)
    {
        let n = o["id"].as_u64().unwrap();
        assert_eq!(r["state"], o["state"], "#{n}");
        let said = w.values(&format!("{orig}/issues/{n}/comments")).len();
        assert_eq!(comment_texts(&w, "issues", n).len(), said, "#{n}");
    }
    let pulls = w.values(&format!("{DEST}/{ALL_PULLS}"));
    let states: Vec<&str> = pulls.iter().map(|p| p["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["DECLINED", "OPEN"]);
    assert_eq!(comment_texts(&w, "pullrequests", 1).len(), 3);
    assert_eq!(comment_texts(&w, "pullrequests", 2).len(), 0);
}

#[test]
fn a_bitbucket_wiki_goes_to_the_clone_urls_wiki() {
    let w = bitbucket_backup(
        &[
            "acme/repo-000.git",
            "acme/repo-001.git",
            "acme/repo-001.git/wiki",
        ],
        "repo-001",
    );
    let wiki = w.root.join("acme/repo-001.git/wiki");
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["wiki"], "pushed", "{report}");
    let restored = w.root.join("alice/repo-001.git/wiki");
    assert_eq!(refs(&restored), refs(&wiki));
    common::fsck(&restored);
    let page = common::git(&restored, &["show", "refs/heads/home:Home.md"]);
    assert_eq!(page, WIKI_PAGE);
    // The repository beside it holds its own refs only.
    assert_eq!(
        refs(&w.root.join("alice/repo-001.git")),
        pushed_refs(&w.root.join("acme/repo-001.git"))
    );
    assert_eq!(w.bb.get("/repositories/alice/repo-001")["has_wiki"], true);
}

#[test]
fn a_github_wiki_goes_below_the_new_bitbucket_repositorys_clone_url() {
    let w = into_bitbucket(github_wiki_backup(GH_TOKEN, GH_ENV), None);
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert_eq!(report["wiki"], "pushed", "{report}");
    let want = refs(&w.root.join("acme/repo-001.wiki.git"));
    assert!(want.iter().any(|l| l.ends_with(" refs/heads/wiki-only")));
    let restored = w.root.join("alice/repo-001.git/wiki");
    assert_eq!(refs(&restored), want);
    common::fsck(&restored);
    assert_eq!(
        refs(&w.root.join("alice/repo-001.git")),
        pushed_refs(&w.root.join("acme/repo-001.git"))
    );
}
