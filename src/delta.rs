//! Git's binary delta format (`Documentation/gitformat-pack.txt`, "Deltified representation"):
//! an encoder in the manner of git's `diff-delta.c` and a strict decoder.
//!
//! The encoder indexes the base in non-overlapping 16-byte blocks by a rolling hash, then rolls
//! the same hash over every position of the target; a hit is verified byte by byte, extended
//! forwards and backwards, and emitted as COPY instructions, everything else as INSERTs. Each
//! hash bucket keeps at most [`BUCKET_LIMIT`] blocks, spread evenly over the base, so repetitive
//! input costs a bounded number of comparisons per target position, never a quadratic scan.
//!
//! Invariants of what [`DeltaEncoder::encode`] writes, all of which git's `patch-delta.c`
//! accepts: a COPY covers at most 0x10000 bytes (size 0x10000 written as "no size bytes") from
//! an offset below 4 GiB; an INSERT carries 1 to 127 bytes; the header's sizes are exact.
//!
//! The decoder never trusts the delta: every size and offset is checked before use, the
//! declared result size only bounds the output (it is not allocated up front beyond
//! [`PREALLOC_LIMIT`]), and any inconsistency is a [`DeltaError`], never a panic.
//!
//! The file stays whole (about 470 lines of code and 130 of tests): the encoder's index, its
//! scan and the instruction writer share the block size and the COPY/INSERT limits above, and
//! the decoder is their mirror image; split, each half would only make sense beside the other.

/// Bytes per indexed block of the base, and the width of the rolling hash window.
const WINDOW: usize = 16;
/// Candidates kept per hash bucket, as git's `HASH_LIMIT`: bounds the work per target byte.
pub(crate) const BUCKET_LIMIT: usize = 64;
/// A match this long is good enough: looking at further candidates costs more than it saves.
const GOOD_MATCH: usize = 4096;
/// The largest COPY git's own encoder writes; its size is encoded as zero.
const MAX_COPY: usize = 0x10000;
const MAX_INSERT: usize = 127;
/// Copy offsets are at most four bytes, so only that much of a base can be referenced.
const MAX_BASE_OFFSET: usize = u32::MAX as usize;
/// The declared result size of a hostile delta must not turn into an allocation by itself.
const PREALLOC_LIMIT: usize = 16 << 20;

/// An odd multiplier for the polynomial rolling hash; `POW_WINDOW` is its 16th power, the
/// weight of the byte that leaves the window.
const HASH_MUL: u64 = 0x100_0000_01b3;
const POW_WINDOW: u64 = pow_window();

const fn pow_window() -> u64 {
    let mut p = 1u64;
    let mut i = 0;
    while i < WINDOW {
        p = p.wrapping_mul(HASH_MUL);
        i += 1;
    }
    p
}

/// `WEIGHTS[i]` is `HASH_MUL` to the power `WINDOW - 1 - i`: the weight of a window's byte `i`.
const WEIGHTS: [u64; WINDOW] = weights();

const fn weights() -> [u64; WINDOW] {
    let mut w = [1u64; WINDOW];
    let mut i = WINDOW - 1;
    while i > 0 {
        w[i - 1] = w[i].wrapping_mul(HASH_MUL);
        i -= 1;
    }
    w
}

/// The polynomial hash of a window, as a sum of independent products: the same value as
/// Horner's rule, whose chain of dependent multiplies made indexing a base cost four cycles a
/// byte (most of a restore's delta encoding).
fn window_hash(window: &[u8]) -> u64 {
    window.iter().zip(WEIGHTS).fold(0u64, |h, (&b, w)| {
        h.wrapping_add(u64::from(b).wrapping_mul(w))
    })
}

fn roll(h: u64, out: u8, incoming: u8) -> u64 {
    h.wrapping_mul(HASH_MUL)
        .wrapping_sub(u64::from(out).wrapping_mul(POW_WINDOW))
        .wrapping_add(u64::from(incoming))
}

