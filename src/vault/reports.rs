//! Run reports kept in DIR/reports/ (`backup-<time>.json`, `verify-<time>.json`): what
//! `gitvault status`, the `--allow-empty` guard and audits read back.

use std::path::PathBuf;

use serde::Serialize;

use super::Vault;

/// How many reports of one kind are kept.
const REPORTS_KEPT: usize = 100;

impl Vault {
    pub fn reports_dir(&self) -> PathBuf {
        self.dir.join("reports")
    }

    /// Keeps `report` as `<kind>-<UTC time>.json` and trims that kind to the newest 100.
    pub fn save_report(&self, kind: &str, report: &impl Serialize) -> std::io::Result<()> {
        let dir = self.reports_dir();
        std::fs::create_dir_all(&dir)?;
        let name = format!(
            "{kind}-{}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(name), bytes)?;
        let old = self.reports(kind);
        for path in old.into_iter().skip(REPORTS_KEPT) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// The reports of `kind`, newest first.
    pub fn reports(&self, kind: &str) -> Vec<PathBuf> {
        let prefix = format!("{kind}-");
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.reports_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
            })
            .collect();
        found.sort();
        found.reverse();
        found
    }
}
