//! What a snapshot's metadata becomes in the destination: labels, milestones, and one issue
//! per original number (a pull request becomes an issue that says what it was; a number the
//! backup does not hold becomes a closed placeholder, so later numbers still match), each
//! body and comment opened by a line naming the original author and time. GitLab numbers
//! merge requests apart from issues, and Bitbucket its pull requests: a GitLab backup's merge
//! requests, a Bitbucket backup's pull requests, and pull requests to be opened again on
//! GitLab, are a second sequence (`merge_requests`). GitLab's and Bitbucket's documents are
//! read through `shapes`, which maps them to the shapes used here.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crypto::ChunkId;
use crate::provider::str_field;
use crate::store::ChunkReader;

use super::super::{RestoreError, metadata::read_metadata_map};
use super::shapes;
use crate::snapshot::{Manifest, RefSet, SnapshotError};

/// Numbers above this are refused: a forged or damaged metadata map must not make a restore
/// create millions of placeholders.
const MAX_NUMBER: u64 = 1_000_000;

/// Everything to recreate, in order.
#[derive(Debug, Default)]
pub struct Plan {
    pub settings: Value,
    pub labels: Vec<Value>,
    pub milestones: Vec<Value>,
    /// By original number, 1 to the highest; gaps are placeholders.
    pub items: BTreeMap<u64, Item>,
    /// Merge requests by original number, numbered apart from issues (no placeholders: a
    /// destination cannot be made to skip a merge request number).
    pub merge_requests: BTreeMap<u64, Item>,
    /// Releases, oldest first (so that the newest is the latest there too).
    pub releases: Vec<Value>,
    /// The stored bytes of every other document (release assets) by path.
    pub files: BTreeMap<String, ChunkId>,
    /// The provider of metadata this restore cannot read (none but GitHub's, Gitea's,
    /// GitLab's and Bitbucket's): none of it is recreated.
    pub unreadable: Option<String>,
}

/// One issue to create: its text, what it carries, and the comments that follow it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    pub kind: ItemKind,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    /// The original milestone's number.
    pub milestone: Option<u64>,
    pub closed: bool,
    pub comments: Vec<String>,
    /// Where review comment `i` of `comments` was (file, line), for a destination that can
    /// put it there again (Bitbucket's inline comments); the text says it as well.
    pub places: BTreeMap<usize, (String, u64)>,
    /// A pull request's head and base branches, when the snapshot holds both (and the head
    /// was not in a fork): it can be opened as a pull request again.
    pub branches: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    #[default]
    Issue,
    Pull,
    Placeholder,
}

impl Plan {
    /// Reads the snapshot's metadata documents (none: an empty plan, git only).
    /// `refs` says which pull request heads the restored repository keeps.
    pub fn read(
        store: &ChunkReader<'_>,
        manifest: &Manifest,
        refs: &RefSet,
    ) -> Result<Plan, RestoreError> {
        let mut plan = Plan::default();
        let Some(map_id) = manifest.metadata.as_deref() else {
            return Ok(plan);
        };
        let map = read_metadata_map(store, map_id)?;
        let Some(origin) = Origin::of(&map.provider) else {
            plan.unreadable = Some(map.provider);
            return Ok(plan);
        };
        for (path, id) in &map.documents {
            let parsed = |name: &str| -> Option<u64> {
                let n = path
                    .strip_prefix(name)?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                (1..=MAX_NUMBER).contains(&n).then_some(n)
            };
            let (issue, pull) = (parsed("issues/"), parsed("pulls/"));
            let release = path.starts_with("releases/") && path.ends_with(".json");
            let wanted = matches!(
                path.as_str(),
                "settings.json" | "labels.json" | "milestones.json"
            ) || issue.is_some()
                || pull.is_some()
                || release;
            let id: ChunkId = id.parse().map_err(|e: String| damaged(e))?;
            if !wanted {
                plan.files.insert(path.clone(), id);
                continue;
            }
            let doc: Value = serde_json::from_slice(&store.get(&id)?)
                .map_err(|e| damaged(format!("{path}: {e}")))?;
            let doc = match origin {
                Origin::GitLab => from_gitlab(path, doc, issue, pull),
                Origin::Bitbucket => from_bitbucket(path, doc, issue, pull),
                Origin::GitHub => doc,
            };
            match (path.as_str(), issue, pull) {
                ("settings.json", ..) => plan.settings = doc,
                ("labels.json", ..) => plan.labels = list(doc),
                ("milestones.json", ..) => plan.milestones = list(doc),
                _ if release => plan.releases.push(doc),
                (_, Some(n), _) => {
                    plan.items.insert(n, issue_item(&doc));
                }
                (_, _, Some(n)) => plan.add_pull(n, &doc, refs, origin),
                _ => {}
            }
        }
        if origin == Origin::Bitbucket {
            // Bitbucket has no labels of its own: those its issues' fields became.
            let names = plan.items.values().flat_map(|i| i.labels.iter().cloned());
            plan.labels = shapes::bitbucket::labels(&names.collect());
        }
        plan.milestones.sort_by_key(|m| number(m, "number"));
        plan.releases.sort_by_key(|r| {
            (
                str_field(r, "created_at").unwrap_or_default(),
                number(r, "id"),
            )
        });
        if let Some(&max) = plan.items.keys().next_back() {
            for n in 1..max {
                plan.items.entry(n).or_insert_with(|| placeholder(n));
            }
        }
        Ok(plan)
    }

