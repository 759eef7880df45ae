//! Packs: many chunks in one age-encrypted object.
//!
//! Plaintext of a pack (inside the age stream):
//!
//! ```text
//! chunk frame 0 | chunk frame 1 | ... | TOC skippable frame | trailer skippable frame
//! ```
//!
//! Each chunk is one zstd frame: compressed, or for chunks that do not shrink a frame of raw
//! blocks written here (stock `zstd -d` decodes both). The table of contents is JSON inside a zstd
//! skippable frame (magic 0x184D2A50), and the trailer, a skippable frame with magic 0x184D2A5F
//! and 4 bytes of content, holds the TOC frame's total length so a reader finds it from the end.
//! `age -d | zstd -d` therefore prints exactly the chunks' plaintext, in order.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::crypto::{self, Tag};
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const TOC_MAGIC: u32 = 0x184D_2A50;
const TRAILER_MAGIC: u32 = 0x184D_2A5F;
const TRAILER_LEN: usize = 12;
/// Largest block zstd allows.
const MAX_BLOCK: usize = 128 * 1024;
/// Largest data chunk: the chunker's largest cut (fastcdc's `MAXIMUM_MAX`).
pub const MAX_DATA_CHUNK: usize = 16 << 20;
/// Largest tree chunk (one folder's listing: some three million entries). A reader trusts no
/// `raw_length` beyond these: it sizes the buffer a chunk decodes into.
pub const MAX_TREE_CHUNK: usize = 1 << 30;

/// Where one chunk lies in a pack's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: ChunkId,
    #[serde(rename = "type")]
    pub tag: Tag,
    pub offset: u32,
    /// Length of the stored frame.
    pub length: u32,
    /// Length of the chunk's plaintext.
    pub raw_length: u32,
}

#[derive(Serialize, Deserialize)]
struct Toc {
    chunks: Vec<PackEntry>,
}

/// The object key of a pack.
pub fn key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

/// Encodes a chunk as one zstd frame: compressed at `level`, or raw blocks when compressing a
/// sample shows it would not pay (images, archives, encrypted data).
pub fn encode_chunk(data: &[u8], level: i32) -> Vec<u8> {
    ChunkEncoder::new(level).encode(data)
}

/// Reusable zstd contexts for [`encode_chunk`]: creating one per chunk showed in profiles.
pub struct ChunkEncoder {
    full: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
}

impl ChunkEncoder {
    pub fn new(level: i32) -> Self {
        ChunkEncoder {
            full: zstd::bulk::Compressor::new(level).expect("zstd context"),
            probe: zstd::bulk::Compressor::new(1).expect("zstd context"),
        }
    }

    pub fn encode(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(data, &mut out);
        out
    }

    /// [`ChunkEncoder::encode`] into a reusable buffer (cleared first).
    pub fn encode_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.clear();
        if self.worth_compressing(data) {
            // Room for the frame only if it is smaller than the chunk; otherwise zstd reports
            // "destination too small" and the chunk is stored raw, which is what we want anyway.
            out.reserve(data.len());
            if let Ok(n) = self.full.compress_to_buffer(data, out) {
                if n < data.len() {
                    return;
                }
            }
            out.clear();
        }
        raw_frame_into(data, out);
    }

    fn worth_compressing(&mut self, data: &[u8]) -> bool {
        const SAMPLE: usize = 64 * 1024;
        if data.len() <= 2 * SAMPLE {
            return true;
        }
        // Sample the middle: headers of media files often compress while their bodies do not.
        let mid = data.len() / 2 - SAMPLE / 2;
        let sample = &data[mid..mid + SAMPLE];
        let c = self
            .probe
            .compress(sample)
            .map(|c| c.len())
            .unwrap_or(SAMPLE);
        c < SAMPLE * 97 / 100
    }
}

/// A zstd frame holding `data` in raw blocks (RFC 8878 3.1.1): single segment, 8-byte content
/// size, no checksum (chunk ids already authenticate the content).
pub fn raw_frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    raw_frame_into(data, &mut out);
    out
}

fn raw_frame_into(data: &[u8], out: &mut Vec<u8>) {
    let blocks = data.len().div_ceil(MAX_BLOCK).max(1);
    out.reserve(13 + 3 * blocks + data.len());
    out.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    out.push(0b1110_0000); // FCS 8 bytes, single segment
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut parts = data.chunks(MAX_BLOCK).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0]); // one empty last raw block
    }
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none() as u32;
        let header = last | ((part.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(part);
    }
}

/// Decodes one stored frame into `raw_length` bytes.
pub fn decode_chunk(frame: &[u8], raw_length: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_chunk_into(frame, raw_length, &mut out)?;
    Ok(out)
}

