//! A real Git LFS server on loopback for the integration tests: giftless 0.6.2 under gunicorn
//! (installed by `scripts/install-test-deps.sh`), with anonymous read-write access, the `basic`
//! streaming transfer adapter and local storage. The fixture `tests/fixtures/lfs.sh` fills it
//! with the real `git lfs` client.
//!
//! URL shapes (`ORG` may contain `/`, `REPO` is given without `.git`):
//! - endpoint, what git-lfs takes as `lfs.url` and what `.lfsconfig` holds:
//!   `http://127.0.0.1:PORT/ORG/REPO.git/info/lfs` ([`LfsServer::endpoint`]), the same shape
//!   git-lfs derives by itself from a remote `http://host/ORG/REPO.git`;
//! - batch API: `POST {endpoint}/objects/batch`;
//! - the hrefs in batch answers: `{endpoint}/objects/storage/OID` (`PUT` upload, `GET`
//!   download, the download one with `?jwt=…` appended: a token, never log hrefs) and
//!   `{endpoint}/objects/storage/verify` (`POST`).
//!
//! giftless's legacy endpoints (`/ORG/REPO/objects/batch`) are switched off.
//!
//! Objects are stored as plain files `ROOT/ORG/REPO/OID` ([`LfsServer::object_path`]): a test may
//! delete or corrupt one there. [`LfsServer::set_fault`] makes the server answer chosen requests
//! with an error status; [`LfsServer::requests`] lists what was asked (no query strings).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long giftless may take to come up (Python imports are slow on a busy machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`LfsServer`] answers instead of doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LfsFault {
    /// Normal service.
    None,
    /// Every request is answered with this status.
    Status(u16),
    /// Batch API requests (`POST …/objects/batch`) are answered with this status.
    BatchStatus(u16),
    /// Downloads (`GET …/objects/storage/OID`) are answered with this status; the batch API
    /// still works.
    DownloadStatus(u16),
    /// Uploads (`PUT …/objects/storage/OID`) are answered with this status.
    UploadStatus(u16),
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsRequest {
    pub method: String,
    /// The URL path, without the query string.
    pub path: String,
    pub status: u16,
    /// Response body bytes.
    pub bytes: u64,
}

impl LfsRequest {
    pub fn is_batch(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/objects/batch")
    }

    pub fn is_download(&self) -> bool {
        self.method == "GET" && self.path.contains("/objects/storage/")
    }

    pub fn is_upload(&self) -> bool {
        self.method == "PUT" && self.path.contains("/objects/storage/")
    }
}

/// giftless under gunicorn on `127.0.0.1:PORT`, storing objects under `root`. Killed, with its
/// workers, on drop; its configuration and logs live in a temp dir it owns.
#[derive(Debug)]
pub struct LfsServer {
    port: u16,
    root: PathBuf,
    // Field order matters for drop: the server first, then its directory.
    gunicorn: GroupChild,
    tmp: tempfile::TempDir,
}

/// WSGI middleware answering the requests chosen in the fault file with an error status. The
/// file holds `STATUS METHOD PATH_SUBSTRING` (`*` for any method or path); no file, normal
/// service. Read on every request, so changes apply at once.
const FAULT_MIDDLEWARE: &str = r#"import json


