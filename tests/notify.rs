//! `[notify]` (issue 18): a receiver on loopback, started here, records what gitvault sends.
//! Start and outcome pings (healthchecks.io style), the JSON webhook with the run report and
//! the failure's reason, the secret of a `${VAR}` reaching the receiver and nowhere else, and
//! receivers that are down or never answer costing a warning and bounded time, never the
//! command's exit status.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::git_server::{file_url, run_fixture};
use common::receiver::Receiver;
use common::{TestVault, stderr, stdout};

const SECRET: &str = "5ec2e7-d0-not-print";

impl Receiver {
    /// The start ping, the ping at `end` (the check's URL + `end`) and the webhook, whatever
    /// their order: the end's ping and webhook go out together.
    fn assert_start_and(&self, end: &str) {
        let mut paths = self.paths();
        paths.sort();
        let mut want = vec![
            format!("GET /ping/{SECRET}/start"),
            "POST /hook".to_string(),
            format!("POST /ping/{SECRET}{end}"),
        ];
        want.sort();
        assert_eq!(paths, want);
    }

    fn webhook(&self) -> serde_json::Value {
        let hooks: Vec<_> = self
            .requests()
            .into_iter()
            .filter(|r| r.path == "/hook")
            .collect();
        assert_eq!(hooks.len(), 1, "{:?}", self.paths());
        serde_json::from_slice(&hooks[0].body).expect("the webhook body is JSON")
    }
}