/// The low bits of a polynomial hash depend only on the low bits of the bytes; a Fibonacci
/// multiply moves entropy from all of it into the top bits, which pick the bucket.
fn bucket_of(h: u64, shift: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// What went wrong decoding a delta: each names the first inconsistency found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("delta header is truncated or its size does not fit in 64 bits")]
    BadHeader,
    #[error("delta was made for a base of {expected} bytes, the base has {actual}")]
    BaseSizeMismatch { expected: u64, actual: u64 },
    #[error("delta instruction at byte {at} is truncated")]
    Truncated { at: usize },
    #[error("delta instruction at byte {at} uses the reserved opcode 0")]
    ReservedOpcode { at: usize },
    #[error("delta copy at byte {at} reads {size} bytes at {offset}, outside the base")]
    CopyOutOfRange { at: usize, offset: u64, size: u64 },
    #[error("delta instruction at byte {at} writes past the declared result size {declared}")]
    ResultOverflow { at: usize, declared: u64 },
    #[error("delta produced {actual} bytes, its header declares {declared}")]
    ResultSizeMismatch { declared: u64, actual: u64 },
}

/// Reads git's little-endian base-128 size at `pos`, advancing it.
fn read_size(delta: &[u8], pos: &mut usize) -> Result<u64, DeltaError> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *delta.get(*pos).ok_or(DeltaError::BadHeader)?;
        *pos += 1;
        let bits = u64::from(byte & 0x7f);
        if shift > 63 || (shift > 0 && bits >> (64 - shift) != 0) {
            return Err(DeltaError::BadHeader);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

fn write_size(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The base and result sizes a delta declares, so that a caller can refuse a result too large
/// for it before applying.
pub fn delta_sizes(delta: &[u8]) -> Result<(u64, u64), DeltaError> {
    let mut pos = 0;
    let base = read_size(delta, &mut pos)?;
    let result = read_size(delta, &mut pos)?;
    Ok((base, result))
}

/// Rebuilds the target from `base` and a delta in git's format.
pub fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut pos = 0;
    let base_size = read_size(delta, &mut pos)?;
    if base_size != base.len() as u64 {
        return Err(DeltaError::BaseSizeMismatch {
            expected: base_size,
            actual: base.len() as u64,
        });
    }
    let declared = read_size(delta, &mut pos)?;
    let mut out = Vec::with_capacity(
        usize::try_from(declared).map_or(PREALLOC_LIMIT, |d| d.min(PREALLOC_LIMIT)),
    );
    while pos < delta.len() {
        let at = pos;
        let cmd = delta[pos];
        pos += 1;
        let room = declared - out.len() as u64;
        if cmd & 0x80 != 0 {
            let mut fields = [0u8; 7];
            for (bit, field) in fields.iter_mut().enumerate() {
                if cmd & (1 << bit) != 0 {
                    *field = *delta.get(pos).ok_or(DeltaError::Truncated { at })?;
                    pos += 1;
                }
            }
            let offset = u64::from(u32::from_le_bytes([
                fields[0], fields[1], fields[2], fields[3],
            ]));
            let mut size = u64::from(u32::from_le_bytes([fields[4], fields[5], fields[6], 0]));
            if size == 0 {
                size = MAX_COPY as u64;
            }
            if offset + size > base.len() as u64 {
                return Err(DeltaError::CopyOutOfRange { at, offset, size });
            }
            if size > room {
                return Err(DeltaError::ResultOverflow { at, declared });
            }
            // Both fit in usize: they lie within `base`, a slice in memory.
            out.extend_from_slice(&base[offset as usize..(offset + size) as usize]);
        } else if cmd != 0 {
            let size = usize::from(cmd);
            let data = delta
                .get(pos..pos + size)
                .ok_or(DeltaError::Truncated { at })?;
            if size as u64 > room {
                return Err(DeltaError::ResultOverflow { at, declared });
            }
            out.extend_from_slice(data);
            pos += size;
        } else {
            return Err(DeltaError::ReservedOpcode { at });
        }
    }
    if out.len() as u64 != declared {
        return Err(DeltaError::ResultSizeMismatch {
            declared,
            actual: out.len() as u64,
        });
    }
    Ok(out)
}

/// One indexed block: the hash bits not used for the bucket (to skip most false hits without
/// touching the base) and where the block starts.
#[derive(Clone, Copy, Default)]
struct Block {
    check: u32,
    offset: u32,
}

/// Delta encoding state whose allocations are reused from one call to the next, since a
/// restore encodes many small objects.
#[derive(Default)]
pub struct DeltaEncoder {
    /// `starts[b]..starts[b + 1]` are bucket `b`'s blocks in `blocks`, ascending by offset.
    starts: Vec<u32>,
    blocks: Vec<Block>,
    scratch: Vec<(u32, Block)>,
    /// The counting sort's bucket boundaries, its blocks in bucket order, and fill positions.
    counts: Vec<u32>,
    sorted: Vec<Block>,
    fill: Vec<u32>,
    shift: u32,
}

impl DeltaEncoder {
    pub fn new() -> DeltaEncoder {
        DeltaEncoder::default()
    }

    /// Appends to `out` a delta that turns `base` into `target`, unless it would exceed
    /// `max_len` bytes: then returns false and `out`'s contents past its original length are
    /// unspecified (the caller stores the object whole).
    pub fn encode(
        &mut self,
        base: &[u8],
        target: &[u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let start = out.len();
        write_size(out, base.len() as u64);
        write_size(out, target.len() as u64);
        let indexed = &base[..base.len().min(MAX_BASE_OFFSET)];
        self.index(indexed);
        let mut emit = Emitter {
            out,
            start,
            max_len,
        };
        if !emit.fits(0) {
            return false;
        }
        let mut pending = 0; // first target byte not yet emitted
        let mut pos = 0; // start of the hashed window
        if target.len() >= WINDOW && !self.blocks.is_empty() {
            let mut h = window_hash(&target[..WINDOW]);
            loop {
                if let Some(found) = self.best_match(indexed, target, pos, h) {
                    let (at, offset, len) = self.look_ahead(indexed, target, pos, h, found);
                    pos = at;
                    // Grow the match backwards into bytes still waiting to be inserted.
                    let mut back = 0;
                    while back < pos - pending
                        && back < offset
                        && indexed[offset - back - 1] == target[pos - back - 1]
                    {
                        back += 1;
                    }
                    if !emit.insert(&target[pending..pos - back])
                        || !emit.copy(offset - back, len + back)
                    {
                        return false;
                    }
                    pos += len;
                    pending = pos;
                    if pos + WINDOW > target.len() {
                        break;
                    }
                    h = window_hash(&target[pos..pos + WINDOW]);
                    continue;
                }
                if pos + WINDOW >= target.len() {
                    break;
                }
                if !emit.fits(pos + 1 - pending) {
                    return false;
                }
                h = roll(h, target[pos], target[pos + WINDOW]);
                pos += 1;
            }
        }
        emit.insert(&target[pending..])
    }

    fn index(&mut self, base: &[u8]) {
        self.starts.clear();
        self.blocks.clear();
        self.scratch.clear();
        let count = base.len() / WINDOW;
        if count == 0 {
            return;
        }
        let bits = count.next_power_of_two().trailing_zeros().max(4);
        self.shift = 64 - bits;
        let buckets = 1usize << bits;
        // From the end backwards, so that of a run of identical blocks only the first is kept:
        // a long run then costs one candidate, and a match found there extends over all of it.
        let mut previous = None;
        for i in (0..count).rev() {
            let offset = i * WINDOW;
            let h = window_hash(&base[offset..offset + WINDOW]);
            let block = Block {
                check: (h >> 32) as u32,
                offset: offset as u32,
            };
            let bucket = bucket_of(h, self.shift) as u32;
            if previous == Some(h)
                && let Some(last) = self.scratch.last_mut()
            {
                last.1 = block;
                continue;
            }
            previous = Some(h);
            self.scratch.push((bucket, block));
        }
        // A counting sort by bucket (the scratch list runs from the end of the base, so it is
        // walked backwards to keep each bucket's blocks ascending by offset): linear, where a
        // comparison sort was a tenth of a restore's time.
        self.counts.clear();
        self.counts.resize(buckets + 1, 0);
        for &(bucket, _) in &self.scratch {
            self.counts[bucket as usize + 1] += 1;
        }
        for b in 1..self.counts.len() {
            self.counts[b] += self.counts[b - 1];
        }
        self.sorted.clear();
        self.sorted.resize(self.scratch.len(), Block::default());
        self.fill.clear();
        self.fill.extend_from_slice(&self.counts[..buckets]);
        for &(bucket, block) in self.scratch.iter().rev() {
            let at = &mut self.fill[bucket as usize];
            self.sorted[*at as usize] = block;
            *at += 1;
        }
        self.starts.resize(buckets + 1, 0);
        for b in 0..buckets {
            let run = &self.sorted[self.counts[b] as usize..self.counts[b + 1] as usize];
            // An over-full bucket keeps an even spread over the base, as git's culling does.
            if run.len() <= BUCKET_LIMIT {
                self.blocks.extend_from_slice(run);
            } else {
                // A division per kept block: only for the rare over-full bucket.
                for k in 0..BUCKET_LIMIT {
                    self.blocks.push(run[k * run.len() / BUCKET_LIMIT]);
                }
            }
            self.starts[b + 1] = self.blocks.len() as u32;
        }
    }

    /// A short match found at `pos` may be a repeated phrase at the wrong place in the base,
    /// and taking it would skip the window that leads to the right place. So the next
    /// [`WINDOW`] positions are tried too (one of them starts an indexed block if the target
    /// really continues the base there) and the match that reaches furthest wins.
    fn look_ahead(
        &self,
        base: &[u8],
        target: &[u8],
        pos: usize,
        mut h: u64,
        (offset, len): (usize, usize),
    ) -> (usize, usize, usize) {
        let mut best = (pos, offset, len);
        if len >= GOOD_MATCH {
            return best;
        }
        let last = (pos + WINDOW).min(target.len() - WINDOW);
        for p in pos + 1..=last {
            h = roll(h, target[p - 1], target[p - 1 + WINDOW]);
            if let Some((o, l)) = self.best_match(base, target, p, h)
                && p + l > best.0 + best.2
            {
                best = (p, o, l);
            }
        }
        best
    }

    /// The longest verified match of `target[pos..]` in the base among the window's bucket.
    fn best_match(&self, base: &[u8], target: &[u8], pos: usize, h: u64) -> Option<(usize, usize)> {
        let bucket = bucket_of(h, self.shift);
        let range = self.starts[bucket] as usize..self.starts[bucket + 1] as usize;
        let mut best: Option<(usize, usize)> = None;
        for block in &self.blocks[range] {
            if block.check != (h >> 32) as u32 {
                continue;
            }
            let offset = block.offset as usize;
            let len = common_prefix(&base[offset..], &target[pos..]);
            if len >= WINDOW && best.is_none_or(|(_, l)| len > l) {
                best = Some((offset, len));
                if len >= GOOD_MATCH {
                    break;
                }
            }
        }
        best
    }
}

/// Length of the common prefix, eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let diff = x ^ y;
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Writes instructions while keeping the delta within its budget.
struct Emitter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    max_len: usize,
}

impl Emitter<'_> {
    /// Whether the delta so far plus `pending` literal bytes still fits.
    fn fits(&self, pending: usize) -> bool {
        let literal_cost = pending + pending.div_ceil(MAX_INSERT);
        self.out.len() - self.start + literal_cost <= self.max_len
    }

    fn insert(&mut self, data: &[u8]) -> bool {
        if !self.fits(data.len()) {
            return false;
        }
        for chunk in data.chunks(MAX_INSERT) {
            self.out.push(chunk.len() as u8);
            self.out.extend_from_slice(chunk);
        }
        true
    }

    fn copy(&mut self, mut offset: usize, mut len: usize) -> bool {
        while len > 0 {
            let size = len.min(MAX_COPY);
            let at = self.out.len();
            self.out.push(0x80);
            let mut cmd = 0x80u8;
            for (bit, byte) in (offset as u32).to_le_bytes().into_iter().enumerate() {
                if byte != 0 {
                    cmd |= 1 << bit;
                    self.out.push(byte);
                }
            }
            if size != MAX_COPY {
                for (bit, byte) in (size as u32).to_le_bytes()[..3].iter().enumerate() {
                    if *byte != 0 {
                        cmd |= 0x10 << bit;
                        self.out.push(*byte);
                    }
                }
            }
            self.out[at] = cmd;
            offset += size;
            len -= size;
        }
        self.fits(0)
    }
}

