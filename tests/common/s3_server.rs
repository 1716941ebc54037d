//! S3 servers on loopback for the `s3://` target tests: moto (Python, in memory, accepts any
//! credentials) and s3s-fs (Rust, stores objects as files, checks signatures). Both are
//! installed by `scripts/install-test-deps.sh`.
//!
//! Credentials reach a target through environment variables that its URL names. Each server
//! instance gets its own variable names, so tests running in parallel threads never fight over
//! one variable.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// `moto_server`: keeps everything in memory, so a restart loses every object.
    Moto,
    /// `s3s-fs`: buckets are directories under its data directory; survives restarts.
    S3sFs,
}

pub struct S3Server {
    pub kind: S3Kind,
    pub port: u16,
    tmp: tempfile::TempDir,
    child: Option<Child>,
    access_key: String,
    secret_key: String,
    access_key_env: String,
    secret_key_env: String,
    /// Recreated when a moto server comes back (its buckets lived in memory); `true`: with
    /// Object Lock.
    buckets: Mutex<Vec<(String, bool)>>,
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

impl S3Server {
    pub fn moto() -> S3Server {
        S3Server::start(S3Kind::Moto)
    }

    pub fn s3s_fs() -> S3Server {
        S3Server::start(S3Kind::S3sFs)
    }

    /// Starts a server on a free port. The port is free when chosen, but another test's
    /// server may take it before this one binds: then this server exits and the port answers
    /// for the other one (until that one stops). Such a start is retried on a new port.
    fn start(kind: S3Kind) -> S3Server {
        let mut attempt = 0;
        loop {
            let mut server = S3Server::prepare(kind);
            match server.launch() {
                Ok(()) => return server,
                Err(reason) if attempt < 4 => {
                    eprintln!(
                        "{kind:?} did not start on port {}, retrying: {reason}",
                        server.port
                    );
                    attempt += 1;
                }
                Err(reason) => panic!("{reason}"),
            }
        }
    }

    fn prepare(kind: S3Kind) -> S3Server {
        let tmp = tempfile::tempdir().expect("temporary directory for an S3 server");
        let port = free_port();
        let n = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}_{n}_{port}", std::process::id());
        let server = S3Server {
            kind,
            port,
            tmp,
            child: None,
            access_key: format!("GVTESTAK{port}"),
            // Distinctive, so tests can assert that it never shows up in output.
            secret_key: format!("gvtest-secret-{tag}-do-not-print"),
            access_key_env: format!("GITVAULT_TEST_S3_{tag}_KEY"),
            secret_key_env: format!("GITVAULT_TEST_S3_{tag}_SECRET"),
            buckets: Mutex::new(Vec::new()),
        };
        std::fs::create_dir_all(server.data_dir()).expect("S3 server data directory");
        server
    }

    /// Where s3s-fs keeps buckets (one directory each). Unused by moto.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("server.log")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Kills the server (the port stops answering). s3s-fs keeps its data on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server on the same port and data directory, and waits until it answers.
    /// moto comes back empty: its buckets are recreated, their objects are gone.
    pub fn start_again(&mut self) {
        if let Err(reason) = self.launch() {
            panic!("{reason}");
        }
    }

