//! Real git servers on loopback for the integration tests, plus the fixture scripts that build
//! test repositories (tests/fixtures/*.sh).
//!
//! - [`HttpGitServer`]: nginx + fcgiwrap running `git http-backend` (smart HTTP, protocol v2),
//!   optionally behind HTTP Basic auth.
//! - [`GitDaemon`]: `git daemon` for `git://`.
//! - [`FaultyHttpServer`]: a small proxy in front of an [`HttpGitServer`] that corrupts or
//!   truncates pack responses, or answers every request with a fixed status.
//! - [`file_url`], [`basic_auth_header`], [`fixture`], [`run_fixture`].
//!
//! Every server listens on 127.0.0.1 on a free port, keeps all its files in a `TempDir` it owns,
//! and is killed (with every process it started) on drop. Nothing is shared between instances,
//! so tests may run in parallel. The programs come from `scripts/install-test-deps.sh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// `file://` URL of a local path (made absolute).
pub fn file_url(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", abs.display())
}

/// The value of an `Authorization` header for HTTP Basic auth, for use as
/// `git -c http.extraHeader="<this>"`: `Authorization: Basic dXNlcjpwYXNz`.
pub fn basic_auth_header(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}",
        base64(format!("{user}:{password}").as_bytes())
    )
}

/// Path of a fixture script, e.g. `fixture("rich.sh")`.
pub fn fixture(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script)
}

/// Runs a fixture script with `bash` and panics (with its output) when it fails.
/// `run_fixture("rich.sh", &[out.to_str().unwrap()])`.
pub fn run_fixture(script: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(fixture(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash for fixture {script}: {e}"));
    assert!(
        out.status.success(),
        "fixture {script} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// URL path component for a repository name: `name` gets `.git` appended unless it has it.
fn repo_path(name: &str) -> String {
    let name = name.trim_matches('/');
    if name.ends_with(".git") {
        name.to_string()
    } else {
        format!("{name}.git")
    }
}

/// A port that was free a moment ago. Another process may take it before we bind it again:
/// the servers retry with a new port when their bind fails.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// Finds a program in PATH or in Debian's sbin directories (not always in a user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn require_program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: the git server tests need it. \
             Run `bash scripts/install-test-deps.sh` (as root) to install it."
        )
    })
}

