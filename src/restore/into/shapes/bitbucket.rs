//! A Bitbucket Cloud backup's documents (as `provider::bitbucket` stores them) in the GitHub
//! shapes the plan reads. What maps to what:
//!
//! | Bitbucket | becomes |
//! | --- | --- |
//! | repository `description`, `mainbranch.name`, `has_wiki` | settings (no topics: Bitbucket has none) |
//! | issue states `new`, `open`, `on hold` / `resolved`, `closed`, `invalid`, `duplicate`, `wontfix` | `open` / `closed` (the original state named in the text when it says more) |
//! | issue `kind`, `priority`, `component`, `version`, `milestone.name` | labels `kind`, `priority: …`, `component: …`, `version: …`, `milestone: …` (Bitbucket's milestones have no number or date) |
//! | `reporter` / `author` / `user` `.nickname` (else `display_name`) | `user.login` |
//! | `content.raw`, pull request `description` | `body` |
//! | `assignee` | `assignees` (as text) |
//! | comments without `content.raw` (a state change's) or `deleted` | dropped |
//! | pull request `OPEN` / `MERGED`, `DECLINED`, `SUPERSEDED` | `open` / `closed`; `merged_at` from the activity's `MERGED` update |
//! | `source` / `destination` branch, commit, repository | `head` / `base` with `ref`, `sha`, `repo.full_name` |
//! | inline comments (`inline.path`, `inline.to`, else `inline.from`) | review comments with `path`, `line` |
//! | `participants` that `approved` / whose state is `changes_requested` | reviews `APPROVED` / `CHANGES_REQUESTED` |
//!
//! Bitbucket numbers pull requests apart from issues, as GitLab does its merge requests.
//! The Downloads section has no counterpart (no tag to hang a release on): it stays in the
//! vault, restored by `restore --metadata`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::provider::bitbucket::issue_open;
use crate::provider::str_field;

/// The longest label name GitHub and Gitea take (GitLab takes 255).
const LABEL_CHARS: usize = 50;

fn text(v: &Value, key: &str) -> String {
    str_field(v, key).unwrap_or_default()
}

fn raw(v: &Value) -> String {
    v.pointer("/content/raw")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn person(v: &Value) -> Value {
    let login = str_field(v, "nickname")
        .or_else(|| str_field(v, "display_name"))
        .unwrap_or_else(|| "ghost".into());
    json!({ "login": login })
}

pub fn settings(v: &Value) -> Value {
    json!({
        "description": v.get("description").cloned().unwrap_or(Value::Null),
        "default_branch": v.pointer("/mainbranch/name").cloned().unwrap_or(Value::Null),
        "topics": [],
        "has_wiki": v.get("has_wiki").and_then(Value::as_bool) == Some(true),
    })
}

/// The labels an issue's fields become (see the table above).
pub fn issue_labels(issue: &Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(kind) = str_field(issue, "kind") {
        names.push(kind);
    }
    for key in ["priority", "component", "version", "milestone"] {
        let value = match &issue[key] {
            Value::String(s) => Some(s.clone()),
            other => str_field(other, "name"),
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            names.push(format!("{key}: {v}"));
        }
    }
    // A name the destination refuses would stop the restore at the labels, every run.
    names
        .into_iter()
        .map(|n| n.chars().take(LABEL_CHARS).collect())
        .collect()
}

/// Bitbucket's issue kinds and priorities: the two fields of an issue its API takes that a
/// label can become.
const KINDS: [&str; 4] = ["bug", "enhancement", "proposal", "task"];
const PRIORITIES: [&str; 5] = ["trivial", "minor", "major", "critical", "blocker"];

/// Labels as a Bitbucket issue takes them: the first that is a kind and the first that is
/// `priority: <a priority>` (both as labels still, in that order), and the others.
pub fn fields(labels: &[String]) -> (Vec<String>, Vec<String>) {
    let (kind, priority) = kind_and_priority(labels);
    let priority = priority.map(|p| format!("priority: {p}"));
    let fields: Vec<String> = kind.into_iter().chain(priority).collect();
    let rest = labels
        .iter()
        .filter(|l| !fields.contains(l))
        .cloned()
        .collect();
    (fields, rest)
}

/// An issue's `kind` and `priority` from the labels [`fields`] kept.
pub fn kind_and_priority(labels: &[String]) -> (Option<String>, Option<String>) {
    let kind = labels.iter().find(|l| KINDS.contains(&l.as_str())).cloned();
    let priority = labels
        .iter()
        .filter_map(|l| l.strip_prefix("priority: "))
        .find(|p| PRIORITIES.contains(p))
        .map(str::to_string);
    (kind, priority)
}

/// Every label the issues of a backup use, as label objects with a colour per kind of
/// field, so the destination can be given them before the issues.
pub fn labels(names: &BTreeSet<String>) -> Vec<Value> {
    names
        .iter()
        .map(|name| {
            let color = match name.split_once(": ").map(|(k, _)| k).unwrap_or(name) {
                "bug" => "d73a4a",
                "enhancement" => "a2eeef",
                "proposal" => "c5def5",
                "task" => "fbca04",
                "priority" => "e99695",
                "component" => "bfd4f2",
                "version" => "d4c5f9",
                "milestone" => "0e8a16",
                _ => "ededed",
            };
            json!({ "name": name, "color": color,
                    "description": "From the Bitbucket issue tracker" })
        })
        .collect()
}

fn comments(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.get("deleted").and_then(Value::as_bool) != Some(true) && !raw(c).is_empty())
}

