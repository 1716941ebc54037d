//! `gitvault config check` and unknown keys in config.toml (issue 18): a typo in a key is
//! named, not silently ignored.

mod common;

use common::{TestVault, stderr, stdout};

fn append(tv: &TestVault, text: &str) {
    let path = tv.dir.join("config.toml");
    // Vaults made before sources were left out when empty say `source = []`.
    let mut config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("source = []\n", "");
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

fn check(tv: &TestVault) -> (bool, serde_json::Value) {
    let out = tv.run(&["--json", "config", "check"]);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    (out.status.success(), json)
}

#[test]
fn a_fresh_vault_checks_clean() {
    let tv = TestVault::new();
    let (ok, json) = check(&tv);
    assert!(ok, "{json}");
    assert_eq!(json["unknown_keys"], serde_json::json!([]));
    assert_eq!(json["problems"], serde_json::json!([]));
}

#[test]
fn typos_and_unknown_sections_are_named() {
    let tv = TestVault::new();
    append(
        &tv,
        "\n[retention]\nkeep_dialy = 7\n\n[[source]]\nname = \"gh\"\nprovider = \"github\"\nowner = \"acme\"\ntokn_env = \"GH\"\n\n[notifyy]\nurl = \"x\"\n",
    );
    let (ok, json) = check(&tv);
    assert!(!ok);
    let keys: Vec<&str> = json["unknown_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&"retention.keep_dialy"), "{keys:?}");
    assert!(keys.contains(&"source.0.tokn_env"), "{keys:?}");
    assert!(keys.contains(&"notifyy"), "{keys:?}");
    assert_eq!(keys.len(), 3, "{keys:?}");

    // Commands still run, and say what they ignore.
    let out = tv.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("retention.keep_dialy"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refused_settings_are_problems() {
    let tv = TestVault::new();
    append(
        &tv,
        "\n[[target]]\nname = \"far\"\nurl = \"ftp://example.com/x\"\n\n[[source]]\nname = \"bad name\"\nprovider = \"github\"\nowner = \"acme\"\n",
    );
    let (ok, json) = check(&tv);
    assert!(!ok);
    let problems = json["problems"].to_string();
    assert!(
        problems.contains("far") && problems.contains("ftp"),
        "{problems}"
    );
    assert!(problems.contains("bad name"), "{problems}");
}

#[test]
fn object_lock_settings_need_an_s3_target_and_a_period() {
    let tv = TestVault::new();
    append(
        &tv,
        "\n[[target]]\nname = \"disk\"\nurl = \"file:///tmp/x\"\nlock_days = 3\n\n[[target]]\nname = \"zero\"\nurl = \"s3://bucket-a/\"\nlock_days = 0\n\n[[target]]\nname = \"half\"\nurl = \"s3://bucket-b/\"\nlock_mode = \"governance\"\n",
    );
    let (ok, json) = check(&tv);
    assert!(!ok);
    let problems = json["problems"].to_string();
    assert!(
        problems.contains("target disk") && problems.contains("Object Lock needs an s3:// target"),
        "{problems}"
    );
    assert!(
        problems.contains(
            "target zero: target zero cannot hold locked objects: lock_days must be at least 1"
        ),
        "{problems}"
    );
    assert!(
        problems.contains("target half: lock_mode and allow_compaction need lock_days"),
        "{problems}"
    );
    assert_eq!(json["unknown_keys"], serde_json::json!([]));
}

#[test]
fn daemon_jobs_with_a_bad_schedule_or_an_unknown_source_are_problems() {
    let tv = TestVault::new();
    append(
        &tv,
        "\n[[job]]\nname = \"a\"\nkind = \"backup\"\nschedule = \"every night\"\n\n[[job]]\nname = \"b\"\nkind = \"backup\"\nschedule = \"0 2 * * *\"\nsources = [\"nowhere\"]\nretry = 3\n\n[[job]]\nname = \"c\"\nkind = \"verify\"\nschedule = \"0 2 * * *\"\ntimezone = \"Mars/Olympus\"\n\n[daemon]\nmetrics_address = \"localhost\"\ntimezone = \"Europe/Berlin\"\n",
    );
    let (ok, json) = check(&tv);
    assert!(!ok);
    let problems = json["problems"].to_string();
    assert!(
        problems.contains("job a") && problems.contains("every night"),
        "{problems}"
    );
    assert!(
        problems.contains("job b") && problems.contains("nowhere"),
        "{problems}"
    );
    assert!(
        problems.contains("job c") && problems.contains("Mars/Olympus"),
        "{problems}"
    );
    assert!(problems.contains("daemon.metrics_address"), "{problems}");
    assert_eq!(json["unknown_keys"], serde_json::json!(["job.1.retry"]));
}

#[test]
fn a_file_that_is_not_toml_is_a_problem_and_a_missing_one_an_error() {
    let tv = TestVault::new();
    let path = tv.tmp.path().join("other.toml");
    std::fs::write(&path, "format = [unclosed").unwrap();
    let out = tv.run(&[
        "--json",
        "config",
        "check",
        "--file",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["problems"].as_array().unwrap().len(), 1, "{json}");

    let out = tv.run(&["config", "check", "--file", "/nonexistent/config.toml"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/config.toml"),
        "{}",
        stderr(&out)
    );
}

/// docs/CONFIG.md's example holds no key the program would ignore and nothing it would refuse.
#[test]
fn the_reference_example_reads_clean() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let tv = TestVault::new();
    let path = tv.tmp.path().join("example.toml");
    std::fs::write(&path, example).unwrap();
    // An unset variable in a `[notify]` URL is a problem: the example's are set, as on a host
    // that runs it.
    let out = tv
        .command(&[
            "--json",
            "config",
            "check",
            "--file",
            path.to_str().unwrap(),
        ])
        .env("HC_PING_UUID", "0b8c3d6e-5a1f-4c2e-9d7b-1a2b3c4d5e6f")
        .env("WEBHOOK_TOKEN", "t")
        .output()
        .unwrap();
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    // A mistake in the example is caught, so the check above can fail.
    std::fs::write(&path, example.replace("keep_weekly", "keep_weakly")).unwrap();
    let out = tv.run(&[
        "--json",
        "config",
        "check",
        "--file",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

/// Every environment variable the program reads is in docs/CONFIG.md's table.
#[test]
fn every_environment_variable_is_documented() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/CONFIG.md")).unwrap();
    let mut read = std::collections::BTreeSet::new();
    for path in common::files_under(std::path::Path::new(&format!("{root}/src"))) {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // `env = "X"` (clap), `var("X")`, `var_os("X")`, `…_ENV: &str = "X"`.
        for opener in ["env = \"", "var(\"", "var_os(\"", "_ENV: &str = \""] {
            for (at, _) in text.match_indices(opener) {
                let name: String = text[at + opener.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                if !name.is_empty() && text[at + opener.len() + name.len()..].starts_with('"') {
                    read.insert(name);
                }
            }
        }
    }
    assert!(read.contains("GITVAULT_VAULT"), "{read:?}");
    let missing: Vec<_> = read
        .iter()
        .filter(|v| !doc.contains(&format!("`{v}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/CONFIG.md: {missing:?}");
}
