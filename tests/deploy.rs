//! The example units and manifests in docs/deploy/ (issue 18): the systemd units pass
//! `systemd-analyze verify` without a warning, the Kubernetes CronJob is a CronJob, and every
//! gitvault command line in them is one the binary accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy")
}

/// Runs gitvault with `args` on a vault that does not exist: a command line clap rejects exits
/// 2 with a usage message, one it accepts gets as far as "no vault".
fn accepted(args: &[String]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .args(args)
        .env("GITVAULT_VAULT", dir.path().join("none"))
        // As in an Indexed Job's pod.
        .env("JOB_COMPLETION_INDEX", "0")
        .env_remove("GITVAULT_IDENTITY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) || !stderr.contains("no vault") {
        return Err(format!("gitvault {args:?}: {stderr}"));
    }
    Ok(())
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "timer")
        })
        .collect();
    units.sort();
    units
}

/// `systemd-analyze verify` on `units` copied into a scratch directory with the binary's real
/// path, and the man pages they name installed on a MANPATH.
fn verify(units: &[PathBuf]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man/man1");
    std::fs::create_dir_all(&man).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .args(["man", "--dir", man.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut copies = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(unit)
            .unwrap()
            .replace("/usr/local/bin/gitvault", env!("CARGO_BIN_EXE_gitvault"));
        // A template is verified as one of its instances: shard 0/4.
        let name = unit
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace("@.", "@0-4.");
        let copy = dir.path().join(name);
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("systemd-analyze (Debian's systemd) is installed by scripts/install-test-deps.sh");
    format!(
        "{}{}{}",
        if out.status.success() { "" } else { "failed\n" },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn systemd_units_verify_cleanly() {
    let units = units();
    assert!(units.len() >= 4, "{units:?}");
    let said = verify(&units);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
    // A misspelt key is caught, so the check above can fail.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gitvault-backup.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&units[0])
            .unwrap()
            .replace("Nice=", "Nic="),
    )
    .unwrap();
    assert!(!verify(&[bad]).trim().is_empty());
}

#[test]
fn unit_command_lines_are_accepted() {
    let mut seen = 0;
    for unit in units() {
        for line in std::fs::read_to_string(&unit).unwrap().lines() {
            let Some(command) = line.strip_prefix("ExecStart=") else {
                continue;
            };
            // What systemd makes of a template's %I for the instance 0-4.
            let words: Vec<String> = command
                .split_whitespace()
                .map(|w| w.replace("%I", "0/4"))
                .collect();
            assert_eq!(words[0], "/usr/local/bin/gitvault", "{line}");
            accepted(&words[1..]).unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 4);
    assert!(accepted(&["backupp".to_string()]).is_err());
}

fn at<'a>(doc: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter()
        .fold(doc, |node, key| match key.parse::<usize>() {
            Ok(i) => &node[i],
            Err(_) => &node[*key],
        })
}

#[test]
fn the_cronjobs_are_cronjobs() {
    let plain = cronjob("cronjob.yaml");
    assert!(at(&plain, &["spec", "jobTemplate", "spec", "completionMode"]).is_badvalue());
    let sharded = cronjob("cronjob-sharded.yaml");
    let job = at(&sharded, &["spec", "jobTemplate", "spec"]);
    assert_eq!(at(job, &["completionMode"]).as_str(), Some("Indexed"));
    let completions = at(job, &["completions"]).as_i64().unwrap();
    assert_eq!(at(job, &["parallelism"]).as_i64(), Some(completions));
    let args: Vec<&str> = at(job, &["template", "spec", "containers", "0", "args"])
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let n = args[args.iter().position(|a| *a == "--shards").unwrap() + 1];
    assert_eq!(n.parse::<i64>().unwrap(), completions, "one pod per shard");
}

/// Parses a CronJob manifest and checks what every CronJob needs; returns it.
fn cronjob(file: &str) -> Yaml {
    let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1);
    let job = &docs[0];
    assert_eq!(at(job, &["apiVersion"]).as_str(), Some("batch/v1"));
    assert_eq!(at(job, &["kind"]).as_str(), Some("CronJob"));
    assert!(at(job, &["metadata", "name"]).as_str().is_some());
    let schedule = at(job, &["spec", "schedule"]).as_str().unwrap();
    assert_eq!(schedule.split_whitespace().count(), 5, "{schedule}");
    assert_eq!(
        at(job, &["spec", "concurrencyPolicy"]).as_str(),
        Some("Forbid")
    );
    let pod = at(job, &["spec", "jobTemplate", "spec", "template", "spec"]);
    assert!(matches!(
        at(pod, &["restartPolicy"]).as_str(),
        Some("Never" | "OnFailure")
    ));
    let container = at(pod, &["containers", "0"]);
    assert!(at(container, &["image"]).as_str().is_some());
    let args: Vec<String> = at(container, &["args"])
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    accepted(&args).unwrap();
    // Every mounted volume is declared.
    let volumes: Vec<&str> = at(pod, &["volumes"])
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for mount in at(container, &["volumeMounts"]).as_vec().unwrap() {
        assert!(
            volumes.contains(&mount["name"].as_str().unwrap()),
            "{mount:?}"
        );
    }
    job.clone()
}
