//! `restore REPO --to-source NAME` of a Bitbucket Cloud backup: a repository backed up from
//! the Bitbucket fixture (tests/fixtures/bitbucket_api.py) recreated in an account of the
//! GitHub fixture and of the Gitea fixture (their write endpoints in github_writes.py and
//! gitea_writes.py), compared field by field with what Bitbucket served, and of the GitLab
//! fixture, where pull requests keep their numbers as merge requests.

mod common;

use std::path::Path;

use common::git_server::HttpGitServer;
use common::provider_api::{
    BITBUCKET_GIT_USER, FixtureApi, add_source, assert_not_in_files, bitbucket_api,
    empty_destination, git_base, run_backup_with, serve_repositories,
};
use common::restore_into::{attributed, refs};
use common::{TestVault, stderr, stdout};
use serde_json::Value;

const BB_EMAIL: &str = "alice@example.com";
const BB_TOKEN: &str = "ATATT3xFfGF0restoreIntoToken0123456789";
const BB_TOKEN_ENV: &str = "GITVAULT_TEST_BB_TOKEN";
const BB_USER_ENV: &str = "GITVAULT_TEST_BB_USER";
const GH_TOKEN: &str = "ghp_restoreIntoFromBitbucket0123456";
const GH_ENV: &str = "GITVAULT_TEST_GH_TOKEN";
const GITEA_TOKEN: &str = "gitea0123456789fromBitbucketTokenabcd";
const GITEA_ENV: &str = "GITVAULT_TEST_GITEA_TOKEN";
const GL_TOKEN: &str = "glpat-fromBitbucket1234567890ab";
const GL_ENV: &str = "GITVAULT_TEST_GL_TOKEN";

/// Every value of a Bitbucket list (the fixture's are one page here).
fn values(api: &FixtureApi, path: &str) -> Vec<Value> {
    let page = api.get(path);
    assert!(page.get("next").is_none(), "{path}: more than one page");
    page["values"].as_array().unwrap().clone()
}