/// Decodes one stored frame into `out` (cleared first), reusing a per-thread zstd context.
pub fn decode_chunk_into(
    frame: &[u8],
    raw_length: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    out.clear();
    out.reserve(raw_length);
    let n = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut()
            .expect("just set")
            .decompress_to_buffer(frame, out)
    })?;
    if n != raw_length {
        return Err(std::io::Error::other(format!(
            "decoded {n} bytes, expected {raw_length}"
        )));
    }
    Ok(())
}

/// Writes one pack, encrypting as chunks arrive so a pack never sits in memory twice.
pub struct PackWriter {
    w: age::stream::StreamWriter<Vec<u8>>,
    entries: Vec<PackEntry>,
    offset: u64,
}

/// A finished pack, ready to upload.
pub struct SealedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new(recipient: &dyn age::Recipient, capacity: usize) -> Self {
        let w = crypto::encryptor(recipient, Vec::with_capacity(capacity + capacity / 16))
            .expect("writing to memory cannot fail");
        PackWriter {
            w,
            entries: vec![],
            offset: 0,
        }
    }

    pub fn add(&mut self, id: ChunkId, tag: Tag, frame: &[u8], raw_length: usize) {
        self.w
            .write_all(frame)
            .expect("writing to memory cannot fail");
        self.entries.push(PackEntry {
            id,
            tag,
            offset: self.offset as u32,
            length: frame.len() as u32,
            raw_length: raw_length as u32,
        });
        self.offset += frame.len() as u64;
    }

    /// Plaintext bytes written so far.
    pub fn size(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self) -> SealedPack {
        let toc = serde_json::to_vec(&Toc {
            chunks: self.entries.clone(),
        })
        .expect("toc serializes");
        let mut tail = Vec::with_capacity(toc.len() + 8 + TRAILER_LEN);
        tail.extend_from_slice(&TOC_MAGIC.to_le_bytes());
        tail.extend_from_slice(&(toc.len() as u32).to_le_bytes());
        tail.extend_from_slice(&toc);
        let toc_frame_len = tail.len() as u32;
        tail.extend_from_slice(&TRAILER_MAGIC.to_le_bytes());
        tail.extend_from_slice(&4u32.to_le_bytes());
        tail.extend_from_slice(&toc_frame_len.to_le_bytes());
        self.w
            .write_all(&tail)
            .expect("writing to memory cannot fail");
        let bytes = self.w.finish().expect("writing to memory cannot fail");
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        SealedPack {
            id,
            bytes,
            entries: self.entries,
        }
    }
}

/// When `entries` make up less than half of a pack of `size` stored bytes, the plaintext ranges
/// to read instead of the whole pack (chunks less than 256 KiB apart read as one); `None` to
/// read it whole.
pub fn partial_ranges<'a>(
    size: u64,
    entries: impl Iterator<Item = &'a PackEntry>,
) -> Option<Vec<std::ops::Range<u64>>> {
    const GAP: u64 = 256 * 1024;
    let spans: Vec<std::ops::Range<u64>> = entries
        .map(|e| e.offset as u64..e.offset as u64 + e.length as u64)
        .collect();
    let needed: u64 = spans.iter().map(|r| r.end - r.start).sum();
    if needed.saturating_mul(2) >= size {
        return None;
    }
    Some(merge_ranges(spans, GAP))
}

