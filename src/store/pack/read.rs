//! Reading a pack: one frame by its byte range (age STREAM is seekable), the footer with its
//! MAC checked, and `verify_pack`'s full check of every frame against the sealed frames hash.

use super::*;

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
    pub(crate) fn footer(&mut self, auth: &AuthKey) -> Result<(Footer, FooterSeal), PackError> {
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
    pub(crate) fn frame_compressed(&mut self, frame: &FrameInfo) -> Result<Vec<u8>, PackError> {
        self.stream
            .seek(SeekFrom::Start(frame.offset))
            .map_err(decrypt_err)?;
        let mut compressed = vec![0u8; frame.compressed_len as usize];
        self.stream
            .read_exact(&mut compressed)
            .map_err(decrypt_err)?;
        Ok(compressed)
    }

    /// Decrypts and decompresses one frame into `out`, replacing its contents (its allocation
    /// is reused when large enough).
    pub(crate) fn frame_into(
        &mut self,
        frame: &FrameInfo,
        out: &mut Vec<u8>,
    ) -> Result<(), PackError> {
        let compressed = self.frame_compressed(frame)?;
        decompress_frame_into(&compressed, frame.raw_len, out)
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
    let mut plain = Vec::new();
    decompress_frame_into(compressed, raw_len, &mut plain)?;
    Ok(plain)
}

/// `decompress_frame` into `out`, replacing its contents.
fn decompress_frame_into(
    compressed: &[u8],
    raw_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), PackError> {
    let corrupt = |e: std::io::Error| PackError::Corrupt(format!("frame does not decompress: {e}"));
    out.clear();
    out.reserve_exact(raw_len as usize);
    zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(compressed, out))
        .map_err(corrupt)?;
    if out.len() != raw_len as usize {
        return Err(PackError::Corrupt(format!(
            "frame decompressed to {} bytes, footer says {raw_len}",
            out.len()
        )));
    }
    Ok(())
}
