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

/// Packs of format 1 (before 2026-12-04) have no authenticated footer.
pub const PACK_MAGIC_V1: &[u8; 8] = b"GVPACK\x00\x01";
pub const PACK_MAGIC: &[u8; 8] = b"GVPACK\x00\x02";
pub const TRAILER_MAGIC_V1: &[u8; 8] = b"GVPKEND1";
pub const TRAILER_MAGIC: &[u8; 8] = b"GVPKEND2";
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
        let frame_count = r.u32()? as usize;
        if frame_count.saturating_mul(FRAME_LEN) > bytes.len() {
            return Err(PackError::Corrupt(
                "footer frame count exceeds footer size".into(),
            ));
        }
        let mut frames = Vec::with_capacity(frame_count);
        for _ in 0..frame_count {
            frames.push(FrameInfo {
                offset: r.u64()?,
                compressed_len: r.u32()?,
                raw_len: r.u32()?,
            });
        }
        let entry_count = r.u32()? as usize;
        if entry_count.saturating_mul(ENTRY_LEN) > bytes.len() {
            return Err(PackError::Corrupt(
                "footer entry count exceeds footer size".into(),
            ));
        }
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
    fn u32(&mut self) -> Result<u32, PackError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, PackError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Counts and hashes the ciphertext on its way to the temporary file.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compression settings of a pack writer.
#[derive(Debug, Clone, Copy)]
pub struct Compression {
    pub level: i32,
    /// Chunks are gathered into frames of about this many plaintext bytes.
    pub frame_size: usize,
}

/// A pack being written.
pub struct PackWriter {
    path: PathBuf,
    out: age::stream::StreamWriter<HashingWriter<BufWriter<File>>>,
    plain_pos: u64,
    frame_buf: Vec<u8>,
    frame_entries: Vec<(ChunkId, u8, u32, u32)>,
    footer: Footer,
    compressor: zstd::bulk::Compressor<'static>,
    compression: Compression,
    raw_bytes: u64,
    auth: AuthKey,
    /// BLAKE3 of the compressed frames (the plaintext between magic and footer), sealed into
    /// the footer's MAC so that `verify --full` can tell a pack's frames from a replay's.
    frames_hash: blake3::Hasher,
}

impl FinishedPack {
    /// What the index records of it.
    pub fn record(&self) -> PackRecord<'_> {
        PackRecord {
            name: &self.name,
            size: self.size,
            raw_bytes: self.raw_bytes,
            provenance: self.provenance,
            frames: &self.footer.frames,
            entries: &self.footer.entries,
        }
    }
}

/// A pack that is complete on local disk, ready to be uploaded.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// Lowercase hex BLAKE3 of the ciphertext.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub raw_bytes: u64,
    pub footer: Footer,
    pub provenance: Provenance,
}