/// Directory of git's helper programs (`git-http-backend`, `git-daemon`).
fn git_exec_path() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("`git` is not installed: run `bash scripts/install-test-deps.sh`");
    assert!(out.status.success(), "git --exec-path failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A child process started in its own process group, so that it and everything it forked (nginx
/// workers, fcgiwrap's children and CGI processes, git daemon's per-connection children) are
/// killed together.
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

    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn kill(&mut self) {
        let pgid = self.child.id();
        // The process group's id is the leader's pid. `kill` of a negative pid is the shell's
        // builtin, so no procps is needed (dash's builtin takes no `--`).
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

/// One raw HTTP/1.1 request on a fresh connection; returns the status code and the whole
/// response (headers and body). `None` when nothing answered.
fn http_get(port: u16, path: &str, authorization: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = authorization
        .map(|a| format!("{a}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n");
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

/// Bare repositories directly under `root` (directories holding `HEAD` and `objects/`), sorted.
fn bare_repos(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("HEAD").is_file() && e.path().join("objects").is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

// ------------------------------------------------------------------------------------------------
// Smart HTTP: nginx + fcgiwrap + git http-backend

/// Smart-HTTP git server: nginx (foreground, single process) in front of fcgiwrap running
/// `git http-backend`, serving every bare repository under `root` at
/// `http://127.0.0.1:PORT/<name>.git` (protocol v0/v1 and v2; pushes where the repository has
/// `http.receivepack true`, or with auth, where `REMOTE_USER` is set).
///
/// # Telling a ref listing from a pack transfer
///
/// Every request is written to an access log ([`HttpGitServer::access_log`], parsed by
/// [`HttpGitServer::requests`]), one line per request with the method, URI, status,
/// `$request_length`, `$bytes_sent`, the user, the `Git-Protocol` and `Content-Encoding`
/// request headers and, for POSTs to `git-upload-pack`, the request body itself (nginx logs
/// `$request_body` because the body is read into one memory buffer before it is passed to
/// fcgiwrap; `client_body_buffer_size` is 4 MiB, far above any upload-pack request here).
///
/// What the client did, by request ([`RequestKind`]):
/// - `GET /<repo>.git/info/refs?service=git-upload-pack`: with protocol v0/v1 this is the ref
///   advertisement; with v2 only the capability list. Never a pack.
/// - `POST /<repo>.git/git-upload-pack` whose body starts with `command=ls-refs` (v2): the ref
///   listing. Never a pack.
/// - `POST /<repo>.git/git-upload-pack` with `command=fetch` (v2), or any upload-pack POST with
///   protocol v0/v1 (whose only POST is the want/have negotiation): a fetch, which sends a pack
///   unless the negotiation has more rounds. A client that already has every object sends no
///   fetch at all.
///
/// Sizes alone cannot tell them apart (an ls-refs answer for 10,000 refs is bigger than a small
/// pack), hence the body. Git's own client gzips a request body over 1 KiB
/// (`Content-Encoding: gzip`): the log then holds compressed bytes, which
/// [`AccessLogEntry::body`] decompresses with `gzip -dc`. So "no pack was transferred" is
/// `server.pack_fetches() == 0` (counting [`RequestKind::Fetch`]).
///
/// The log is emptied once the server is up, so the readiness probes do not show in it.
#[derive(Debug)]
pub struct HttpGitServer {
    port: u16,
    root: PathBuf,
    access_log: PathBuf,
    error_log: PathBuf,
    // Field order matters for drop: nginx first, then fcgiwrap, then the directory.
    nginx: GroupChild,
    fcgiwrap: GroupChild,
    tmp: tempfile::TempDir,
}

impl HttpGitServer {
    /// Starts the server for every bare repository under `root`; with `auth = Some((user,
    /// password))`, every request needs HTTP Basic auth. Blocks until it answers.
    pub fn start(root: &Path, auth: Option<(&str, &str)>) -> HttpGitServer {
        HttpGitServer::start_with_lfs_proxy(root, auth, None)
    }

    /// As [`HttpGitServer::start`], and with `lfs_upstream = Some(port)` every request whose
    /// path contains `/info/lfs/` is proxied to `http://127.0.0.1:PORT` (an LFS server), behind
    /// the same Basic auth, so that a repository's default LFS endpoint is on the git server's
    /// own origin. nginx checks the credentials and does not pass them on (no
    /// `Authorization` header reaches the upstream), and sends the upstream's own address as
    /// `Host`, so the upstream's absolute hrefs name the upstream, another origin.
    pub fn start_with_lfs_proxy(
        root: &Path,
        auth: Option<(&str, &str)>,
        lfs_upstream: Option<u16>,
    ) -> HttpGitServer {
        let nginx_bin = require_program("nginx");
        let fcgiwrap_bin = require_program("fcgiwrap");
        let backend = git_exec_path().join("git-http-backend");
        assert!(
            backend.is_file(),
            "{} is missing: run `bash scripts/install-test-deps.sh`",
            backend.display()
        );
        let root = std::path::absolute(root).expect("absolute root path");
        let tmp = tempfile::Builder::new()
            .prefix("gitvault-http-")
            .tempdir()
            .expect("temp dir for the HTTP git server");
        let dir = tmp.path();
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir(dir.join(sub)).expect("nginx temp dir");
        }

        // fcgiwrap on a unix socket in the temp dir.
        let socket = dir.join("fcgiwrap.sock");
        let fcgi_log = std::fs::File::create(dir.join("fcgiwrap.log")).expect("fcgiwrap log");
        let mut fcgiwrap = GroupChild::spawn(
            "fcgiwrap",
            Command::new(&fcgiwrap_bin)
                .arg("-c")
                .arg("4")
                .arg("-s")
                .arg(format!("unix:{}", socket.display()))
                .stdout(fcgi_log.try_clone().expect("log file"))
                .stderr(fcgi_log),
        );
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = fcgiwrap.exited() {
                panic!(
                    "fcgiwrap exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(dir.join("fcgiwrap.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "fcgiwrap did not create {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let htpasswd = auth.map(|(user, password)| {
            let out = Command::new("openssl")
                .args(["passwd", "-apr1", "-stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    c.stdin
                        .take()
                        .expect("stdin")
                        .write_all(format!("{password}\n").as_bytes())?;
                    c.wait_with_output()
                })
                .expect("`openssl` is needed for htpasswd: run scripts/install-test-deps.sh");
            assert!(out.status.success(), "openssl passwd failed");
            let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let path = dir.join("htpasswd");
            std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
            path
        });

        let access_log = dir.join("access.log");
        let error_log = dir.join("error.log");
        let probe_repo = bare_repos(&root).into_iter().next();
        let probe_auth = auth.map(|(u, p)| basic_auth_header(u, p));

        // The chosen port may be taken by someone else before nginx binds it: retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(
                &conf,
                nginx_conf(
                    dir,
                    &root,
                    port,
                    &socket,
                    &backend,
                    htpasswd.as_deref(),
                    lfs_upstream,
                ),
            )
            .expect("write nginx.conf");
            let mut nginx = GroupChild::spawn(
                "nginx",
                Command::new(&nginx_bin)
                    .arg("-p")
                    .arg(dir)
                    .arg("-e")
                    .arg(&error_log)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let ready = loop {
                if let Some(status) = nginx.exited() {
                    let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                    if log.contains("Address already in use") && attempt < 5 {
                        break false;
                    }
                    panic!("nginx exited ({status}) at startup:\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx did not answer on port {port} within {STARTUP_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&error_log).unwrap_or_default()
                );
                let probe = match &probe_repo {
                    Some(repo) => format!("/{repo}/info/refs?service=git-upload-pack"),
                    None => "/".to_string(),
                };
                match http_get(port, &probe, probe_auth.as_deref()) {
                    // Without a repository any HTTP answer shows nginx is up.
                    Some((status, _)) if probe_repo.is_none() || status == 200 => break true,
                    Some((status, response)) if status != 502 && status != 504 => panic!(
                        "HTTP git server answered {status} to {probe}:\n{}\n{}",
                        String::from_utf8_lossy(&response),
                        std::fs::read_to_string(&error_log).unwrap_or_default()
                    ),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            if !ready {
                continue;
            }
            // Forget the readiness probes (nginx appends, so truncating is safe).
            std::fs::File::create(&access_log).expect("truncate access log");
            return HttpGitServer {
                port,
                root,
                access_log,
                error_log,
                nginx,
                fcgiwrap,
                tmp,
            };
        }
    }

    /// `http://127.0.0.1:PORT/<name>.git` (no credentials in it).
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, repo_path(name))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temp dir holding the configuration, logs and sockets.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The raw access log. Lines are tab-separated: msec, method, URI, status,
    /// request_length, bytes_sent, remote_user, Git-Protocol header, Content-Encoding header,
    /// and the request body of POSTs to git-upload-pack (escaped as `\xNN`), else `-`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// nginx's error log (also holds git http-backend's stderr).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// The access log, parsed.
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        self.access_log()
            .lines()
            .filter_map(AccessLogEntry::parse)
            .collect()
    }

    /// Number of upload-pack fetch requests (see the type's docs): 0 means no pack was sent.
    pub fn pack_fetches(&self) -> usize {
        self.requests()
            .iter()
            .filter(|e| e.kind() == RequestKind::Fetch && e.status == 200)
            .count()
    }

    /// Empties the access log (e.g. between a first and a second backup).
    pub fn clear_access_log(&self) {
        std::fs::File::create(&self.access_log).expect("truncate access log");
    }
}

fn nginx_conf(
    dir: &Path,
    root: &Path,
    port: u16,
    socket: &Path,
    backend: &Path,
    htpasswd: Option<&Path>,
    lfs_upstream: Option<u16>,
) -> String {
    let d = dir.display();
    let user = if running_as_root() {
        // Workers must reach the root-owned socket in our 0700 temp dir.
        "user root;"
    } else {
        ""
    };
    let auth = match htpasswd {
        Some(file) => format!(
            "auth_basic \"gitvault test\";\n            auth_basic_user_file {};",
            file.display()
        ),
        None => String::new(),
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let lfs = match lfs_upstream {
        Some(upstream) => format!(
            "location ~ /info/lfs/ {{\n            {auth}\n            \
             proxy_set_header Authorization \"\";\n            \
             proxy_pass http://127.0.0.1:{upstream};\n        }}"
        ),
        None => String::new(),
    };
    format!(
        r#"{user}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    # The body of upload-pack requests, to tell ls-refs from fetch (see HttpGitServer's docs).
    map $uri $upload_pack_body {{
        ~/git-upload-pack$ $request_body;
        default "-";
    }}
    log_format git escape=default '$msec\t$request_method\t$request_uri\t$status\t$request_length\t$bytes_sent\t$remote_user\t$http_git_protocol\t$http_content_encoding\t$upload_pack_body';
    access_log {d}/access.log git;

    client_max_body_size 0;
    client_body_buffer_size 4m;
    client_body_in_single_buffer on;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        {lfs}
        location / {{
            {auth}
            fastcgi_pass unix:{socket};
            fastcgi_buffering off;
            fastcgi_read_timeout 600s;
            fastcgi_send_timeout 600s;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL 1;
            fastcgi_param GIT_PROTOCOL $http_git_protocol;
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
            fastcgi_param PATH "{path}";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_PORT $server_port;
        }}
    }}
}}
"#,
        socket = socket.display(),
        backend = backend.display(),
        root = root.display(),
    )
}

/// What a request to the smart-HTTP server was (see [`HttpGitServer`]'s docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET …/info/refs?service=git-upload-pack`: v0/v1 ref advertisement or v2 capabilities.
    UploadPackAdvertisement,
    /// v2 `command=ls-refs`: the ref listing.
    LsRefs,
    /// v2 `command=fetch`, or a v0/v1 upload-pack POST: negotiation and pack.
    Fetch,
    /// Any other v2 command (e.g. `object-info`).
    OtherCommand,
    /// `…/info/refs?service=git-receive-pack` or a POST to `git-receive-pack`.
    Push,
    /// Anything else (dumb-HTTP paths, probes…).
    Other,
}

