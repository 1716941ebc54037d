//! `--metrics-file` (issue 18): after every command a node_exporter textfile that a Prometheus
//! parser accepts, naming the command's outcome, each repository's newest snapshot, what the
//! run did and why anything failed; replaced atomically.

mod common;

use std::collections::HashMap;

use common::git_server::{file_url, run_fixture};
use common::{TestVault, stderr};

/// The samples of a metrics file; it must hold some.
fn parse(path: &std::path::Path) -> HashMap<String, f64> {
    let samples = common::metrics_samples(path).expect("a metrics file");
    assert!(!samples.is_empty());
    samples
}

#[test]
fn backups_write_metrics_a_parser_accepts() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let dir = tv.tmp.path().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let metrics = dir.join("gitvault.prom");
    let m = metrics.to_str().unwrap();

    let before = chrono::Utc::now().timestamp() as f64;
    let out = tv.run(&[
        "--metrics-file",
        m,
        "backup",
        &file_url(&repo),
        "--name",
        "alpha",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = parse(&metrics);
    assert_eq!(got["gitvault_command_success{command=backup}"], 1.0);
    assert_eq!(got["gitvault_command_exit_code{command=backup}"], 0.0);
    let last = got["gitvault_repository_last_snapshot_timestamp_seconds{repo=alpha}"];
    assert!(last >= before - 1.0, "{last} < {before}");
    assert!(got["gitvault_repository_bytes_added{repo=alpha}"] > 0.0);
    assert_eq!(
        got["gitvault_repository_run_status{repo=alpha,status=changed}"],
        1.0
    );
    assert_eq!(got["gitvault_run_failures{reason=git}"], 0.0);
    assert!(got["gitvault_target_packs{target=local}"] >= 1.0);
    assert_eq!(got["gitvault_target_missing_packs{target=local}"], 0.0);

    // A failing run: the command says so, the reason is counted, and alpha's last snapshot is
    // still the one above (its age grows, the timestamp does not move).
    let gone = tv.tmp.path().join("gone.git");
    let out = tv.run(&[
        "--metrics-file",
        m,
        "backup",
        &file_url(&gone),
        "--name",
        "gone",
    ]);
    assert!(!out.status.success());
    let got = parse(&metrics);
    assert_eq!(got["gitvault_command_success{command=backup}"], 0.0);
    assert_eq!(got["gitvault_command_exit_code{command=backup}"], 1.0);
    assert_eq!(got["gitvault_run_failures{reason=git}"], 1.0);
    assert_eq!(
        got["gitvault_repository_run_status{repo=gone,status=failed}"],
        1.0
    );
    assert_eq!(
        got["gitvault_repository_last_snapshot_timestamp_seconds{repo=alpha}"],
        last
    );
    assert!(!got.contains_key("gitvault_repository_last_snapshot_timestamp_seconds{repo=gone}"));

    // Other commands write theirs too, and nothing but the file is left in the directory.
    let out = tv.run(&["--metrics-file", m, "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = parse(&metrics);
    assert_eq!(got["gitvault_command_success{command=verify}"], 1.0);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("gitvault.prom")]);
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_an_error_not_a_crash() {
    let tv = TestVault::new();
    let out = tv.run(&[
        "--metrics-file",
        "/nonexistent/dir/gitvault.prom",
        "snapshots",
    ]);
    assert!(out.status.success(), "the command itself succeeded");
    assert!(stderr(&out).contains("writing metrics"), "{}", stderr(&out));
}
