//! The one place where providers' metadata shapes meet: a GitLab backup's documents (as
//! `provider::gitlab` stores them; Bitbucket's are in `bitbucket`) turned into the GitHub
//! shapes the plan is read from, so that everything after reading is the same for every
//! source. What maps to what:
//!
//! | GitLab | becomes |
//! | --- | --- |
//! | state `opened` / `closed`, `merged`, `locked` | `open` / `closed` (`merged_at` kept) |
//! | `author.username` | `user.login` |
//! | `description` | `body` |
//! | labels as names | labels as `{name}` |
//! | label colour `#rrggbb` | `rrggbb` (destinations add `#` where they want it) |
//! | milestone `iid`, `due_date` (a day), `active` | `number`, `due_on` (midnight UTC), `open` |
//! | notes (`system` ones dropped: they are the history GitHub keeps as events) | comments |
//! | diff notes with `position.new_path`, `new_line` | review comments with `path`, `line` |
//! | approvals' `approved_by` | reviews in state `APPROVED` |
//! | `source_branch` / `target_branch`, project ids | `head` / `base` with `ref`, `repo` |
//! | release `description`, `released_at`, `commit.id`, `assets.links` | `body`, `published_at`, `target_commitish`, `links` (recreated on GitLab, listed in the text elsewhere) |

pub mod bitbucket;

use serde_json::{Value, json};

use crate::provider::str_field;

fn text(v: &Value, key: &str) -> String {
    str_field(v, key).unwrap_or_default()
}

fn person(v: &Value) -> Value {
    json!({ "login": v.get("username").and_then(Value::as_str).unwrap_or("ghost") })
}

/// GitLab's states as GitHub's.
pub fn state(gitlab: &str) -> &'static str {
    if gitlab == "opened" { "open" } else { "closed" }
}

pub fn settings(v: &Value) -> Value {
    let wiki = v.get("wiki_enabled").and_then(Value::as_bool) == Some(true)
        || str_field(v, "wiki_access_level").is_some_and(|l| l != "disabled");
    json!({
        "description": v.get("description").cloned().unwrap_or(Value::Null),
        "default_branch": v.get("default_branch").cloned().unwrap_or(Value::Null),
        "topics": v.get("topics").cloned().unwrap_or(json!([])),
        "has_wiki": wiki,
    })
}

pub fn label(v: &Value) -> Value {
    json!({
        "name": text(v, "name"),
        "color": text(v, "color").trim_start_matches('#'),
        "description": text(v, "description"),
    })
}

pub fn milestone(v: &Value) -> Value {
    let mut m = json!({
        "number": v.get("iid").cloned().unwrap_or(Value::Null),
        "title": text(v, "title"),
        "description": text(v, "description"),
        "state": if text(v, "state") == "closed" { "closed" } else { "open" },
    });
    if let Some(day) = str_field(v, "due_date") {
        m["due_on"] = Value::String(format!("{day}T00:00:00Z"));
    }
    m
}

/// The fields issues and merge requests share.
fn item(v: &Value) -> Value {
    let labels: Vec<Value> = v["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|name| json!({ "name": name }))
        .collect();
    let assignees: Vec<Value> = v["assignees"]
        .as_array()
        .into_iter()
        .flatten()
        .map(person)
        .collect();
    json!({
        "title": text(v, "title"),
        "body": text(v, "description"),
        "state": state(&text(v, "state")),
        "user": person(&v["author"]),
        "created_at": v.get("created_at").cloned().unwrap_or(Value::Null),
        "labels": labels,
        "assignees": assignees,
        "milestone": v["milestone"].get("iid").map(|n| json!({ "number": n })),
    })
}

fn is_diff_note(n: &Value) -> bool {
    str_field(n, "type").as_deref() == Some("DiffNote")
}

fn is_system(n: &Value) -> bool {
    n.get("system").and_then(Value::as_bool) == Some(true)
}

fn comment(n: &Value) -> Value {
    json!({
        "user": person(&n["author"]),
        "body": text(n, "body"),
        "created_at": n.get("created_at").cloned().unwrap_or(Value::Null),
    })
}

/// `{"issue", "comments"}` of a GitLab backup.
pub fn issue_document(doc: &Value) -> Value {
    let comments: Vec<Value> = doc["comments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| !is_system(n))
        .map(comment)
        .collect();
    json!({ "issue": item(&doc["issue"]), "comments": comments })
}

/// `{"pull_request", "comments", "reviews", "review_comments"}` of a GitLab merge request.
pub fn merge_request_document(doc: &Value) -> Value {
    let mr = &doc["pull_request"];
    let notes = doc["comments"].as_array().into_iter().flatten();
    let comments: Vec<Value> = notes
        .clone()
        .filter(|n| !is_system(n) && !is_diff_note(n))
        .map(comment)
        .collect();
    let review_comments: Vec<Value> = notes
        .filter(|n| !is_system(n) && is_diff_note(n))
        .map(|n| {
            let mut c = comment(n);
            let at = &n["position"];
            c["path"] = at.get("new_path").cloned().unwrap_or(Value::Null);
            c["line"] = at.get("new_line").cloned().unwrap_or(Value::Null);
            c
        })
        .collect();
    let reviews: Vec<Value> = doc["approvals"]["approved_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            json!({ "user": person(&a["user"]), "state": "APPROVED", "body": "",
                    "submitted_at": a.get("approved_at").cloned().unwrap_or(Value::Null) })
        })
        .collect();
    let side = |branch: &str, sha: Option<&Value>, project: &str| {
        json!({ "ref": text(mr, branch), "sha": sha.cloned().unwrap_or(Value::Null),
                "repo": { "full_name": mr.get(project).map(Value::to_string) } })
    };
    let mut pr = item(mr);
    pr["merged_at"] = mr.get("merged_at").cloned().unwrap_or(Value::Null);
    pr["head"] = side("source_branch", mr.get("sha"), "source_project_id");
    pr["base"] = side(
        "target_branch",
        mr["diff_refs"].get("base_sha"),
        "target_project_id",
    );
    json!({ "pull_request": pr, "comments": comments, "reviews": reviews,
            "review_comments": review_comments })
}

