//! `config.toml` and `gitvault.json`: what a vault is configured with, and the public
//! parameters every target carries.

use serde::{Deserialize, Serialize};

use crate::store::{CdcParams, StoreSettings};

/// `DIR/config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: u32,
    pub vault_id: String,
    /// The vault's age X25519 recipient: every pack is encrypted to it.
    pub public_key: String,
    pub cdc: CdcParams,
    #[serde(default)]
    pub store: StoreConfig,
    /// The retention policy `forget` applies to repositories without one of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::policy::Policy>,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
    /// Not written when empty: a `source = []` line would make a hand-added `[[source]]`
    /// table a duplicate key.
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::provider::SourceConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// zstd level for packs (1-19; 3 is fast, 9 is about 15% smaller and 3x slower).
    pub compression_level: i32,
    /// Bytes of plaintext gathered into one zstd frame; large frames compress similar objects
    /// far better (docs/PERFORMANCE.md).
    pub frame_size: u64,
    /// A pack is closed when it holds this many compressed bytes.
    pub pack_size: u64,
    /// Targets that must hold a pack before a write counts (0: all).
    pub min_replicas: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let d = StoreSettings::default();
        StoreConfig {
            compression_level: d.compression.level,
            frame_size: d.compression.frame_size as u64,
            pack_size: d.pack_size,
            min_replicas: d.min_replicas,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    pub name: String,
    pub url: String,
}

/// `gitvault.json` on every target: what a reader needs before it has the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicParams {
    pub format: u32,
    pub vault_id: String,
    pub public_key: String,
    pub cdc: CdcParams,
    pub created: String,
}

/// What `gitvault config check` finds in a `config.toml`.
#[derive(Debug, Default, Serialize)]
pub struct ConfigCheck {
    /// Keys the program does not read, as dotted paths (`source.0.tokn_env`): a typo there is
    /// otherwise silently ignored, and a misspelt retention rule keeps nothing it was meant to.
    pub unknown_keys: Vec<String>,
    /// Settings the program would refuse (the same reasons `backup` or `forget` would give).
    pub problems: Vec<String>,
}

impl ConfigCheck {
    pub fn ok(&self) -> bool {
        self.unknown_keys.is_empty() && self.problems.is_empty()
    }
}

/// `config.toml`'s text as a `Config`, and the dotted paths of the keys it holds that no field
/// reads.
pub(crate) fn parse(text: &str) -> Result<(Config, Vec<String>), toml::de::Error> {
    let mut unknown = Vec::new();
    let de = toml::de::Deserializer::parse(text)?;
    let config = serde_ignored::deserialize(de, |path| unknown.push(dotted(&path)))?;
    Ok((config, unknown))
}

/// `retention.keep_dialy`, where serde_ignored's own display would say `retention.?.keep_dialy`
/// for the `Option` in between.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    let join = |parent: &Path<'_>, part: String| match dotted(parent) {
        p if p.is_empty() => part,
        p => format!("{p}.{part}"),
    };
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(parent, index.to_string()),
        Path::Map { parent, key } => join(parent, key.clone()),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// Reads `text` as a `config.toml` would be read, and names what would be ignored or refused.
pub fn check_config(text: &str) -> ConfigCheck {
    let mut check = ConfigCheck::default();
    let config = match parse(text) {
        Ok((config, unknown)) => {
            check.unknown_keys = unknown;
            config
        }
        Err(e) => {
            check.problems.push(e.to_string().trim_end().to_string());
            return check;
        }
    };
    if config.format != super::FORMAT_VERSION {
        check.problems.push(format!(
            "format {} is not the one this program reads ({})",
            config.format,
            super::FORMAT_VERSION
        ));
    }
    let twice = |kind: &str, names: &mut dyn Iterator<Item = &str>| {
        let mut seen = std::collections::BTreeSet::new();
        names
            .filter(|n| !seen.insert(*n))
            .map(|n| format!("{kind} {n}: the name is used twice"))
            .collect::<Vec<_>>()
    };
    check.problems.extend(twice(
        "target",
        &mut config.targets.iter().map(|t| t.name.as_str()),
    ));
    check.problems.extend(twice(
        "source",
        &mut config.sources.iter().map(|s| s.name.as_str()),
    ));
    for t in &config.targets {
        if let Err(e) = crate::target::open_target(&t.name, &t.url) {
            check.problems.push(format!("target {}: {e}", t.name));
        }
    }
    for s in &config.sources {
        if let Err(e) = s.validate() {
            check.problems.push(e.to_string());
        }
    }
    check
}