/// The restored alice/repo-000 against acme/repo-000 on Bitbucket, field by field: issues
/// #1 and #2 keep their numbers, pull requests #1 and #2 follow as #3 and #4. `to` is the
/// destination's API, whose lists take `page` (its parameter for one long page).
fn assert_restored(bb: &FixtureApi, root: &Path, to: &FixtureApi, page: &str) {
    let list = |path: &str| -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        match to.get(&format!("{path}{sep}{page}")) {
            Value::Array(items) => items,
            other => panic!("{path}: {other}"),
        }
    };
    let orig = "/repositories/acme/repo-000";
    let original = bb.get(orig);
    let repo = to.get("/repos/alice/repo-000");
    assert_eq!(repo["private"], true);
    assert_eq!(repo["description"], original["description"]);
    assert_eq!(repo["default_branch"], original["mainbranch"]["name"]);

    let mut labels: Vec<String> = list("/repos/alice/repo-000/labels")
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        ["bug", "enhancement", "priority: major", "priority: minor"]
    );

    let issues = values(bb, &format!("{orig}/issues?sort=id"));
    assert_eq!(issues.len(), 2);
    for o in &issues {
        let n = o["id"].as_u64().unwrap();
        let r = to.get(&format!("/repos/alice/repo-000/issues/{n}"));
        assert_eq!(r["number"], n);
        assert!(r["pull_request"].is_null(), "#{n}: {r}");
        assert_eq!(r["title"], o["title"], "#{n}");
        let state = if o["state"] == "new" {
            "open"
        } else {
            "closed"
        };
        assert_eq!(r["state"], state, "#{n}");
        let body = attributed(
            "Opened",
            &o["reporter"]["nickname"],
            &o["created_on"],
            o["content"]["raw"].as_str().unwrap(),
        );
        assert_eq!(r["body"], body.as_str(), "#{n}");
        let names: Vec<&str> = r["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        let priority = format!("priority: {}", o["priority"].as_str().unwrap());
        assert_eq!(names.len(), 2, "#{n}: {names:?}");
        assert!(names.contains(&o["kind"].as_str().unwrap()), "#{n}");
        assert!(names.contains(&priority.as_str()), "#{n}");
        let comments = list(&format!("/repos/alice/repo-000/issues/{n}/comments"));
        let originals = values(bb, &format!("{orig}/issues/{n}/comments"));
        assert_eq!(comments.len(), originals.len(), "#{n}");
        for (c, oc) in comments.iter().zip(&originals) {
            let body = attributed(
                "Comment",
                &oc["user"]["nickname"],
                &oc["created_on"],
                oc["content"]["raw"].as_str().unwrap(),
            );
            assert_eq!(c["body"], body.as_str(), "#{n}");
        }
    }

    let pulls = values(
        bb,
        &format!("{orig}/pullrequests?state=MERGED&state=OPEN&sort=id"),
    );
    assert_eq!(pulls.len(), 2);
    for (o, n) in pulls.iter().zip(3u64..) {
        let id = o["id"].as_u64().unwrap();
        let o = bb.get(&format!("{orig}/pullrequests/{id}"));
        let r = to.get(&format!("/repos/alice/repo-000/issues/{n}"));
        assert!(r["pull_request"].is_object(), "#{n}: {r}");
        assert_eq!(r["title"], o["title"], "#{n}");
        let state = if o["state"] == "OPEN" {
            "open"
        } else {
            "closed"
        };
        assert_eq!(r["state"], state, "#{n}");
        let body = r["body"].as_str().unwrap();
        let by = attributed("Opened", &o["author"]["nickname"], &o["created_on"], "");
        assert!(body.starts_with(&by), "#{n}: {body}");
        let what = format!(
            "Bitbucket pull request #{id} from `{}` (",
            o["source"]["branch"]["name"].as_str().unwrap()
        );
        assert!(body.contains(&what), "#{n}: {body}");
        assert!(body.contains(o["description"].as_str().unwrap()), "#{n}");
        let pull = to.get(&format!("/repos/alice/repo-000/pulls/{n}"));
        assert_eq!(pull["head"]["ref"], o["source"]["branch"]["name"], "#{n}");
        assert_eq!(pull["base"]["ref"], o["destination"]["branch"]["name"]);

        // Its comments, then its approvals, then its inline comments with file and line.
        let originals = values(bb, &format!("{orig}/pullrequests/{id}/comments"));
        let mut want: Vec<String> = originals
            .iter()
            .filter(|c| c.get("inline").is_none())
            .map(|c| {
                attributed(
                    "Comment",
                    &c["user"]["nickname"],
                    &c["created_on"],
                    c["content"]["raw"].as_str().unwrap(),
                )
            })
            .collect();
        for p in o["participants"].as_array().unwrap() {
            assert_eq!(p["approved"], true);
            let what = "Review (APPROVED)";
            want.push(attributed(
                what,
                &p["user"]["nickname"],
                &p["participated_on"],
                "",
            ));
        }
        for c in originals.iter().filter(|c| c.get("inline").is_some()) {
            let what = format!(
                "Review comment on `{}` line {}",
                c["inline"]["path"].as_str().unwrap(),
                c["inline"]["to"]
            );
            want.push(attributed(
                &what,
                &c["user"]["nickname"],
                &c["created_on"],
                c["content"]["raw"].as_str().unwrap(),
            ));
        }
        let got: Vec<String> = list(&format!("/repos/alice/repo-000/issues/{n}/comments"))
            .iter()
            .map(|c| c["body"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "#{n}");
    }
    assert!(
        list("/repos/alice/repo-000/issues?state=all").len() == 4,
        "one copy of every issue and pull request"
    );
    // Every ref (Bitbucket has no read-only namespace; the fixture's repository carries
    // a refs/pull/1/head all the same, moved under refs/gitvault/).
    let mut want: Vec<String> = refs(&root.join("acme/repo-000.git"))
        .iter()
        .map(|l| l.replace(" refs/pull/", " refs/gitvault/pull/"))
        .collect();
    want.sort();
    assert_eq!(refs(&root.join("alice/repo-000.git")), want);
}

/// `gitvault --json restore REPO --to-source <source>`: succeeds, no token shows.
fn restore(tv: &TestVault, repo: &str, source: &str) -> Value {
    let out = tv
        .command(&["--json", "restore", repo, "--to-source", source])
        .env(GH_ENV, GH_TOKEN)
        .env(GITEA_ENV, GITEA_TOKEN)
        .env(GL_ENV, GL_TOKEN)
        .env(BB_TOKEN_ENV, BB_TOKEN)
        .env(BB_USER_ENV, BB_EMAIL)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    for token in [GH_TOKEN, GITEA_TOKEN, GL_TOKEN, BB_TOKEN] {
        assert!(!text.contains(token), "a token leaked into the output");
    }
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_bitbucket_backup_restored_into_github_gitea_and_gitlab_brings_its_metadata() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    serve_repositories(&root, &["acme/repo-000.git".to_string()]);
    // The branches of the fixture's pull requests, each with commits main lacks.
    for branch in ["feature-x", "improve"] {
        let name = format!("refs/heads/{branch}");
        common::git(
            &root.join("acme/repo-000.git"),
            &["update-ref", &name, "refs/heads/feature"],
        );
    }
    let bb_git = HttpGitServer::start(&root, Some((BITBUCKET_GIT_USER, BB_TOKEN)));
    let bb = bitbucket_api(&root, &bb_git, "1", BB_EMAIL, BB_TOKEN);
    add_source(
        &tv,
        &bb,
        BB_TOKEN_ENV,
        "bb",
        "acme",
        &["--username-env", BB_USER_ENV],
    );
    let env = [(BB_USER_ENV, BB_EMAIL), (BB_TOKEN_ENV, BB_TOKEN)];
    let (code, _, err) = run_backup_with(&tv, &env, BB_TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    let repo = format!(
        "{}/acme/repo-000",
        git_base(&bb_git).trim_start_matches("http://")
    );

    let gh_git = HttpGitServer::start(&root, Some(("x-access-token", GH_TOKEN)));
    let github = empty_destination("github", &root, &gh_git, GH_TOKEN);
    add_source(&tv, &github, GH_ENV, "gh", "alice", &[]);
    let config = tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[source.http]\ncreate_interval_ms = 0\n");
    std::fs::write(&config, text).unwrap();

    let report = restore(&tv, &repo, "gh");
    assert!(report["metadata_skipped"].is_null(), "{report}");
    assert_eq!(report["plan"]["labels"], 4, "{report}");
    assert_eq!(report["created"]["issues"], 2, "{report}");
    assert_eq!(report["created"]["pull_requests"], 2, "{report}");
    assert_eq!(report["created"]["comments"], 5, "{report}");
    assert_eq!(report["numbers_match"], true);
    // Bitbucket numbers pull requests apart from issues; GitHub does not.
    assert_eq!(report["merge_request_numbers_match"], false);
    assert_restored(&bb, &root, &github, "per_page=100");
    // Once more: nothing is created twice.
    let again = restore(&tv, &repo, "gh");
    assert_eq!(again["created"]["comments"], 0, "{again}");
    assert_restored(&bb, &root, &github, "per_page=100");

    // The same backup into a Gitea account.
    std::fs::rename(root.join("alice"), root.join("alice-github")).unwrap();
    let gitea_git = HttpGitServer::start(&root, Some(("gitvault", GITEA_TOKEN)));
    let gitea = empty_destination("gitea", &root, &gitea_git, GITEA_TOKEN);
    add_source(&tv, &gitea, GITEA_ENV, "gitea", "alice", &[]);
    let report = restore(&tv, &repo, "gitea");
    assert_eq!(report["created"]["pull_requests"], 2, "{report}");
    assert_restored(&bb, &root, &gitea, "limit=50");

    // And into a GitLab account, which numbers merge requests apart as Bitbucket does:
    // every number is the original's.
    std::fs::rename(root.join("alice"), root.join("alice-gitea")).unwrap();
    let gl_git = HttpGitServer::start(&root, Some(("oauth2", GL_TOKEN)));
    let gitlab = empty_destination("gitlab", &root, &gl_git, GL_TOKEN);
    add_source(&tv, &gitlab, GL_ENV, "gl", "alice", &[]);
    let report = restore(&tv, &repo, "gl");
    assert_eq!(report["created"]["issues"], 2, "{report}");
    assert_eq!(report["created"]["pull_requests"], 2, "{report}");
    assert_eq!(report["numbers_match"], true, "{report}");
    assert_eq!(report["merge_request_numbers_match"], true, "{report}");
    let project = "/projects/alice%2Frepo-000";
    for o in values(&bb, "/repositories/acme/repo-000/issues?sort=id") {
        let n = o["id"].as_u64().unwrap();
        let r = gitlab.get(&format!("{project}/issues/{n}"));
        assert_eq!(r["title"], o["title"], "#{n}");
        let state = if o["state"] == "new" {
            "opened"
        } else {
            "closed"
        };
        assert_eq!(r["state"], state, "#{n}");
        let by = attributed("Opened", &o["reporter"]["nickname"], &o["created_on"], "");
        assert!(r["description"].as_str().unwrap().starts_with(&by), "#{n}");
    }
    let pulls = "/repositories/acme/repo-000/pullrequests?state=MERGED&state=OPEN&sort=id";
    for o in values(&bb, pulls) {
        let n = o["id"].as_u64().unwrap();
        let r = gitlab.get(&format!("{project}/merge_requests/{n}"));
        assert_eq!(r["title"], o["title"], "!{n}");
        assert_eq!(r["source_branch"], o["source"]["branch"]["name"], "!{n}");
        assert_eq!(r["target_branch"], o["destination"]["branch"]["name"]);
        let state = if o["state"] == "OPEN" {
            "opened"
        } else {
            "closed"
        };
        assert_eq!(r["state"], state, "!{n}");
        let notes = gitlab.get(&format!("{project}/merge_requests/{n}/notes?per_page=100"));
        let said = notes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["system"] != true)
            .count();
        // Its comment, approval and inline comment; none on the open one.
        assert_eq!(said, if n == 1 { 3 } else { 0 }, "!{n}");
    }
    // Every ref, beside the heads GitLab keeps for the merge requests it opened.
    let mut want: Vec<String> = refs(&root.join("acme/repo-000.git"))
        .iter()
        .map(|l| l.replace(" refs/pull/", " refs/gitvault/pull/"))
        .collect();
    want.sort();
    let (made, got): (Vec<String>, Vec<String>) = refs(&root.join("alice/repo-000.git"))
        .into_iter()
        .partition(|l| l.contains(" refs/merge-requests/"));
    assert_eq!(got, want);
    assert_eq!(made.len(), 2, "{made:?}");

    for token in [GH_TOKEN, GITEA_TOKEN, GL_TOKEN, BB_TOKEN] {
        assert_not_in_files(&tv.dir, token);
    }
}