fn comment(c: &Value) -> Value {
    json!({
        "user": person(&c["user"]),
        "body": raw(c),
        "created_at": c.get("created_on").cloned().unwrap_or(Value::Null),
    })
}

/// `{"issue", "comments"}` of a Bitbucket backup.
pub fn issue_document(doc: &Value) -> Value {
    let issue = &doc["issue"];
    let state = text(issue, "state");
    let mut body = raw(issue);
    if !matches!(state.as_str(), "new" | "open" | "resolved" | "closed") && !state.is_empty() {
        body.push_str(&format!("\n\n*The issue was `{state}` in the original.*"));
    }
    let labels: Vec<Value> = issue_labels(issue)
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
    let assignees: Vec<Value> = issue
        .get("assignee")
        .filter(|a| a.is_object())
        .map(person)
        .into_iter()
        .collect();
    json!({
        "issue": {
            "title": text(issue, "title"),
            "body": body,
            "state": if issue_open(&state) { "open" } else { "closed" },
            "user": person(&issue["reporter"]),
            "created_at": issue.get("created_on").cloned().unwrap_or(Value::Null),
            "labels": labels,
            "assignees": assignees,
            "milestone": null,
        },
        "comments": comments(&doc["comments"]).map(comment).collect::<Vec<_>>(),
    })
}

