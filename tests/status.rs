//! `gitvault status` (issue 18): the one screen an operator checks, and its exit status for
//! cron and monitoring.

mod common;

use common::git_server::{file_url, run_fixture};
use common::{TestVault, ok, stderr};

fn status(tv: &TestVault, args: &[&str]) -> (bool, serde_json::Value) {
    let mut all = vec!["--json", "status"];
    all.extend_from_slice(args);
    let out = tv.run(&all);
    let doc =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.success(), doc)
}

fn repo<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repo"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc}"))
}

#[test]
fn status_names_stale_failed_and_lagging_and_exits_accordingly() {
    let tv = TestVault::new();
    let alpha = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[alpha.to_str().unwrap()]);
    let three_days_ago = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    ok(&tv
        .command(&["backup", &file_url(&alpha), "--name", "alpha"])
        .env("GITVAULT_NOW", &three_days_ago)
        .output()
        .unwrap());

    let (good, doc) = status(&tv, &["--max-age", "4d"]);
    assert!(good, "{doc}");
    assert_eq!(repo(&doc, "alpha")["stale"], false);
    assert!(repo(&doc, "alpha")["age_seconds"].as_i64().unwrap() >= 3 * 86400 - 60);
    assert_eq!(doc["last_backup"]["ok"], true);
    assert!(doc["last_verify"].is_null());

    let (good, doc) = status(&tv, &["--max-age", "2d"]);
    assert!(!good, "three days is older than two");
    assert_eq!(repo(&doc, "alpha")["stale"], true);

    // The last verify is shown.
    ok(&tv.run(&["verify"]));
    let (_, doc) = status(&tv, &[]);
    assert_eq!(doc["last_verify"]["ok"], true, "{doc}");

    // A target that lacks packs until `sync`.
    let second = tv.tmp.path().join("second");
    ok(&tv.run(&["target", "add", "second", &file_url(&second)]));
    let (good, doc) = status(&tv, &[]);
    assert!(!good);
    let lag = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "second")
        .unwrap()["packs_missing"]
        .as_u64()
        .unwrap();
    assert!(lag > 0, "{doc}");
    ok(&tv.run(&["sync"]));
    let (good, doc) = status(&tv, &[]);
    assert!(good, "{doc}");

    // A repository that fails before it ever had a snapshot is listed with the reason.
    let beta = tv.tmp.path().join("beta.git");
    let out = tv.run(&["backup", &file_url(&beta), "--name", "beta"]);
    assert!(!out.status.success());
    let (good, doc) = status(&tv, &[]);
    assert!(!good);
    let beta_line = repo(&doc, "beta");
    assert!(beta_line["last_snapshot"].is_null(), "{doc}");
    assert_eq!(beta_line["last_problem"]["status"], "failed");
    assert_eq!(beta_line["last_problem"]["reason"], "git");
    assert_eq!(doc["last_backup"]["ok"], false);
    assert!(repo(&doc, "alpha")["last_problem"].is_null());

    // Once it is backed up, the problem is gone.
    run_fixture("rich.sh", &[beta.to_str().unwrap()]);
    ok(&tv.run(&["backup", &file_url(&beta), "--name", "beta"]));
    let (good, doc) = status(&tv, &[]);
    assert!(good, "{doc}");
    assert!(repo(&doc, "beta")["last_problem"].is_null());

    // The human screen says the same.
    let out = tv.run(&["status"]);
    assert!(out.status.success());
    let text = common::stdout(&out);
    assert!(
        text.contains("alpha") && text.contains("last verify"),
        "{text}"
    );
}
