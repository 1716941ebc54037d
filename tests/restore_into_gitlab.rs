//! `restore REPO --to-source NAME` into a GitLab account: the GitLab fixture
//! (tests/fixtures/gitlab_api.py with its write endpoints in gitlab_writes.py) as the
//! destination of a GitHub backup and of a GitLab backup, its state afterwards compared field
//! by field with the original's; a run stopped by a 429 and resumed; hostile answers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::git_server::HttpGitServer;
use common::lfs_server::LfsServer;
use common::provider_api::{FixtureApi, add_source, git_base, run_backup, serve_repositories};
use common::restore_into::{github_backup, pushed_refs, restore_to, set_unpaced};
use common::{TestVault, stderr};
use serde_json::{Value, json};

const GH_TOKEN: &str = "ghp_restoreIntoGitLab0123456789abcd";
const GH_ENV: &str = "GITVAULT_TEST_GH_TOKEN";
const GL_TOKEN: &str = "glpat-restoreIntoGitLab1234567890";
const GL_ENV: &str = "GITVAULT_TEST_GL_TOKEN";

/// A vault with one backed-up repository, and a GitLab fixture whose account `alice` (source
/// `gl`, writes not paced) is the destination.
struct World {
    tv: TestVault,
    /// The source's API: GitHub's or the GitLab fixture itself.
    source: Option<FixtureApi>,
    gitlab: FixtureApi,
    root: PathBuf,
    repo: String,
    _git: Vec<HttpGitServer>,
}

fn gitlab_fixture(
    root: &Path,
    projects: &str,
    lfs: Option<&LfsServer>,
) -> (FixtureApi, HttpGitServer) {
    let git = HttpGitServer::start_with_lfs_proxy(
        root,
        Some(("oauth2", GL_TOKEN)),
        lfs.map(LfsServer::port),
    );
    let args = [
        "--group",
        "acme",
        "--projects",
        projects,
        "--git-base",
        &git_base(&git),
        "--git-root",
        root.to_str().unwrap(),
        "--token",
        GL_TOKEN,
    ];
    let api = FixtureApi::start("gitlab", &args, "/api/v4", ("PRIVATE-TOKEN", GL_TOKEN));
    (api, git)
}

/// acme/repo-000 backed up from the GitHub fixture (issues #1 and #2, pull request #3 from
/// feature-x, two labels, a milestone, releases with assets).
fn from_github() -> World {
    from_github_with(None)
}

/// [`from_github`]; with `lfs`, acme/repo-000 is tests/fixtures/lfs.sh's repository, whose
/// objects are on that LFS server, which both git servers serve at every `/info/lfs`.
fn from_github_with(lfs: Option<&LfsServer>) -> World {
    let b = github_backup(GH_TOKEN, GH_ENV, lfs);
    let (gitlab, gl_git) = gitlab_fixture(&b.root, "0", lfs);
    add_source(&b.tv, &gitlab, GL_ENV, "gl", "alice", &[]);
    set_unpaced(&b.tv);
    World {
        tv: b.tv,
        source: Some(b.github),
        gitlab,
        root: b.root,
        repo: b.repo,
        _git: vec![b.git, gl_git],
    }
}

/// acme/proj-000 backed up from the GitLab fixture (issues #1 and #2, merge request !1 from
/// feature-x, labels bug and enhancement, milestone %1, release v1.0.0 with a link), restored
/// into alice's namespace of the same instance.
fn from_gitlab() -> World {
    from_gitlab_with(&["acme/proj-000.git"], "1", "acme/proj-000", &|root| {
        let original = root.join("acme/proj-000.git");
        for (name, to) in [
            ("refs/heads/feature-x", "refs/heads/feature"),
            ("refs/merge-requests/1/head", "refs/heads/feature"),
            ("refs/tags/v1.0.0", "refs/heads/main"),
        ] {
            common::git(&original, &["update-ref", name, to]);
        }
    })
}

