//! A streaming writer of git packs (version 2) with whole objects and OFS_DELTA entries, and of
//! their version 2 `.idx`, byte for byte what `git index-pack` would derive from the pack.
//!
//! Everything the index needs is known while writing: the caller knows each object's id, the
//! writer knows each entry's offset and computes its CRC32 and the pack's SHA-1 as the bytes go
//! out. So no entry is inflated again and no indexer runs afterwards.
//!
//! The object count is a parameter of [`PackWriter::new`], written into the pack header at once,
//! so the output only has to be [`Write`] (a pipe or an encrypting stream works as well as a
//! file); [`PackWriter::finish`] fails if a different number of objects was added. A restore
//! knows the count from its snapshot; a caller that does not would have to buffer or count first.
//!
//! Memory: one [`PackEntry`] (32 bytes) per object, since the `.idx` needs all ids sorted, plus
//! a fixed compression buffer; object data passes through in slices.

use std::io::Write;

use sha1::{Digest, Sha1};

use crate::model::{ObjectKind, Oid};

/// zlib level 1: restore is bounded by CPU, and on deltas the higher levels save little.
pub(crate) const DEFAULT_LEVEL: i32 = 1;
const OFS_DELTA: u8 = 6;
/// Offsets above this go to the `.idx`'s 64-bit table, as git's `index-pack` decides (not at
/// 4 GiB: the 32-bit field's top bit marks the indirection).
const LARGE_OFFSET: u64 = 0x7fff_ffff;
const ZBUF_LEN: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("writing the pack failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("zlib compression failed: {0}")]
    Compress(String),
    #[error("the pack header announced {announced} objects, {added} were added")]
    CountMismatch { announced: u32, added: u64 },
    #[error("delta base offset {base} is not an earlier entry of this pack (entry at {offset})")]
    BadDeltaBase { base: u64, offset: u64 },
    #[error("object {0} is in the pack twice")]
    Duplicate(String),
}

/// Where one object lies in the pack, and the CRC32 of its entry's bytes: a row of the `.idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub oid: Oid,
    pub offset: u64,
    pub crc32: u32,
}

/// What a finished pack needs for its `.idx`, and the output handed back.
pub struct FinishedPack<W> {
    pub checksum: [u8; 20],
    /// In pack order, that is ascending by offset.
    pub entries: Vec<PackEntry>,
    pub out: W,
}

/// Writes a pack entry by entry; see the module documentation.
pub struct PackWriter<W: Write> {
    out: W,
    hasher: Sha1,
    offset: u64,
    announced: u32,
    entries: Vec<PackEntry>,
    deflate: zlib_rs::Deflate,
    zbuf: Vec<u8>,
}

impl<W: Write> PackWriter<W> {
    /// Starts a pack of exactly `object_count` objects at [`DEFAULT_LEVEL`]. Writes are small
    /// (entry headers), so `out` should be buffered.
    pub fn new(out: W, object_count: u32) -> Result<PackWriter<W>, PackError> {
        PackWriter::with_level(out, object_count, DEFAULT_LEVEL)
    }

    /// As [`PackWriter::new`] with zlib `level` (0 to 9; git's own packs use 6).
    pub(crate) fn with_level(
        out: W,
        object_count: u32,
        level: i32,
    ) -> Result<PackWriter<W>, PackError> {
        let mut writer = PackWriter {
            out,
            hasher: Sha1::new(),
            offset: 0,
            announced: object_count,
            entries: Vec::with_capacity(object_count.min(1 << 20) as usize),
            deflate: zlib_rs::Deflate::new(level.clamp(0, 9), true, 15),
            zbuf: vec![0; ZBUF_LEN],
        };
        let mut header = [0u8; 12];
        header[..4].copy_from_slice(b"PACK");
        header[4..8].copy_from_slice(&2u32.to_be_bytes());
        header[8..].copy_from_slice(&object_count.to_be_bytes());
        writer.out.write_all(&header)?;
        writer.hasher.update(header);
        writer.offset = header.len() as u64;
        Ok(writer)
    }

    /// The offset the next entry will have.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Adds an object whole; returns its offset, which later deltas name as their base.
    pub fn add_whole(&mut self, oid: Oid, kind: ObjectKind, data: &[u8]) -> Result<u64, PackError> {
        let mut header = [0u8; 10];
        let len = entry_header(&mut header, kind as u8, data.len() as u64);
        self.add_entry(oid, &header[..len], data)
    }

    /// Adds an object as a delta (git's format, see [`super::delta`]) against the entry at
    /// `base_offset`, which must be earlier in this pack. The result's size is in the delta's
    /// own header, so it is not asked for; the entry's size field is the delta's length.
    pub fn add_ofs_delta(
        &mut self,
        oid: Oid,
        base_offset: u64,
        delta: &[u8],
    ) -> Result<u64, PackError> {
        let offset = self.offset;
        let is_entry = self
            .entries
            .binary_search_by_key(&base_offset, |e| e.offset)
            .is_ok();
        if !is_entry {
            return Err(PackError::BadDeltaBase {
                base: base_offset,
                offset,
            });
        }
        self.add_delta_entry(oid, base_offset, delta)
    }

