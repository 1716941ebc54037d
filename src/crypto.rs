//! Keys and encryption: the vault identity (age X25519), the secret id key for keyed BLAKE3
//! chunk ids, key files that hold both encrypted to the users' recipients or a passphrase, and
//! the age streams packs are written and read through.
//!
//! Invariant: nothing secret leaves this module unencrypted except through `VaultKeys`, whose
//! secret parts are never formatted (`Debug` is redacted) and are zeroed on drop.

use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::iter;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// scrypt work factor of passphrase key files: 2^18 × 1 KiB = 256 MiB.
const SCRYPT_WORK_FACTOR: u8 = 18;
/// The most a key file may ask for when opened: 2^20 × 1 KiB = 1 GiB.
const MAX_SCRYPT_WORK_FACTOR: u8 = 20;

/// Errors of key handling and of age encryption.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("`{0}` is not an age X25519 recipient (expected `age1…`)")]
    BadRecipient(String),
    #[error("the identity file {path} holds no usable age identity: {reason}")]
    BadIdentityFile { path: String, reason: String },
    #[error(
        "no key file could be decrypted with the given passphrase or identity (wrong passphrase or wrong identity file)"
    )]
    WrongKey,
    #[error("key file {name} is damaged: {reason}")]
    BadKeyFile { name: String, reason: String },
    #[error("a vault key needs at least one --recipient or --passphrase")]
    NoRecipients,
    #[error("encryption failed: {0}")]
    Encrypt(String),
    #[error("decryption failed: {0}")]
    Decrypt(String),
    #[error("I/O error during encryption: {0}")]
    Io(#[from] io::Error),
}

/// The id of a stored chunk: keyed BLAKE3 of its plaintext, so ids reveal nothing about content
/// to anyone without the vault's id key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<ChunkId> {
        <[u8; 32]>::try_from(bytes).ok().map(ChunkId)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ChunkId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| format!("`{s}` is not a hex chunk id"))?;
        ChunkId::from_slice(&bytes).ok_or_else(|| format!("`{s}` is not 64 hex digits"))
    }
}

/// The 32-byte key for chunk ids. Zeroed on drop, never printed.
#[derive(Clone)]
pub struct IdKey([u8; 32]);

impl IdKey {
    pub fn generate() -> Result<IdKey, CryptoError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| CryptoError::Encrypt(format!("no randomness: {e}")))?;
        Ok(IdKey(key))
    }

    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.0, data).as_bytes())
    }

    /// A hasher for inputs that arrive in pieces; `finalize` gives the same id as `chunk_id`.
    pub fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }

    /// The key that authenticates what the vault writes to targets besides chunks (pack
    /// footers, index backups). Derived, so a MAC never doubles as a chunk id.
    pub fn auth_key(&self) -> AuthKey {
        AuthKey(blake3::derive_key(
            "gitvault 2026-12-04 target authentication v1",
            &self.0,
        ))
    }
}

/// A MAC key derived from the id key. Anyone who can read `gitvault.json` can encrypt files to
/// the vault's public key, so decryption proves nothing about who wrote a file; a MAC with
/// this key does (docs/SECURITY.md).
#[derive(Clone)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    /// A MAC over `parts`, each length-prefixed so that no two different part lists can give
    /// the same input, under a `domain` that binds the MAC to one kind of file.
    pub(crate) fn mac(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = self.hasher(domain);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        *h.finalize().as_bytes()
    }

    /// A MAC computed piecewise; callers must frame their inputs themselves.
    pub(crate) fn hasher(&self, domain: &str) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&(domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        h
    }

    /// Checks a MAC in constant time (blake3's `Hash` equality is).
    pub(crate) fn verify(&self, domain: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        let Ok(tag) = <[u8; 32]>::try_from(tag) else {
            return false;
        };
        blake3::Hash::from(self.mac(domain, parts)) == blake3::Hash::from(tag)
    }
}

/// Key material: zeroed when dropped, and never printed, so that neither a freed page nor a
/// `{:?}` in a log or panic message shows the key.
macro_rules! secret_key {
    ($($key:ident),+) => {$(
        impl Drop for $key {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl fmt::Debug for $key {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($key), "(<redacted>)"))
            }
        }
    )+};
}

secret_key!(AuthKey, IdKey);

/// The vault's secret material: the identity that decrypts packs and the id key.
pub struct VaultKeys {
    identity: age::x25519::Identity,
    id_key: IdKey,
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultKeys(public: {})", self.identity.to_public())
    }
}

/// What a key file holds once decrypted (JSON). Documented in docs/KEYS.md.
#[derive(Serialize, Deserialize)]
struct KeyFilePlain {
    format: u32,
    vault_id: String,
    identity: String,
    id_key: String,
}

impl Drop for KeyFilePlain {
    fn drop(&mut self) {
        self.identity.zeroize();
        self.id_key.zeroize();
    }
}

