//! Progress on a terminal (issue 18): a backup run under a pseudo-terminal (util-linux
//! `script`) shows each repository's phases as it goes; the same command without a terminal,
//! or with --json, prints no progress at all.

mod common;

use common::git_server::{file_url, run_fixture};
use common::{TestVault, ok, stderr};

fn on_a_terminal(tv: &TestVault, args: &[&str]) -> String {
    common::on_a_terminal(tv, args, &[], None)
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
    assert!(
        drawn.contains("target local verify --full (1 packs)"),
        "{drawn:?}"
    );
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
    // Held once the pack is written, until its bytes show beside the objects' count.
    let to = tv.tmp.path().join("restored-again.git");
    let pack_bytes = |drawn: &str| common::shows_nonzero(drawn, "alpha pack written ");
    let drawn = common::on_a_terminal(
        &tv,
        &["restore", "alpha", "--to", to.to_str().unwrap()],
        &[],
        Some(("restore-pack-written", &pack_bytes)),
    );
    assert!(pack_bytes(&drawn), "{drawn:?}");
    // None of it without a terminal.
    let out = tv.run(&["verify", "--full"]);
    ok(&out);
    assert!(!stderr(&out).contains("verify --full"), "{}", stderr(&out));
}

/// A run of several repositories shows a total line, and each target a line with the bytes
/// uploaded to it.
#[test]
fn a_run_shows_a_total_and_each_targets_uploads() {
    let tv = TestVault::new();
    let second = tv.tmp.path().join("second");
    ok(&tv.run(&["target", "add", "second", &file_url(&second)]));
    let alpha = tv.tmp.path().join("alpha.git");
    let beta = tv.tmp.path().join("beta.git");
    run_fixture("rich.sh", &[alpha.to_str().unwrap()]);
    run_fixture("rich.sh", &[beta.to_str().unwrap()]);
    let (a, b) = (file_url(&alpha), file_url(&beta));
    // Held once the first pack is on both targets, until both lines show its bytes.
    let uploaded = |drawn: &str| {
        common::shows_nonzero(drawn, "target local upload ")
            && common::shows_nonzero(drawn, "target second upload ")
    };
    let drawn = common::on_a_terminal(
        &tv,
        &["backup", &a, &b],
        &[],
        Some(("pack-uploaded", &uploaded)),
    );
    assert!(drawn.contains("total ["), "{drawn:?}");
    assert!(drawn.contains("/2 repositories"), "{drawn:?}");
    // Without a terminal: none of it.
    run_fixture("evolve.sh", &[alpha.to_str().unwrap(), "add-commit"]);
    let out = tv.run(&["backup", &a, &b]);
    ok(&out);
    let all = format!("{}{}", common::stdout(&out), stderr(&out));
    for p in ["target local upload", "total [", "\u{1b}["] {
        assert!(!all.contains(p), "{p:?} without a terminal: {all}");
    }
}

/// Log lines are coloured on a terminal, and not when NO_COLOR is set (no-color.org); either
/// way each starts on a line of its own, above the bars, not inside one.
#[test]
fn log_lines_are_coloured_unless_no_color_and_never_inside_a_bar() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let url = file_url(&repo);
    // An SGR sequence (`ESC [ 34 m`); the bars' own cursor moves (`ESC [ 2 K`) are not colour.
    let coloured = |drawn: &str| {
        drawn.split('\u{1b}').skip(1).any(|seq| {
            seq.strip_prefix('[').is_some_and(|rest| {
                let params = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ';');
                params.starts_with('m') && params.len() < rest.len()
            })
        })
    };
    // Each log record (`2026-…Z DEBUG …`) starts where a line starts (after a newline, or
    // after the bars were cleared back to the line's start), not after a bar's text.
    let records_start_lines = |drawn: &str| {
        let text = without_escapes(drawn);
        let starts: Vec<usize> = text
            .match_indices(" DEBUG ")
            // The timestamp's date: ten characters before its `T`.
            .filter_map(|(at, _)| text[..at].rfind('T').and_then(|t| t.checked_sub(10)))
            .collect();
        !starts.is_empty()
            && starts
                .iter()
                .all(|&at| at == 0 || matches!(text.as_bytes()[at - 1], b'\n' | b'\r'))
    };
    let drawn = common::on_a_terminal(&tv, &["-vv", "backup", &url], &[], None);
    assert!(drawn.contains("DEBUG") && coloured(&drawn), "{drawn:?}");
    assert!(records_start_lines(&drawn), "{drawn:?}");
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);
    let drawn = common::on_a_terminal(&tv, &["-vv", "backup", &url], &[("NO_COLOR", "1")], None);
    assert!(drawn.contains("DEBUG") && !coloured(&drawn), "{drawn:?}");
    assert!(records_start_lines(&drawn), "{drawn:?}");
}

/// `text` without its terminal control sequences (`ESC [ params letter`).
fn without_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The fetch counts the objects of the pack it receives, out of the total the pack's header
/// gives (gix's own counters).
#[test]
fn the_fetch_counts_received_objects() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    // `alpha fetch [====] N/N objects`, N > 0: every object of the pack counted.
    let all_counted = |drawn: &str| {
        drawn.split("alpha fetch [").skip(1).any(|rest| {
            let counts = rest
                .split_once("] ")
                .and_then(|(_, r)| r.split_once(" objects"))
                .and_then(|(c, _)| c.split_once('/'))
                .map(|(n, of)| (n.parse::<u64>(), of.parse::<u64>()));
            matches!(counts, Some((Ok(n), Ok(of))) if n == of && of > 0)
        })
    };
    let drawn = common::on_a_terminal(
        &tv,
        &["backup", &file_url(&repo), "--name", "alpha"],
        &[],
        Some(("fetch-received", &all_counted)),
    );
    assert!(drawn.contains("changed"), "{drawn:?}");
}
