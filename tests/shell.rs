//! Shell conventions (issue 18): completion scripts that the shells accept, man pages that
//! `man` renders, and restic's verb names as aliases.

use std::process::{Command, Output};

fn gitvault(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .args(args)
        .env_remove("GITVAULT_VAULT")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `script` to a file and has `shell` parse it without running it.
fn parses(shell: &str, flag: &str, script: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(shell)
        .arg(flag)
        .arg(&path)
        .output()
        .map_err(|e| format!("{shell} could not start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn completion_scripts_parse_in_their_shells() {
    for (shell, parser, flag) in [
        ("bash", Some("bash"), "-n"),
        ("zsh", Some("zsh"), "-n"),
        ("fish", Some("fish"), "--no-execute"),
        ("powershell", None, ""),
        ("elvish", None, ""),
    ] {
        let out = gitvault(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {:?}", out);
        let script = text(&out);
        // Every command must be offered, including the ones added last.
        for command in ["backup", "restore", "verify", "prune", "completions", "man"] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
        if let Some(parser) = parser {
            parses(parser, flag, &script)
                .unwrap_or_else(|e| panic!("{shell} rejects its completion script: {e}"));
        }
    }
    // The checker itself rejects a broken script, so the loop above can fail.
    assert!(parses("bash", "-n", "if then fi (").is_err());
}

#[test]
fn unknown_shells_are_refused() {
    let out = gitvault(&["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn man_pages_render_one_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = gitvault(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "gitvault.1",
        "gitvault-backup.1",
        "gitvault-restore.1",
        "gitvault-verify.1",
        "gitvault-target-add.1",
        "gitvault-source-add.1",
    ] {
        assert!(pages.contains(&page.to_string()), "{page} not in {pages:?}");
    }
    for page in &pages {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(dir.path().join(page))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .expect("man (man-db) is installed by scripts/install-test-deps.sh");
        assert!(rendered.status.success(), "{page}: {rendered:?}");
        let shown = text(&rendered);
        assert!(
            shown.contains("NAME") && shown.contains("SYNOPSIS"),
            "{page}: {shown}"
        );
    }
    let backup = std::fs::read_to_string(dir.path().join("gitvault-backup.1")).unwrap();
    assert!(backup.contains("allow\\-empty"), "{backup}");

    // Without --dir the main page goes to stdout.
    let out = gitvault(&["man"]);
    assert!(out.status.success());
    assert!(text(&out).starts_with(".ie") || text(&out).contains(".TH gitvault"));
}

#[test]
fn restic_verbs_are_aliases() {
    for (alias, name) in [("check", "verify"), ("copy", "sync")] {
        let out = gitvault(&[alias, "--help"]);
        assert!(out.status.success(), "{alias}: {out:?}");
        let help = text(&out);
        let own = text(&gitvault(&[name, "--help"]));
        assert_eq!(
            help.lines().next(),
            own.lines().next(),
            "{alias} is not {name}"
        );
    }
}