/// The GitLab fixture's first `projects` projects served at `served` (changed by `prepare`
/// before the backup) and backed up; the one at `path` is the one restored.
fn from_gitlab_with(served: &[&str], projects: &str, path: &str, prepare: &dyn Fn(&Path)) -> World {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let served: Vec<String> = served.iter().map(|p| p.to_string()).collect();
    serve_repositories(&root, &served);
    prepare(&root);
    let (gitlab, git) = gitlab_fixture(&root, projects, None);
    add_source(&tv, &gitlab, GL_ENV, "acme", "acme", &[]);
    let (code, _, err) = run_backup(&tv, GL_ENV, GL_TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    add_source(&tv, &gitlab, GL_ENV, "gl", "alice", &[]);
    set_unpaced(&tv);
    let repo = format!("{}/{path}", git_base(&git).trim_start_matches("http://"));
    World {
        tv,
        source: None,
        gitlab,
        root,
        repo,
        _git: vec![git],
    }
}

impl World {
    /// `gitvault --json restore REPO --to-source gl <extra…>`; no token may show.
    fn restore(&self, extra: &[&str]) -> (Output, Value) {
        let env = [(GH_ENV, GH_TOKEN), (GL_ENV, GL_TOKEN)];
        restore_to(&self.tv, &self.repo, "gl", &env, extra)
    }

    /// A list under the restored project `alice/<name>`, ordered by iid (or as served).
    fn restored(&self, name: &str, rest: &str) -> Vec<Value> {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let path = format!("/projects/alice%2F{name}{rest}{sep}per_page=100");
        let mut items = match self.gitlab.get(&path) {
            Value::Array(items) => items,
            other => panic!("{path}: {other}"),
        };
        items.sort_by_key(|i| i["iid"].as_u64());
        items
    }

    fn github(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let api = self.source.as_ref().unwrap();
        match api.get(&format!("{path}{sep}per_page=100")) {
            Value::Array(items) => items,
            other => panic!("{path}: {other}"),
        }
    }
}

/// Every ref of a bare repository, `oid name`, sorted; GitLab's own merge request heads (the
/// fixture makes one per merge request it opens) left out.
fn refs(repo: &Path) -> Vec<String> {
    let text = common::git(repo, &["for-each-ref", "--format=%(objectname) %(refname)"]);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains(" refs/merge-requests/"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn notes(w: &World, name: &str, kind: &str, iid: u64) -> Vec<Value> {
    let mut notes = w.restored(name, &format!("/{kind}/{iid}/notes?sort=asc"));
    notes.retain(|n| n["system"] != true);
    notes
}

fn attributed(what: &str, login: &Value, at: &Value, text: &Value) -> String {
    format!(
        "*{what} by @{} on {}*\n\n{}",
        login.as_str().unwrap(),
        at.as_str().unwrap(),
        text.as_str().unwrap()
    )
}

#[test]
fn a_github_repository_restored_into_a_gitlab_account() {
    let w = from_github();
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["numbers_match"], true, "{report}");
    assert_eq!(report["created"]["pull_requests"], 1, "{report}");

    let project = w.gitlab.get("/projects/alice%2Frepo-000");
    let original = w.source.as_ref().unwrap().get("/repos/acme/repo-000");
    assert_eq!(project["visibility"], "private");
    assert_eq!(project["description"], original["description"]);
    assert_eq!(project["default_branch"], original["default_branch"]);
    assert_eq!(project["topics"], original["topics"]);

    let orig = "/repos/acme/repo-000";
    let mut labels: Vec<(Value, String)> = w
        .restored("repo-000", "/labels")
        .iter()
        .map(|l| (l["name"].clone(), l["color"].as_str().unwrap().to_string()))
        .collect();
    let mut want: Vec<(Value, String)> = w
        .github(&format!("{orig}/labels"))
        .iter()
        .map(|l| {
            (
                l["name"].clone(),
                format!("#{}", l["color"].as_str().unwrap()),
            )
        })
        .collect();
    labels.sort_by_key(|l| l.0.to_string());
    want.sort_by_key(|l| l.0.to_string());
    assert_eq!(labels, want);
    let milestones = w.restored("repo-000", "/milestones");
    let original_ms = w.github(&format!("{orig}/milestones?state=all"));
    assert_eq!(milestones.len(), original_ms.len());
    for o in &original_ms {
        let m = milestones
            .iter()
            .find(|m| m["title"] == o["title"])
            .unwrap();
        let state = if o["state"] == "open" {
            "active"
        } else {
            "closed"
        };
        assert_eq!(m["state"], state);
        assert_eq!(m["description"], o["description"]);
        assert_eq!(
            m["due_date"].as_str(),
            o["due_on"].as_str().map(|d| &d[..10])
        );
    }

    // Issues #1 and #2 with their numbers, and #3 a closed pointer to merge request !1.
    let issues = w.restored("repo-000", "/issues?state=all");
    let originals = w.github(&format!("{orig}/issues?state=all&direction=asc"));
    assert_eq!(issues.len(), originals.len(), "one copy of every issue");
    for (o, r) in originals.iter().zip(&issues) {
        let n = o["number"].as_u64().unwrap();
        assert_eq!(r["iid"], n);
        let state = if o["state"] == "open" {
            "opened"
        } else {
            "closed"
        };
        assert_eq!(r["state"], state, "#{n}");
        if o.get("pull_request").is_some() {
            assert_eq!(
                r["title"],
                format!("#{n}: {}", o["title"].as_str().unwrap())
            );
            continue;
        }
        assert_eq!(r["title"], o["title"], "#{n}");
        let by = attributed("Opened", &o["user"]["login"], &o["created_at"], &o["body"]);
        assert!(
            r["description"].as_str().unwrap().starts_with(&by),
            "#{n}: {r}"
        );
        let names: Vec<&Value> = o["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["name"])
            .collect();
        assert_eq!(
            r["labels"].as_array().unwrap().iter().collect::<Vec<_>>(),
            names
        );
        assert_eq!(r["milestone"]["title"], o["milestone"]["title"], "#{n}");
        let comments = w.github(&format!("{orig}/issues/{n}/comments"));
        let restored = notes(&w, "repo-000", "issues", n);
        assert_eq!(restored.len(), comments.len(), "#{n}");
        for (c, oc) in restored.iter().zip(&comments) {
            let by = attributed(
                "Comment",
                &oc["user"]["login"],
                &oc["created_at"],
                &oc["body"],
            );
            assert_eq!(c["body"], by.as_str());
        }
    }
    let mrs = w.restored("repo-000", "/merge_requests?state=all");
    assert_eq!(mrs.len(), 1, "one copy of the merge request");
    let (mr, pr) = (&mrs[0], &originals[2]);
    assert_eq!(mr["title"], pr["title"]);
    assert_eq!(mr["state"], "closed");
    assert_eq!(
        (mr["source_branch"].as_str(), mr["target_branch"].as_str()),
        (Some("feature-x"), Some("main"))
    );
    assert!(
        mr["description"]
            .as_str()
            .unwrap()
            .contains("Pull request #3 from `feature-x`")
    );
    let comments = w.github(&format!("{orig}/issues/3/comments"));
    let restored = notes(&w, "repo-000", "merge_requests", 1);
    // Its comments, then its review and its review comment.
    assert_eq!(restored.len(), comments.len() + 2, "{restored:?}");
    assert!(
        restored[2]["body"]
            .as_str()
            .unwrap()
            .starts_with("*Review comment on `src/lib.rs` line 2 by @alice")
    );

    // Releases: attributed text, and every asset's bytes behind its link.
    let releases = w.restored("repo-000", "/releases");
    let original_releases = w.github(&format!("{orig}/releases"));
    assert_eq!(releases.len(), original_releases.len());
    for o in &original_releases {
        let r = releases
            .iter()
            .find(|r| r["tag_name"] == o["tag_name"])
            .unwrap();
        assert_eq!(r["name"], o["name"]);
        let by = attributed(
            "Released",
            &o["author"]["login"],
            &o["published_at"],
            &o["body"],
        );
        assert_eq!(r["description"], by.as_str());
        let links = r["assets"]["links"].as_array().unwrap();
        let assets = o["assets"].as_array().unwrap();
        assert_eq!(links.len(), assets.len());
        for a in assets {
            let link = links.iter().find(|l| l["name"] == a["name"]).unwrap();
            let api = w.source.as_ref().unwrap();
            let want = api
                .fetch(a["browser_download_url"].as_str().unwrap())
                .bytes()
                .unwrap();
            let got = w
                .gitlab
                .fetch(link["url"].as_str().unwrap())
                .bytes()
                .unwrap();
            assert!(got == want, "{}: the asset's bytes differ", a["name"]);
        }
    }
    // Every ref; and the tags GitLab made for releases whose tag the original lacked.
    let want = pushed_refs(&w.root.join("acme/repo-000.git"));
    let (kept, made): (Vec<String>, Vec<String>) = refs(&w.root.join("alice/repo-000.git"))
        .into_iter()
        .partition(|l| want.contains(l));
    assert_eq!(kept, want);
    for line in &made {
        let tag = line
            .split_once(" refs/tags/")
            .map(|(_, t)| t)
            .unwrap_or(line);
        assert!(releases.iter().any(|r| r["tag_name"] == tag), "{line}");
    }
}

#[test]
fn a_gitlab_project_restored_into_another_namespace_keeps_its_metadata() {
    let w = from_gitlab();
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(report["metadata_skipped"].is_null(), "{report}");
    assert_eq!(report["numbers_match"], true, "{report}");
    assert_eq!(report["merge_request_numbers_match"], true, "{report}");
    assert_eq!(report["wiki"], Value::Null, "{report}");
    let orig = |rest: &str| {
        let sep = if rest.contains('?') { '&' } else { '?' };
        match w
            .gitlab
            .get(&format!("/projects/acme%2Fproj-000{rest}{sep}per_page=100"))
        {
            Value::Array(mut items) => {
                items.sort_by_key(|i| i["iid"].as_u64());
                items
            }
            other => panic!("{rest}: {other}"),
        }
    };
    let pick = |items: Vec<Value>, keys: &[&str]| -> Vec<Vec<Value>> {
        items
            .iter()
            .map(|i| keys.iter().map(|k| i[*k].clone()).collect())
            .collect()
    };
    let keys = ["name", "color", "description"];
    assert_eq!(
        pick(w.restored("proj-000", "/labels"), &keys),
        pick(orig("/labels"), &keys)
    );
    let keys = ["iid", "title", "description", "state", "due_date"];
    assert_eq!(
        pick(w.restored("proj-000", "/milestones"), &keys),
        pick(orig("/milestones"), &keys)
    );

    for kind in ["issues", "merge_requests"] {
        let originals = orig(&format!("/{kind}?state=all"));
        let restored = w.restored("proj-000", &format!("/{kind}?state=all"));
        assert_eq!(
            restored.len(),
            originals.len(),
            "one copy of every one of {kind}"
        );
        for (o, r) in originals.iter().zip(&restored) {
            let iid = o["iid"].as_u64().unwrap();
            assert_eq!(r["iid"], iid, "{kind} {iid}");
            assert_eq!(r["title"], o["title"]);
            let state = if o["state"] == "opened" {
                "opened"
            } else {
                "closed"
            };
            assert_eq!(r["state"], state, "{kind} {iid}");
            assert_eq!(r["labels"], o["labels"]);
            assert_eq!(r["milestone"]["title"], o["milestone"]["title"]);
            let by = attributed(
                "Opened",
                &o["author"]["username"],
                &o["created_at"],
                &Value::from(""),
            );
            let body = r["description"].as_str().unwrap();
            assert!(body.starts_with(&by), "{body}");
            assert!(body.contains(o["description"].as_str().unwrap()), "{body}");
            let mut original_notes = orig(&format!("/{kind}/{iid}/notes?sort=asc"));
            original_notes.retain(|n| n["system"] != true);
            let notes = notes(&w, "proj-000", kind, iid);
            if kind == "issues" {
                assert_eq!(notes.len(), original_notes.len());
                for (n, on) in notes.iter().zip(&original_notes) {
                    let by = attributed(
                        "Comment",
                        &on["author"]["username"],
                        &on["created_at"],
                        &on["body"],
                    );
                    assert_eq!(n["body"], by.as_str());
                }
            } else {
                // Notes, then the approval as a review, then the diff notes with their place.
                assert_eq!(
                    (r["source_branch"].as_str(), r["target_branch"].as_str()),
                    (Some("feature-x"), Some("main"))
                );
                assert!(body.contains("Merge request !1 from `feature-x`"), "{body}");
                assert_eq!(notes.len(), original_notes.len() + 1, "{notes:?}");
                assert!(
                    notes[1]["body"]
                        .as_str()
                        .unwrap()
                        .starts_with("*Review (APPROVED) by @alice")
                );
                assert!(
                    notes[2]["body"]
                        .as_str()
                        .unwrap()
                        .starts_with("*Review comment on `src/lib.rs` line 2 by @alice")
                );
            }
        }
    }
    let releases = w.restored("proj-000", "/releases");
    assert_eq!(releases.len(), 1, "{releases:?}");
    let text = releases[0]["description"].as_str().unwrap();
    assert!(text.starts_with("*Released by @alice on "), "{text}");
    let links = |r: &Value| -> Vec<(Value, Value, Value)> {
        let links = r["assets"]["links"].as_array().unwrap().iter();
        links
            .map(|l| (l["name"].clone(), l["url"].clone(), l["link_type"].clone()))
            .collect()
    };
    let original = orig("/releases");
    assert_eq!(links(&releases[0]), links(&original[0]));
    assert!(!links(&original[0]).is_empty());
    let restored = refs(&w.root.join("alice/proj-000.git"));
    let mut want = pushed_refs(&w.root.join("acme/proj-000.git"));
    want.retain(|l| !l.contains(" refs/merge-requests/"));
    assert_eq!(restored, want);
    assert!(
        restored
            .iter()
            .any(|l| l.ends_with(" refs/gitvault/merge-requests/1/head"))
    );

    // The original's own name is taken: the plan says so, the restore refuses.
    let (out, plan) = w.restore(&["--owner", "acme", "--dry-run"]);
    assert!(!out.status.success());
    assert_eq!(plan["exists"], true, "{plan}");
    let (out, _) = w.restore(&["--owner", "acme"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("acme/proj-000"), "{}", stderr(&out));
    assert_eq!(
        w.gitlab
            .get("/projects/acme%2Fproj-000/issues?state=all")
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Into a subgroup: --owner names it by its full path.
    let (out, report) = w.restore(&["--owner", "acme/platform", "--name", "copy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["destination"], "acme/platform/copy", "{report}");
    let copy = w
        .gitlab
        .get("/projects/acme%2Fplatform%2Fcopy/issues?state=all");
    assert_eq!(copy.as_array().unwrap().len(), 2, "{copy}");
}

#[test]
fn a_restore_stopped_by_429_resumes_to_one_copy_of_everything() {
    let w = from_github();
    w.gitlab.control("mode", json!({"writes_before_limit": 7}));
    let (out, report) = w.restore(&[]);
    assert!(!out.status.success(), "{report}");
    assert!(
        stderr(&out).to_lowercase().contains("rate"),
        "{}",
        stderr(&out)
    );
    w.gitlab
        .control("mode", json!({"writes_before_limit": null}));
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(w.restored("repo-000", "/labels").len(), 2);
    assert_eq!(w.restored("repo-000", "/milestones").len(), 1);
    assert_eq!(w.restored("repo-000", "/issues?state=all").len(), 3);
    assert_eq!(w.restored("repo-000", "/merge_requests?state=all").len(), 1);
    let comments = w.github("/repos/acme/repo-000/issues/1/comments");
    assert_eq!(notes(&w, "repo-000", "issues", 1).len(), comments.len());
    // A third run finds everything done and creates nothing.
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["created"]["issues"], 0, "{report}");
    assert_eq!(report["created"]["comments"], 0, "{report}");
}

#[test]
fn hostile_answers_stop_the_restore_and_nothing_goes_to_another_origin() {
    let w = from_github();
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let foreign = format!("http://{}/alice/repo-000.git", trap.local_addr().unwrap());
    w.gitlab
        .control("mode", json!({"foreign_clone_url": foreign}));
    let (out, _) = w.restore(&["--name", "elsewhere"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not on the source's git origin"),
        "{}",
        stderr(&out)
    );
    assert!(
        trap.accept().is_err(),
        "something connected to the foreign origin"
    );

    // The project is created but the answer is too large, then the next write's is not
    // JSON: each run stops with a clear error, and the next asks what became of the write.
    let config = w.tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("max_answer_bytes = 1048576\n");
    std::fs::write(&config, text).unwrap();
    w.gitlab.control(
        "mode",
        json!({"foreign_clone_url": null, "create_answer": "huge"}),
    );
    let (out, _) = w.restore(&[]);
    assert!(
        stderr(&out).contains("larger than 1048576 bytes"),
        "{}",
        stderr(&out)
    );
    w.gitlab
        .control("mode", json!({"create_answer": "garbage"}));
    let (out, _) = w.restore(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unexpected answer"),
        "{}",
        stderr(&out)
    );
    w.gitlab.control("mode", json!({"create_answer": null}));
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(w.restored("repo-000", "/labels").len(), 2);
    assert_eq!(w.restored("repo-000", "/issues?state=all").len(), 3);
    assert_eq!(w.restored("repo-000", "/merge_requests?state=all").len(), 1);
}

#[test]
fn every_lost_answer_is_found_again_and_nothing_is_made_twice() {
    let w = from_github();
    // Every third write takes effect but its answer is lost: each run stops at one, and the
    // next asks GitLab what became of it (a project, label, milestone, issue, merge request,
    // note, close, release, upload or link in turn).
    w.gitlab.control("mode", json!({"garbage_every": 3}));
    let mut runs = 0;
    loop {
        runs += 1;
        let (out, _) = w.restore(&[]);
        if out.status.success() {
            break;
        }
        assert!(
            stderr(&out).contains("unexpected answer"),
            "{}",
            stderr(&out)
        );
        assert!(runs < 60, "no progress");
    }
    assert!(runs > 5, "{runs}");
    w.gitlab.control("mode", json!({"garbage_every": null}));
    let orig = "/repos/acme/repo-000";
    assert_eq!(w.restored("repo-000", "/labels").len(), 2);
    let milestones = w.restored("repo-000", "/milestones");
    let original_ms = w.github(&format!("{orig}/milestones?state=all"));
    assert_eq!(milestones.len(), original_ms.len());
    for (m, o) in milestones.iter().zip(&original_ms) {
        assert_eq!(m["state"] == "closed", o["state"] == "closed", "{m}");
    }
    let issues = w.restored("repo-000", "/issues?state=all");
    assert_eq!(issues.len(), 3);
    assert_eq!(w.restored("repo-000", "/merge_requests?state=all").len(), 1);
    for n in 1..=2 {
        let comments = w.github(&format!("{orig}/issues/{n}/comments"));
        assert_eq!(
            notes(&w, "repo-000", "issues", n).len(),
            comments.len(),
            "#{n}"
        );
    }
    let comments = w.github(&format!("{orig}/issues/3/comments"));
    assert_eq!(
        notes(&w, "repo-000", "merge_requests", 1).len(),
        comments.len() + 2
    );
    let releases = w.restored("repo-000", "/releases");
    let original_releases = w.github(&format!("{orig}/releases"));
    assert_eq!(releases.len(), original_releases.len());
    for o in &original_releases {
        let r = releases
            .iter()
            .find(|r| r["tag_name"] == o["tag_name"])
            .unwrap();
        let links = r["assets"]["links"].as_array().unwrap().len();
        assert_eq!(links, o["assets"].as_array().unwrap().len(), "{r}");
    }
}

#[test]
fn lfs_objects_go_to_the_new_projects_lfs_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    let w = from_github_with(Some(&lfs));
    let held = lfs.objects();
    assert_eq!(held.len(), 5, "{held:?}");
    let (out, report) = w.restore(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
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
fn a_gitlab_wiki_goes_along_into_the_new_project() {
    let served = [
        "acme/proj-000.git",
        "acme/platform/proj-001.git",
        "acme/platform/proj-001.wiki.git",
    ];
    let w = from_gitlab_with(&served, "2", "acme/platform/proj-001", &|_| {});
    let (out, report) = w.restore(&[]);
    // The release's tag is not in this repository: refused, named, exit 3.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(report["skipped_releases"], json!(["v1.0.0"]), "{report}");
    assert_eq!(report["wiki"], "pushed", "{report}");
    assert_eq!(
        refs(&w.root.join("alice/proj-001.wiki.git")),
        refs(&w.root.join("acme/platform/proj-001.wiki.git"))
    );
}

#[test]
fn a_label_the_destination_has_already_is_used_not_made_twice() {
    let w = from_github();
    let post = |path: &str, body: Value| -> Value {
        let url = format!("{}{path}", w.gitlab.api_url());
        let r = common::provider_api::client()
            .post(url)
            .header("PRIVATE-TOKEN", GL_TOKEN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        r.json().unwrap()
    };
    post("/projects", json!({"name": "seeded", "namespace_id": 2011}));
    let original = w.github("/repos/acme/repo-000/labels");
    let name = original[0]["name"].clone();
    post(
        "/projects/alice%2Fseeded/labels",
        json!({"name": name, "color": "#000000"}),
    );
    let (out, report) = w.restore(&["--name", "seeded", "--into-existing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["created"]["labels"], original.len() - 1, "{report}");
    let labels = w.restored("seeded", "/labels");
    assert_eq!(labels.len(), original.len());
    let issue = w.restored("seeded", "/issues?state=all");
    let with_label = issue
        .iter()
        .filter(|i| i["labels"].as_array().unwrap().contains(&name));
    let originals = w.github("/repos/acme/repo-000/issues?state=all");
    let want = originals
        .iter()
        .filter(|i| i.get("pull_request").is_none())
        .filter(|i| {
            i["labels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["name"] == name)
        });
    assert_eq!(with_label.count(), want.count());
}