/// One line of [`HttpGitServer`]'s access log.
#[derive(Debug, Clone)]
pub struct AccessLogEntry {
    pub method: String,
    /// Path and query string.
    pub uri: String,
    pub status: u16,
    pub request_length: u64,
    pub bytes_sent: u64,
    /// Empty when none.
    pub remote_user: String,
    /// The `Git-Protocol` request header (`version=2`), empty when none.
    pub git_protocol: String,
    /// The `Content-Encoding` request header, empty when none.
    pub content_encoding: String,
    /// The logged request body (still compressed if `content_encoding` is gzip); `None` when
    /// not logged (not an upload-pack POST).
    pub raw_body: Option<Vec<u8>>,
}

impl AccessLogEntry {
    fn parse(line: &str) -> Option<AccessLogEntry> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 10 {
            return None;
        }
        let field = |s: &str| {
            if s == "-" {
                String::new()
            } else {
                unescape_str(s)
            }
        };
        Some(AccessLogEntry {
            method: f[1].to_string(),
            uri: unescape_str(f[2]),
            status: f[3].parse().ok()?,
            request_length: f[4].parse().ok()?,
            bytes_sent: f[5].parse().ok()?,
            remote_user: field(f[6]),
            git_protocol: field(f[7]),
            content_encoding: field(f[8]),
            raw_body: (f[9] != "-").then(|| unescape(f[9])),
        })
    }

    /// The request body, decompressed when it was gzipped.
    pub fn body(&self) -> Option<Vec<u8>> {
        let raw = self.raw_body.as_ref()?;
        if self.content_encoding.eq_ignore_ascii_case("gzip") {
            let mut child = Command::new("gzip")
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .ok()?;
            let mut stdin = child.stdin.take()?;
            let raw = raw.clone();
            let writer = std::thread::spawn(move || stdin.write_all(&raw));
            let out = child.wait_with_output().ok()?;
            let _ = writer.join();
            Some(out.stdout)
        } else {
            Some(raw.clone())
        }
    }

    pub fn kind(&self) -> RequestKind {
        let path = self.uri.split('?').next().unwrap_or_default();
        if self.uri.contains("service=git-receive-pack") || path.ends_with("/git-receive-pack") {
            return RequestKind::Push;
        }
        if self.method == "GET"
            && path.ends_with("/info/refs")
            && self.uri.contains("service=git-upload-pack")
        {
            return RequestKind::UploadPackAdvertisement;
        }
        if self.method != "POST" || !path.ends_with("/git-upload-pack") {
            return RequestKind::Other;
        }
        let body = self.body().unwrap_or_default();
        match first_pkt_line(&body) {
            Some(line) if line.starts_with(b"command=ls-refs") => RequestKind::LsRefs,
            Some(line) if line.starts_with(b"command=fetch") => RequestKind::Fetch,
            Some(line) if line.starts_with(b"command=") => RequestKind::OtherCommand,
            // Protocol v0/v1 (`want …`), or a body we could not read: count it as a fetch.
            _ => RequestKind::Fetch,
        }
    }
}

