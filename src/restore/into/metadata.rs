//! The metadata side of a restore into an account: labels, milestones, then issues in
//! number order, each with its comments and then its state, then merge requests the same
//! way in their own sequence (GitLab numbers them apart from issues); and what to ask the
//! destination when the last write's answer never came.

use std::collections::BTreeMap;

use crate::provider::ProviderError;
use crate::provider::create::{Flavor, IssueSpec};
use crate::provider::str_field;

use super::super::RestoreError;
use super::Run;
use super::ledger::{IssueDone, Pending};
use super::plan::{Item, Plan};
use super::shapes;

/// Which number sequence an item is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Space {
    Issues,
    MergeRequests,
}

impl Space {
    fn create(self, n: u64) -> Pending {
        match self {
            Space::Issues => Pending::Issue(n),
            Space::MergeRequests => Pending::MergeRequest(n),
        }
    }

    fn comment(self, n: u64) -> Pending {
        match self {
            Space::Issues => Pending::Comment(n),
            Space::MergeRequests => Pending::MergeRequestComment(n),
        }
    }

    fn close(self, n: u64) -> Pending {
        match self {
            Space::Issues => Pending::Close(n),
            Space::MergeRequests => Pending::MergeRequestClose(n),
        }
    }

    fn items(self, plan: &Plan) -> &BTreeMap<u64, Item> {
        match self {
            Space::Issues => &plan.items,
            Space::MergeRequests => &plan.merge_requests,
        }
    }
}