    /// Writes a delta entry against `base_offset`, which the caller knows is an entry's.
    fn add_delta_entry(
        &mut self,
        oid: Oid,
        base_offset: u64,
        delta: &[u8],
    ) -> Result<u64, PackError> {
        let mut header = [0u8; 10 + 10];
        let mut len = entry_header(&mut header, OFS_DELTA, delta.len() as u64);
        len += ofs_distance(&mut header[len..], self.offset - base_offset);
        self.add_entry(oid, &header[..len], delta)
    }

    /// As [`PackWriter::add_ofs_delta`], naming the base by its position among the entries
    /// added so far (0 is the first).
    pub fn add_ofs_delta_of(
        &mut self,
        oid: Oid,
        base_entry: usize,
        delta: &[u8],
    ) -> Result<u64, PackError> {
        let base =
            self.entries
                .get(base_entry)
                .map(|e| e.offset)
                .ok_or(PackError::BadDeltaBase {
                    base: base_entry as u64,
                    offset: self.offset,
                })?;
        // An entry's offset by construction: no search of the entries as `add_ofs_delta` makes.
        self.add_delta_entry(oid, base, delta)
    }

    fn add_entry(&mut self, oid: Oid, header: &[u8], data: &[u8]) -> Result<u64, PackError> {
        let offset = self.offset;
        let mut crc = crc32fast::Hasher::new();
        self.emit(header, &mut crc)?;
        self.deflate.reset();
        let mut input = data;
        loop {
            let before_in = self.deflate.total_in();
            let before_out = self.deflate.total_out();
            let status = self
                .deflate
                .compress(input, &mut self.zbuf, zlib_rs::DeflateFlush::Finish)
                .map_err(|e| PackError::Compress(format!("{e:?}")))?;
            let consumed = (self.deflate.total_in() - before_in) as usize;
            let produced = (self.deflate.total_out() - before_out) as usize;
            input = &input[consumed..];
            let chunk = &self.zbuf[..produced];
            self.out.write_all(chunk)?;
            self.hasher.update(chunk);
            crc.update(chunk);
            self.offset += produced as u64;
            match status {
                zlib_rs::Status::StreamEnd => break,
                zlib_rs::Status::Ok => {}
                zlib_rs::Status::BufError if consumed > 0 || produced > 0 => {}
                zlib_rs::Status::BufError => {
                    return Err(PackError::Compress("deflate made no progress".into()));
                }
            }
        }
        self.entries.push(PackEntry {
            oid,
            offset,
            crc32: crc.finalize(),
        });
        Ok(offset)
    }

    fn emit(&mut self, bytes: &[u8], crc: &mut crc32fast::Hasher) -> Result<(), PackError> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        crc.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes the trailing checksum and flushes.
    pub fn finish(mut self) -> Result<FinishedPack<W>, PackError> {
        if self.entries.len() as u64 != u64::from(self.announced) {
            return Err(PackError::CountMismatch {
                announced: self.announced,
                added: self.entries.len() as u64,
            });
        }
        let checksum: [u8; 20] = self.hasher.finalize().into();
        self.out.write_all(&checksum)?;
        self.out.flush()?;
        Ok(FinishedPack {
            checksum,
            entries: self.entries,
            out: self.out,
        })
    }
}

/// Git's entry header: type in bits 4-6 of the first byte, the size in 4 then 7-bit groups.
fn entry_header(buf: &mut [u8], kind: u8, size: u64) -> usize {
    let mut n = 0;
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        buf[n] = byte | 0x80;
        n += 1;
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    buf[n] = byte;
    n + 1
}

/// The OFS_DELTA distance: big-endian 7-bit groups where each continuation also adds one, so
/// that no distance has two encodings.
fn ofs_distance(buf: &mut [u8], mut distance: u64) -> usize {
    let mut tmp = [0u8; 10];
    let mut pos = tmp.len() - 1;
    tmp[pos] = (distance & 0x7f) as u8;
    distance >>= 7;
    while distance != 0 {
        distance -= 1;
        pos -= 1;
        tmp[pos] = 0x80 | (distance & 0x7f) as u8;
        distance >>= 7;
    }
    let len = tmp.len() - pos;
    buf[..len].copy_from_slice(&tmp[pos..]);
    len
}

