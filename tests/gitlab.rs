//! Whole GitLab groups and users: a fixture server shaped like GitLab's REST API v4
//! (tests/fixtures/gitlab_api.py) serves a group `acme` with nested subgroups holding 120
//! projects whose clone URLs point at a real git server; gitvault backs them all up with their
//! metadata, then again at the cost of 304s only.

mod common;

use std::path::Path;

use common::git_server::HttpGitServer;
use common::provider_api::{
    FixtureApi, add_source, assert_answered, assert_not_in_files, git_base, read_json,
    restore_metadata, run_backup, serve_repositories, statuses,
};
use common::{TestVault, stderr, stdout};
use serde_json::{Value, json};

const TOKEN: &str = "glpat-fixtureToken1234567890ab";
const TOKEN_ENV: &str = "GITVAULT_TEST_GL_TOKEN";
const PROJECTS: usize = 120;

/// The namespace of fixture project `i` (see gitlab_api.py).
fn project_path(i: usize) -> String {
    let home = ["acme", "acme/platform", "acme/platform/infra"][i % 3];
    format!("{home}/proj-{i:03}")
}

/// Bare repositories for the projects named, at `<root>/<path>.git`.
fn serve_projects(root: &Path, names: &[String]) {
    let paths: Vec<String> = names.iter().map(|n| format!("{n}.git")).collect();
    serve_repositories(root, &paths);
}

/// The git server (which takes the token the way GitLab does: user `oauth2`) and the API.
fn start_servers(root: &Path, api_args: &[&str]) -> (HttpGitServer, FixtureApi, String) {
    let git = HttpGitServer::start(root, Some(("oauth2", TOKEN)));
    let git_base = git_base(&git);
    let projects = PROJECTS.to_string();
    let mut args = vec!["--group", "acme", "--projects", &projects];
    args.extend_from_slice(&["--git-base", &git_base, "--token", TOKEN]);
    args.extend_from_slice(api_args);
    let api = FixtureApi::start("gitlab", &args, "/api/v4", ("PRIVATE-TOKEN", TOKEN));
    (git, api, git_base)
}

fn source<'d>(doc: &'d Value, name: &str) -> &'d Value {
    doc["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["source"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {doc}"))
}