/// How the user proves they may open the vault.
pub enum Unlock {
    Passphrase(SecretString),
    Identities(Vec<Box<dyn age::Identity + Send + Sync>>),
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase(<redacted>)"),
            Unlock::Identities(ids) => write!(f, "Unlock::Identities({} identities)", ids.len()),
        }
    }
}

impl Unlock {
    /// Reads an age identity file (as written by `age-keygen`).
    pub fn from_identity_file(path: &std::path::Path) -> Result<Unlock, CryptoError> {
        let shown = path.display().to_string();
        let file = age::IdentityFile::from_file(shown.clone()).map_err(|e| {
            CryptoError::BadIdentityFile {
                path: shown.clone(),
                reason: e.to_string(),
            }
        })?;
        let ids = file
            .into_identities()
            .map_err(|e| CryptoError::BadIdentityFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if ids.is_empty() {
            return Err(CryptoError::BadIdentityFile {
                path: shown,
                reason: "the file contains no identities".into(),
            });
        }
        Ok(Unlock::Identities(ids))
    }
}

/// Who a key file is encrypted to.
pub enum KeyProtection<'a> {
    Recipients(&'a [String]),
    Passphrase(&'a SecretString),
}

impl VaultKeys {
    pub fn generate() -> Result<VaultKeys, CryptoError> {
        Ok(VaultKeys {
            identity: age::x25519::Identity::generate(),
            id_key: IdKey::generate()?,
        })
    }

    pub fn public_key(&self) -> String {
        self.identity.to_public().to_string()
    }

    pub fn id_key(&self) -> &IdKey {
        &self.id_key
    }

    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    pub fn auth_key(&self) -> AuthKey {
        self.id_key.auth_key()
    }

    /// The vault's fingerprint, printed by `init` for the user to write down and checked by
    /// `recover --expect-vault`. It commits to the vault id, the public key and (through a MAC)
    /// the secret id key, so a planted key file or `gitvault.json` cannot reproduce it.
    pub fn fingerprint(&self, vault_id: &str) -> String {
        let secret = self
            .auth_key()
            .mac("vault fingerprint", &[vault_id.as_bytes()]);
        let public = self.public_key();
        let digest = blake3::derive_key(
            "gitvault 2026-12-04 vault fingerprint v1",
            &[
                vault_id.as_bytes(),
                b"\0",
                public.as_bytes(),
                b"\0",
                &secret,
            ]
            .concat(),
        );
        hex::encode(&digest[..16])
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Encrypts the keys into a key file. Recipients and a passphrase cannot share one age file,
    /// so each protection gets its own file.
    pub fn seal(
        &self,
        vault_id: &str,
        protection: KeyProtection<'_>,
    ) -> Result<Vec<u8>, CryptoError> {
        let plain = KeyFilePlain {
            format: 1,
            vault_id: vault_id.to_string(),
            identity: self.identity.to_string().expose_secret().to_string(),
            id_key: hex::encode(self.id_key.0),
        };
        let mut json =
            serde_json::to_vec(&plain).map_err(|e| CryptoError::Encrypt(e.to_string()))?;
        let encryptor = match protection {
            KeyProtection::Recipients(list) => {
                if list.is_empty() {
                    return Err(CryptoError::NoRecipients);
                }
                let parsed = list
                    .iter()
                    .map(|r| parse_recipient(r))
                    .collect::<Result<Vec<_>, _>>()?;
                age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| CryptoError::Encrypt(e.to_string()))?
            }
            KeyProtection::Passphrase(pass) => {
                // A fixed work factor (256 MiB, about a second) rather than age's own
                // estimate, so that every host can open the file under MAX_SCRYPT_WORK_FACTOR.
                let mut recipient = age::scrypt::Recipient::new(pass.clone());
                recipient.set_work_factor(SCRYPT_WORK_FACTOR);
                age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient))
                    .map_err(|e| CryptoError::Encrypt(e.to_string()))?
            }
        };
        let result = encrypt_bytes(encryptor, &json);
        json.zeroize();
        result
    }