    /// Pull request (or GitLab merge request) `n`, with the branches it can be opened from
    /// again and where its head ref is kept.
    fn add_pull(&mut self, n: u64, doc: &Value, refs: &RefSet, origin: Origin) {
        // Bitbucket Cloud keeps no ref for a pull request's head.
        let (head, reference) = match origin {
            Origin::GitHub => (
                Some(format!("refs/pull/{n}/head")),
                format!("Pull request #{n}"),
            ),
            Origin::GitLab => (
                Some(format!("refs/merge-requests/{n}/head")),
                format!("Merge request !{n}"),
            ),
            Origin::Bitbucket => (None, format!("Bitbucket pull request #{n}")),
        };
        let kept = head
            .filter(|h| refs.refs.contains_key(h))
            .map(|h| super::pushed_name(&h));
        let mut item = pull_item(&reference, doc, kept.as_deref());
        item.branches = branches(&doc["pull_request"], refs);
        let items = if origin == Origin::GitHub {
            &mut self.items
        } else {
            &mut self.merge_requests
        };
        items.insert(n, item);
    }

    fn all(&self) -> impl Iterator<Item = &Item> {
        self.items.values().chain(self.merge_requests.values())
    }

    pub fn count(&self, kind: ItemKind) -> usize {
        self.all().filter(|i| i.kind == kind).count()
    }

    pub fn pulls_with_branches(&self) -> usize {
        self.all().filter(|i| i.branches.is_some()).count()
    }

    pub fn comments(&self) -> usize {
        self.all().map(|i| i.comments.len()).sum()
    }

    /// For a destination that numbers merge requests apart (GitLab, Bitbucket): every pull
    /// request to be opened again moves to `merge_requests`, and a closed issue that points
    /// to it keeps its number in the issues, so that the issues after it keep theirs.
    pub fn number_merge_requests_apart(&mut self, provider: &str) {
        let what = if provider == "GitLab" {
            "merge request"
        } else {
            "pull request"
        };
        for (&n, item) in self.items.iter_mut() {
            let Some((head, base)) = item.branches.clone() else {
                continue;
            };
            let pointer = Item {
                kind: ItemKind::Placeholder,
                title: format!("#{n}: {}", item.title),
                body: format!(
                    "*#{n} was a pull request from `{head}` into `{base}`; it is recreated as a {what}, which {provider} numbers apart from issues. This issue keeps the numbers of the issues after it equal to the original's.*"
                ),
                closed: true,
                ..Item::default()
            };
            self.merge_requests
                .insert(n, std::mem::replace(item, pointer));
        }
    }
}