#[test]
fn a_group_with_nested_subgroups_then_an_unchanged_run_of_304s() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let mut names: Vec<String> = (0..PROJECTS).map(project_path).collect();
    names.push("acme/platform/proj-001.wiki".into());
    serve_projects(&root, &names);
    let (_git, api, git_base) = start_servers(&root, &[]);
    add_source(&tv, &api, TOKEN_ENV, "acme", "acme", &[]);

    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    let acme = source(&doc, "acme");
    assert_eq!(acme["listed"], PROJECTS, "{acme}");
    assert_eq!(acme["selected"], PROJECTS, "{acme}");
    let lines = statuses(&doc);
    // Every project of the group and its subgroups, and proj-001's wiki.
    assert_eq!(
        lines.iter().filter(|(_, s)| s == "changed").count(),
        PROJECTS + 1,
        "{lines:?}"
    );
    for i in [0, 1, 2, 119] {
        let path = project_path(i);
        assert!(
            lines.iter().any(|(r, _)| r.ends_with(&format!("/{path}"))),
            "{path} missing: {lines:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|(r, s)| r.ends_with("acme/platform/proj-001.wiki") && s == "changed"),
        "{lines:?}"
    );
    // proj-013's wiki is enabled but was never written: there is no repository to back up.
    assert!(
        lines
            .iter()
            .any(|(r, s)| r.ends_with("acme/platform/proj-013.wiki") && s == "skipped"),
        "{lines:?}"
    );
    let first = api.stats();
    assert_eq!(first["auth_headers_seen"], json!(["PRIVATE-TOKEN"]));
    // Every answer a success: proj-007's issues are turned off and were not asked for (403).
    assert_answered(&first, &["200"]);
    eprintln!(
        "first run: {} API requests for {PROJECTS} projects: {}",
        first["requests"], first["by_status"]
    );

    // Metadata round trip for a project two levels down.
    let host = git_base.trim_start_matches("http://");
    let repo = format!("{host}/acme/platform/proj-001");
    let meta = restore_metadata(&tv, &repo, "meta-first");
    let project = "/projects/acme%2Fplatform%2Fproj-001";
    assert_eq!(read_json(&meta.join("settings.json")), api.get(project));
    assert_eq!(
        read_json(&meta.join("settings.json"))["path_with_namespace"],
        "acme/platform/proj-001"
    );
    assert_eq!(
        read_json(&meta.join("labels.json")),
        api.get(&format!("{project}/labels?per_page=100"))
    );
    assert_eq!(
        read_json(&meta.join("milestones.json")),
        api.get(&format!("{project}/milestones?per_page=100"))
    );
    let issues = api.get(&format!("{project}/issues?per_page=100"));
    let issue_1 = issues
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["iid"] == 1)
        .unwrap();
    let issue = read_json(&meta.join("issues/1.json"));
    assert_eq!(&issue["issue"], issue_1);
    let notes = api.get(&format!(
        "{project}/issues/1/notes?sort=asc&order_by=created_at"
    ));
    assert_eq!(issue["comments"], notes);
    assert_eq!(issue["comments"][0]["body"], "Confirmed.");
    // System notes are history too.
    let closed = read_json(&meta.join("issues/2.json"));
    assert!(
        closed["comments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["system"] == true),
        "{closed}"
    );

    let pull = read_json(&meta.join("pulls/1.json"));
    assert_eq!(
        pull["pull_request"],
        api.get(&format!("{project}/merge_requests/1"))
    );
    assert!(pull["pull_request"]["diff_refs"]["head_sha"].is_string());
    assert_eq!(
        pull["comments"],
        api.get(&format!(
            "{project}/merge_requests/1/notes?sort=asc&order_by=created_at"
        ))
    );
    assert_eq!(
        pull["discussions"],
        api.get(&format!("{project}/merge_requests/1/discussions"))
    );
    let approvals = api.get(&format!("{project}/merge_requests/1/approvals"));
    assert_eq!(pull["approvals"], approvals);
    assert_eq!(
        pull["approvals"]["approved_by"][0]["user"]["username"],
        "alice"
    );
    let diff_notes = pull["review_comments"].as_array().unwrap();
    assert_eq!(diff_notes.len(), 2, "{pull}");
    assert!(
        diff_notes
            .iter()
            .all(|n| n["type"] == "DiffNote" && n["position"]["new_path"] == "src/lib.rs")
    );
    let releases = api.get(&format!("{project}/releases?per_page=100"));
    let release = read_json(&meta.join("releases/v1.0.0.json"));
    assert_eq!(release, releases[0]);
    assert!(
        release["assets"]["links"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://downloads.example.com/")
    );

    // Unchanged: every request conditional and answered 304 (the listing, then six per
    // project); almost nothing added to the vault. Two workers, so the second one exports
    // metadata with a provider that never listed the group.
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
    let stats = api.stats();
    assert_answered(&stats, &["304"]);
    // The group, two pages of projects, and per project: settings, labels, milestones, the
    // issue list (not for proj-007), the merge request list and the releases.
    assert_eq!(stats["requests"], 3 + 6 * PROJECTS - 1, "{stats}");
    let api_report = &source(&doc, "acme")["api"];
    assert_eq!(api_report["requests"], api_report["not_modified"]);
    eprintln!(
        "unchanged run: {} API requests for {PROJECTS} projects",
        stats["requests"]
    );
    let growth = common::tree_size(&tv.data_dir()) - before;
    assert!(
        growth < (PROJECTS as u64 + 1) * 4096,
        "an unchanged run grew the vault by {growth} bytes"
    );

    // An edited issue and a new note on a merge request are picked up by the next run.
    api.control(
        "touch",
        json!({ "project": "acme/platform/proj-001", "issue": 1 }),
    );
    api.control(
        "touch",
        json!({ "project": "acme/platform/proj-001", "merge_request": 1, "note": "One more thing." }),
    );
    api.control("reset-stats", json!({}));
    let (code, _, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["acme"]);
    assert_eq!(code, Some(0), "{err}");
    let third = api.stats();
    eprintln!(
        "run after two updates: {} API requests: {}",
        third["requests"], third["by_status"]
    );
    let meta = restore_metadata(&tv, &repo, "meta-third");
    let issues = api.get(&format!("{project}/issues?per_page=100"));
    let issue_1 = issues
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["iid"] == 1)
        .unwrap();
    let updated = read_json(&meta.join("issues/1.json"));
    assert_eq!(&updated["issue"], issue_1);
    assert_ne!(
        updated["issue"]["description"],
        issue["issue"]["description"]
    );
    let pull = read_json(&meta.join("pulls/1.json"));
    assert_eq!(
        pull["comments"],
        api.get(&format!(
            "{project}/merge_requests/1/notes?sort=asc&order_by=created_at"
        ))
    );
    assert!(pull.to_string().contains("One more thing."));
    // The untouched issue kept its document.
    assert_eq!(read_json(&meta.join("issues/2.json")), closed);

    assert_not_in_files(&tv.dir, TOKEN);
}

