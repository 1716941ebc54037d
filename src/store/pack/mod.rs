//! The pack format: an age stream whose plaintext is a header, zstd frames holding the chunks
//! back to back, and a footer listing every chunk (id, kind, frame, offset, length). See
//! docs/FORMAT.md for the byte layout.
//!
//! A pack is written once to a temporary file while its name (BLAKE3 of the ciphertext) is
//! computed on the fly, and never changed afterwards.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::crypto::{self, AuthKey, ChunkId, CryptoError};
pub use crate::index::{FrameInfo, PackEntry, PackRecord, Provenance};
pub use read::{PackReader, decompress_frame, read_footer, verify_pack};
pub use write::{Compression, FinishedPack, PackWriter};

mod read;
mod write;

/// Packs of format 1 (before 2026-12-04) have no authenticated footer.
pub(crate) const PACK_MAGIC_V1: &[u8; 8] = b"GVPACK\x00\x01";
pub(crate) const PACK_MAGIC: &[u8; 8] = b"GVPACK\x00\x02";
pub(crate) const TRAILER_MAGIC_V1: &[u8; 8] = b"GVPKEND1";
pub(crate) const TRAILER_MAGIC: &[u8; 8] = b"GVPKEND2";
const TRAILER_LEN_V1: u64 = 16;
/// frames hash, footer MAC, footer lengths, magic.
const TRAILER_LEN: u64 = 32 + 32 + 16;
/// The MAC domain of pack footers (docs/FORMAT.md).
const FOOTER_MAC_DOMAIN: &str = "pack footer v2";
const ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 4;
const FRAME_LEN: usize = 8 + 4 + 4;
/// Footers larger than this are refused before allocating: a corrupt length must not make us
/// allocate gigabytes.
const MAX_FOOTER: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("I/O error on pack file: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Decrypts, so it was encrypted to the vault's public key, but was not written by a
    /// holder of the vault's secret keys.
    #[error("not written by this vault: {0}")]
    Forged(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footer {
    pub frames: Vec<FrameInfo>,
    pub entries: Vec<PackEntry>,
}

/// What a footer read from a target is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterSeal {
    /// Format 2: the footer's MAC checked with the vault's auth key. `mac` identifies the
    /// pack's contents: a second pack with the same MAC is a replay of the first.
    Authenticated {
        mac: [u8; 32],
        frames_hash: [u8; 32],
    },
    /// Format 1: nothing but the encryption, which anyone can produce. `digest` is the BLAKE3
    /// of the footer, for spotting replays.
    Legacy { digest: [u8; 32] },
}

impl FooterSeal {
    /// Equal for two packs that carry the same footer.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            FooterSeal::Authenticated { mac, .. } => *mac,
            FooterSeal::Legacy { digest } => *digest,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self, FooterSeal::Authenticated { .. })
    }
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + self.frames.len() * FRAME_LEN + self.entries.len() * ENTRY_LEN);
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.offset.to_le_bytes());
            out.extend_from_slice(&f.compressed_len.to_le_bytes());
            out.extend_from_slice(&f.raw_len.to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.id.0);
            out.push(e.kind);
            out.extend_from_slice(&e.frame.to_le_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Footer, PackError> {
        let mut r = ByteReader { bytes, pos: 0 };
        let frame_count = r.count(FRAME_LEN, "frame")?;
        let mut frames = Vec::with_capacity(frame_count);
        for _ in 0..frame_count {
            frames.push(FrameInfo {
                offset: r.u64()?,
                compressed_len: r.u32()?,
                raw_len: r.u32()?,
            });
        }
        let entry_count = r.count(ENTRY_LEN, "entry")?;
        let mut entries = Vec::with_capacity(entry_count);
        for _ in 0..entry_count {
            let id = ChunkId(r.array::<32>()?);
            let kind = r.array::<1>()?[0];
            let entry = PackEntry {
                id,
                kind,
                frame: r.u32()?,
                offset: r.u32()?,
                len: r.u32()?,
            };
            let frame = frames.get(entry.frame as usize).ok_or_else(|| {
                PackError::Corrupt(format!(
                    "chunk {id} names frame {} of {frame_count}",
                    entry.frame
                ))
            })?;
            if u64::from(entry.offset) + u64::from(entry.len) > u64::from(frame.raw_len) {
                return Err(PackError::Corrupt(format!(
                    "chunk {id} lies outside its frame"
                )));
            }
            entries.push(entry);
        }
        if r.pos != bytes.len() {
            return Err(PackError::Corrupt("trailing bytes after the footer".into()));
        }
        Ok(Footer { frames, entries })
    }
}

struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl ByteReader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], PackError> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| PackError::Corrupt("footer is truncated".into()))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(out)
    }
    /// A count of items `item_len` bytes each, refused when that many could not fit in the
    /// footer: a forged count must not make the decoder reserve memory for them.
    fn count(&mut self, item_len: usize, what: &str) -> Result<usize, PackError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_len) > self.bytes.len() {
            return Err(PackError::Corrupt(format!(
                "footer {what} count exceeds footer size"
            )));
        }
        Ok(count)
    }
    fn u32(&mut self) -> Result<u32, PackError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, PackError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

