//! The vault's vocabulary, below every part that uses it: git object ids and kinds, the refs
//! of one advertisement (`RefSet`, with its canonical text), repository names, where an object
//! or an LFS object lives (`ObjectEntry`, `LfsEntry`). Plain data: `git` reads and writes
//! these, `snapshot` stores them, the index records them; none of those layers needs another
//! to name them (tests/layers.rs).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::ChunkId;

/// A ref set whose text does not parse.
#[derive(Debug, thiserror::Error)]
#[error("ref set is damaged: {0}")]
pub struct DamagedRefSet(pub String);

/// A git object id (SHA-1; SHA-256 repositories are not supported yet).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(pub [u8; 20]);

impl Oid {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn from_hex(s: &str) -> Option<Oid> {
        let bytes = hex::decode(s).ok()?;
        <[u8; 20]>::try_from(bytes.as_slice()).ok().map(Oid)
    }

    pub fn from_slice(b: &[u8]) -> Option<Oid> {
        <[u8; 20]>::try_from(b).ok().map(Oid)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.to_hex())
    }
}

/// What HEAD was in the advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// A symbolic ref, e.g. `refs/heads/main` (possibly unborn: not among the refs).
    Symbolic(String),
    /// A detached HEAD.
    Detached(String),
}

/// Every ref of one advertisement, and HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefSet {
    pub head: Option<Head>,
    pub refs: BTreeMap<String, Oid>,
}

const REFSET_HEADER: &str = "# gitvault refset v1\n";

impl RefSet {
    /// Canonical text form: equal ref sets give equal bytes, hence equal chunk ids.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(REFSET_HEADER.len() + self.refs.len() * 64);
        out.push_str(REFSET_HEADER);
        match &self.head {
            Some(Head::Symbolic(target)) => {
                out.push_str("HEAD ref: ");
                out.push_str(target);
                out.push('\n');
            }
            Some(Head::Detached(oid)) => {
                out.push_str("HEAD ");
                out.push_str(oid);
                out.push('\n');
            }
            None => {}
        }
        for (name, oid) in &self.refs {
            out.push_str(&oid.to_hex());
            out.push(' ');
            out.push_str(name);
            out.push('\n');
        }
        out.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<RefSet, DamagedRefSet> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| DamagedRefSet("ref set is not UTF-8".into()))?;
        let body = text
            .strip_prefix(REFSET_HEADER)
            .ok_or_else(|| DamagedRefSet("unknown ref set version".into()))?;
        let mut set = RefSet::default();
        for line in body.lines() {
            if let Some(target) = line.strip_prefix("HEAD ref: ") {
                set.head = Some(Head::Symbolic(target.to_string()));
            } else if let Some(oid) = line.strip_prefix("HEAD ") {
                set.head = Some(Head::Detached(oid.to_string()));
            } else {
                let (oid, name) = line
                    .split_once(' ')
                    .ok_or_else(|| DamagedRefSet(format!("bad ref line `{line}`")))?;
                let oid = Oid::from_hex(oid)
                    .ok_or_else(|| DamagedRefSet(format!("bad oid in `{line}`")))?;
                set.refs.insert(name.to_string(), oid);
            }
        }
        Ok(set)
    }
}

/// The entries of a map of fixed-size entries after a version byte (the object map and the
/// LFS map). The error is the caller's own words: `empty` for no bytes at all, `bad` for
/// another version or a length that is not a whole number of entries.
pub(crate) fn map_entries<'a>(
    bytes: &'a [u8],
    version: u8,
    entry_len: usize,
    [empty, bad]: [&'static str; 2],
) -> Result<std::slice::ChunksExact<'a, u8>, &'static str> {
    let (found, body) = bytes.split_first().ok_or(empty)?;
    if *found != version || body.len() % entry_len != 0 {
        return Err(bad);
    }
    Ok(body.chunks_exact(entry_len))
}

/// Declares a `#[repr(u8)]` enum with explicit discriminants and its `from_u8`, so that the
/// variant list that stored bytes are read back by is the one the enum is declared with and
/// cannot drift from it when a variant is added.
macro_rules! u8_enum {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident, $fvis:vis fn from_u8 {
            $($(#[$vattr:meta])* $variant:ident = $value:literal,)+
        }
    ) => {
        $(#[$attr])*
        #[repr(u8)]
        $vis enum $name {
            $($(#[$vattr])* $variant = $value,)+
        }

        impl $name {
            /// The variant whose stored byte is `v`; `None` for a byte no variant has.
            $fvis fn from_u8(v: u8) -> Option<$name> {
                match v {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use u8_enum;

u8_enum! {
    /// Git object types as stored in the index and object maps (git's own numbering).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum ObjectKind, pub fn from_u8 {
        Commit = 1,
        Tree = 2,
        Blob = 3,
        Tag = 4,
    }
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Commit => "commit",
            ObjectKind::Tree => "tree",
            ObjectKind::Blob => "blob",
            ObjectKind::Tag => "tag",
        }
    }
}

/// Whether a repository name (given by a user or derived from a URL) is allowed: segments of
/// letters, digits, `.`, `_`, `-` (and `:` in the first) separated by `/`, without `.` or `..`
/// segments, so that a name can never leave a directory it is joined to.
pub(crate) fn valid_repo_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 512 {
        return false;
    }
    for (i, seg) in name.split('/').enumerate() {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || b == b'.'
                    || b == b'_'
                    || b == b'-'
                    || (i == 0 && b == b':')
            });
        if !ok {
            return false;
        }
    }
    true
}

/// One git object's place in the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectEntry {
    pub oid: Oid,
    pub kind: ObjectKind,
    pub chunk: ChunkId,
}

/// An LFS pointer file's content: the LFS object it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pointer {
    pub sha256: [u8; 32],
    pub size: u64,
}

impl Pointer {
    pub(crate) fn oid_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// One LFS object a snapshot refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LfsEntry {
    /// The pointer blob in the git data.
    pub blob: Oid,
    pub pointer: Pointer,
    /// Where its bytes are in the vault.
    pub chunk: ChunkId,
}

/// The chunk id an LFS map gives an object the server could not provide when it was backed
/// up: the pointer is remembered, and every later run asks for the object again.
pub const MISSING: ChunkId = ChunkId([0; 32]);
