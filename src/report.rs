//! `gitvault report` (issue 17): the run reports of a sharded backup (one per shard, each in
//! its vault's DIR/reports/) merged into one account-wide summary. Reports are read as plain
//! JSON, as older versions wrote them, and a report that does not parse is named, not skipped
//! in silence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{0}: no backup report in this vault's reports/ directory")]
    NoReport(String),
}

/// One account-wide summary of several runs.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Every run was ok and no repository appears in two of them.
    pub ok: bool,
    pub runs: Vec<String>,
    /// Repository lines by status (`changed`, `unchanged`, `failed`…).
    pub by_status: BTreeMap<String, u64>,
    /// Failed or partial lines by reason.
    pub by_reason: BTreeMap<String, u64>,
    pub sources: BTreeMap<String, SourceSummary>,
    /// `repo: status (reason): error` of every line that did not succeed.
    pub problems: Vec<String>,
    /// Repositories backed up by more than one run: the shards overlap (or a report was given
    /// twice).
    pub repeated: Vec<String>,
    pub bytes_added: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct SourceSummary {
    /// The largest listing any run saw (every shard lists the whole source).
    pub listed: u64,
    /// Repositories the runs selected, summed over the shards.
    pub selected: u64,
    pub errors: Vec<String>,
}

/// A report file, or a vault directory's newest backup report.
fn report_path(path: &Path) -> Result<PathBuf, ReportError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let vault = crate::vault::Vault::open(path).map_err(|e| ReportError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    vault
        .reports("backup")
        .into_iter()
        .next()
        .ok_or_else(|| ReportError::NoReport(path.display().to_string()))
}

fn read(path: &Path) -> Result<serde_json::Value, ReportError> {
    let unreadable = |reason: String| ReportError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    // A run report of 100,000 repositories is tens of MiB; anything far larger is not one.
    if meta.len() > 1 << 30 {
        return Err(unreadable("larger than 1 GiB: not a run report".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if !doc.is_object() || doc.get("ok").is_none() {
        return Err(unreadable("not a gitvault backup report".into()));
    }
    Ok(doc)
}

/// Merges the reports at `paths` (report files or vault directories).
pub fn merge(paths: &[PathBuf]) -> Result<Summary, ReportError> {
    let mut summary = Summary {
        ok: true,
        ..Summary::default()
    };
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for path in paths {
        let file = report_path(path)?;
        let doc = read(&file)?;
        summary.runs.push(file.display().to_string());
        summary.ok &= doc["ok"].as_bool().unwrap_or(false);
        for line in lines(&doc) {
            add_line(&mut summary, &mut seen, line);
        }
        for source in doc["sources"].as_array().into_iter().flatten() {
            let name = source["source"].as_str().unwrap_or("?").to_string();
            let entry = summary.sources.entry(name).or_default();
            entry.listed = entry.listed.max(source["listed"].as_u64().unwrap_or(0));
            entry.selected += source["selected"].as_u64().unwrap_or(0);
            if let Some(e) = source["error"].as_str() {
                entry.errors.push(e.to_string());
            }
        }
    }
    summary.repeated = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(r, _)| r)
        .collect();
    summary.ok &= summary.repeated.is_empty();
    Ok(summary)
}

fn lines(doc: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    doc["repositories"].as_array().into_iter().flatten().chain(
        doc["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["repositories"].as_array().into_iter().flatten()),
    )
}

fn add_line(summary: &mut Summary, seen: &mut BTreeMap<String, u32>, line: &serde_json::Value) {
    let repo = line["repo"].as_str().unwrap_or("?").to_string();
    let status = line["status"].as_str().unwrap_or("?").to_string();
    *summary.by_status.entry(status.clone()).or_default() += 1;
    summary.bytes_added += line["bytes_added"].as_u64().unwrap_or(0);
    if matches!(status.as_str(), "changed" | "unchanged" | "partial") {
        *seen.entry(repo.clone()).or_default() += 1;
    }
    if !matches!(status.as_str(), "changed" | "unchanged") {
        let reason = line["reason"].as_str().unwrap_or("-").to_string();
        if status != "skipped" || reason == "not-attempted" {
            *summary.by_reason.entry(reason.clone()).or_default() += 1;
        }
        summary.problems.push(format!(
            "{repo}: {status} ({reason}): {}",
            line["error"].as_str().unwrap_or("-")
        ));
    }
}
