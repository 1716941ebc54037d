//! Putting a restored repository back on a server: `git push --mirror` (gix cannot push),
//! then its LFS objects through the batch API.

use std::path::Path;
use std::process::Command;

use crate::git::{self, Credentials};
use crate::progress::{self, Progress, Unit};

use super::{RestoreError, io_err};

/// Mirrors a restored repository to an (empty) remote with the git CLI (gix cannot push).
/// Credentials go through git's environment-supplied config, never the command line or URL.
/// After a mirror push, uploads the restored repository's LFS objects to `lfs_url`, else the push
/// URL's default LFS endpoint (`lfs.url` of the restored HEAD's `.lfsconfig` is not followed: it
/// names the old server). Returns how many the server did not have. `job` on `progress` sees
/// the bytes go.
pub fn push_lfs(
    repo: &Path,
    url: &str,
    lfs_url: Option<&str>,
    credentials: Option<&Credentials>,
    (job, progress): (&str, &dyn Progress),
) -> Result<u64, RestoreError> {
    let objects = crate::lfs::local_objects(repo);
    if objects.is_empty() {
        return Ok(0);
    }
    let spec = git::parse_remote(url)?;
    let explicit = lfs_url.map(|u| format!("[lfs]\n\turl = {u}\n"));
    let endpoint = crate::lfs::endpoint(&spec.fetch_url, explicit.as_deref().map(str::as_bytes))
        .ok_or_else(|| {
            RestoreError::Lfs(format!(
                "{} has no http(s) LFS endpoint: its {} LFS objects were not uploaded",
                spec.display_url,
                objects.len()
            ))
        })?;
    let creds = credentials.cloned().or(spec.url_credentials);
    // The user named both the push URL and any --push-lfs-url: the credentials may go to
    // that one's origin, never to hrefs elsewhere that the server answers with.
    let client = crate::lfs::Client::new(&endpoint, creds, lfs_url.unwrap_or(url))
        .map_err(RestoreError::LfsFailed)?;
    let bytes = objects.iter().map(|(p, _)| p.size).sum();
    let phase = format!("lfs upload ({} objects)", objects.len());
    progress.phase(job, &phase, Some(bytes), Unit::Bytes);
    let _shown = progress::Job::new(progress, job);
    crate::hooks::point("lfs-upload-started");
    client
        .upload(&objects, &|n| progress.advance(job, n))
        .map_err(RestoreError::LfsFailed)
}

pub fn push_mirror(
    repo: &Path,
    url: &str,
    credentials: Option<&Credentials>,
) -> Result<String, RestoreError> {
    push(repo, url, credentials, &["--mirror"], &[])
}

/// Pushes every ref of `repo` to the same name, deleting nothing on the remote (a restore into
/// an existing repository must not remove what is there; a repeated push is a no-op).
pub fn push_all_refs(
    repo: &Path,
    url: &str,
    credentials: Option<&Credentials>,
) -> Result<String, RestoreError> {
    push(repo, url, credentials, &[], &["refs/*:refs/*"])
}

fn push(
    repo: &Path,
    url: &str,
    credentials: Option<&Credentials>,
    options: &[&str],
    refspecs: &[&str],
) -> Result<String, RestoreError> {
    let spec = git::parse_remote(url)?;
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(["push", "--quiet"])
        .args(options)
        .arg(&spec.fetch_url)
        .args(refspecs);
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    let creds = credentials.cloned().or(spec.url_credentials);
    if let Some(c) = &creds
        && spec.is_http
    {
        if !url::Url::parse(&spec.fetch_url).is_ok_and(|u| git::transport_allows_credentials(&u)) {
            return Err(git::GitError::InsecureCredentials {
                url: spec.display_url,
            }
            .into());
        }
        // git would send the header to wherever the first request is redirected, and use that
        // origin for the rest of the push: no redirects when credentials are attached.
        let header = c.authorization_header();
        cmd.env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", header)
            .env("GIT_CONFIG_KEY_1", "http.followRedirects")
            .env("GIT_CONFIG_VALUE_1", "false");
    }
    let out = cmd.output().map_err(io_err("running git push"))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(c) = &creds {
            msg = c.scrub(&msg);
        }
        return Err(RestoreError::Push(msg));
    }
    Ok(spec.display_url.to_string())
}