fn footer_mac(auth: &AuthKey, footer_plain: &[u8], frames_hash: &[u8; 32]) -> [u8; 32] {
    auth.mac(FOOTER_MAC_DOMAIN, &[footer_plain, frames_hash])
}

/// age reports authentication failures as I/O errors; they mean the ciphertext was altered.
fn decrypt_err(e: io::Error) -> PackError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
            PackError::Corrupt(format!("ciphertext does not authenticate ({e})"))
        }
        _ => PackError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IdKey;

    #[test]
    fn write_then_read_frames_and_footer() {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let key = IdKey::generate().unwrap();
        let mut w = PackWriter::create(
            dir.path(),
            &identity.to_public(),
            &key.auth_key(),
            Compression {
                level: 3,
                frame_size: 100_000,
            },
        )
        .unwrap();
        let chunks: Vec<Vec<u8>> = (0..50u32)
            .map(|i| vec![(i % 7) as u8; 7_000 + i as usize])
            .collect();
        for c in &chunks {
            w.add(key.chunk_id(c), 4, c).unwrap();
        }
        let done = w.finish().unwrap();
        assert!(done.footer.frames.len() > 1);
        let bytes = std::fs::read(&done.path).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), done.name);
        let mut r = PackReader::open(&identity, std::io::Cursor::new(bytes.clone())).unwrap();
        let (footer, seal) = r.footer(&key.auth_key()).unwrap();
        assert!(seal.is_authenticated());
        assert_eq!(footer, done.footer);
        let (_, verified) = verify_pack(&identity, &key, &done.name, &bytes).unwrap();
        assert_eq!(verified, seal);
        // Another vault's key (a forger holds only the public key) does not authenticate it.
        let other = IdKey::generate().unwrap();
        let mut r = PackReader::open(&identity, std::io::Cursor::new(bytes.clone())).unwrap();
        assert!(matches!(
            r.footer(&other.auth_key()),
            Err(PackError::Forged(_))
        ));
        for (e, c) in footer.entries.iter().zip(&chunks) {
            let mut frame = Vec::new();
            r.frame_into(&footer.frames[e.frame as usize], &mut frame)
                .unwrap();
            assert_eq!(
                &frame[e.offset as usize..(e.offset + e.len) as usize],
                c.as_slice()
            );
            assert_eq!(e.id, key.chunk_id(c));
        }
    }

    /// Packs written before footers were authenticated (layout 1) still read, marked legacy.
    #[test]
    fn layout_1_packs_still_read() {
        let identity = age::x25519::Identity::generate();
        let key = IdKey::generate().unwrap();
        let chunk = b"a chunk written by an older gitvault".to_vec();
        let frame = zstd::bulk::compress(&chunk, 3).unwrap();
        let footer = Footer {
            frames: vec![FrameInfo {
                offset: 8,
                compressed_len: frame.len() as u32,
                raw_len: chunk.len() as u32,
            }],
            entries: vec![PackEntry {
                id: key.chunk_id(&chunk),
                kind: 0,
                frame: 0,
                offset: 0,
                len: chunk.len() as u32,
            }],
        };
        let footer_plain = footer.encode();
        let footer_z = zstd::bulk::compress(&footer_plain, 3).unwrap();
        let mut plain = PACK_MAGIC_V1.to_vec();
        plain.extend(&frame);
        plain.extend(&footer_z);
        plain.extend((footer_z.len() as u32).to_le_bytes());
        plain.extend((footer_plain.len() as u32).to_le_bytes());
        plain.extend(TRAILER_MAGIC_V1);
        let mut sealed = Vec::new();
        let mut w = crypto::encrypting_writer(&identity.to_public(), &mut sealed).unwrap();
        w.write_all(&plain).unwrap();
        w.finish().unwrap();
        let name = blake3::hash(&sealed).to_hex().to_string();
        let mut r = PackReader::open(&identity, std::io::Cursor::new(sealed.clone())).unwrap();
        let (read, seal) = r.footer(&key.auth_key()).unwrap();
        assert_eq!(read, footer);
        assert!(!seal.is_authenticated());
        let mut frame = Vec::new();
        r.frame_into(&read.frames[0], &mut frame).unwrap();
        assert_eq!(frame, chunk);
        let (_, seal) = verify_pack(&identity, &key, &name, &sealed).unwrap();
        assert!(matches!(seal, FooterSeal::Legacy { .. }));
    }

    #[test]
    fn footer_decode_rejects_garbage() {
        assert!(Footer::decode(&[1, 0, 0]).is_err());
        assert!(Footer::decode(&[255, 255, 255, 255, 0, 0, 0, 0]).is_err());
        let f = Footer {
            frames: vec![FrameInfo {
                offset: 8,
                compressed_len: 10,
                raw_len: 5,
            }],
            entries: vec![PackEntry {
                id: ChunkId([1; 32]),
                kind: 0,
                frame: 0,
                offset: 3,
                len: 3,
            }],
        };
        assert!(
            Footer::decode(&f.encode()).is_err(),
            "chunk outside frame must be refused"
        );
    }
}