impl Run<'_> {
    fn made(&mut self, space: Space) -> &mut BTreeMap<u64, IssueDone> {
        match space {
            Space::Issues => &mut self.ledger.issues,
            Space::MergeRequests => &mut self.ledger.merge_requests,
        }
    }

    /// Asks the destination what became of a write whose answer never came.
    pub(super) fn resolve_pending(&mut self, plan: &Plan) -> Result<(), RestoreError> {
        let Some(pending) = self.ledger.pending.clone() else {
            return Ok(());
        };
        tracing::info!(
            ?pending,
            "asking the destination what became of the last write"
        );
        let repo = self.repo_name();
        let found: Result<(), ProviderError> = (|| {
            match &pending {
                Pending::Repo => {
                    if let Some(r) = self.dest.find_repo(&self.name)? {
                        self.ledger.repo = Some(r);
                        self.ledger.created_repo = true;
                    }
                }
                Pending::Label(name) => {
                    if let Some((_, id)) = self
                        .dest
                        .labels(&repo)?
                        .into_iter()
                        .find(|(n, _)| n == name)
                    {
                        self.ledger.labels.insert(name.clone(), id);
                    }
                }
                Pending::Milestone(orig) => {
                    let title = plan
                        .milestones
                        .iter()
                        .find(|m| m.get("number").and_then(|n| n.as_u64()) == Some(*orig))
                        .and_then(|m| str_field(m, "title"));
                    let there = self.dest.milestones(&repo)?;
                    if let Some((_, id)) =
                        there.into_iter().find(|(t, _)| Some(t) == title.as_ref())
                    {
                        // GitLab closes a milestone by a second write, which may not
                        // have been sent.
                        if let Some(m) = plan.milestones.iter().find(|m| m["number"] == *orig) {
                            self.dest.finish_milestone(&repo, id, m)?;
                        }
                        self.ledger.milestones.insert(*orig, id);
                    }
                }
                Pending::Issue(n) => {
                    let title = plan.items.get(n).map(|i| i.title.clone());
                    if let Some(issue) = self.dest.issue(&repo, *n, false)?
                        && str_field(&issue, "title") == title
                    {
                        // Both providers show a pull request as an issue with a
                        // `pull_request` object; its labels are set again (idempotent).
                        let pull = issue.get("pull_request").is_some_and(|p| !p.is_null());
                        let done = IssueDone {
                            number: *n,
                            pull,
                            labelled: !pull,
                            ..IssueDone::default()
                        };
                        self.ledger.issues.insert(*n, done);
                        self.refresh_issue(&repo, Space::Issues, *n)?;
                    }
                }
                Pending::MergeRequest(n) => self.find_merge_request(plan, &repo, *n)?,
                Pending::Comment(n) | Pending::Close(n) => {
                    self.refresh_issue(&repo, Space::Issues, *n)?
                }
                Pending::MergeRequestComment(n) | Pending::MergeRequestClose(n) => {
                    self.refresh_issue(&repo, Space::MergeRequests, *n)?
                }
                Pending::Release(tag) | Pending::Asset(tag, _) => {
                    if let Some(made) = self.dest.release_by_tag(&repo, tag)? {
                        self.ledger.releases.insert(tag.clone(), Some(made));
                    }
                }
            }
            Ok(())
        })();
        found.map_err(|e| self.stopped(e))?;
        self.done()
    }

    /// A merge request's number is not known before it is made: it is found by its title
    /// among those the ledger does not hold yet.
    fn find_merge_request(&mut self, plan: &Plan, repo: &str, n: u64) -> Result<(), ProviderError> {
        let Some(item) = plan.merge_requests.get(&n) else {
            return Ok(());
        };
        let taken: Vec<(u64, bool)> = (self.ledger.issues.values())
            .chain(self.ledger.merge_requests.values())
            .map(|d| (d.number, d.pull))
            .collect();
        if let Some((number, pull)) = self.dest.find_item(repo, &item.title, &taken)? {
            let done = IssueDone {
                number,
                pull,
                labelled: !pull,
                ..IssueDone::default()
            };
            self.ledger.merge_requests.insert(n, done);
            self.refresh_issue(repo, Space::MergeRequests, n)?;
        }
        Ok(())
    }

    /// Reads the comment count and state of an item this restore created.
    fn refresh_issue(&mut self, repo: &str, space: Space, orig: u64) -> Result<(), ProviderError> {
        let Some(mut done) = self.made(space).get(&orig).copied() else {
            return Ok(());
        };
        done.comments = self.dest.comment_count(repo, done.number, done.pull)?;
        if let Some(issue) = self.dest.issue(repo, done.number, done.pull)? {
            done.closed = str_field(&issue, "state").as_deref() == Some("closed");
        }
        self.made(space).insert(orig, done);
        Ok(())
    }

    pub(super) fn labels(&mut self, plan: &Plan) -> Result<(), RestoreError> {
        for label in &plan.labels {
            let Some(name) = str_field(label, "name") else {
                continue;
            };
            if self.ledger.labels.contains_key(&name) {
                continue;
            }
            let (id, made) = self.create(Pending::Label(name.clone()), |d, repo| {
                d.create_label(repo, label)
            })?;
            self.ledger.labels.insert(name, id);
            self.report.created.labels += usize::from(made);
            self.done()?;
        }
        Ok(())
    }

    pub(super) fn milestones(&mut self, plan: &Plan) -> Result<(), RestoreError> {
        for m in &plan.milestones {
            let Some(orig) = m.get("number").and_then(|n| n.as_u64()) else {
                continue;
            };
            if self.ledger.milestones.contains_key(&orig) {
                continue;
            }
            let id = self.create(Pending::Milestone(orig), |d, repo| {
                d.create_milestone(repo, m)
            })?;
            self.ledger.milestones.insert(orig, id);
            self.report.created.milestones += 1;
            self.done()?;
        }
        Ok(())
    }

    /// Issues in number order, then merge requests in theirs; each with its comments and
    /// then its state.
    pub(super) fn issues(&mut self, plan: &Plan) -> Result<(), RestoreError> {
        for space in [Space::Issues, Space::MergeRequests] {
            for (&n, item) in space.items(plan) {
                self.item(space, n, item)?;
            }
        }
        Ok(())
    }

    fn item(&mut self, space: Space, n: u64, item: &Item) -> Result<(), RestoreError> {
        let mut done = match self.made(space).get(&n) {
            Some(d) => *d,
            None => self.create_item(space, n, item)?,
        };
        if !done.labelled {
            // Idempotent (it sets, not adds): no pending mark is needed.
            let spec = self.spec(item);
            let repo = self.repo_name();
            self.dest
                .label_pull(&repo, done.number, &spec)
                .map_err(|e| self.stopped(e))?;
            done.labelled = true;
            self.made(space).insert(n, done);
            self.save()?;
        }
        while done.comments < item.comments.len() {
            let body = &item.comments[done.comments];
            let place =
                (item.places.get(&done.comments)).map(|(path, line)| (path.as_str(), *line));
            self.create(space.comment(n), |d, repo| {
                d.create_comment(repo, done.number, done.pull, body, place)
            })?;
            done.comments += 1;
            self.made(space).insert(n, done);
            self.report.created.comments += 1;
            self.done()?;
        }
        if item.closed && !done.closed {
            self.create(space.close(n), |d, repo| {
                d.close(repo, done.number, done.pull)
            })?;
            done.closed = true;
            self.made(space).insert(n, done);
            self.report.created.closed += 1;
            self.done()?;
        }
        Ok(())
    }

    /// What the destination is asked to create for `item`: labels and milestone as it names
    /// them (those it has; a label the backup lacked is dropped).
    fn spec(&self, item: &Item) -> IssueSpec {
        // Bitbucket's are fields, not labels: they are not in the ledger.
        let (kind, priority) = match self.dest.flavor() {
            Flavor::Bitbucket => shapes::bitbucket::kind_and_priority(&item.labels),
            _ => (None, None),
        };
        let labels: Vec<String> = item
            .labels
            .iter()
            .filter(|l| self.ledger.labels.contains_key(*l))
            .cloned()
            .collect();
        IssueSpec {
            title: item.title.clone(),
            body: item.body.clone(),
            labels: labels
                .iter()
                .filter_map(|l| self.ledger.labels.get(l).copied())
                .collect(),
            label_names: labels,
            milestone: item
                .milestone
                .and_then(|m| self.ledger.milestones.get(&m).copied()),
            kind,
            priority,
        }
    }

    /// Creates item `n`: a pull request when its branches were restored and the destination
    /// takes it, else an issue.
    fn create_item(
        &mut self,
        space: Space,
        n: u64,
        item: &Item,
    ) -> Result<IssueDone, RestoreError> {
        let spec = self.spec(item);
        let mut pull = None;
        if let Some((head, base)) = &item.branches {
            pull = self.create(space.create(n), |d, repo| {
                d.create_pull(repo, &spec, head, base)
            })?;
        }
        let done = match pull {
            Some(number) => {
                self.report.created.pull_requests += 1;
                IssueDone {
                    number,
                    pull: true,
                    ..IssueDone::default()
                }
            }
            None => {
                let number = self.create(space.create(n), |d, repo| d.create_issue(repo, &spec))?;
                self.report.created.issues += 1;
                IssueDone {
                    number,
                    labelled: true,
                    ..IssueDone::default()
                }
            }
        };
        if done.number != n && space == Space::Issues {
            tracing::warn!(
                original = n,
                created = done.number,
                "the destination gave the issue another number"
            );
        }
        self.made(space).insert(n, done);
        self.done()?;
        Ok(done)
    }
}