fn set_notify(tv: &TestVault, table: &str) {
    let path = tv.dir.join("config.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str("\n[notify]\n");
    config.push_str(table);
    std::fs::write(path, config).unwrap();
}

/// healthchecks.io's layout: the check's UUID (the secret) in the path, `/start` and `/fail`.
fn healthchecks_table(r: &Receiver) -> String {
    format!(
        "start = \"{}\"\nsuccess = \"{}\"\nfailure = \"{}\"\npartial = \"{}\"\nwebhook = \"{}\"\n",
        r.url("/ping/${HC_UUID}/start"),
        r.url("/ping/${HC_UUID}"),
        r.url("/ping/${HC_UUID}/fail"),
        r.url("/ping/${HC_UUID}/partial"),
        r.url("/hook"),
    )
}

fn backup(tv: &TestVault, urls: &[(&std::path::Path, &str)]) -> std::process::Output {
    let mut args = vec!["backup".to_string()];
    for (path, _) in urls {
        args.push(file_url(path));
    }
    if let [(_, name)] = urls {
        args.extend(["--name".to_string(), name.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tv.command(&args).env("HC_UUID", SECRET).output().unwrap()
}

fn assert_no_secret(tv: &TestVault, out: &std::process::Output) {
    assert!(!stdout(out).contains(SECRET), "{}", stdout(out));
    assert!(!stderr(out).contains(SECRET), "{}", stderr(out));
    let config = std::fs::read_to_string(tv.dir.join("config.toml")).unwrap();
    assert!(!config.contains(SECRET));
    assert!(config.contains("${HC_UUID}"));
}

#[test]
fn a_good_backup_pings_start_and_success_and_posts_its_report() {
    let tv = TestVault::new();
    let receiver = Receiver::start(true);
    set_notify(&tv, &healthchecks_table(&receiver));
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);

    let out = backup(&tv, &[(&repo, "alpha")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_no_secret(&tv, &out);
    receiver.assert_start_and("");
    let ping = &receiver
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/ping/{SECRET}"))
        .unwrap();
    let summary = String::from_utf8_lossy(&ping.body).to_string();
    assert!(summary.contains("gitvault backup on "), "{summary}");
    assert!(summary.contains("success (exit 0)"), "{summary}");

    let hook = receiver.webhook();
    assert_eq!(hook["command"], "backup");
    assert_eq!(hook["outcome"], "success");
    assert_eq!(hook["exit_code"], 0);
    assert!(hook["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(!hook["host"].as_str().unwrap().is_empty());
    assert_eq!(hook["failures"], serde_json::json!([]));
    let report = &hook["report"];
    assert_eq!(report["ok"], true);
    assert_eq!(report["repositories"][0]["repo"], "alpha");
    assert!(report["repositories"][0]["snapshot"].is_string());

    // Commands outside `commands` (default: backup, prune, verify, sync) send nothing.
    let before = receiver.requests().len();
    let out = tv
        .command(&["snapshots"])
        .env("HC_UUID", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tv
        .command(&["verify"])
        .env("HC_UUID", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after: Vec<_> = receiver.paths()[before..].to_vec();
    assert_eq!(after.len(), 3, "verify: start, success, webhook: {after:?}");
}

#[test]
fn failed_and_partial_backups_say_so_with_the_reason() {
    let tv = TestVault::new();
    let receiver = Receiver::start(true);
    set_notify(&tv, &healthchecks_table(&receiver));
    let gone = tv.tmp.path().join("gone.git");

    let out = backup(&tv, &[(&gone, "gone")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_no_secret(&tv, &out);
    receiver.assert_start_and("/fail");
    let hook = receiver.webhook();
    assert_eq!(hook["outcome"], "failure");
    assert_eq!(hook["exit_code"], 1);
    let failures = hook["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].as_str().unwrap().starts_with("gone: "),
        "{failures:?}"
    );
    assert_eq!(hook["report"]["repositories"][0]["status"], "failed");
    assert_eq!(hook["report"]["repositories"][0]["reason"], "git");

    // One repository backed up, one not: exit 3, the partial URL.
    let receiver = Receiver::start(true);
    let path = tv.dir.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config[..config.find("[notify]").unwrap()].to_string();
    std::fs::write(&path, config).unwrap();
    set_notify(&tv, &healthchecks_table(&receiver));
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let out = backup(&tv, &[(&repo, "alpha"), (&gone, "gone")]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    receiver.assert_start_and("/partial");
    assert_eq!(receiver.webhook()["outcome"], "partial");
}

#[test]
fn a_command_that_errors_sends_its_error() {
    let tv = TestVault::new();
    let receiver = Receiver::start(true);
    set_notify(&tv, &healthchecks_table(&receiver));
    // No URL and no configured source: the command itself fails before any run.
    let out = tv
        .command(&["backup"])
        .env("HC_UUID", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let hook = receiver.webhook();
    assert_eq!(hook["outcome"], "failure");
    let error = hook["error"].as_str().unwrap();
    assert!(stderr(&out).contains(error), "{error} / {}", stderr(&out));
    assert!(hook.get("report").is_none(), "{hook}");
}

#[test]
fn an_unreachable_receiver_is_a_warning_and_the_exit_status_stands() {
    let tv = TestVault::new();
    // A port nobody listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    set_notify(
        &tv,
        &format!(
            "start = \"http://127.0.0.1:{port}/${{HC_UUID}}/start\"\nsuccess = \"http://127.0.0.1:{port}/${{HC_UUID}}\"\n"
        ),
    );
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let out = backup(&tv, &[(&repo, "alpha")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning: notify.start"), "{err}");
    assert!(err.contains("warning: notify.success"), "{err}");
    assert!(
        err.contains("/${HC_UUID}"),
        "the URL is named as written: {err}"
    );
    assert_no_secret(&tv, &out);

    // An unset variable is named, and nothing is sent.
    let out = tv.run(&["backup", &file_url(&repo), "--name", "alpha"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the variable HC_UUID is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_receiver_that_never_answers_costs_at_most_the_timeout() {
    let tv = TestVault::new();
    let receiver = Receiver::start(false);
    set_notify(
        &tv,
        &format!("{}timeout = 2\n", healthchecks_table(&receiver)),
    );
    let repo = tv.tmp.path().join("alpha.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let began = Instant::now();
    let out = backup(&tv, &[(&repo, "alpha")]);
    let took = began.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer within 2 s"),
        "{}",
        stderr(&out)
    );
    // Two phases of 2 s each (start; the end's ping and webhook side by side), plus the backup.
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_no_secret(&tv, &out);
    assert!(receiver.requests().len() >= 3, "{:?}", receiver.paths());
}

#[test]
fn config_check_names_a_bad_notify_table() {
    let tv = TestVault::new();
    set_notify(
        &tv,
        "start = \"https://hc-ping.com/${HC_UNSET_FOR_TEST}/start\"\nsuccess = \"http://hc-ping.example.com/x\"\nfailure = \"https://hc-ping.com/${BROKEN\"\nwebhook = \"not a url\"\ncommands = [\"backup\", \"bakup\"]\ntimeout = 0\nsucess = \"https://x\"\n",
    );
    let out = tv
        .command(&["--json", "config", "check"])
        .env_remove("HC_UNSET_FOR_TEST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unknown_keys"], serde_json::json!(["notify.sucess"]));
    let problems: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let expect = [
        "notify.start: https://hc-ping.com/${HC_UNSET_FOR_TEST}/start: the variable HC_UNSET_FOR_TEST is not set",
        "notify.success: http://hc-ping.example.com/x: notifications go over https only",
        "notify.failure: https://hc-ping.com/${BROKEN: a `${` without its closing `}`",
        "notify.webhook: not a url is not a URL",
        "notify.commands: \"bakup\" is not a command that notifies",
        "notify.timeout: 0 seconds",
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for (got, want) in problems.iter().zip(expect) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }

    // Set, the variable's value is not printed.
    let out = tv
        .command(&["config", "check"])
        .env("HC_UNSET_FOR_TEST", SECRET)
        .output()
        .unwrap();
    assert!(!stdout(&out).contains(SECRET) && !stderr(&out).contains(SECRET));
    assert!(!stdout(&out).contains("HC_UNSET_FOR_TEST is not set"));
}
