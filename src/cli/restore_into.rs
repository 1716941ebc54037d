//! `restore REPO --to-source NAME`: the report of a restore into an account (or its plan with
//! `--dry-run`), as a table or JSON.

use anyhow::{Result, bail};

use gitvault::Vault;
use gitvault::crypto::VaultKeys;
use gitvault::index::SnapshotRow;
use gitvault::restore::into::{IntoOptions, IntoReport, restore_into};

use super::repo::RestoreArgs;
use super::{Ctx, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL};

pub fn run(
    ctx: &Ctx,
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    args: &RestoreArgs,
) -> Result<i32> {
    let Some(name) = &args.to_source else {
        bail!("give --to PATH or --to-source SOURCE");
    };
    let Some(source) = vault.config().sources.iter().find(|s| &s.name == name) else {
        bail!("no source named `{name}`; `gitvault source list` shows them");
    };
    let opts = IntoOptions {
        source: source.clone(),
        owner: args.owner.clone(),
        name: args.name.clone(),
        dry_run: args.dry_run,
        into_existing: args.into_existing,
        public: args.public,
    };
    let report = restore_into(vault, keys, row, &opts)?;
    ctx.out.print(&report, || text(&report));
    // A dry run that finds the name taken says so in its exit code, for scripts; so does a
    // restore that left something behind (a wiki not pushed, releases refused).
    let refused = report.dry_run && report.exists && !args.into_existing;
    let partial = !report.dry_run
        && (report.wiki.as_deref().is_some_and(|w| w != "pushed")
            || !report.skipped_releases.is_empty()
            || report.metadata_skipped.is_some());
    Ok(if refused {
        EXIT_FAILED
    } else if partial {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}

fn text(r: &IntoReport) -> String {
    let p = &r.plan;
    let mut t = format!(
        "{} {} as of snapshot {} ({}) into {} (source {}){}\n",
        if r.dry_run {
            "would restore"
        } else {
            "restored"
        },
        r.repo,
        r.snapshot,
        r.time.format("%Y-%m-%d %H:%M:%S UTC"),
        r.destination,
        r.source,
        if r.resumed {
            ", continuing an earlier run"
        } else {
            ""
        },
    );
    t.push_str(&format!(
        "  refs: {} branches, {} tags, {} under refs/gitvault/, {} other\n",
        p.branches, p.tags, p.moved_refs, p.other_refs
    ));
    t.push_str(&format!(
        "  metadata: {} labels, {} milestones, {} issues, {} pull requests ({} more as issues), {} placeholders, {} comments, {} releases with {} assets\n",
        p.labels,
        p.milestones,
        p.issues,
        p.pull_requests,
        p.pull_requests_as_issues,
        p.placeholders,
        p.comments,
        p.releases,
        p.assets
    ));
    if let Some(why) = &r.metadata_skipped {
        t.push_str(&format!("  note: {why}\n"));
    }
    if r.exists {
        t.push_str(&format!(
            "  conflict: {} exists already{}\n",
            r.destination,
            if r.dry_run {
                " (refused unless --into-existing)"
            } else {
                ""
            }
        ));
    }
    if !r.dry_run {
        let c = &r.created;
        t.push_str(&format!(
            "  created: {}{} labels, {} milestones, {} issues, {} pull requests, {} comments, {} closed, {} releases, {} assets{}\n",
            if c.repository { "the repository, " } else { "" },
            c.labels,
            c.milestones,
            c.issues,
            c.pull_requests,
            c.comments,
            c.closed,
            c.releases,
            c.assets,
            r.lfs_uploaded
                .map(|n| format!(", {n} LFS objects uploaded"))
                .unwrap_or_default()
        ));
        if let Some(wiki) = &r.wiki {
            t.push_str(&format!("  wiki: {wiki}\n"));
        }
        if !r.skipped_releases.is_empty() {
            t.push_str(&format!(
                "  releases the destination refused (their tag is missing): {}\n",
                r.skipped_releases.join(", ")
            ));
        }
        if !r.numbers_match {
            t.push_str("  note: some issues got other numbers than in the original\n");
        }
        if !r.merge_request_numbers_match {
            t.push_str(
                "  note: merge requests got other numbers than in the original (GitLab numbers them apart from issues)\n",
            );
        }
    }
    t
}