#[test]
fn filters_a_user_namespace_rate_limits_and_errors() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    // Only what the filters below keep is served over git.
    let mut names: Vec<String> = (10..20).map(project_path).collect();
    names.push("alice/dotfiles".into());
    serve_projects(&root, &names);
    // proj-010 has 122 issues: two pages.
    let (_git, api, git_base) =
        start_servers(&root, &["--extra-issues", "acme/platform/proj-010=120"]);
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "acme",
        "acme",
        &["--include", "proj-01*", "--no-forks", "--no-archived"],
    );
    add_source(&tv, &api, TOKEN_ENV, "alice", "alice", &[]);
    // A subgroup path as the owner: only that subgroup's projects.
    add_source(
        &tv,
        &api,
        TOKEN_ENV,
        "infra",
        "acme/platform/infra",
        &["--include", "proj-01*"],
    );

    // 5xx answers are retried, and so are 429s whose Retry-After is short. An issue edited
    // while proj-010's issues are paged moves from page 1 to the end of page 2, and the issue
    // that slides back onto page 1 must not be missed.
    api.control("mode", json!({ "fail_5xx": 2 }));
    api.control(
        "mode",
        json!({ "touch_on_page": { "project": "acme/platform/proj-010", "page": 2, "issue": 1 } }),
    );
    api.control(
        "mode",
        json!({ "rate_limited": true, "retry_after": 1, "count": 2 }),
    );
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &[]);
    assert_eq!(code, Some(0), "{err}");
    let stats = api.stats();
    assert_eq!(stats["by_status"]["502"], 2, "{stats}");
    assert_eq!(stats["by_status"]["429"], 2, "{stats}");
    let acme = source(&doc, "acme");
    assert_eq!(acme["listed"], PROJECTS, "{acme}");
    // proj-010 … proj-019 without the archived proj-016 and the fork proj-019.
    assert_eq!(acme["selected"], 8, "{acme}");
    let lines = statuses(&doc);
    for (gone, why) in [(16, "archived"), (19, "a fork")] {
        let path = project_path(gone);
        assert!(
            !lines.iter().any(|(r, _)| r.ends_with(&path)),
            "{why} was backed up"
        );
    }
    let alice = source(&doc, "alice");
    assert_eq!(alice["listed"], 1, "{alice}");
    let infra = source(&doc, "infra");
    assert_eq!(infra["listed"], PROJECTS / 3, "{infra}");
    // proj-011, proj-014, proj-017: already backed up through `acme` in this run.
    assert_eq!(infra["selected"], 3, "{infra}");
    assert!(
        infra["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "unchanged"
                && r["repo"]
                    .as_str()
                    .unwrap()
                    .contains("/acme/platform/infra/")),
        "{infra}"
    );
    assert!(
        lines
            .iter()
            .any(|(r, s)| r.ends_with("alice/dotfiles") && s == "changed"),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|(_, s)| s == "changed").count(),
        9,
        "{lines:?}"
    );
    assert!(
        api.stats()["mode"]["touch_on_page"].is_null(),
        "no edit while paging"
    );
    let host = git_base.trim_start_matches("http://");
    let meta = restore_metadata(&tv, &format!("{host}/acme/platform/proj-010"), "meta-paged");
    let project = "/projects/acme%2Fplatform%2Fproj-010";
    let listed = [
        api.get(&format!("{project}/issues?per_page=100&page=1")),
        api.get(&format!("{project}/issues?per_page=100&page=2")),
    ];
    let listed: Vec<&Value> = listed.iter().flat_map(|l| l.as_array().unwrap()).collect();
    assert_eq!(listed.len(), 122);
    for entry in listed {
        let iid = entry["iid"].as_u64().unwrap();
        assert_eq!(
            &read_json(&meta.join(format!("issues/{iid}.json")))["issue"],
            entry,
            "issue {iid}"
        );
    }
    let meta = restore_metadata(&tv, &format!("{host}/alice/dotfiles"), "meta-alice");
    assert_eq!(
        read_json(&meta.join("settings.json"))["owner"]["username"],
        "alice"
    );

    // A rate limit far away: the run stops cleanly and says when to resume.
    api.control("mode", json!({ "rate_limited": true, "reset_in": 3600 }));
    let started = std::time::Instant::now();
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["acme"]);
    assert!(
        started.elapsed().as_secs() < 60,
        "a rate limit must not hang the run"
    );
    assert!(matches!(code, Some(1) | Some(3)), "{err}");
    assert!(doc.to_string().contains("rate limited until"), "{doc}");

    // A wrong token: a clear error without the secret.
    api.control("mode", json!({ "clear": true }));
    let wrong = "glpat-wrongTokenButStillSecret9";
    let out = tv
        .command(&["backup", "acme"])
        .env(TOKEN_ENV, wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("refused the token"), "{text}");
    assert!(!text.contains(wrong));

    // Neither a group nor a user.
    add_source(&tv, &api, TOKEN_ENV, "ghost", "nosuch", &[]);
    let (code, doc, err) = run_backup(&tv, TOKEN_ENV, TOKEN, &["ghost"]);
    assert_eq!(code, Some(1), "{err}");
    let error = source(&doc, "ghost")["error"].to_string();
    assert!(
        error.contains("no group or user is named `nosuch`"),
        "{error}"
    );

    assert_not_in_files(&tv.dir, TOKEN);
}