/// The payload of the first pkt-line of `data`.
fn first_pkt_line(data: &[u8]) -> Option<&[u8]> {
    let len = usize::from_str_radix(std::str::from_utf8(data.get(..4)?).ok()?, 16).ok()?;
    if len < 4 {
        return None;
    }
    data.get(4..len)
}

/// Reverses nginx's log escaping (`\xNN` for `"`, `\`, control and non-ASCII bytes).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1] == b'x' {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unescape_str(s: &str) -> String {
    String::from_utf8_lossy(&unescape(s)).into_owned()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// git daemon

/// `git daemon` serving every repository under `root` (read-only: receive-pack stays off) at
/// `git://127.0.0.1:PORT/<name>.git`.
#[derive(Debug)]
pub struct GitDaemon {
    port: u16,
    daemon: GroupChild,
    tmp: tempfile::TempDir,
}

impl GitDaemon {
    pub fn start(root: &Path) -> GitDaemon {
        let daemon_bin = git_exec_path().join("git-daemon");
        assert!(
            daemon_bin.is_file(),
            "{} is missing: run `bash scripts/install-test-deps.sh`",
            daemon_bin.display()
        );
        let root = std::path::absolute(root).expect("absolute root path");
        let tmp = tempfile::Builder::new()
            .prefix("gitvault-daemon-")
            .tempdir()
            .expect("temp dir for git daemon");
        let log_path = tmp.path().join("daemon.log");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for attempt in 1.. {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("daemon log");
            let mut daemon = GroupChild::spawn(
                "git daemon",
                Command::new("git")
                    .arg("daemon")
                    .arg("--listen=127.0.0.1")
                    .arg(format!("--port={port}"))
                    .arg(format!("--base-path={}", root.display()))
                    .args([
                        "--export-all",
                        "--reuseaddr",
                        "--informative-errors",
                        "--verbose",
                    ])
                    .arg(&root)
                    .stdout(log.try_clone().expect("log file"))
                    .stderr(log),
            );
            loop {
                if let Some(status) = daemon.exited() {
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(
                        attempt < 5 && text.contains("in use"),
                        "git daemon exited ({status}) at startup:\n{text}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "git daemon did not listen on port {port}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitDaemon { port, daemon, tmp };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `git://127.0.0.1:PORT/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{}", self.port, repo_path(name))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// git daemon's `--verbose` log (one line per connection and service).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("daemon.log")).unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------------------
// Faulty proxy

/// What [`FaultyHttpServer`] does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through unchanged.
    None,
    /// Responses carrying a pack are cut in the middle of the pack data; the HTTP framing stays
    /// valid (Content-Length of the shortened body), so only the git stream is short.
    TruncatePack,
    /// As `TruncatePack`, but the Content-Length is the full length and the connection closes
    /// early: an HTTP-level truncation.
    ClosePackEarly,
    /// One byte in the middle of the pack data is inverted (inside a side-band data packet, so
    /// the pkt-line framing stays valid and only the pack is corrupt).
    FlipByteInPack,
    /// Every request is answered with this status (401 comes with a `WWW-Authenticate`).
    Status(u16),
}

/// A thread-based HTTP/1.1 proxy (std::net only) in front of an [`HttpGitServer`] that alters
/// the responses carrying a pack (POSTs to `git-upload-pack` whose answer has pack data) and
/// passes ref listings through untouched, or answers everything with a fixed status.
/// One request per connection (`Connection: close`); responses are de-chunked and sent with a
/// Content-Length.
pub struct FaultyHttpServer {
    port: u16,
    state: Arc<ProxyState>,
    accept_thread: Option<JoinHandle<()>>,
}

struct ProxyState {
    upstream_port: u16,
    fault: Mutex<Fault>,
    stop: AtomicBool,
    requests: AtomicUsize,
    faults_applied: AtomicUsize,
    /// Every request's start line and headers, as received.
    heads: Mutex<Vec<String>>,
}

impl FaultyHttpServer {
    /// A proxy to `upstream` applying `fault`.
    pub fn start(upstream: &HttpGitServer, fault: Fault) -> FaultyHttpServer {
        FaultyHttpServer::start_for_port(upstream.port(), fault)
    }

    /// A proxy to any HTTP server on 127.0.0.1:`upstream_port`.
    pub fn start_for_port(upstream_port: u16, fault: Fault) -> FaultyHttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the faulty proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState {
            upstream_port,
            fault: Mutex::new(fault),
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            faults_applied: AtomicUsize::new(0),
            heads: Mutex::new(Vec::new()),
        });
        let thread_state = Arc::clone(&state);
        let accept_thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&thread_state);
                std::thread::spawn(move || {
                    // A failed connection is the client's business; nothing to report here.
                    let _ = handle_connection(stream, &state);
                });
            }
        });
        FaultyHttpServer {
            port,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:PROXYPORT/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, repo_path(name))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far: its start line and headers as sent, one string each.
    pub fn request_heads(&self) -> Vec<String> {
        self.state
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_request_heads(&self) {
        self.state
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Responses altered so far (pack faults) or answered with the fixed status.
    pub fn faults_applied(&self) -> usize {
        self.state.faults_applied.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyHttpServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

struct HttpHead {
    start_line: String,
    headers: Vec<(String, String)>,
}

impl HttpHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Headers minus the framing ones, which the proxy sets itself.
    fn end_to_end_headers(&self) -> impl Iterator<Item = &(String, String)> {
        self.headers.iter().filter(|(k, _)| {
            ![
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
            ]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        })
    }
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<HttpHead> {
    let mut start_line = String::new();
    if r.read_line(&mut start_line)? == 0 {
        return Err(invalid("connection closed before a request"));
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed in the headers"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(HttpHead {
        start_line: start_line.trim_end().to_string(),
        headers,
    })
}

/// Reads a body framed by the headers: chunked, Content-Length, or (responses) until EOF.
fn read_body(r: &mut impl BufRead, head: &HttpHead, until_eof: bool) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk"))?;
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = head.header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad Content-Length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if until_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn handle_connection(client: TcpStream, state: &ProxyState) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let head = read_head(&mut reader)?;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let mut text = head.start_line.clone();
    for (k, v) in &head.headers {
        text.push_str(&format!("\n{k}: {v}"));
    }
    state
        .heads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(text);
    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(&mut reader, &head, false)?;
    let fault = *state.fault.lock().unwrap_or_else(|e| e.into_inner());

    if let Fault::Status(status) = fault {
        state.faults_applied.fetch_add(1, Ordering::SeqCst);
        let text = format!("faulty proxy: {status}\n");
        let auth = if status == 401 {
            "WWW-Authenticate: Basic realm=\"faulty\"\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\n{auth}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{text}",
            reason(status),
            text.len()
        );
        client_w.write_all(response.as_bytes())?;
        return client_w.shutdown(Shutdown::Both);
    }

    // Forward to the upstream server.
    let mut upstream = TcpStream::connect(("127.0.0.1", state.upstream_port))?;
    upstream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut request = format!("{}\r\n", head.start_line);
    for (k, v) in head
        .end_to_end_headers()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("expect"))
    {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    upstream.write_all(request.as_bytes())?;
    upstream.write_all(&body)?;
    let mut up_reader = BufReader::new(upstream);
    let up_head = read_head(&mut up_reader)?;
    let mut up_body = read_body(&mut up_reader, &up_head, true)?;

    let is_upload_pack_post = head.start_line.starts_with("POST ")
        && head
            .start_line
            .split_whitespace()
            .nth(1)
            .is_some_and(|uri| {
                uri.split('?')
                    .next()
                    .unwrap_or("")
                    .ends_with("/git-upload-pack")
            });
    let middle = if is_upload_pack_post {
        middle_of_pack(&pack_data_ranges(&up_body))
    } else {
        None
    };
    let mut declared_len = None;
    if let Some(middle) = middle {
        match fault {
            Fault::TruncatePack => up_body.truncate(middle),
            Fault::ClosePackEarly => {
                declared_len = Some(up_body.len());
                up_body.truncate(middle);
            }
            Fault::FlipByteInPack => up_body[middle] ^= 0xff,
            Fault::None | Fault::Status(_) => {}
        }
        if fault != Fault::None {
            state.faults_applied.fetch_add(1, Ordering::SeqCst);
        }
    }

    let mut response = format!("{}\r\n", up_head.start_line);
    for (k, v) in up_head.end_to_end_headers() {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        declared_len.unwrap_or(up_body.len())
    ));
    client_w.write_all(response.as_bytes())?;
    client_w.write_all(&up_body)?;
    client_w.flush()?;
    client_w.shutdown(Shutdown::Both)
}

/// Where the pack data is in an upload-pack response body: the payload ranges of side-band
/// channel 1 packets from the `PACK` signature on. Empty when the response carries no pack (ref
/// listings, acknowledgment-only rounds). Falls back to everything from the first `PACK` when
/// the response is not side-band pkt-lines.
fn pack_data_ranges(body: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut in_pack = false;
    let mut i = 0;
    let mut framed = true;
    while i + 4 <= body.len() {
        let Some(len) = std::str::from_utf8(&body[i..i + 4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            framed = false;
            break;
        };
        if len < 4 {
            // flush-pkt, delim-pkt, response-end-pkt
            i += 4;
            continue;
        }
        if i + len > body.len() {
            framed = false;
            break;
        }
        let payload = &body[i + 4..i + len];
        if payload.first() == Some(&1) {
            if !in_pack && payload[1..].starts_with(b"PACK") {
                in_pack = true;
            }
            if in_pack && len > 5 {
                ranges.push(i + 5..i + len);
            }
        }
        i += len;
    }
    if !framed
        && ranges.is_empty()
        && let Some(start) = body.windows(4).position(|w| w == b"PACK")
    {
        ranges.push(start..body.len());
    }
    ranges
}

/// The body offset of the middle byte of the pack data.
fn middle_of_pack(ranges: &[std::ops::Range<usize>]) -> Option<usize> {
    let total: usize = ranges.iter().map(|r| r.len()).sum();
    let mut remaining = total / 2;
    for r in ranges {
        if remaining < r.len() {
            return Some(r.start + remaining);
        }
        remaining -= r.len();
    }
    None
}
