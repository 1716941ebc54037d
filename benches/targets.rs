//! The `s3://` target next to the plain aws-sdk-s3 calls it is built from, against the same
//! loopback s3s-fs server, so that our overhead shows as a ratio (docs/PERFORMANCE.md).
//!
//! `cargo bench --bench targets`. Starts its own `s3s-fs` on 127.0.0.1 (a free port, data in a
//! temporary directory) and kills it at the end; skips with a message when `s3s-fs` is not
//! installed (`scripts/install-test-deps.sh`). Under `cargo test --benches` (criterion's test
//! mode: every benchmark runs once) the sizes are small so that the CI smoke run stays quick.
//!
//! Measured: a put below the multipart threshold (16 MiB), a 32 MiB put (the target goes
//! multipart above 16 MiB), a 32 MiB get, a 128 MiB multipart put, and the single paginated
//! LIST that `verify` does per target over 10,000 packs, with a naive HEAD-per-pack loop timed
//! once beside it.

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitvault::target::{Body, open_target};

const MIB: usize = 1 << 20;
const BUCKET: &str = "bench";
/// The target's key prefix (`s3://bench/vault/`).
const PREFIX: &str = "vault";
/// Part size and parallelism of the plain multipart upload: the same as the target's.
const PART_SIZE: u64 = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;
/// Concurrent requests while filling the bucket with tiny packs (setup only).
const SETUP_IN_FLIGHT: usize = 32;
const ACCESS_KEY_ENV: &str = "GITVAULT_BENCH_S3_KEY";
const SECRET_KEY_ENV: &str = "GITVAULT_BENCH_S3_SECRET";

/// Sizes for a real run (`cargo bench`) or the smoke run (`cargo test --benches`).
struct Sizes {
    /// At the threshold: one PUT request on both sides.
    single: usize,
    /// Above the threshold: the target uploads two parts, the plain SDK one request.
    upload: usize,
    multipart: usize,
    packs: usize,
}

impl Sizes {
    fn get() -> Sizes {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not, and criterion then
        // runs every benchmark once.
        if std::env::args().any(|a| a == "--bench") {
            Sizes {
                single: 16 * MIB,
                upload: 32 * MIB,
                multipart: 128 * MIB,
                packs: 10_000,
            }
        } else {
            Sizes {
                single: MIB,
                upload: 2 * MIB,
                // Still above the target's multipart threshold, so the smoke run covers it.
                multipart: 20 * MIB,
                packs: 200,
            }
        }
    }
}