class Fault:
    def __init__(self, app, path):
        self.app = app
        self.path = path

    def __call__(self, environ, start_response):
        try:
            with open(self.path) as f:
                status, method, needle = f.read().split()
        except (OSError, ValueError):
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if method not in ("*", environ.get("REQUEST_METHOD")) or (
            needle != "*" and needle not in path
        ):
            return self.app(environ, start_response)
        while environ["wsgi.input"].read(1 << 16):
            pass
        body = json.dumps({"message": "injected fault " + status}).encode()
        start_response(
            status + " Injected Fault",
            [
                ("Content-Type", "application/vnd.git-lfs+json"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]
"#;

impl LfsServer {
    /// Starts giftless storing objects under `root` (created when missing) and blocks until it
    /// answers HTTP.
    pub fn start(root: &Path) -> LfsServer {
        std::fs::create_dir_all(root).expect("create the LFS storage root");
        let root = std::path::absolute(root).expect("absolute LFS root");
        let tmp = tempfile::Builder::new()
            .prefix("gitvault-lfs-")
            .tempdir()
            .expect("temp dir for the LFS server");
        let dir = tmp.path();
        std::fs::write(dir.join("gitvault_lfs_fault.py"), FAULT_MIDDLEWARE)
            .expect("write the fault middleware");
        let config = dir.join("giftless.yaml");
        std::fs::write(&config, giftless_config(&root, &dir.join("fault")))
            .expect("write giftless.yaml");
        let log_path = dir.join("gunicorn.log");
        let access_log = dir.join("access.log");
        let deadline = Instant::now() + STARTUP_TIMEOUT;

        // The chosen port may be taken before gunicorn binds it: retry with another.
        for attempt in 1.. {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("gunicorn log");
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "gunicorn", "-b"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--workers", "1", "--threads", "8", "--timeout", "600"])
                .args(["--log-level", "info", "--access-logfile"])
                .arg(&access_log)
                .args(["--access-logformat", "%(m)s %(U)s %(s)s %(B)s"])
                .arg("giftless.wsgi_entrypoint:app")
                .current_dir(dir)
                // gunicorn 27 puts a control socket under $HOME: keep instances apart.
                .env("HOME", dir)
                .env("PYTHONPATH", dir)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
            // Any other GIFTLESS_* variable would override the configuration file.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("GIFTLESS_") {
                    cmd.env_remove(key);
                }
            }
            cmd.env("GIFTLESS_CONFIG_FILE", &config);
            let mut gunicorn = GroupChild::spawn("gunicorn (giftless)", &mut cmd);
            let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            let listening = format!("Listening at: http://127.0.0.1:{port}");
            // First gunicorn's own word that it bound the port (so nobody else answers the
            // probe), then an HTTP answer (so a worker has loaded the app).
            let bound = loop {
                let text = read_log();
                if text.contains(&listening) {
                    break true;
                }
                if text.contains("in use") && attempt < 5 {
                    break false;
                }
                if let Some(status) = gunicorn.exited() {
                    panic!(
                        "giftless (gunicorn) exited ({status}) at startup:\n{}\n\
                         Run `bash scripts/install-test-deps.sh` if giftless is missing.",
                        read_log()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "giftless did not listen on port {port} within {STARTUP_TIMEOUT:?}:\n{text}"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if !bound {
                gunicorn.kill();
                continue;
            }
            loop {
                if let Some(status) = gunicorn.exited() {
                    panic!("giftless exited ({status}) at startup:\n{}", read_log());
                }
                assert!(
                    Instant::now() < deadline,
                    "giftless did not answer on port {port} within {STARTUP_TIMEOUT:?}:\n{}",
                    read_log()
                );
                if http_request(port, "GET", "/", None).is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Forget the readiness probes (gunicorn appends, so truncating is safe).
            std::fs::File::create(&access_log).expect("truncate the access log");
            return LfsServer {
                port,
                root,
                gunicorn,
                tmp,
            };
        }
        unreachable!("the loop returns or panics")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The LFS endpoint of repository `org`/`repo` (`repo` with or without `.git`), what git-lfs
    /// wants as `lfs.url`: `http://127.0.0.1:PORT/ORG/REPO.git/info/lfs`.
    pub fn endpoint(&self, org: &str, repo: &str) -> String {
        let (org, repo) = org_repo(org, repo);
        format!("{}/{org}/{repo}.git/info/lfs", self.base_url())
    }

    /// The batch API URL: `{endpoint}/objects/batch`.
    pub fn batch_url(&self, org: &str, repo: &str) -> String {
        format!("{}/objects/batch", self.endpoint(org, repo))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where objects are stored: `ROOT/ORG/REPO/OID`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding object `oid` (hex sha256) of repository `org`/`repo`, whether or not it
    /// exists.
    pub fn object_path(&self, org: &str, repo: &str, oid: &str) -> PathBuf {
        let (org, repo) = org_repo(org, repo);
        self.root.join(org).join(repo).join(oid)
    }

    /// Every stored copy of object `oid`, in any repository.
    pub fn find_object(&self, oid: &str) -> Vec<PathBuf> {
        super::files_under(&self.root)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == oid))
            .collect()
    }

    /// Every object file stored, sorted.
    pub fn objects(&self) -> Vec<PathBuf> {
        super::files_under(&self.root)
    }

    /// Makes the server answer the requests chosen by `fault` with an error (applies to the
    /// next request).
    pub fn set_fault(&self, fault: LfsFault) {
        let path = self.tmp.path().join("fault");
        let spec = match fault {
            LfsFault::None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("remove the fault file: {e}"),
                }
                return;
            }
            LfsFault::Status(s) => format!("{s} * *"),
            LfsFault::BatchStatus(s) => format!("{s} POST /objects/batch"),
            LfsFault::DownloadStatus(s) => format!("{s} GET /objects/storage/"),
            LfsFault::UploadStatus(s) => format!("{s} PUT /objects/storage/"),
        };
        let part = self.tmp.path().join("fault.part");
        std::fs::write(&part, spec).expect("write the fault file");
        std::fs::rename(&part, &path).expect("install the fault file");
    }

    /// The raw access log: `METHOD PATH STATUS BYTES` per line, query strings left out.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("access.log")).unwrap_or_default()
    }

    /// The access log, parsed.
    pub fn requests(&self) -> Vec<LfsRequest> {
        self.access_log()
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                Some(LfsRequest {
                    method: f.next()?.to_string(),
                    path: f.next()?.to_string(),
                    status: f.next()?.parse().ok()?,
                    bytes: f.next().and_then(|b| b.parse().ok()).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Number of object downloads answered 200.
    pub fn downloads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.is_download() && r.status == 200)
            .count()
    }

    /// gunicorn's own log (startup, worker errors, Python tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("gunicorn.log")).unwrap_or_default()
    }

    /// A raw batch API request for `objects` (`(oid, size)`), `operation` `download` or
    /// `upload`. Returns the status and the body (JSON).
    pub fn batch(
        &self,
        org: &str,
        repo: &str,
        operation: &str,
        objects: &[(&str, u64)],
    ) -> (u16, String) {
        let objects: Vec<serde_json::Value> = objects
            .iter()
            .map(|(oid, size)| serde_json::json!({ "oid": oid, "size": size }))
            .collect();
        let body = serde_json::json!({
            "operation": operation,
            "transfers": ["basic"],
            "objects": objects,
        })
        .to_string();
        let (org, repo) = org_repo(org, repo);
        let path = format!("/{org}/{repo}.git/info/lfs/objects/batch");
        let (status, response) = http_request(self.port, "POST", &path, Some(&body))
            .unwrap_or_else(|| panic!("no answer from giftless to {path}:\n{}", self.log()));
        let text = String::from_utf8_lossy(&response).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

/// `org` without surrounding slashes, `repo` without `.git`.
fn org_repo<'a>(org: &'a str, repo: &'a str) -> (&'a str, &'a str) {
    let org = org.trim_matches('/');
    let repo = repo.trim_matches('/');
    (org, repo.strip_suffix(".git").unwrap_or(repo))
}

fn giftless_config(root: &Path, fault_file: &Path) -> String {
    // JSON is YAML: quoting the paths this way is safe for any name.
    let root = serde_json::to_string(&root.to_string_lossy()).unwrap();
    let fault = serde_json::to_string(&fault_file.to_string_lossy()).unwrap();
    format!(
        "LEGACY_ENDPOINTS: false\n\
         AUTH_PROVIDERS:\n  - giftless.auth.allow_anon:read_write\n\
         TRANSFER_ADAPTERS:\n  basic:\n    factory: giftless.transfer.basic_streaming:factory\n    \
         options:\n      storage_class: giftless.storage.local_storage:LocalStorage\n      \
         storage_options:\n        path: {root}\n      action_lifetime: 900\n\
         MIDDLEWARE:\n  - class: gitvault_lfs_fault:Fault\n    kwargs:\n      path: {fault}\n"
    )
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// One HTTP/1.1 request on a fresh connection; the status and the whole response.
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = json_body.unwrap_or("");
    let content = if json_body.is_some() {
        format!(
            "Content-Type: application/vnd.git-lfs+json\r\n\
             Accept: application/vnd.git-lfs+json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{content}Connection: close\r\n\r\n{body}"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let status = std::str::from_utf8(response.get(..12)?)
        .ok()?
        .strip_prefix("HTTP/1.1 ")?
        .trim()
        .parse()
        .ok()?;
    Some((status, response))
}

/// A child in its own process group, killed with everything it forked (gunicorn's workers).
struct GroupChild {
    child: Child,
    name: &'static str,
}

impl GroupChild {
    fn spawn(name: &'static str, cmd: &mut Command) -> GroupChild {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        GroupChild { child, name }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn kill(&mut self) {
        let pgid = self.child.id();
        // The group's id is the leader's pid; the shell's builtin kill takes a negative pid.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -KILL -{pgid}"))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for GroupChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.child.id())
    }
}

/// Runs git with an isolated HOME and no global or system config, never prompting.
pub fn git_in(home: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_LFS_SKIP_SMUDGE")
        .env_remove("GIT_LFS_SKIP_PUSH")
        .output()
        .expect("run git")
}

/// git-lfs's filters, for `git clone` without `git lfs install`.
pub const LFS_FILTERS: &[&str] = &[
    "--config",
    "filter.lfs.process=git-lfs filter-process",
    "--config",
    "filter.lfs.smudge=git-lfs smudge -- %f",
    "--config",
    "filter.lfs.clean=git-lfs clean -- %f",
    "--config",
    "filter.lfs.required=true",
];