/// When a merged pull request was merged: the activity's update to `MERGED` (the pull
/// request itself carries only `updated_on`, which a later comment moves).
fn merged_at(doc: &Value, pr: &Value) -> Value {
    if text(pr, "state") != "MERGED" {
        return Value::Null;
    }
    doc["activity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("update"))
        .filter(|u| str_field(u, "state").as_deref() == Some("MERGED"))
        .filter_map(|u| u.get("date").cloned())
        .next()
        .or_else(|| pr.get("updated_on").cloned())
        .unwrap_or(Value::Null)
}

/// `{"pull_request", "comments", "activity"}` of a Bitbucket backup as
/// `{"pull_request", "comments", "reviews", "review_comments"}`.
pub fn pull_document(doc: &Value) -> Value {
    let pr = &doc["pull_request"];
    let side = |key: &str| {
        let end = &pr[key];
        json!({
            "ref": end.pointer("/branch/name").cloned().unwrap_or(Value::Null),
            "sha": end.pointer("/commit/hash").cloned().unwrap_or(Value::Null),
            "repo": { "full_name": end.pointer("/repository/full_name").cloned() },
        })
    };
    let is_inline = |c: &&Value| c.get("inline").is_some_and(Value::is_object);
    let general: Vec<Value> = comments(&doc["comments"])
        .filter(|c| !is_inline(c))
        .map(comment)
        .collect();
    let review_comments: Vec<Value> = comments(&doc["comments"])
        .filter(is_inline)
        .map(|c| {
            let mut out = comment(c);
            let at = &c["inline"];
            out["path"] = at.get("path").cloned().unwrap_or(Value::Null);
            out["line"] = at
                .get("to")
                .filter(|l| l.is_u64())
                .or_else(|| at.get("from").filter(|l| l.is_u64()))
                .cloned()
                .unwrap_or(Value::Null);
            out
        })
        .collect();
    let reviews: Vec<Value> = pr["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let state = if p.get("approved").and_then(Value::as_bool) == Some(true) {
                "APPROVED"
            } else if str_field(p, "state").as_deref() == Some("changes_requested") {
                "CHANGES_REQUESTED"
            } else {
                return None;
            };
            Some(
                json!({ "user": person(&p["user"]), "state": state, "body": "",
                         "submitted_at": p.get("participated_on").cloned() }),
            )
        })
        .collect();
    let pull = json!({
        "title": text(pr, "title"),
        "body": text(pr, "description"),
        "state": if text(pr, "state") == "OPEN" { "open" } else { "closed" },
        "merged_at": merged_at(doc, pr),
        "user": person(&pr["author"]),
        "created_at": pr.get("created_on").cloned().unwrap_or(Value::Null),
        "labels": [],
        "assignees": [],
        "milestone": null,
        "head": side("source"),
        "base": side("destination"),
    });
    json!({ "pull_request": pull, "comments": general, "reviews": reviews,
            "review_comments": review_comments })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn an_issue_maps_with_its_fields_as_labels() {
        let doc = json!({
            "issue": {"title": "Bug", "content": {"raw": "Broken."}, "state": "wontfix",
                "kind": "bug", "priority": "major", "milestone": {"name": "v1"},
                "component": null, "reporter": {"nickname": "bob"},
                "assignee": {"display_name": "Alice"}, "created_on": "t"},
            "comments": [
                {"user": {"nickname": "alice"}, "content": {"raw": "Confirmed."}, "created_on": "u"},
                {"user": {"nickname": "alice"}, "content": {"raw": null}, "created_on": "v"},
                {"user": {"nickname": "alice"}, "content": {"raw": "gone"}, "deleted": true}],
        });
        let mapped = super::issue_document(&doc);
        let issue = &mapped["issue"];
        assert_eq!(issue["state"], "closed");
        assert_eq!(issue["user"]["login"], "bob");
        assert_eq!(issue["assignees"][0]["login"], "Alice");
        assert!(issue["body"].as_str().unwrap().contains("`wontfix`"));
        assert_eq!(
            issue["labels"],
            json!([{"name": "bug"}, {"name": "priority: major"}, {"name": "milestone: v1"}])
        );
        assert_eq!(mapped["comments"].as_array().unwrap().len(), 1);
        assert_eq!(mapped["comments"][0]["created_at"], "u");
    }

    #[test]
    fn forged_documents_map_to_defaults_and_long_names_are_cut() {
        let long = "ü".repeat(80);
        let doc = json!({"issue": {"title": 7, "content": "not an object", "state": null,
                         "component": {"name": long}, "reporter": []},
                         "comments": {"not": "a list"}});
        let mapped = super::issue_document(&doc);
        assert_eq!(mapped["issue"]["title"], "");
        assert_eq!(mapped["issue"]["state"], "closed");
        assert_eq!(mapped["issue"]["user"]["login"], "ghost");
        let label = mapped["issue"]["labels"][0]["name"].as_str().unwrap();
        assert_eq!(label.chars().count(), super::LABEL_CHARS);
        assert!(mapped["comments"].as_array().unwrap().is_empty());
        let pr = super::pull_document(&json!({"pull_request": "x", "comments": [
            {"content": {"raw": "a"}, "inline": {"path": 3, "to": "two", "from": -1}}],
            "activity": 5, "participants": {}}));
        assert_eq!(pr["pull_request"]["state"], "closed");
        assert!(pr["pull_request"]["merged_at"].is_null());
        assert!(pr["review_comments"][0]["line"].is_null());
        assert!(pr["reviews"].as_array().unwrap().is_empty());
    }

    #[test]
    fn a_pull_request_from_a_fork_has_two_repositories() {
        let end =
            |repo: &str| json!({"branch": {"name": "main"}, "repository": {"full_name": repo}});
        let pr = super::pull_document(&json!({"pull_request": {
            "source": end("bob/api"), "destination": end("acme/api"), "state": "DECLINED"}}));
        let p = &pr["pull_request"];
        assert_ne!(p["head"]["repo"], p["base"]["repo"]);
        assert_eq!(p["state"], "closed");
    }

    #[test]
    fn a_pull_request_maps_with_inline_comments_and_approvals() {
        let end = |b: &str, h: &str| {
            json!({"branch": {"name": b}, "commit": {"hash": h},
                   "repository": {"full_name": "acme/api"}})
        };
        let doc = json!({
            "pull_request": {"title": "Add", "description": "Adds.", "state": "MERGED",
                "author": {"nickname": "bob"}, "created_on": "t", "updated_on": "z",
                "source": end("feature-x", "abc"), "destination": end("main", "def"),
                "participants": [{"user": {"nickname": "alice"}, "approved": true,
                                  "participated_on": "p"},
                                 {"user": {"nickname": "carol"}, "approved": false}]},
            "comments": [
                {"user": {"nickname": "alice"}, "content": {"raw": "Thanks!"}, "created_on": "c"},
                {"user": {"nickname": "alice"}, "content": {"raw": "Nit."}, "created_on": "d",
                 "inline": {"from": null, "to": 2, "path": "src/lib.rs"}}],
            "activity": [{"update": {"state": "MERGED", "date": "m"}},
                         {"update": {"state": "OPEN", "date": "o"}}],
        });
        let pr = super::pull_document(&doc);
        let p = &pr["pull_request"];
        assert_eq!(p["state"], "closed");
        assert_eq!(p["merged_at"], "m");
        assert_eq!(p["head"]["ref"], "feature-x");
        assert_eq!(p["base"]["sha"], "def");
        assert_eq!(p["head"]["repo"], p["base"]["repo"]);
        assert_eq!(pr["comments"].as_array().unwrap().len(), 1);
        assert_eq!(pr["review_comments"][0]["path"], "src/lib.rs");
        assert_eq!(pr["review_comments"][0]["line"], 2);
        assert_eq!(pr["reviews"].as_array().unwrap().len(), 1);
        assert_eq!(pr["reviews"][0]["submitted_at"], "p");
    }

    #[test]
    fn labels_that_are_bitbucket_fields_become_them_and_only_those() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let labels = names(&["help", "priority: huge", "task", "bug", "priority: minor"]);
        let (fields, rest) = super::fields(&labels);
        assert_eq!(fields, names(&["task", "priority: minor"]));
        assert_eq!(rest, names(&["help", "priority: huge", "bug"]));
        assert_eq!(
            super::kind_and_priority(&fields),
            (Some("task".into()), Some("minor".into()))
        );
        assert_eq!(super::kind_and_priority(&names(&["help"])), (None, None));
    }
}
