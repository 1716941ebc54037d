//! Opening a vault's key files with what the user supplied.

use crate::crypto::{CryptoError, Unlock, VaultKeys};

use std::{fs, io};

use super::{KEYS_DIR, Vault, VaultError, file_name, io_err};

impl Vault {
    /// Opens the vault keys with what the user supplied, trying every key file.
    pub fn unlock(&self, how: &Unlock) -> Result<VaultKeys, VaultError> {
        let mut files = self.local_key_files()?;
        if files.is_empty() {
            for t in &self.targets {
                if let Ok(listed) = t.list("keys/") {
                    for l in listed
                        .into_iter()
                        .filter(|l| l.size <= super::MAX_SMALL_FILE)
                    {
                        if let Ok(bytes) = t.get(&l.key) {
                            files.push((l.key, bytes));
                        }
                    }
                }
            }
        }
        if files.is_empty() {
            return Err(VaultError::NoKeyFiles(self.dir.display().to_string()));
        }
        let mut last = None;
        for (name, bytes) in &files {
            match VaultKeys::open(name, bytes, how) {
                Ok((keys, vault_id))
                    if keys.public_key() == self.config.public_key
                        && vault_id == self.config.vault_id =>
                {
                    return Ok(keys);
                }
                Ok(_) => {
                    last = Some(CryptoError::BadKeyFile {
                        name: name.clone(),
                        reason: "it holds the key of a different vault".into(),
                    })
                }
                Err(CryptoError::WrongKey) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(CryptoError::WrongKey).into())
    }

    pub(super) fn local_key_files(&self) -> Result<Vec<(String, Vec<u8>)>, VaultError> {
        let dir = self.dir.join(KEYS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("reading {}", dir.display()))(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(io_err(format!("reading {}", dir.display())))?
                .path();
            if path.extension().is_some_and(|e| e == "age") {
                let bytes =
                    fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
                files.push((format!("{KEYS_DIR}/{}", file_name(&path)), bytes));
            }
        }
        files.sort();
        Ok(files)
    }
}
