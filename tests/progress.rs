//! Progress on a terminal (issue 18): a backup run under a pseudo-terminal (util-linux
//! `script`) shows each repository's phases as it goes; the same command without a terminal,
//! or with --json, prints no progress at all.

mod common;

use std::process::Command;

use common::git_server::{file_url, run_fixture};
use common::{TestVault, ok, stderr};

/// Runs `gitvault args…` under a pseudo-terminal; returns everything it drew.
fn on_a_terminal(tv: &TestVault, args: &[&str]) -> String {
    let mut line = format!(
        "'{}' --vault '{}'",
        env!("CARGO_BIN_EXE_gitvault"),
        tv.dir.display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let out = Command::new("script")
        .args(["-q", "-f", "-e", "-c", &line, "/dev/null"])
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .output()
        .expect("script (util-linux) runs a command under a pseudo-terminal");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_sees_phases_and_a_pipe_sees_none() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let url = file_url(&repo);

    let drawn = on_a_terminal(&tv, &["backup", &url, "--name", "alpha"]);
    let phases: Vec<&str> = ["fetch", "walk", "store"]
        .into_iter()
        .filter(|p| drawn.contains(&format!("alpha {p}")))
        .collect();
    assert!(!phases.is_empty(), "no progress drawn: {drawn:?}");
    // The result line is still printed, and the bars were cleared before it.
    assert!(drawn.contains("changed"), "{drawn:?}");

    // Without a terminal: the report only, no phase and no control sequence.
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);
    let out = tv.run(&["backup", &url, "--name", "alpha"]);
    let all = format!("{}{}", common::stdout(&out), stderr(&out));
    ok(&out);
    for p in ["alpha fetch", "alpha walk", "alpha store", "\u{1b}["] {
        assert!(!all.contains(p), "{p:?} without a terminal: {all:?}");
    }

    // --json on a terminal: one JSON document, no bars.
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);
    let drawn = on_a_terminal(&tv, &["--json", "backup", &url, "--name", "alpha"]);
    assert!(!drawn.contains("alpha store"), "{drawn:?}");
    let start = drawn.find('{').unwrap();
    let doc: serde_json::Value = serde_json::from_str(drawn[start..].trim()).unwrap();
    assert_eq!(doc["ok"], true);
}

/// verify --full, sync, prune and restore show what they are doing too.
#[test]
fn checks_and_maintenance_show_their_phases() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "alpha"]));

    let drawn = on_a_terminal(&tv, &["verify", "--full"]);
    assert!(drawn.contains("target local verify --full"), "{drawn:?}");
    let second = tv.tmp.path().join("second");
    ok(&tv.run(&["target", "add", "second", &file_url(&second)]));
    let drawn = on_a_terminal(&tv, &["sync"]);
    // The first bar of a command is drawn at once; later ones may fall within indicatif's
    // redraw interval on a busy machine.
    assert!(
        drawn.contains("target local sync") || drawn.contains("target second sync"),
        "{drawn:?}"
    );
    let drawn = on_a_terminal(&tv, &["prune"]);
    assert!(drawn.contains("prune mark"), "{drawn:?}");
    let to = tv.tmp.path().join("restored.git");
    let drawn = on_a_terminal(&tv, &["restore", "alpha", "--to", to.to_str().unwrap()]);
    assert!(drawn.contains("alpha walk"), "{drawn:?}");
    // None of it without a terminal.
    let out = tv.run(&["verify", "--full"]);
    ok(&out);
    assert!(!stderr(&out).contains("verify --full"), "{}", stderr(&out));
}
