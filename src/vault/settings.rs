//! Changing a vault's configuration: targets (prepared with the public parameters and key
//! files) and sources, each change written to config.toml atomically under the writer lock.

use super::*;

impl Vault {
    /// Adds a target and copies the vault's public parameters and key files to it. Packs
    /// already written are not copied here (`gitvault sync` does that).
    pub fn add_target(
        &mut self,
        name: &str,
        url: &str,
        lock: &WriteLock,
    ) -> Result<(), VaultError> {
        self.add_configured_target(TargetConfig::new(name, url), lock)
    }

    /// [`Vault::add_target`] with the entry's Object Lock settings: the bucket must have Object
    /// Lock enabled, which is checked before anything is written.
    pub fn add_configured_target(
        &mut self,
        entry: TargetConfig,
        _lock: &WriteLock,
    ) -> Result<(), VaultError> {
        let name = entry.name.as_str();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(VaultError::BadTargetName(name.to_string()));
        }
        if self.config.targets.iter().any(|t| t.name == name) {
            return Err(VaultError::TargetExists(name.to_string()));
        }
        // Two names for one place would count as two replicas where there is one.
        let place = |url: &str| url.trim_end_matches('/').to_string();
        if let Some(same) = self
            .config
            .targets
            .iter()
            .find(|t| place(&t.url) == place(&entry.url))
        {
            return Err(VaultError::TargetUrlTaken {
                url: crate::redact::RedactedUrl::new(&entry.url).to_string(),
                name: same.name.clone(),
            });
        }
        if entry.lock_days == Some(0) {
            return Err(VaultError::BadConfig {
                path: format!("target {name}"),
                reason: "--lock-days must be at least 1".into(),
            });
        }
        let target = entry.open()?;
        if target.lock_policy().is_some() {
            target.check_lock_support()?;
        }
        self.prepare_target(target.as_ref())?;
        self.config.targets.push(TargetConfig {
            url: target.url().to_string(),
            ..entry
        });
        self.save_config()?;
        self.targets.push(target);
        Ok(())
    }

    pub fn add_source(
        &mut self,
        source: crate::provider::SourceConfig,
        _lock: &WriteLock,
    ) -> Result<(), VaultError> {
        source.validate()?;
        if self.config.sources.iter().any(|s| s.name == source.name) {
            return Err(VaultError::SourceExists(source.name));
        }
        self.config.sources.push(source);
        self.save_config()
    }

    pub fn remove_source(&mut self, name: &str, _lock: &WriteLock) -> Result<(), VaultError> {
        let before = self.config.sources.len();
        self.config.sources.retain(|s| s.name != name);
        if self.config.sources.len() == before {
            return Err(VaultError::NoSuchSource(name.to_string()));
        }
        self.save_config()
    }

    pub fn remove_target(&mut self, name: &str, _lock: &WriteLock) -> Result<(), VaultError> {
        let pos = self
            .config
            .targets
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| VaultError::NoSuchTarget(name.to_string()))?;
        if self.config.targets.len() == 1 {
            return Err(VaultError::LastTarget(name.to_string()));
        }
        self.config.targets.remove(pos);
        self.save_config()?;
        self.index.forget_target(name)?;
        self.targets.retain(|t| t.name() != name);
        Ok(())
    }

    /// Makes sure every target holds `gitvault.json` and every key file (a new target, or one
    /// whose files were lost).
    pub fn publish_public_files(&self) -> Result<(), VaultError> {
        for t in &self.targets {
            self.prepare_target(t.as_ref())?;
        }
        Ok(())
    }

    pub(super) fn prepare_target(&self, target: &dyn Target) -> Result<(), VaultError> {
        if let Ok(existing) = target.get(PUBLIC_FILE) {
            let found: Result<PublicParams, _> = serde_json::from_slice(&existing);
            match found {
                Ok(p) if p.vault_id == self.config.vault_id => {}
                Ok(p) => {
                    return Err(VaultError::ForeignTarget {
                        target: target.name().to_string(),
                        found: p.vault_id,
                    });
                }
                Err(_) => {
                    return Err(VaultError::ForeignTarget {
                        target: target.name().to_string(),
                        found: "an unreadable gitvault.json".into(),
                    });
                }
            }
        }
        let params = PublicParams {
            format: FORMAT_VERSION,
            vault_id: self.config.vault_id.clone(),
            public_key: self.config.public_key.clone(),
            cdc: self.config.cdc,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let json = serde_json::to_vec_pretty(&params).map_err(|e| VaultError::BadConfig {
            path: PUBLIC_FILE.into(),
            reason: e.to_string(),
        })?;
        target.put_if_absent(PUBLIC_FILE, Body::Bytes(&json))?;
        for (name, bytes) in self.local_key_files()? {
            target.put_if_absent(&name, Body::Bytes(&bytes))?;
        }
        Ok(())
    }

    pub(super) fn save_config(&self) -> Result<(), VaultError> {
        let path = self.dir.join(CONFIG_FILE);
        let text = toml::to_string_pretty(&self.config).map_err(|e| VaultError::BadConfig {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let header = "# gitvault vault configuration. No secrets belong here: keys are in keys/,\n\
                      # credentials come from the environment.\n";
        write_atomic(&path, format!("{header}{text}").as_bytes())
    }
}