impl Plan {
    /// For Bitbucket Cloud, which has no labels and whose API makes no milestones: an
    /// issue's labels that are Bitbucket fields (`kind`, `priority: …`) stay labels (the
    /// destination sets them as fields), every other label and the milestone are named in
    /// its text; nothing else is asked to create labels or milestones.
    pub fn fields_as_text(&mut self) {
        let titles: BTreeMap<u64, String> = self
            .milestones
            .iter()
            .filter_map(|m| Some((number(m, "number")?, str_field(m, "title")?)))
            .collect();
        for item in self
            .items
            .values_mut()
            .chain(self.merge_requests.values_mut())
        {
            // A pull request has no kind or priority: all of its labels are text.
            let (fields, rest) = match item.branches {
                Some(_) => (Vec::new(), item.labels.clone()),
                None => shapes::bitbucket::fields(&item.labels),
            };
            let milestone = item.milestone.and_then(|m| titles.get(&m));
            let mut said = Vec::new();
            if !rest.is_empty() {
                said.push(format!("labels {}", rest.join(", ")));
            }
            if let Some(title) = milestone {
                said.push(format!("milestone {title}"));
            }
            if !said.is_empty() {
                item.body
                    .push_str(&format!("\n\n*In the original: {}.*", said.join("; ")));
            }
            item.labels = fields;
            item.milestone = None;
        }
        self.labels.clear();
        self.milestones.clear();
    }
}

/// Whose documents a backup holds: GitHub's shapes (Gitea's are the same), or those mapped
/// by `shapes`. GitLab and Bitbucket number pull (merge) requests apart from issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    GitHub,
    GitLab,
    Bitbucket,
}

impl Origin {
    fn of(provider: &str) -> Option<Origin> {
        match provider {
            "github" | "gitea" => Some(Origin::GitHub),
            "gitlab" => Some(Origin::GitLab),
            "bitbucket" => Some(Origin::Bitbucket),
            _ => None,
        }
    }
}

/// A Bitbucket backup's document in the shape the rest of this file reads (it has no
/// labels, milestones or releases documents).
fn from_bitbucket(path: &str, doc: Value, issue: Option<u64>, pull: Option<u64>) -> Value {
    match (path, issue, pull) {
        ("settings.json", ..) => shapes::bitbucket::settings(&doc),
        (_, Some(_), _) => shapes::bitbucket::issue_document(&doc),
        (_, _, Some(_)) => shapes::bitbucket::pull_document(&doc),
        _ => doc,
    }
}

/// A GitLab backup's document in the shape the rest of this file reads.
fn from_gitlab(path: &str, doc: Value, issue: Option<u64>, pull: Option<u64>) -> Value {
    let each = |doc: Value, f: fn(&Value) -> Value| Value::Array(list(doc).iter().map(f).collect());
    match (path, issue, pull) {
        ("settings.json", ..) => shapes::settings(&doc),
        ("labels.json", ..) => each(doc, shapes::label),
        ("milestones.json", ..) => each(doc, shapes::milestone),
        (_, Some(_), _) => shapes::issue_document(&doc),
        (_, _, Some(_)) => shapes::merge_request_document(&doc),
        _ if path.starts_with("releases/") => shapes::release(&doc),
        _ => doc,
    }
}

fn damaged(e: String) -> RestoreError {
    RestoreError::Snapshot(SnapshotError::Damaged(e))
}