/// `ranges` sorted, and merged where they overlap or lie at most `gap` bytes apart.
pub fn merge_ranges(mut ranges: Vec<std::ops::Range<u64>>, gap: u64) -> Vec<std::ops::Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<u64>> = vec![];
    for r in ranges {
        match merged.last_mut() {
            Some(m) if r.start <= m.end + gap => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Checks a stored pack against its name and decrypts it; `Err` names the pack.
pub fn open(id: &PackId, stored: &[u8], identity: &dyn age::Identity) -> Result<Vec<u8>> {
    let name = key(id);
    if blake3::hash(stored).as_bytes() != &id.0 {
        return Err(not_its_id(&name));
    }
    crypto::decrypt(identity, stored, &name)
}

/// A pack whose stored bytes do not hash to its name.
pub fn not_its_id(name: &str) -> Error {
    Error::corrupt(name, "content does not match its id (bit rot or tampering)")
}

/// Reads the table of contents at the end of a pack's plaintext.
pub fn read_toc(plain: &[u8], name: &str) -> Result<Vec<PackEntry>> {
    let bad = |m: &str| Error::corrupt(name, format!("bad table of contents: {m}"));
    if plain.len() < TRAILER_LEN {
        return Err(bad("pack too short"));
    }
    let t = &plain[plain.len() - TRAILER_LEN..];
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    if u32_at(t, 0) != TRAILER_MAGIC || u32_at(t, 4) != 4 {
        return Err(bad("no trailer"));
    }
    let toc_len = u32_at(t, 8) as usize;
    let end = plain.len() - TRAILER_LEN;
    if toc_len < 8 || toc_len > end {
        return Err(bad("trailer length out of range"));
    }
    let frame = &plain[end - toc_len..end];
    if u32_at(frame, 0) != TOC_MAGIC || u32_at(frame, 4) as usize != toc_len - 8 {
        return Err(bad("no TOC frame"));
    }
    let toc: Toc = serde_json::from_slice(&frame[8..]).map_err(|e| bad(&e.to_string()))?;
    for e in &toc.chunks {
        if e.offset as usize + e.length as usize > end - toc_len {
            return Err(bad("entry past the chunk area"));
        }
    }
    Ok(toc.chunks)
}

/// Decodes and verifies one chunk out of a pack's plaintext.
pub fn extract(
    plain: &[u8],
    entry: &PackEntry,
    secrets: &crypto::Secrets,
    pack: &PackId,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    extract_into(plain, entry, secrets, pack, &mut out)?;
    Ok(out)
}

/// [`extract`] into a reusable buffer. `out` holds the chunk only if this returns `Ok`.
pub fn extract_into(
    plain: &[u8],
    entry: &PackEntry,
    secrets: &crypto::Secrets,
    pack: &PackId,
    out: &mut Vec<u8>,
) -> Result<()> {
    let name = key(pack);
    let limit = if entry.tag == Tag::Tree {
        MAX_TREE_CHUNK
    } else {
        MAX_DATA_CHUNK
    };
    if entry.raw_length as usize > limit {
        return Err(Error::corrupt(
            &name,
            format!(
                "chunk {} claims {} bytes, more than any chunk coffer writes",
                entry.id.short(),
                entry.raw_length
            ),
        ));
    }
    let start = entry.offset as usize;
    let end = start + entry.length as usize;
    let frame = plain.get(start..end).ok_or_else(|| {
        Error::corrupt(
            &name,
            format!("chunk {} lies past the end of the pack", entry.id.short()),
        )
    })?;
    decode_chunk_into(frame, entry.raw_length as usize, out).map_err(|e| {
        Error::corrupt(
            &name,
            format!("chunk {} does not decode: {e}", entry.id.short()),
        )
    })?;
    if secrets.id(entry.tag, out) != entry.id.0 {
        out.clear();
        return Err(Error::corrupt(
            &name,
            format!("chunk {} does not match its id", entry.id.short()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secrets;

    /// A table of contents may claim any raw length; the reader sizes its buffer by it, so a
    /// claim past what coffer writes is refused before anything is allocated.
    #[test]
    fn a_chunk_claiming_more_than_coffer_writes_is_refused() {
        let secrets = Secrets::generate();
        let data = b"hello".to_vec();
        let frame = encode_chunk(&data, 3);
        let mut e = PackEntry {
            id: ChunkId(secrets.id(Tag::Data, &data)),
            tag: Tag::Data,
            offset: 0,
            length: frame.len() as u32,
            raw_length: u32::MAX,
        };
        let err = extract(&frame, &e, &secrets, &PackId([0; 32])).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
        e.raw_length = data.len() as u32;
        assert_eq!(
            extract(&frame, &e, &secrets, &PackId([0; 32])).unwrap(),
            data
        );
    }

    #[test]
    fn raw_frames_decode_with_zstd() {
        for n in [
            0usize,
            1,
            1000,
            MAX_BLOCK,
            MAX_BLOCK + 1,
            3 * MAX_BLOCK + 17,
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 3) as u8).collect();
            let f = raw_frame(&data);
            assert_eq!(decode_chunk(&f, n).unwrap(), data, "len {n}");
        }
    }

    #[test]
    fn incompressible_chunks_are_stored_raw() {
        let mut x = 1u64;
        let noise: Vec<u8> = (0..400_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        assert_eq!(encode_chunk(&noise, 3), raw_frame(&noise));
        let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(10_000);
        assert!(encode_chunk(&text, 3).len() < text.len() / 10);
    }

    #[test]
    fn pack_round_trip_and_toc() {
        let s = Secrets::generate();
        let mut w = PackWriter::new(&s.data_recipient, 1 << 20);
        let chunks: Vec<Vec<u8>> = vec![b"hello".repeat(1000), vec![1, 2, 3], b"tree".to_vec()];
        for (i, c) in chunks.iter().enumerate() {
            let tag = if i == 2 { Tag::Tree } else { Tag::Data };
            w.add(ChunkId(s.id(tag, c)), tag, &encode_chunk(c, 3), c.len());
        }
        let sealed = w.finish();
        let plain = open(&sealed.id, &sealed.bytes, s.data_identity.as_ref().unwrap()).unwrap();
        let toc = read_toc(&plain, "p").unwrap();
        assert_eq!(toc, sealed.entries);
        for (e, c) in toc.iter().zip(&chunks) {
            assert_eq!(&extract(&plain, e, &s, &sealed.id).unwrap(), c);
        }
        let mut bad = sealed.bytes.clone();
        bad[100] ^= 1;
        assert!(open(&sealed.id, &bad, s.data_identity.as_ref().unwrap()).is_err());
    }
}
