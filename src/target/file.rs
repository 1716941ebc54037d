//! `file://` target: a directory. Writes are atomic and durable: temporary file, fsync,
//! create-only link into place, fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Body, Listed, PutOutcome, Target, TargetError, check_key};
use crate::crypto::ReadSeek;

pub struct FileTarget {
    name: String,
    root: PathBuf,
    url: String,
}

impl FileTarget {
    pub fn new(name: &str, root: PathBuf) -> FileTarget {
        let url = url::Url::from_file_path(&root)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| format!("file://{}", root.display()));
        FileTarget {
            name: name.to_string(),
            root,
            url,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, TargetError> {
        check_key(&self.name, key)?;
        Ok(self.root.join(key))
    }

    fn io_err(&self, op: &'static str, key: &str, source: io::Error) -> TargetError {
        if source.kind() == io::ErrorKind::NotFound && (op == "get" || op == "open") {
            return TargetError::NotFound {
                target: self.name.clone(),
                key: key.to_string(),
            };
        }
        TargetError::Io {
            target: self.name.clone(),
            op,
            key: key.to_string(),
            source,
        }
    }

    /// Writes `body` to a fresh temporary file next to `dest` and fsyncs it.
    fn write_temp(&self, dest: &Path, body: Body<'_>) -> io::Result<PathBuf> {
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let file_name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let suffix = crate::crypto::random_hex(8).map_err(io::Error::other)?;
        let tmp = dir.join(format!(".tmp-{file_name}-{suffix}"));
        let mut out = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let written = match body {
            Body::Bytes(bytes) => out.write_all(bytes),
            Body::File(src) => {
                File::open(src).and_then(|mut f| io::copy(&mut f, &mut out).map(|_| ()))
            }
        };
        if let Err(e) = written.and_then(|_| out.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Target for FileTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn put_if_absent(&self, key: &str, body: Body<'_>) -> Result<PutOutcome, TargetError> {
        let dest = self.path(key)?;
        if dest.exists() {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let tmp = self
            .write_temp(&dest, body)
            .map_err(|e| self.io_err("put", key, e))?;
        // A hard link fails when the name exists, which makes the publish create-only.
        let linked = fs::hard_link(&tmp, &dest);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Ok(PutOutcome::AlreadyPresent);
            }
            Err(e) => return Err(self.io_err("put", key, e)),
        }
        if let Some(dir) = dest.parent() {
            sync_dir(dir).map_err(|e| self.io_err("put", key, e))?;
        }
        Ok(PutOutcome::Created)
    }

    fn put(&self, key: &str, body: Body<'_>) -> Result<(), TargetError> {
        let dest = self.path(key)?;
        let tmp = self
            .write_temp(&dest, body)
            .map_err(|e| self.io_err("put", key, e))?;
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_err("put", key, e)
        })?;
        if let Some(dir) = dest.parent() {
            sync_dir(dir).map_err(|e| self.io_err("put", key, e))?;
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, TargetError> {
        fs::read(self.path(key)?).map_err(|e| self.io_err("get", key, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, TargetError> {
        let mut file = File::open(self.path(key)?).map_err(|e| self.io_err("get", key, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io_err("get", key, e))?;
        let mut buf = Vec::new();
        file.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.io_err("get", key, e))?;
        Ok(buf)
    }

    fn head(&self, key: &str) -> Result<Option<u64>, TargetError> {
        match fs::metadata(self.path(key)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err("head", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, TargetError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_err("list", prefix, e))?;
                let file_type = entry
                    .file_type()
                    .map_err(|e| self.io_err("list", prefix, e))?;
                let path = entry.path();
                if file_type.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(key) = rel.to_str() else { continue };
                if key.starts_with(prefix) {
                    let size = entry
                        .metadata()
                        .map_err(|e| self.io_err("list", prefix, e))?
                        .len();
                    out.push(Listed {
                        key: key.to_string(),
                        size,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>, TargetError> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.modified().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err("stat", key, e)),
        }
    }

    fn remove_stale_temporaries(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, TargetError> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let stale = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > older_than);
                if stale && entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            return Err(self.io_err(
                                "remove temporary",
                                &entry.path().display().to_string(),
                                e,
                            ));
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    fn delete(&self, key: &str) -> Result<(), TargetError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err("delete", key, e)),
        }
        // Pack directories emptied by prune would otherwise pile up. Only packs are deleted in
        // bulk, and only by prune under the writer lock, so no put is creating a file in this
        // directory now; a directory that is not empty stays.
        if key.starts_with("packs/")
            && let Some(dir) = path.parent()
        {
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    fn open(&self, key: &str) -> Result<Box<dyn ReadSeek + '_>, TargetError> {
        let file = File::open(self.path(key)?).map_err(|e| self.io_err("open", key, e))?;
        Ok(Box::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_if_absent_is_create_only_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new("local", dir.path().to_path_buf());
        assert_eq!(
            t.put_if_absent("packs/ab/one", Body::Bytes(b"1")).unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            t.put_if_absent("packs/ab/one", Body::Bytes(b"2")).unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert_eq!(t.get("packs/ab/one").unwrap(), b"1");
        assert_eq!(t.head("packs/ab/one").unwrap(), Some(1));
        assert_eq!(t.head("packs/ab/two").unwrap(), None);
        assert!(matches!(
            t.get("packs/ab/two"),
            Err(TargetError::NotFound { .. })
        ));
        let listed = t.list("packs/").unwrap();
        assert_eq!(
            listed,
            vec![Listed {
                key: "packs/ab/one".into(),
                size: 1
            }]
        );
        t.delete("packs/ab/one").unwrap();
        t.delete("packs/ab/one").unwrap();
        assert!(t.list("packs/").unwrap().is_empty());
    }
}