    /// Tries to open a key file with what the user supplied.
    pub fn open(
        name: &str,
        sealed: &[u8],
        unlock: &Unlock,
    ) -> Result<(VaultKeys, String), CryptoError> {
        let decryptor =
            age::Decryptor::new_buffered(sealed).map_err(|e| CryptoError::BadKeyFile {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let reader = match unlock {
            Unlock::Passphrase(pass) => {
                if !decryptor.is_scrypt() {
                    return Err(CryptoError::WrongKey);
                }
                let mut id = age::scrypt::Identity::new(pass.clone());
                // A key file on a target may be planted: its work factor must not make us
                // allocate gigabytes (scrypt needs 2^(N+10) bytes).
                id.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
                decryptor.decrypt(iter::once(&id as &dyn age::Identity))
            }
            Unlock::Identities(ids) => {
                if decryptor.is_scrypt() {
                    return Err(CryptoError::WrongKey);
                }
                decryptor.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            }
        };
        let mut reader = reader.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                CryptoError::WrongKey
            }
            other => CryptoError::BadKeyFile {
                name: name.to_string(),
                reason: other.to_string(),
            },
        })?;
        let mut json = Vec::new();
        reader
            .read_to_end(&mut json)
            .map_err(|e| CryptoError::BadKeyFile {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let parsed: Result<KeyFilePlain, _> = serde_json::from_slice(&json);
        json.zeroize();
        let plain = parsed.map_err(|e| CryptoError::BadKeyFile {
            name: name.to_string(),
            reason: format!("unreadable contents: {e}"),
        })?;
        let bad = |reason: &str| CryptoError::BadKeyFile {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let identity =
            age::x25519::Identity::from_str(&plain.identity).map_err(|_| bad("bad identity"))?;
        let mut raw = hex::decode(&plain.id_key).map_err(|_| bad("bad id key"))?;
        let key: Result<[u8; 32], _> = raw.as_slice().try_into();
        raw.zeroize();
        let key = key.map_err(|_| bad("id key is not 32 bytes"))?;
        Ok((
            VaultKeys {
                identity,
                id_key: IdKey(key),
            },
            plain.vault_id.clone(),
        ))
    }
}

pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, CryptoError> {
    age::x25519::Recipient::from_str(text.trim())
        .map_err(|_| CryptoError::BadRecipient(text.to_string()))
}

fn encrypt_bytes(encryptor: age::Encryptor, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut writer = encryptor.wrap_output(&mut out)?;
    writer.write_all(plain)?;
    writer.finish()?;
    Ok(out)
}

/// Creates an age identity file (refusing to overwrite one, readable by its owner only) and
/// returns its public key.
pub fn write_identity_file(path: &std::path::Path) -> Result<String, CryptoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        identity.to_string().expose_secret()
    );
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(public)
}

/// Starts an age stream to the vault's public key over `out`.
pub fn encrypting_writer<W: Write>(
    recipient: &age::x25519::Recipient,
    out: W,
) -> Result<age::stream::StreamWriter<W>, CryptoError> {
    let encryptor = age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(encryptor.wrap_output(out)?)
}

/// Opens an age stream for reading. With a seekable input the result is seekable too, in
/// 64 KiB units, so one part of a pack can be read without decrypting the rest.
pub(crate) fn decrypting_reader<R: Read>(
    identity: &age::x25519::Identity,
    input: R,
) -> Result<age::stream::StreamReader<R>, CryptoError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    decryptor
        .decrypt(iter::once(identity as &dyn age::Identity))
        .map_err(|e| CryptoError::Decrypt(e.to_string()))
}

/// Decrypts a whole small age file with the vault identity.
pub fn decrypt_bytes(
    identity: &age::x25519::Identity,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut reader = decrypting_reader(identity, sealed)?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    Ok(out)
}

/// Anything a pack can be read from: a file, or a range-reading adapter over a remote target.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A fresh random id in hex (vault ids, temp names).
pub(crate) fn random_hex(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| CryptoError::Encrypt(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyfile_round_trip_with_recipient_and_wrong_identity() {
        let keys = VaultKeys::generate().unwrap();
        let user = age::x25519::Identity::generate();
        let recipients = vec![user.to_public().to_string()];
        let sealed = keys
            .seal("v1", KeyProtection::Recipients(&recipients))
            .unwrap();
        let (opened, vault_id) =
            VaultKeys::open("k", &sealed, &Unlock::Identities(vec![Box::new(user)])).unwrap();
        assert_eq!(vault_id, "v1");
        assert_eq!(opened.public_key(), keys.public_key());
        assert_eq!(opened.id_key().chunk_id(b"x"), keys.id_key().chunk_id(b"x"));
        let other = age::x25519::Identity::generate();
        let err =
            VaultKeys::open("k", &sealed, &Unlock::Identities(vec![Box::new(other)])).unwrap_err();
        assert!(matches!(err, CryptoError::WrongKey), "{err}");
    }

    #[test]
    fn chunk_ids_depend_on_the_key() {
        let a = IdKey::generate().unwrap();
        let b = IdKey::generate().unwrap();
        assert_ne!(a.chunk_id(b"same"), b.chunk_id(b"same"));
        assert_ne!(
            a.chunk_id(b"same"),
            ChunkId(*blake3::hash(b"same").as_bytes())
        );
        let mut h = a.hasher();
        h.update(b"sa");
        h.update(b"me");
        assert_eq!(ChunkId(*h.finalize().as_bytes()), a.chunk_id(b"same"));
    }
}
