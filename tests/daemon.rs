//! `gitvault daemon` (issue 18), as a real process on a per-second schedule: it backs up,
//! writes its metrics and pings a loopback receiver; a broken source makes the next run ping
//! failure with the reason; SIGTERM mid-run commits the repository at hand and exits 0 with a
//! vault that verifies; a job never runs twice at once; a missed slot is caught up at start.
//! Every wait polls for a condition with a generous deadline: the machine may be loaded.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::git_server::{file_url, run_fixture};
use common::receiver::Receiver;
use common::{TestVault, stderr, stdout};

const DEADLINE: Duration = Duration::from_secs(120);

/// Polls `condition` until it holds; fails with `what` and the daemon's log after the deadline.
fn wait_for(daemon: &Daemon, what: &str, mut condition: impl FnMut() -> bool) {
    let began = Instant::now();
    while !condition() {
        assert!(
            began.elapsed() < DEADLINE,
            "timed out waiting for {what}; daemon log:\n{}",
            daemon.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `gitvault daemon` whose stderr lines are collected as they come.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(tv: &TestVault, env: &[(&str, String)]) -> Daemon {
        let mut cmd = tv.command(&["daemon"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let daemon = Daemon { child, lines };
        // Until its handlers are in place SIGTERM would kill it outright.
        wait_for(&daemon, "the daemon to start", || {
            daemon.count("daemon: started") > 0
        });
        daemon
    }

    /// A daemon whose backups wait at their first repository until `release` exists; returns
    /// once the first run waits there.
    fn held_at_first_repository(tv: &TestVault, release: &Path) -> Daemon {
        let daemon = Daemon::start(
            tv,
            &[(
                "GITVAULT_TEST_HOOK_PAUSE",
                format!("backup-repository-started:{}", release.display()),
            )],
        );
        wait_for(&daemon, "the first repository to start", || {
            daemon.count("gitvault-test-hook: backup-repository-started") > 0
        });
        daemon
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// SIGTERM, then the exit status once it exits.
    fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let pid = i32::try_from(self.child.id()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread may still hold the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return (status, self.log());
            }
            assert!(
                began.elapsed() < DEADLINE,
                "the daemon did not stop after SIGTERM; log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append_config(tv: &TestVault, text: &str) {
    let path = tv.dir.join("config.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

/// A backup job of `repos` (by file URL) every second, one repository at a time.
fn every_second(repos: &[&Path], extra: &str) -> String {
    let urls: Vec<String> = repos.iter().map(|r| format!("{:?}", file_url(r))).collect();
    format!(
        "\n[[job]]\nname = \"often\"\nkind = \"backup\"\nschedule = \"* * * * * *\"\njobs = 1\nurls = [{}]\n{extra}",
        urls.join(", ")
    )
}

fn snapshot_repos(tv: &TestVault) -> Vec<String> {
    let out = tv.run(&["--json", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut repos: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["repo"].as_str().unwrap().to_string())
        .collect();
    repos.dedup();
    // A repository given by path is named after it: keep the last part.
    repos
        .iter()
        .map(|r| r.rsplit('/').next().unwrap_or(r).to_string())
        .collect()
}

/// A GET on the daemon's endpoint: the status line and headers, and the body.
fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn scheduled_backups_ping_write_metrics_and_report_a_broken_source() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let receiver = Receiver::start(true);
    let prom = tv.tmp.path().join("often.prom");
    append_config(
        &tv,
        &every_second(
            &[&repo],
            &format!("metrics_file = {:?}\n", prom.to_str().unwrap()),
        ),
    );
    append_config(
        &tv,
        &format!(
            "\n[daemon]\nmetrics_address = \"127.0.0.1:0\"\n\n[notify]\nsuccess = \"{}\"\nfailure = \"{}\"\nwebhook = \"{}\"\n",
            receiver.url("/ok"),
            receiver.url("/fail"),
            receiver.url("/hook")
        ),
    );
    let daemon = Daemon::start(&tv, &[]);
    wait_for(&daemon, "a success ping", || {
        receiver.paths().contains(&"POST /ok".to_string())
    });
    assert_eq!(snapshot_repos(&tv), vec!["alpha"]);
    wait_for(&daemon, "the metrics file", || prom.exists());
    let got = common::metrics_samples(&prom).unwrap();
    assert_eq!(got["gitvault_job_exit_code{job=often}"], 0.0);
    assert_eq!(got["gitvault_command_success{command=backup}"], 1.0);
    assert!(
        got.keys().any(|k| k
            .starts_with("gitvault_repository_last_snapshot_timestamp_seconds{repo=")
            && k.ends_with("/alpha}")),
        "{got:?}"
    );
    // The same over HTTP.
    let address = daemon
        .log()
        .iter()
        .find_map(|l| {
            l.strip_prefix("daemon: metrics on http://")?
                .strip_suffix("/metrics")
                .map(String::from)
        })
        .expect("the metrics address in the log");
    let (head, body) = http_get(&address, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let served = common::parse_metrics(&body);
    assert_eq!(served["gitvault_job_exit_code{job=often}"], 0.0);
    assert_eq!(served["gitvault_command_success{command=backup}"], 1.0);
    assert!(
        served
            .keys()
            .any(|k| k.starts_with("gitvault_target_packs{")),
        "{served:?}"
    );
    assert!(http_get(&address, "/").0.starts_with("HTTP/1.1 404"));

    // The source breaks: the next run fails, pings failure, and the webhook says why.
    std::fs::remove_dir_all(&repo).unwrap();
    wait_for(&daemon, "a failure ping", || {
        receiver.paths().contains(&"POST /fail".to_string())
    });
    let failed_hook = receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .find(|doc| doc["outcome"] == "failure")
        .expect("a webhook of the failed run");
    let failures = failed_hook["failures"].to_string();
    assert!(failures.contains("alpha"), "{failures}");
    let line = &failed_hook["report"]["repositories"][0];
    assert_eq!(line["status"], "failed", "{line}");
    assert!(
        matches!(line["reason"].as_str(), Some("not-found" | "git")),
        "{line}"
    );
    wait_for(&daemon, "failure in the metrics", || {
        common::metrics_samples(&prom)
            .is_some_and(|m| m.get("gitvault_job_exit_code{job=often}") == Some(&1.0))
    });

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
}

#[test]
fn sigterm_mid_backup_commits_the_repository_at_hand_and_exits_0() {
    let tv = TestVault::new();
    let repos: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| tv.tmp.path().join(format!("{n}.git")))
        .collect();
    for r in &repos {
        run_fixture("rich.sh", &[r.to_str().unwrap()]);
    }
    let refs: Vec<&Path> = repos.iter().map(|p| p.as_path()).collect();
    append_config(&tv, &every_second(&refs, ""));
    let release = tv.tmp.path().join("release");
    let daemon = Daemon::held_at_first_repository(&tv, &release);
    let pid = i32::try_from(daemon.child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Give the handler its moment before the repository goes on: the flag is set on delivery,
    // and the stop is only looked at when the next repository would start.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&release, b"").unwrap();
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    let log = log.join("\n");
    // Partly done: one repository backed up, two not attempted.
    assert!(
        log.contains("job often: finished with exit status 3"),
        "{log}"
    );

    assert_eq!(snapshot_repos(&tv), vec!["a"]);
    let out = tv.run(&["verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The run report says the others were not attempted, and why.
    let reports: Vec<_> = std::fs::read_dir(tv.dir.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("backup"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&reports[0]).unwrap()).unwrap();
    let reasons: Vec<_> = report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(reasons, vec!["-", "not-attempted", "not-attempted"]);
}

#[test]
fn a_job_never_runs_twice_at_once() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    append_config(&tv, &every_second(&[&repo], ""));
    let release = tv.tmp.path().join("release");
    let daemon = Daemon::held_at_first_repository(&tv, &release);
    // Several per-second ticks pass while the run is held.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(daemon.count("job often: started"), 1, "{:?}", daemon.log());
    std::fs::write(&release, b"").unwrap();
    wait_for(&daemon, "two more runs", || {
        daemon.count("job often: finished") >= 3
    });
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    // Starts and ends alternate: no run began before the one before it ended.
    let events: Vec<&str> = log
        .iter()
        .filter_map(|l| {
            if l.starts_with("job often: started") {
                Some("start")
            } else if l.starts_with("job often: finished") {
                Some("end")
            } else {
                None
            }
        })
        .collect();
    for pair in events.chunks(2) {
        assert!(pair == ["start", "end"] || pair == ["start"], "{events:?}");
    }
}

#[test]
fn a_missed_slot_is_caught_up_once_at_start() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    append_config(
        &tv,
        &format!(
            "\n[[job]]\nname = \"nightly\"\nkind = \"backup\"\nschedule = \"0 2 * * *\"\nurls = [{:?}]\n",
            file_url(&repo)
        ),
    );
    // The last run was three days ago: the daemon was down over the slots since.
    std::fs::create_dir_all(tv.dir.join("daemon")).unwrap();
    let long_ago = chrono::Utc::now() - chrono::Duration::days(3);
    std::fs::write(tv.dir.join("daemon/nightly.last"), long_ago.to_rfc3339()).unwrap();
    let daemon = Daemon::start(&tv, &[]);
    wait_for(&daemon, "the catch-up run", || {
        daemon.count("job nightly: finished (catch-up) with exit status 0") == 1
    });
    assert_eq!(snapshot_repos(&tv), vec!["alpha"]);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("job nightly: started"))
            .count(),
        1,
        "{log:?}"
    );

    // Started again at once, it has nothing to catch up: its last run is after the last slot.
    let daemon = Daemon::start(&tv, &[]);
    wait_for(&daemon, "the job's schedule", || {
        daemon.count("job nightly: next run") > 0
    });
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("job nightly: next run 20")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("job nightly: started")),
        "{log:?}"
    );
}

#[test]
fn maintenance_and_verify_jobs_run_their_commands() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    // Every job missed its slot, so each runs once at start, in turn.
    let mut config = String::from("\n[retention]\nkeep_last = 1\n");
    for (name, kind, extra) in [
        ("b", "backup", format!("urls = [{:?}]\n", file_url(&repo))),
        ("m", "maintenance", String::new()),
        ("v", "verify", "restore_sample = 1\n".to_string()),
    ] {
        config.push_str(&format!(
            "\n[[job]]\nname = \"{name}\"\nkind = \"{kind}\"\nschedule = \"0 2 * * *\"\n{extra}"
        ));
    }
    append_config(&tv, &config);
    std::fs::create_dir_all(tv.dir.join("daemon")).unwrap();
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    for name in ["b", "m", "v"] {
        std::fs::write(tv.dir.join(format!("daemon/{name}.last")), &long_ago).unwrap();
    }
    let daemon = Daemon::start(&tv, &[]);
    wait_for(&daemon, "three catch-up runs", || {
        daemon.count("(catch-up) with exit status") + daemon.count(": failed") == 3
    });
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}");
    for name in ["b", "m", "v"] {
        assert!(
            log.iter().any(|l| l.starts_with(&format!(
                "job {name}: finished (catch-up) with exit status 0"
            ))),
            "{log:?}"
        );
    }
    // The verify job left its report, as `gitvault verify` does.
    let verify_reports = std::fs::read_dir(tv.dir.join("reports"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("verify")
        })
        .count();
    assert_eq!(verify_reports, 1);
}

/// A second daemon on the same vault (started by mistake, or an old one still stopping) skips
/// a job's slot while the first runs it, rather than running it at once beside it.
#[test]
fn two_daemons_on_one_vault_never_run_one_job_at_once() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    append_config(&tv, &every_second(&[&repo], ""));
    let release = tv.tmp.path().join("release");
    let first = Daemon::held_at_first_repository(&tv, &release);
    let second = Daemon::start(&tv, &[]);
    wait_for(&second, "the second daemon to skip a slot", || {
        second.count("job often: skipped: another daemon") >= 2
    });
    assert_eq!(second.count("job often: started"), 0, "{:?}", second.log());
    let (status, log) = second.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    std::fs::write(&release, b"").unwrap();
    wait_for(&first, "the held run to end", || {
        first.count("job often: finished with exit status 0") >= 1
    });
    let (status, log) = first.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
}

/// SIGHUP reads config.toml again once the running job has ended (it is not cut short, and
/// the daemon does not die of the signal); a config that does not read keeps the jobs.
#[test]
fn sighup_reloads_the_jobs_after_the_running_one_ends() {
    let tv = TestVault::new();
    let alpha = tv.tmp.path().join("alpha.git");
    let beta = tv.tmp.path().join("beta.git");
    run_fixture("rich.sh", &[alpha.to_str().unwrap()]);
    run_fixture("rich.sh", &[beta.to_str().unwrap()]);
    let config = tv.dir.join("config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    append_config(&tv, &every_second(&[&alpha], ""));
    let release = tv.tmp.path().join("release");
    let daemon = Daemon::held_at_first_repository(&tv, &release);
    let pid = i32::try_from(daemon.child.id()).unwrap();

    // While the run is held: a second job, and SIGHUP.
    let second = format!(
        "\n[[job]]\nname = \"second\"\nkind = \"backup\"\nschedule = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"\nurls = [{:?}]\n",
        file_url(&beta)
    );
    std::fs::write(
        &config,
        format!("{original}{}{second}", every_second(&[&alpha], "")),
    )
    .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    std::fs::write(&release, b"").unwrap();
    wait_for(&daemon, "the reload", || {
        daemon.count("daemon: config.toml reloaded, 2 job(s)") == 1
    });
    // The held run ended as it would have, before the reload.
    let log = daemon.log();
    let finished = log
        .iter()
        .position(|l| l.starts_with("job often: finished with exit status 0"));
    let reloaded = log.iter().position(|l| l.contains("reloaded"));
    assert!(finished.is_some() && finished < reloaded, "{log:?}");
    wait_for(&daemon, "a run of the new job", || {
        daemon.count("job second: finished with exit status 0") >= 1
    });
    assert_eq!(snapshot_repos(&tv), vec!["alpha", "beta"]);

    // Jobs that do not schedule are not taken: the jobs run on as they were.
    std::fs::write(
        &config,
        format!(
            "{original}\n[[job]]\nname = \"bad\"\nkind = \"backup\"\nschedule = \"every night\"\n"
        ),
    )
    .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for(&daemon, "the refused reload", || {
        daemon.count("daemon: config.toml not reloaded") == 1
    });
    let runs = daemon.count("job second: finished with exit status 0");
    wait_for(&daemon, "the kept job to run again", || {
        daemon.count("job second: finished with exit status 0") > runs
    });
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
}
