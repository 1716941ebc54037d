//! Helpers shared by the integration tests: vaults in temporary directories, opened through
//! the library or driven through the real `gitvault` binary.
#![allow(dead_code)]

pub mod git_server;
pub mod lfs_server;
pub mod provider_api;
pub mod receiver;
pub mod restore_into;
pub mod s3_server;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use gitvault::Vault;
use gitvault::crypto::{Unlock, VaultKeys};
use gitvault::vault::InitOptions;

pub struct TestVault {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub identity_file: PathBuf,
    pub identity: age::x25519::Identity,
}

impl TestVault {
    /// A vault whose keys are encrypted to a fresh X25519 identity (fast to open, unlike scrypt).
    pub fn new() -> TestVault {
        let tmp = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let identity_file = tmp.path().join("identity.txt");
        std::fs::write(
            &identity_file,
            format!(
                "# test identity\n{}\n",
                identity.to_string().expose_secret()
            ),
        )
        .unwrap();
        let dir = tmp.path().join("vault");
        Vault::init(
            &dir,
            InitOptions {
                recipients: vec![identity.to_public().to_string()],
                passphrase: None,
            },
        )
        .unwrap();
        TestVault {
            tmp,
            dir,
            identity_file,
            identity,
        }
    }

    pub fn open(&self) -> Vault {
        Vault::open(&self.dir).unwrap()
    }

    pub fn keys(&self, vault: &Vault) -> VaultKeys {
        vault
            .unlock(&Unlock::Identities(vec![Box::new(self.identity.clone())]))
            .unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs the gitvault binary on this vault with the test identity.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitvault"));
        cmd.arg("--vault")
            .arg(&self.dir)
            .args(args)
            .env("GITVAULT_IDENTITY_FILE", &self.identity_file)
            .env_remove("GITVAULT_PASSPHRASE")
            .env_remove("GITVAULT_TEST_HOOK_STALL");
        cmd
    }