/// An s3s-fs process on loopback; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn start(program: &Path, access_key: &str, secret_key: &str) -> Server {
        let tmp = tempfile::tempdir().expect("temporary directory for s3s-fs");
        let data = tmp.path().join("data");
        // s3s-fs treats every directory under its root as a bucket.
        std::fs::create_dir_all(data.join(BUCKET)).expect("bucket directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind an ephemeral port on 127.0.0.1");
        let log = std::fs::File::create(tmp.path().join("server.log")).expect("s3s-fs log");
        let log_err = log.try_clone().expect("s3s-fs log");
        let child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret_key])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("cannot start s3s-fs");
        let mut server = Server {
            child,
            port,
            _tmp: tmp,
        };
        server.wait_until_up();
        server
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("s3s-fs exited with {status} on port {}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not answer on port {} in time",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` from PATH (or cargo's bin directory, where `cargo install` puts it).
fn find_s3s_fs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_cargo = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_cargo)
        .map(|dir| dir.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// Incompressible bytes (nothing on the path compresses, but no layer gets to cheat either).
fn input(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A plain SDK client configured like the target's: path style, the same endpoint, checksums
/// only when required. No custom retry or timeout settings.
async fn plain_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "bench",
        ))
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .endpoint_url(endpoint)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

async fn plain_put(client: &Client, key: &str, path: &Path) {
    client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from_path(path).await.unwrap())
        .send()
        .await
        .unwrap();
}

async fn plain_get(client: &Client, key: &str) -> usize {
    let out = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().len()
}

/// Multipart with the target's part size and parallelism, reading parts from the file.
async fn plain_multipart(client: &Client, key: &str, path: &Path, size: u64) {
    let upload_id = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let permits = Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT));
    let mut tasks = Vec::new();
    for (index, offset) in (0..size).step_by(PART_SIZE as usize).enumerate() {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let request = client
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .part_number(index as i32 + 1);
        let path = path.to_path_buf();
        let len = PART_SIZE.min(size - offset);
        tasks.push(tokio::spawn(async move {
            let body = ByteStream::read_from()
                .path(&path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .unwrap();
            let out = request.body(body).send().await.unwrap();
            drop(permit);
            CompletedPart::builder()
                .part_number(index as i32 + 1)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build()
        }));
    }
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        parts.push(task.await.unwrap());
    }
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn plain_list(client: &Client, prefix: &str) -> usize {
    let mut pages = client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += page.unwrap().contents().len();
    }
    count
}

/// `packs/xx/<64 hex>`, as the store names packs.
fn pack_keys(n: usize) -> Vec<String> {
    (0..n as u64)
        .map(|i| {
            let name = blake3::hash(&i.to_le_bytes()).to_hex();
            format!("packs/{}/{}", &name[..2], name)
        })
        .collect()
}

/// Fills the bucket with `keys` (tiny bodies), many requests at once.
async fn put_tiny_packs(client: &Client, keys: &[String]) {
    let permits = Arc::new(tokio::sync::Semaphore::new(SETUP_IN_FLIGHT));
    let mut tasks = Vec::with_capacity(keys.len());
    for key in keys {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let request = client
            .put_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/{key}"))
            .body(ByteStream::from(key.as_bytes().to_vec()));
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap();
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let Some(program) = find_s3s_fs() else {
        println!(
            "targets bench skipped: `s3s-fs` is not installed (bash scripts/install-test-deps.sh)"
        );
        return;
    };
    let sizes = Sizes::get();
    let access_key = "GVBENCHAK";
    let secret_key = "gvbench-secret-do-not-print";
    let server = Server::start(&program, access_key, secret_key);
    let endpoint = server.endpoint();

    // SAFETY: set before any thread of ours reads the environment; the names are the bench's own.
    unsafe {
        std::env::set_var(ACCESS_KEY_ENV, access_key);
        std::env::set_var(SECRET_KEY_ENV, secret_key);
    }
    let url = format!(
        "s3://{BUCKET}/{PREFIX}?endpoint={endpoint}&region=us-east-1&path_style=true\
         &access_key_env={ACCESS_KEY_ENV}&secret_key_env={SECRET_KEY_ENV}"
    );
    let target = open_target("bench", &url).unwrap();

    // The plain side gets a runtime like the target's own (two workers). The target blocks on
    // its private runtime, so it is never called from inside this one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(plain_client(&endpoint, access_key, secret_key));

    let files = tempfile::tempdir().unwrap();
    let file_of = |len: usize| {
        let path = files.path().join(format!("body-{len}"));
        std::fs::write(&path, input(len)).unwrap();
        path
    };

    // 1. Upload below and above the multipart threshold; 2. download.
    for (label, len) in [("single", sizes.single), ("upload", sizes.upload)] {
        let path = file_of(len);
        let mib = len / MIB;
        let mut g = c.benchmark_group(format!("put {mib}MiB ({label})"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("gitvault S3Target::put", |b| {
            b.iter(|| {
                target
                    .put(&format!("bench/{label}"), Body::File(&path))
                    .unwrap()
            })
        });
        g.bench_function("plain sdk put_object", |b| {
            let key = format!("plain/{label}");
            b.iter(|| runtime.block_on(plain_put(&client, &key, &path)))
        });
        g.finish();
    }

    let len = sizes.upload;
    let mut g = c.benchmark_group(format!("get {}MiB", len / MIB));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(len as u64));
    // Written by the `upload` group above.
    assert_eq!(target.head("bench/upload").unwrap(), Some(len as u64));
    g.bench_function("gitvault S3Target::get", |b| {
        b.iter(|| black_box(target.get("bench/upload").unwrap().len()))
    });
    g.bench_function("plain sdk get_object+collect", |b| {
        let key = format!("{PREFIX}/bench/upload");
        b.iter(|| black_box(runtime.block_on(plain_get(&client, &key))))
    });
    g.finish();

    // 3. A big body: the target's multipart path against plain multipart and one plain PUT.
    let len = sizes.multipart;
    let path = file_of(len);
    let mut g = c.benchmark_group(format!("put {}MiB (multipart)", len / MIB));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("gitvault S3Target::put", |b| {
        b.iter(|| target.put("bench/multipart", Body::File(&path)).unwrap())
    });
    g.bench_function("plain sdk multipart (16 MiB parts, 4 at once)", |b| {
        b.iter(|| {
            runtime.block_on(plain_multipart(
                &client,
                "plain/multipart",
                &path,
                len as u64,
            ))
        })
    });
    g.bench_function("plain sdk put_object (one request)", |b| {
        b.iter(|| runtime.block_on(plain_put(&client, "plain/multipart-single", &path)))
    });
    g.finish();

    // 4. What `verify` costs per target: one paginated LIST of `packs/`.
    let keys = pack_keys(sizes.packs);
    let setup = Instant::now();
    runtime.block_on(put_tiny_packs(&client, &keys));
    println!(
        "setup: {} tiny packs put in {:.2} s ({} at once)",
        keys.len(),
        setup.elapsed().as_secs_f64(),
        SETUP_IN_FLIGHT
    );
    assert_eq!(target.list("packs/").unwrap().len(), keys.len());

    let mut g = c.benchmark_group(format!("list {} packs", keys.len()));
    g.sample_size(10);
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("gitvault S3Target::list (verify)", |b| {
        b.iter(|| black_box(target.list("packs/").unwrap().len()))
    });
    g.bench_function("plain sdk list_objects_v2 paginator", |b| {
        let prefix = format!("{PREFIX}/packs/");
        b.iter(|| black_box(runtime.block_on(plain_list(&client, &prefix))))
    });
    g.finish();

    // The naive alternative, one HEAD per pack, timed once: it is too slow for criterion's loop.
    let list_start = Instant::now();
    let listed = target.list("packs/").unwrap().len();
    let list_time = list_start.elapsed();
    let head_start = Instant::now();
    for key in &keys {
        assert!(target.head(key).unwrap().is_some());
    }
    let head_time = head_start.elapsed();
    println!(
        "verify presence of {} packs: one paginated LIST {:.3} s ({listed} listed), {} sequential \
         HEADs {:.3} s ({:.0} µs each): {:.0}x",
        keys.len(),
        list_time.as_secs_f64(),
        keys.len(),
        head_time.as_secs_f64(),
        head_time.as_secs_f64() * 1e6 / keys.len() as f64,
        head_time.as_secs_f64() / list_time.as_secs_f64()
    );

    drop(target);
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