    fn launch(&mut self) -> Result<(), String> {
        self.stop();
        let log = std::fs::File::create(self.log_path()).expect("S3 server log file");
        let log_err = log.try_clone().expect("S3 server log file");
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            S3Kind::Moto => {
                let mut c = Command::new(program("moto_server"));
                c.args(["-H", "127.0.0.1", "-p", &port]);
                c
            }
            S3Kind::S3sFs => {
                let mut c = Command::new(program("s3s-fs"));
                c.args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--access-key", &self.access_key])
                    .args(["--secret-key", &self.secret_key])
                    .arg(self.data_dir());
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.kind));
        self.child = Some(child);
        self.wait_until_up()?;
        if self.kind == S3Kind::Moto {
            let buckets = self.buckets.lock().map(|b| b.clone()).unwrap_or_default();
            for (bucket, locked) in buckets {
                self.create_bucket_on_server(&bucket, locked);
            }
        }
        Ok(())
    }

    /// Waits until the port answers while this server's process still runs (an answer from
    /// another process holding the port does not count).
    fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // A server that failed to bind exits at once: give it the time to.
                std::thread::sleep(Duration::from_millis(300));
                self.exited()?;
                return Ok(());
            }
            self.exited()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} did not answer on port {} in time",
                    self.kind, self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(format!(
                "{:?} exited with {status} on port {}:\n{}",
                self.kind,
                self.port,
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            ));
        }
        Ok(())
    }

    pub fn create_bucket(&self, name: &str) {
        self.create_bucket_on_server(name, false);
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.push((name.to_string(), false));
        }
    }

    /// A bucket with S3 Object Lock enabled (and so versioning), on moto only: s3s-fs has no
    /// Object Lock.
    pub fn create_locked_bucket(&self, name: &str) {
        assert_eq!(self.kind, S3Kind::Moto, "only moto has Object Lock");
        self.create_bucket_on_server(name, true);
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.push((name.to_string(), true));
        }
    }

    fn create_bucket_on_server(&self, name: &str, locked: bool) {
        match self.kind {
            // s3s-fs treats every directory under its root as a bucket.
            S3Kind::S3sFs => {
                std::fs::create_dir_all(self.data_dir().join(name)).expect("bucket directory")
            }
            // moto checks no signature, so a bare HTTP PUT creates the bucket.
            S3Kind::Moto => {
                let header = if locked {
                    "x-amz-bucket-object-lock-enabled: true\r\n"
                } else {
                    ""
                };
                let status = http_put(self.port, &format!("/{name}"), header);
                assert!(
                    status == 200,
                    "moto did not create bucket {name}: HTTP {status}"
                );
            }
        }
    }

    /// An aws-sdk-s3 client with this server's credentials, for requests gitvault never makes.
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "test",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// [`S3Server::sdk_client`] on its own runtime, blocking: what someone holding the backup
    /// host's S3 keys could do, outside gitvault.
    pub fn raw_client(&self) -> RawS3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the raw S3 client");
        RawS3 {
            client: self.sdk_client(),
            runtime,
        }
    }

    /// An `s3://` URL for `bucket` and `prefix` on this server, naming (not holding) the
    /// credential variables that `env()` lists.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        self.url_with(bucket, prefix, "")
    }

    /// Like `url`, with extra query parameters (`"&max_attempts=2"`).
    pub fn url_with(&self, bucket: &str, prefix: &str, extra: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&path_style=true\
             &access_key_env={}&secret_key_env={}{extra}",
            self.endpoint(),
            self.access_key_env,
            self.secret_key_env
        )
    }

    /// The credential variables the URLs name, with their values, for child processes.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (self.access_key_env.clone(), self.access_key.clone()),
            (self.secret_key_env.clone(), self.secret_key.clone()),
        ]
    }

    /// Sets `env()` in this process, for targets opened in-process by the library.
    pub fn set_env(&self) {
        for (name, value) in self.env() {
            // SAFETY: `set_var` races with threads reading the environment at the same time.
            // The names are unique to this server instance, so no other test reads or writes
            // them, and libc's getenv from other threads only sees a complete entry.
            unsafe { std::env::set_var(name, value) };
        }
    }

    /// Sets credential variables for this server to wrong values (wrong secret), under new
    /// names, and returns a URL naming them.
    pub fn url_with_wrong_secret(&self, bucket: &str, wrong_secret: &str) -> String {
        let n = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let ak = format!("{}_WRONG{n}", self.access_key_env);
        let sk = format!("{}_WRONG{n}", self.secret_key_env);
        // SAFETY: as in `set_env`, the names are unique.
        unsafe {
            std::env::set_var(&ak, &self.access_key);
            std::env::set_var(&sk, wrong_secret);
        }
        format!(
            "s3://{bucket}/?endpoint={}&region=us-east-1&access_key_env={ak}&secret_key_env={sk}\
             &max_attempts=1",
            self.endpoint()
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// The program's path, or a panic saying how to install it.
fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_cargo = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_cargo)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `bash scripts/install-test-deps.sh`")
        })
}

/// A minimal HTTP/1.1 PUT with an empty body and `headers` (each ending in CRLF); returns the
/// status code.
fn http_put(port: u16, path: &str, headers: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the S3 server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("socket timeout");
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send the PUT");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What an object's current version carries, read with HeadObject (moto 5.2 answers
/// GetObjectRetention with a 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLock {
    pub mode: Option<String>,
    pub until: Option<std::time::SystemTime>,
}

/// Plain S3 requests with the target's credentials, bypassing gitvault.
pub struct RawS3 {
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl RawS3 {
    /// The lock of `key`'s current version, or `None` when there is no current version.
    pub fn head_lock(&self, bucket: &str, key: &str) -> Option<RawLock> {
        let out = self
            .runtime
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .ok()?;
        Some(RawLock {
            mode: out.object_lock_mode().map(|m| m.as_str().to_string()),
            until: out
                .object_lock_retain_until_date()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        })
    }

    /// Every version id stored under exactly `key` (delete markers left out).
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let out = self
            .runtime
            .block_on(
                self.client
                    .list_object_versions()
                    .bucket(bucket)
                    .prefix(key)
                    .send(),
            )
            .expect("ListObjectVersions");
        out.versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .filter_map(|v| v.version_id().map(str::to_string))
            .collect()
    }

    /// Deletes every version of `key`, as an attacker erasing data would (a plain delete only
    /// hides it behind a delete marker); the first refusal is returned.
    pub fn destroy(&self, bucket: &str, key: &str) -> Result<(), String> {
        for version in self.versions(bucket, key) {
            self.runtime
                .block_on(
                    self.client
                        .delete_object()
                        .bucket(bucket)
                        .key(key)
                        .version_id(version)
                        .send(),
                )
                .map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }

    /// A plain DeleteObject: on a versioned bucket it only adds a delete marker.
    pub fn hide(&self, bucket: &str, key: &str) {
        self.runtime
            .block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .expect("raw DeleteObject");
    }

    /// Writes a new current version of `key` without a lock, or with `mode` for a minute.
    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>, mode: Option<&str>) {
        let mut request = self.client.put_object().bucket(bucket).key(key);
        if let Some(mode) = mode {
            let until = std::time::SystemTime::now() + Duration::from_secs(60);
            use base64::Engine;
            use md5::Digest;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            request = request
                .object_lock_mode(mode.into())
                .object_lock_retain_until_date(until.into())
                .content_md5(md5);
        }
        self.runtime
            .block_on(request.body(body.into()).send())
            .expect("raw PutObject");
    }
}
