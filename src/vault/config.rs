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
    #[serde(default, rename = "source")]
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