    /// Changes a `[store]` setting in config.toml.
    pub fn set_store_option(&self, key: &str, value: u64) {
        let path = self.dir.join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let prefix = format!("{key} = ");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{key} = {value}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&path, text).unwrap();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Total size of every file under `dir`.
pub fn tree_size(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn pack_files(target_dir: &Path) -> Vec<PathBuf> {
    files_under(&target_dir.join("packs"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// Deterministic pseudo-random bytes, as a reader, so that 100+ MiB inputs need not sit in
/// memory. Byte i depends only on (seed, i), whatever the read sizes.
pub struct NoiseReader {
    seed: u64,
    pos: u64,
    len: u64,
}

impl NoiseReader {
    pub fn new(seed: u64, len: u64) -> NoiseReader {
        NoiseReader { seed, pos: 0, len }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Read for NoiseReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        for b in &mut buf[..n] {
            let word = splitmix(self.seed ^ (self.pos / 8).wrapping_mul(0xD6E8_FEB8_6659_FD93));
            *b = word.to_le_bytes()[(self.pos % 8) as usize];
            self.pos += 1;
        }
        Ok(n)
    }
}

pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    NoiseReader::new(seed, len as u64)
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// Runs git in `dir` and returns its stdout; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `git fsck --full` passes on a (restored) repository.
pub fn fsck(repo: &Path) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fsck", "--full"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git fsck --full failed on {}: {}",
        repo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a restore must reproduce exactly: every ref with its object, and HEAD.
pub fn refs_and_head(repo: &Path) -> String {
    let refs = git(repo, &["for-each-ref", "--format=%(objectname) %(refname)"]);
    let head = std::fs::read_to_string(repo.join("HEAD")).unwrap();
    format!("HEAD {}\n{refs}", head.trim())
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    stdout(out)
}

/// The samples of a metrics file (`parse_metrics`); `None` while the file does not exist.
pub fn metrics_samples(path: &Path) -> Option<std::collections::HashMap<String, f64>> {
    Some(parse_metrics(&std::fs::read_to_string(path).ok()?))
}

/// A metrics document parsed by `prometheus-parse`, as name{labels} → value (labels sorted).
/// Every sample must be a gauge.
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    let samples = scrape.samples.into_iter().map(|s| {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("{} is not a gauge: {other:?}", s.metric),
        };
        (format!("{}{{{}}}", s.metric, labels.join(",")), value)
    });
    samples.collect()
}

/// A pack of `chunks` (id, kind, bytes) encrypted to the vault's public key, its footer sealed
/// under `auth`: the vault's own for a genuine pack, another key for a forger's.
pub fn write_pack(
    dir: &Path,
    keys: &VaultKeys,
    auth: &gitvault::crypto::AuthKey,
    chunks: &[(gitvault::ChunkId, u8, &[u8])],
) -> gitvault::store::pack::FinishedPack {
    use gitvault::store::pack::{Compression, PackWriter};
    let compression = Compression {
        level: 3,
        frame_size: 1 << 20,
    };
    let mut w = PackWriter::create(dir, &keys.identity().to_public(), auth, compression).unwrap();
    for (id, kind, bytes) in chunks {
        w.add(*id, *kind, bytes).unwrap();
    }
    w.finish().unwrap()
}

/// Spawns `cmd` paused at the test hook `point` until `release` exists; returns it once it has
/// reached the point (its stdout piped, its stderr drained).
pub fn spawn_paused(mut cmd: Command, point: &str, release: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = cmd
        .env(
            "GITVAULT_TEST_HOOK_PAUSE",
            format!("{point}:{}", release.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the process ended before {point}"
        );
        if line.contains(&format!("gitvault-test-hook: {point}")) {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

/// A condition on what a command drew on its terminal.
pub type DrawnTest = dyn Fn(&str) -> bool;

/// Runs `gitvault args…` on `tv` under a pseudo-terminal (util-linux `script`) and returns
/// everything it drew. With `held`: the process pauses at that test hook point until what it
/// drew satisfies `until` (polled, with a generous deadline, since a busy machine draws late),
/// so that a short phase is seen for sure. `env` is added to the command's environment.
pub fn on_a_terminal(
    tv: &TestVault,
    args: &[&str],
    env: &[(&str, &str)],
    held: Option<(&str, &DrawnTest)>,
) -> String {
    use std::sync::{Arc, Mutex};
    let mut line = format!(
        "'{}' --vault '{}'",
        env!("CARGO_BIN_EXE_gitvault"),
        tv.dir.display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let release = tv.tmp.path().join("terminal-release");
    let _ = std::fs::remove_file(&release);
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-f", "-e", "-c", &line, "/dev/null"])
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped());
    if let Some((point, _)) = held {
        cmd.env(
            "GITVAULT_TEST_HOOK_PAUSE",
            format!("{point}:{}", release.display()),
        );
    }
    let mut child = cmd
        .spawn()
        .expect("script (util-linux) runs a command under a pseudo-terminal");
    let drawn = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let reader = {
        let drawn = drawn.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                drawn
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    if let Some((point, until)) = held {
        let began = std::time::Instant::now();
        while !until(&drawn.lock().unwrap()) {
            if began.elapsed() > std::time::Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the awaited progress was not drawn while paused at {point}: {:?}",
                    drawn.lock().unwrap()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::fs::write(&release, b"").unwrap();
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let drawn = drawn.lock().unwrap().clone();
    assert!(status.success(), "{status:?}: {drawn}");
    drawn
}

/// `text` shows `label` followed by a number that is not zero (`target s3 upload 2.3 KiB`).
pub fn shows_nonzero(text: &str, label: &str) -> bool {
    text.match_indices(label).any(|(at, _)| {
        text[at + label.len()..]
            .chars()
            .next()
            .is_some_and(|c| ('1'..='9').contains(&c))
    })
}
