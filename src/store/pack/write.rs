//! Writing a pack: chunks gathered into zstd frames, the whole pack one age stream to a
//! temporary file, its name (BLAKE3 of the ciphertext) computed while the bytes go out, and the
//! footer sealed with the vault's auth key.

use super::*;

/// Counts and hashes the ciphertext on its way to the temporary file.
pub(super) struct HashingWriter<W: Write> {
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
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