/// Writes the version 2 `.idx` of a pack: fan-out, sorted ids, CRC32s, offsets (those above
/// 2 GiB through the 64-bit table), the pack's checksum and the index's own. Sorts `entries`.
/// Returns the index's checksum.
pub fn write_idx(
    entries: &mut [PackEntry],
    pack_checksum: &[u8; 20],
    out: impl Write,
) -> Result<[u8; 20], PackError> {
    entries.sort_unstable_by_key(|e| e.oid.0);
    if let Some(pair) = entries.windows(2).find(|w| w[0].oid == w[1].oid) {
        return Err(PackError::Duplicate(pair[0].oid.to_hex()));
    }
    let mut out = HashingWriter {
        out,
        hasher: Sha1::new(),
    };
    out.put(b"\xfftOc")?;
    out.put(&2u32.to_be_bytes())?;
    let mut fanout = [0u32; 256];
    for e in entries.iter() {
        fanout[usize::from(e.oid.0[0])] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        out.put(&total.to_be_bytes())?;
    }
    for e in entries.iter() {
        out.put(&e.oid.0)?;
    }
    for e in entries.iter() {
        out.put(&e.crc32.to_be_bytes())?;
    }
    let mut large = Vec::new();
    for e in entries.iter() {
        let field = if e.offset > LARGE_OFFSET {
            large.push(e.offset);
            0x8000_0000 | (large.len() as u32 - 1)
        } else {
            e.offset as u32
        };
        out.put(&field.to_be_bytes())?;
    }
    for offset in large {
        out.put(&offset.to_be_bytes())?;
    }
    out.put(pack_checksum)?;
    let checksum: [u8; 20] = out.hasher.finalize().into();
    out.out.write_all(&checksum)?;
    out.out.flush()?;
    Ok(checksum)
}

struct HashingWriter<W> {
    out: W,
    hasher: Sha1,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_ofs(buf: &[u8]) -> u64 {
        // git's unpack: the inverse of `ofs_distance`.
        let mut value = u64::from(buf[0] & 0x7f);
        let mut i = 0;
        while buf[i] & 0x80 != 0 {
            i += 1;
            value = ((value + 1) << 7) | u64::from(buf[i] & 0x7f);
        }
        value
    }

    #[test]
    fn ofs_distance_round_trips() {
        for d in [
            1u64,
            127,
            128,
            16_383,
            16_384,
            2_113_663,
            1 << 35,
            u64::MAX >> 1,
        ] {
            let mut buf = [0u8; 10];
            let len = ofs_distance(&mut buf, d);
            assert_eq!(decode_ofs(&buf[..len]), d, "distance {d}");
        }
    }

    #[test]
    fn entry_header_matches_git() {
        let mut buf = [0u8; 10];
        // A blob of 300 bytes: 0b1011_1100 then 300 >> 4 = 18.
        assert_eq!(entry_header(&mut buf, 3, 300), 2);
        assert_eq!(&buf[..2], &[0xbc, 18]);
        assert_eq!(entry_header(&mut buf, 1, 15), 1);
        assert_eq!(buf[0], 0x1f);
    }

    #[test]
    fn large_offsets_go_to_the_64_bit_table() {
        let entry = |b: u8, offset| PackEntry {
            oid: Oid([b; 20]),
            offset,
            crc32: 0,
        };
        let mut entries = [entry(2, 5 << 30), entry(1, 12), entry(3, 0x8000_0000)];
        let mut idx = Vec::new();
        write_idx(&mut entries, &[0; 20], &mut idx).unwrap();
        let offsets_at = 8 + 256 * 4 + 3 * 20 + 3 * 4;
        let field =
            |i: usize| u32::from_be_bytes(idx[offsets_at + 4 * i..][..4].try_into().unwrap());
        assert_eq!(field(0), 12);
        assert_eq!(field(1), 0x8000_0000);
        assert_eq!(field(2), 0x8000_0001);
        let table = offsets_at + 12;
        assert_eq!(
            u64::from_be_bytes(idx[table..table + 8].try_into().unwrap()),
            5 << 30
        );
        assert_eq!(
            u64::from_be_bytes(idx[table + 8..table + 16].try_into().unwrap()),
            0x8000_0000
        );
        assert_eq!(idx.len(), table + 16 + 40);
    }

    #[test]
    fn misuse_is_an_error() {
        let mut writer = PackWriter::new(Vec::new(), 2).unwrap();
        let a = writer
            .add_whole(Oid([1; 20]), ObjectKind::Blob, b"abc")
            .unwrap();
        assert!(matches!(
            writer.add_ofs_delta(Oid([2; 20]), a + 1, &[3, 3, 0x90, 3]),
            Err(PackError::BadDeltaBase { .. })
        ));
        assert!(matches!(
            writer.finish(),
            Err(PackError::CountMismatch { .. })
        ));
        let mut dup = [
            PackEntry {
                oid: Oid([1; 20]),
                offset: 12,
                crc32: 0,
            },
            PackEntry {
                oid: Oid([1; 20]),
                offset: 40,
                crc32: 0,
            },
        ];
        assert!(matches!(
            write_idx(&mut dup, &[0; 20], Vec::new()),
            Err(PackError::Duplicate(_))
        ));
    }
}