/// A release, with its links (GitLab's assets are URLs, often outside GitLab) as `links`.
pub fn release(v: &Value) -> Value {
    let links: Vec<Value> = v["assets"]["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            json!({ "name": text(l, "name"), "url": text(l, "url"),
                    "link_type": str_field(l, "link_type").unwrap_or_else(|| "other".into()) })
        })
        .collect();
    json!({
        "tag_name": text(v, "tag_name"),
        "name": text(v, "name"),
        "body": text(v, "description"),
        "links": links,
        "created_at": v.get("created_at").cloned().unwrap_or(Value::Null),
        "published_at": v.get("released_at").cloned().unwrap_or(Value::Null),
        "author": person(&v["author"]),
        "target_commitish": v["commit"].get("id").cloned().unwrap_or(Value::Null),
        "assets": [],
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_merge_request_becomes_a_pull_request_shape() {
        let doc = json!({
            "pull_request": {"iid": 1, "title": "Add", "description": "Adds.", "state": "merged",
                "merged_at": "2023-01-09T00:00:00Z", "author": {"username": "bob"},
                "created_at": "2023-01-07T00:00:00Z", "labels": ["bug"], "milestone": {"iid": 1},
                "source_branch": "feature-x", "target_branch": "main", "sha": "0123456789abcdef",
                "source_project_id": 7, "target_project_id": 7, "diff_refs": {"base_sha": "ff"}},
            "comments": [
                {"author": {"username": "alice"}, "body": "Thanks!", "system": false, "type": null},
                {"author": {"username": "alice"}, "body": "Nit.", "system": false,
                 "type": "DiffNote", "position": {"new_path": "src/a.rs", "new_line": 3}},
                {"author": {"username": "alice"}, "body": "approved", "system": true}],
            "approvals": {"approved_by": [{"user": {"username": "alice"}, "approved_at": "t"}]},
        });
        let pr = super::merge_request_document(&doc);
        assert_eq!(pr["pull_request"]["state"], "closed");
        assert_eq!(pr["pull_request"]["user"]["login"], "bob");
        assert_eq!(pr["pull_request"]["head"]["ref"], "feature-x");
        assert_eq!(
            pr["pull_request"]["head"]["repo"],
            pr["pull_request"]["base"]["repo"]
        );
        assert_eq!(pr["pull_request"]["labels"][0]["name"], "bug");
        assert_eq!(pr["pull_request"]["milestone"]["number"], 1);
        assert_eq!(pr["comments"].as_array().unwrap().len(), 1);
        assert_eq!(pr["review_comments"][0]["line"], 3);
        assert_eq!(pr["reviews"][0]["state"], "APPROVED");
    }

    #[test]
    fn milestones_and_labels_map() {
        let m = super::milestone(&json!({"iid": 2, "title": "v1", "state": "active",
            "due_date": "2023-04-01"}));
        assert_eq!(m["number"], 2);
        assert_eq!(m["state"], "open");
        assert_eq!(m["due_on"], "2023-04-01T00:00:00Z");
        assert_eq!(
            super::label(&json!({"name": "bug", "color": "#d9534f"}))["color"],
            "d9534f"
        );
        assert_eq!(super::state("opened"), "open");
        assert_eq!(super::state("merged"), "closed");
    }
}