impl PackWriter {
    pub fn create(
        tmp_dir: &Path,
        recipient: &age::x25519::Recipient,
        auth: &AuthKey,
        compression: Compression,
    ) -> Result<PackWriter, PackError> {
        std::fs::create_dir_all(tmp_dir)?;
        let path = tmp_dir.join(format!("pack-{}.tmp", crypto::random_hex(12)?));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let hashing = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        let mut out = crypto::encrypting_writer(recipient, hashing)?;
        out.write_all(PACK_MAGIC)?;
        let mut compressor = zstd::bulk::Compressor::new(compression.level)?;
        // Long-distance matching over a window that spans the whole frame is what lets zstd
        // find the similarities between neighbouring versions of the same file.
        let window_log =
            (usize::BITS - compression.frame_size.max(1 << 20).leading_zeros()).min(27);
        compressor.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(
            true,
        ))?;
        compressor.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log))?;
        compressor.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))?;
        Ok(PackWriter {
            path,
            out,
            plain_pos: PACK_MAGIC.len() as u64,
            frame_buf: Vec::new(),
            frame_entries: Vec::new(),
            footer: Footer::default(),
            compressor,
            compression,
            raw_bytes: 0,
            auth: auth.clone(),
            frames_hash: blake3::Hasher::new(),
        })
    }

    pub fn add(&mut self, id: ChunkId, kind: u8, data: &[u8]) -> Result<(), PackError> {
        if !self.frame_buf.is_empty()
            && self.frame_buf.len() + data.len() > self.compression.frame_size
        {
            self.flush_frame()?;
        }
        let len = u32::try_from(data.len())
            .map_err(|_| PackError::Corrupt("chunk larger than 4 GiB".into()))?;
        let offset = self.frame_buf.len() as u32;
        self.frame_buf.extend_from_slice(data);
        self.frame_entries.push((id, kind, offset, len));
        self.raw_bytes += data.len() as u64;
        if self.frame_buf.len() >= self.compression.frame_size {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<(), PackError> {
        if self.frame_entries.is_empty() {
            return Ok(());
        }
        let compressed = self.compressor.compress(&self.frame_buf)?;
        let frame_index = self.footer.frames.len() as u32;
        self.footer.frames.push(FrameInfo {
            offset: self.plain_pos,
            compressed_len: compressed.len() as u32,
            raw_len: self.frame_buf.len() as u32,
        });
        self.out.write_all(&compressed)?;
        self.frames_hash.update(&compressed);
        self.plain_pos += compressed.len() as u64;
        for (id, kind, offset, len) in self.frame_entries.drain(..) {
            self.footer.entries.push(PackEntry {
                id,
                kind,
                frame: frame_index,
                offset,
                len,
            });
        }
        self.frame_buf.clear();
        Ok(())
    }

    /// Plaintext bytes so far, counting the open frame uncompressed.
    pub fn approx_size(&self) -> u64 {
        self.plain_pos + self.frame_buf.len() as u64
    }

    /// Bytes already compressed and written.
    pub fn written_size(&self) -> u64 {
        self.plain_pos
    }

    pub fn chunk_count(&self) -> usize {
        self.footer.entries.len() + self.frame_entries.len()
    }

    pub fn finish(mut self) -> Result<FinishedPack, PackError> {
        self.flush_frame()?;
        let footer_plain = self.footer.encode();
        let footer = zstd::bulk::compress(&footer_plain, 3)?;
        let frames_hash = *self.frames_hash.finalize().as_bytes();
        let mac = footer_mac(&self.auth, &footer_plain, &frames_hash);
        self.out.write_all(&footer)?;
        self.out.write_all(&frames_hash)?;
        self.out.write_all(&mac)?;
        self.out.write_all(&(footer.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&(footer_plain.len() as u32).to_le_bytes())?;
        self.out.write_all(TRAILER_MAGIC)?;
        let mut hashing = self.out.finish()?;
        hashing.flush()?;
        let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(FinishedPack {
            name: hashing.hasher.finalize().to_hex().to_string(),
            path: self.path,
            size: hashing.written,
            raw_bytes: self.raw_bytes,
            footer: self.footer,
            provenance: Provenance::Written,
        })
    }

    /// Abandons the pack and removes its temporary file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn footer_mac(auth: &AuthKey, footer_plain: &[u8], frames_hash: &[u8; 32]) -> [u8; 32] {
    auth.mac(FOOTER_MAC_DOMAIN, &[footer_plain, frames_hash])
}

/// Reads a pack through a seekable source.
pub struct PackReader<R: Read + Seek> {
    stream: age::stream::StreamReader<R>,
    legacy: bool,
}

impl<R: Read + Seek> PackReader<R> {
    pub fn open(identity: &age::x25519::Identity, input: R) -> Result<PackReader<R>, PackError> {
        let mut stream = crypto::decrypting_reader(identity, input)?;
        let mut magic = [0u8; 8];
        stream.read_exact(&mut magic).map_err(decrypt_err)?;
        let legacy = match &magic {
            m if m == PACK_MAGIC => false,
            m if m == PACK_MAGIC_V1 => true,
            _ => return Err(PackError::Corrupt("not a gitvault pack (bad magic)".into())),
        };
        Ok(PackReader { stream, legacy })
    }

    /// Reads the footer and checks its MAC (format 2). A format 1 footer cannot be checked;
    /// the seal says so, and the caller decides what it may be trusted with.
    pub fn footer(&mut self, auth: &AuthKey) -> Result<(Footer, FooterSeal), PackError> {
        let trailer_len = if self.legacy {
            TRAILER_LEN_V1
        } else {
            TRAILER_LEN
        };
        let end = self.stream.seek(SeekFrom::End(0)).map_err(decrypt_err)?;
        if end < PACK_MAGIC.len() as u64 + trailer_len {
            return Err(PackError::Corrupt("pack is too short".into()));
        }
        self.stream
            .seek(SeekFrom::Start(end - trailer_len))
            .map_err(decrypt_err)?;
        let mut trailer = vec![0u8; trailer_len as usize];
        self.stream.read_exact(&mut trailer).map_err(decrypt_err)?;
        let (seal_bytes, lengths) = trailer.split_at(trailer.len() - 16);
        let expected = if self.legacy {
            TRAILER_MAGIC_V1
        } else {
            TRAILER_MAGIC
        };
        if &lengths[8..] != expected {
            return Err(PackError::Corrupt("bad trailer magic".into()));
        }
        let clen = u64::from(u32::from_le_bytes([
            lengths[0], lengths[1], lengths[2], lengths[3],
        ]));
        let raw_len = u64::from(u32::from_le_bytes([
            lengths[4], lengths[5], lengths[6], lengths[7],
        ]));
        if clen > end - trailer_len - PACK_MAGIC.len() as u64 || raw_len > MAX_FOOTER {
            return Err(PackError::Corrupt("footer length out of range".into()));
        }
        self.stream
            .seek(SeekFrom::Start(end - trailer_len - clen))
            .map_err(decrypt_err)?;
        let mut compressed = vec![0u8; clen as usize];
        self.stream
            .read_exact(&mut compressed)
            .map_err(decrypt_err)?;
        let plain = zstd::bulk::decompress(&compressed, raw_len as usize)
            .map_err(|e| PackError::Corrupt(format!("footer does not decompress: {e}")))?;
        let seal = if self.legacy {
            FooterSeal::Legacy {
                digest: *blake3::hash(&plain).as_bytes(),
            }
        } else {
            let mut frames_hash = [0u8; 32];
            frames_hash.copy_from_slice(&seal_bytes[..32]);
            let mac = &seal_bytes[32..64];
            if !auth.verify(FOOTER_MAC_DOMAIN, &[&plain, &frames_hash], mac) {
                return Err(PackError::Forged(
                    "its footer does not authenticate with this vault's key".into(),
                ));
            }
            let mut tag = [0u8; 32];
            tag.copy_from_slice(mac);
            FooterSeal::Authenticated {
                mac: tag,
                frames_hash,
            }
        };
        Ok((Footer::decode(&plain)?, seal))
    }

    /// The compressed bytes of one frame, decrypted.
    pub fn frame_compressed(&mut self, frame: &FrameInfo) -> Result<Vec<u8>, PackError> {
        self.stream
            .seek(SeekFrom::Start(frame.offset))
            .map_err(decrypt_err)?;
        let mut compressed = vec![0u8; frame.compressed_len as usize];
        self.stream
            .read_exact(&mut compressed)
            .map_err(decrypt_err)?;
        Ok(compressed)
    }

    /// Decrypts and decompresses one frame.
    pub fn frame(&mut self, frame: &FrameInfo) -> Result<Vec<u8>, PackError> {
        let compressed = self.frame_compressed(frame)?;
        decompress_frame(&compressed, frame.raw_len)
    }
}

/// Checks a whole pack file: its name is the BLAKE3 of its bytes, it decrypts and
/// authenticates, its footer parses and (format 2) carries this vault's MAC over the frames it
/// sits behind, every frame decompresses, and every chunk hashes to its id. A pack that passes
/// was written by a holder of the vault's keys, whatever its format.
pub fn verify_pack(
    identity: &age::x25519::Identity,
    id_key: &crate::crypto::IdKey,
    name: &str,
    bytes: &[u8],
) -> Result<(Footer, FooterSeal), PackError> {
    if blake3::hash(bytes).to_hex().as_str() != name {
        return Err(PackError::Corrupt(
            "content does not hash to the pack's name".into(),
        ));
    }
    let mut reader = PackReader::open(identity, io::Cursor::new(bytes))?;
    let (footer, seal) = reader.footer(&id_key.auth_key())?;
    let mut frames_hash = blake3::Hasher::new();
    let mut expected_offset = PACK_MAGIC.len() as u64;
    for (index, frame) in footer.frames.iter().enumerate() {
        if frame.offset != expected_offset {
            return Err(PackError::Corrupt(format!(
                "frame {index} is not where the previous one ends"
            )));
        }
        expected_offset += u64::from(frame.compressed_len);
        let compressed = reader.frame_compressed(frame)?;
        frames_hash.update(&compressed);
        let plain = decompress_frame(&compressed, frame.raw_len)?;
        for e in footer.entries.iter().filter(|e| e.frame as usize == index) {
            let start = e.offset as usize;
            let chunk = plain.get(start..start + e.len as usize).ok_or_else(|| {
                PackError::Corrupt(format!("chunk {} lies outside its frame", e.id))
            })?;
            if id_key.chunk_id(chunk) != e.id {
                return Err(PackError::Corrupt(format!(
                    "chunk {} does not match its id",
                    e.id
                )));
            }
        }
    }
    if let FooterSeal::Authenticated {
        frames_hash: sealed,
        ..
    } = seal
        && *frames_hash.finalize().as_bytes() != sealed
    {
        return Err(PackError::Forged(
            "its frames are not the ones its footer was sealed with".into(),
        ));
    }
    Ok((footer, seal))
}

/// Reads only the footer of a pack through a seekable source, authenticated (format 2).
pub fn read_footer<R: Read + Seek>(
    identity: &age::x25519::Identity,
    auth: &AuthKey,
    input: R,
) -> Result<(Footer, FooterSeal), PackError> {
    PackReader::open(identity, input)?.footer(auth)
}

pub fn decompress_frame(compressed: &[u8], raw_len: u32) -> Result<Vec<u8>, PackError> {
    let plain = zstd::bulk::decompress(compressed, raw_len as usize)
        .map_err(|e| PackError::Corrupt(format!("frame does not decompress: {e}")))?;
    if plain.len() != raw_len as usize {
        return Err(PackError::Corrupt(format!(
            "frame decompressed to {} bytes, footer says {raw_len}",
            plain.len()
        )));
    }
    Ok(plain)
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
            let frame = r.frame(&footer.frames[e.frame as usize]).unwrap();
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
        assert_eq!(r.frame(&read.frames[0]).unwrap(), chunk);
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