fn list(doc: Value) -> Vec<Value> {
    match doc {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

fn number(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn login(v: &Value) -> String {
    v.get("user")
        .and_then(|u| str_field(u, "login"))
        .unwrap_or_else(|| "ghost".into())
}

/// The first line of everything recreated: who wrote it and when, in the original.
pub fn attributed(v: &Value, what: &str, text: &str) -> String {
    let when = str_field(v, "created_at").unwrap_or_else(|| "an unknown time".into());
    format!("*{what} by @{} on {when}*\n\n{text}", login(v))
}

fn text(v: &Value, key: &str) -> String {
    str_field(v, key).unwrap_or_default()
}

fn names(v: &Value) -> Vec<String> {
    v.get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| str_field(l, "name"))
        .collect()
}

/// Assignees cannot be recreated (the people may not exist there): they become text.
fn assignees_line(v: &Value) -> String {
    let people: Vec<String> = v
        .get("assignees")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| str_field(a, "login"))
        .map(|l| format!("@{l}"))
        .collect();
    if people.is_empty() {
        String::new()
    } else {
        format!("\n\n*Assigned to {} in the original.*", people.join(", "))
    }
}

fn issue_item(doc: &Value) -> Item {
    let issue = &doc["issue"];
    let body = format!("{}{}", text(issue, "body"), assignees_line(issue));
    item(ItemKind::Issue, issue, &body, comment_texts(doc))
}

/// An issue or pull request object (`v`) with the text of its body and its comments.
fn item(kind: ItemKind, v: &Value, body: &str, comments: Vec<String>) -> Item {
    Item {
        kind,
        title: text(v, "title"),
        body: attributed(v, "Opened", body),
        labels: names(v),
        milestone: v.get("milestone").and_then(|m| number(m, "number")),
        closed: str_field(v, "state").as_deref() == Some("closed"),
        comments,
        places: BTreeMap::new(),
        branches: None,
    }
}

fn comment_texts(doc: &Value) -> Vec<String> {
    doc.get("comments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| attributed(c, "Comment", &text(c, "body")))
        .collect()
}

/// A pull request recreated as an issue: what it merged, from where, and its reviews and
/// review comments (with their file and line) as comments after its own.
fn pull_item(reference: &str, doc: &Value, kept_at: Option<&str>) -> Item {
    let pr = &doc["pull_request"];
    let side = |key: &str| {
        let part = &pr[key];
        let sha = text(part, "sha");
        format!(
            "`{}` ({})",
            text(part, "ref"),
            sha.get(..12).unwrap_or(&sha)
        )
    };
    let outcome = match str_field(pr, "merged_at") {
        Some(at) => format!("merged on {at}"),
        None => text(pr, "state"),
    };
    // GitLab's merge requests carry no such counts.
    let stats = match number(pr, "commits") {
        Some(commits) => format!(
            "; {commits} commits, +{} −{} in {} files",
            number(pr, "additions").unwrap_or(0),
            number(pr, "deletions").unwrap_or(0),
            number(pr, "changed_files").unwrap_or(0)
        ),
        None => String::new(),
    };
    let kept = kept_at
        .map(|r| format!(" Its head is kept at {r}."))
        .unwrap_or_default();
    let what = format!(
        "{reference} from {} into {}, {outcome}{stats}.{kept}",
        side("head"),
        side("base")
    );
    let body = format!("{what}\n\n{}{}", text(pr, "body"), assignees_line(pr));
    let mut comments = comment_texts(doc);
    for review in doc["reviews"].as_array().into_iter().flatten() {
        let said = text(review, "body");
        let state = text(review, "state");
        if said.is_empty() && state.is_empty() {
            continue;
        }
        let review = with_created(review, "submitted_at");
        comments.push(attributed(&review, &format!("Review ({state})"), &said));
    }
    let mut places = BTreeMap::new();
    for rc in doc["review_comments"].as_array().into_iter().flatten() {
        let line = number(rc, "line").or_else(|| number(rc, "original_line"));
        let place = match line {
            Some(l) => {
                places.insert(comments.len(), (text(rc, "path"), l));
                format!("`{}` line {l}", text(rc, "path"))
            }
            None => format!("`{}`", text(rc, "path")),
        };
        comments.push(attributed(
            rc,
            &format!("Review comment on {place}"),
            &text(rc, "body"),
        ));
    }
    Item {
        places,
        ..item(ItemKind::Pull, pr, &body, comments)
    }
}

/// The head and base branch names of a pull request, when both are branches of the
/// snapshot and the head is in the same repository as the base (not in a fork).
fn branches(pr: &Value, refs: &RefSet) -> Option<(String, String)> {
    let name = |side: &str| str_field(&pr[side], "ref");
    let (head, base) = (name("head")?, name("base")?);
    let repo = |side: &str| pr[side].get("repo").and_then(|r| str_field(r, "full_name"));
    if repo("head") != repo("base") {
        return None;
    }
    let held = |b: &str| refs.refs.contains_key(&format!("refs/heads/{b}"));
    (head != base && held(&head) && held(&base)).then_some((head, base))
}

/// Reviews carry their time as `submitted_at`.
fn with_created(v: &Value, key: &str) -> Value {
    let time = str_field(v, key);
    let mut v = v.clone();
    if let (Some(obj), Some(t)) = (v.as_object_mut(), time) {
        obj.insert("created_at".into(), Value::String(t));
    }
    v
}

fn placeholder(n: u64) -> Item {
    Item {
        kind: ItemKind::Placeholder,
        title: format!("Placeholder for #{n}"),
        body: format!(
            "*#{n} is not in the backup (deleted, or transferred, before it was taken); this issue keeps the numbers of the ones after it equal to the original's.*"
        ),
        closed: true,
        ..Item::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_pull_request_becomes_an_issue_that_says_what_it_was() {
        let doc = json!({
            "pull_request": {"title": "Add", "body": "Adds.", "state": "closed",
                "merged_at": "2023-01-09T00:00:00Z", "user": {"login": "bob"},
                "created_at": "2023-01-07T00:00:00Z",
                "head": {"ref": "feature", "sha": "0123456789abcdef"}, "base": {"ref": "main", "sha": "ff"},
                "labels": [{"name": "bug"}], "milestone": {"number": 1}},
            "comments": [{"user": {"login": "alice"}, "body": "Thanks!", "created_at": "2023-01-08T00:00:00Z"}],
            "reviews": [{"user": {"login": "alice"}, "body": "", "state": "APPROVED", "submitted_at": "2023-01-08T01:00:00Z"}],
            "review_comments": [{"user": {"login": "alice"}, "body": "Nit.", "path": "src/a.rs", "line": 3, "created_at": "2023-01-08T02:00:00Z"}],
        });
        let item = super::pull_item("Pull request #3", &doc, Some("refs/gitvault/pull/3/head"));
        assert!(item.closed);
        assert_eq!(item.labels, ["bug"]);
        assert_eq!(item.milestone, Some(1));
        assert!(
            item.body
                .starts_with("*Opened by @bob on 2023-01-07T00:00:00Z*")
        );
        assert!(item.body.contains("`feature` (0123456789ab) into `main`"));
        assert!(item.body.contains("kept at refs/gitvault/pull/3/head"));
        assert_eq!(item.comments.len(), 3);
        assert!(
            item.comments[1].starts_with("*Review (APPROVED) by @alice on 2023-01-08T01:00:00Z*")
        );
        assert!(item.comments[2].contains("`src/a.rs` line 3"));
        assert_eq!(item.places.get(&2), Some(&("src/a.rs".to_string(), 3)));
        assert_eq!(item.places.len(), 1);
    }

    #[test]
    fn for_bitbucket_labels_and_milestones_that_cannot_be_made_are_text() {
        let mut plan = super::Plan {
            labels: vec![json!({"name": "bug"}), json!({"name": "help"})],
            milestones: vec![json!({"number": 1, "title": "v1.0"})],
            ..super::Plan::default()
        };
        let issue = super::Item {
            body: "Text.".into(),
            labels: vec!["bug".into(), "help".into()],
            milestone: Some(1),
            ..super::Item::default()
        };
        let pull = super::Item {
            labels: vec!["bug".into()],
            branches: Some(("feature".into(), "main".into())),
            ..issue.clone()
        };
        plan.items.insert(1, issue);
        plan.merge_requests.insert(1, pull);
        plan.fields_as_text();
        assert!(plan.labels.is_empty() && plan.milestones.is_empty());
        let issue = &plan.items[&1];
        assert_eq!(issue.labels, ["bug"]);
        assert_eq!(issue.milestone, None);
        assert_eq!(
            issue.body,
            "Text.\n\n*In the original: labels help; milestone v1.0.*"
        );
        let pull = &plan.merge_requests[&1];
        assert!(pull.labels.is_empty());
        assert!(
            pull.body
                .ends_with("*In the original: labels bug; milestone v1.0.*")
        );
    }
}