/// A delta from `base` to `target` if it is smaller than half the target, the point below
/// which git's own packs would rather store the object whole.
pub fn encode(base: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    encode_within(base, target, target.len() / 2)
}

/// A delta from `base` to `target` of at most `max_len` bytes, or `None`.
pub fn encode_within(base: &[u8], target: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    DeltaEncoder::new()
        .encode(base, target, max_len, &mut out)
        .then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(base: &[u8], target: &[u8]) -> Vec<u8> {
        let delta = encode_within(base, target, usize::MAX).expect("unbounded delta");
        assert_eq!(apply_delta(base, &delta).expect("valid delta"), target);
        delta
    }

    #[test]
    fn window_hash_is_horners_rule() {
        let data: Vec<u8> = (0..WINDOW as u32).map(|i| (i * 91 % 256) as u8).collect();
        let horner = data.iter().fold(0u64, |h, &b| {
            h.wrapping_mul(HASH_MUL).wrapping_add(u64::from(b))
        });
        assert_eq!(window_hash(&data), horner);
    }

    #[test]
    fn rolling_hash_equals_fresh_hash() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut h = window_hash(&data[..WINDOW]);
        for pos in 1..data.len() - WINDOW {
            h = roll(h, data[pos - 1], data[pos - 1 + WINDOW]);
            assert_eq!(h, window_hash(&data[pos..pos + WINDOW]));
        }
    }

    #[test]
    fn edge_cases_round_trip() {
        roundtrip(b"", b"");
        roundtrip(b"", b"hello");
        roundtrip(b"hello", b"");
        roundtrip(b"short", b"short");
        let text: Vec<u8> = b"fn main() { println!(\"hi\"); }\n".repeat(100);
        let delta = roundtrip(&text, &text);
        assert!(
            delta.len() < 20,
            "identical input is a few copies: {}",
            delta.len()
        );
    }

    #[test]
    fn small_edit_is_a_small_delta() {
        let base: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} of some source file\n").into_bytes())
            .collect();
        let mut target = base.clone();
        target.splice(
            100_000..100_010,
            b"an edit that is inserted".iter().copied(),
        );
        target.drain(300_000..300_500);
        let delta = roundtrip(&base, &target);
        assert!(delta.len() < 200, "{} bytes", delta.len());
    }

    #[test]
    fn copies_longer_than_64k_are_split() {
        let base: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let delta = roundtrip(&base, &base);
        // 300000 / 65536 rounds up to 5 copies of at most 6 bytes each, after a 6-byte header.
        assert!(delta.len() <= 6 + 5 * 6, "{} bytes", delta.len());
    }

    #[test]
    fn repetitive_input_is_not_quadratic() {
        let base = b"ab".repeat(1 << 20);
        let mut target = base.clone();
        target[1 << 19] = b'x';
        let started = std::time::Instant::now();
        roundtrip(&base, &target);
        let period16 = b"0123456789abcdef".repeat(1 << 16);
        roundtrip(&period16, &period16[5..]);
        assert!(started.elapsed().as_secs() < 10);
    }

    #[test]
    fn budget_is_respected() {
        let base = vec![0u8; 1000];
        let target: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        assert!(encode(&base, &target).is_none());
        let delta = encode_within(&base, &target, 2000).expect("fits");
        assert!(delta.len() <= 2000);
    }

    #[test]
    fn hostile_deltas_are_errors() {
        let base = b"0123456789";
        let ok = [10, 4, 0x91, 2, 4]; // copy 4 bytes from offset 2
        assert_eq!(apply_delta(base, &ok).unwrap(), b"2345");
        assert_eq!(apply_delta(base, &[]), Err(DeltaError::BadHeader));
        assert_eq!(apply_delta(base, &[10]), Err(DeltaError::BadHeader));
        assert_eq!(
            apply_delta(base, &[0xff; 12]),
            Err(DeltaError::BadHeader),
            "an endless varint"
        );
        // Each hostile delta is refused with the error that names what is wrong with it.
        macro_rules! refused {
            ($delta:expr, $error:ident) => {
                assert!(
                    matches!(apply_delta(base, &$delta), Err(DeltaError::$error { .. })),
                    "{:?} should be refused as {}",
                    $delta,
                    stringify!($error)
                )
            };
        }
        refused!([11, 4, 0x91, 2, 4], BaseSizeMismatch);
        refused!([10, 4, 0x91, 2], Truncated);
        refused!([10, 4, 0x91, 8, 4], CopyOutOfRange);
        refused!([10, 4, 0x91, 0xff, 0xff], CopyOutOfRange);
        refused!([10, 3, 0x91, 2, 4], ResultOverflow);
        refused!([10, 5, 0x91, 2, 4], ResultSizeMismatch);
        refused!([10, 4, 0], ReservedOpcode);
        refused!([10, 4, 5, b'a'], Truncated);
        // A huge declared size allocates nothing by itself.
        let huge = [10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        refused!(huge, ResultSizeMismatch);
    }
}
