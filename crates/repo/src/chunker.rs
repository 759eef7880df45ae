//! Content-defined chunking: FastCDC (2020) over a stream, with the repository's gear seed;
//! and page-aligned chunking for files made of fixed-size pages (SQLite databases).
//!
//! A database changes a few pages in place from one day to the next; content-defined chunks of
//! a megabyte around each changed page would all be new. Cut at its pages, only the changed
//! pages are ([`page_size_of`] recognises a SQLite file by its header).
//!
//! Boundaries depend only on content, so inserting bytes into the middle of a file changes the
//! chunks around the edit and nothing after it. fastcdc's own `StreamCDC` moves the rest of its
//! buffer down after every chunk (about three bytes copied per byte chunked with our sizes); this
//! reader keeps a buffer four times the largest chunk and compacts it only when fewer than
//! `max` bytes remain, so copies stay under a third of a byte per byte.

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, fixed for a repository at `init` (stored in its config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds FastCDC accepts.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::*;
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let in_range = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 + avg % 2 + max % 2 == 0;
        if !in_range {
            return Err(format!(
                "chunk sizes min {min} / avg {avg} / max {max} are out of range \
                 (min {MINIMUM_MIN}..={MINIMUM_MAX}, avg {AVERAGE_MIN}..={AVERAGE_MAX}, max {MAXIMUM_MIN}..={MAXIMUM_MAX}, even, min <= avg <= max)"
            ));
        }
        Ok(())
    }
}

/// The gear tables and masks for one repository; cheap to share, built once per backup.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Vec<u64>,
    gear_ls: Vec<u64>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Chunker {
            params,
            gear: gear.into_owned(),
            gear_ls: gear_ls.into_owned(),
            mask_s,
            mask_l,
        }
    }

    /// A buffer for [`Chunker::stream`]; allocate once and reuse it for every file (zeroing a
    /// fresh buffer per small file once cost more than all the hashing). Twice the largest
    /// chunk: a chunk always fits after the one being cut, and a backup's peak memory stays small.
    pub fn buffer(&self) -> Vec<u8> {
        vec![0; self.params.max_size as usize * 2]
    }

    /// Chunks everything `source` yields, using `buf` (from [`Chunker::buffer`]).
    pub fn stream<'a, R: Read>(&'a self, source: R, buf: &'a mut [u8]) -> ChunkStream<'a, R> {
        assert!(
            buf.len() >= self.params.max_size as usize * 2,
            "chunk buffer too small"
        );
        ChunkStream {
            chunker: self,
            source,
            buf,
            start: 0,
            end: 0,
            eof: false,
            fixed: None,
            read_ns: 0,
        }
    }

    /// Chunks of exactly `size` bytes (the last one shorter), for paged files; `size` at most
    /// the maximum chunk size.
    pub fn stream_fixed<'a, R: Read>(
        &'a self,
        source: R,
        buf: &'a mut [u8],
        size: usize,
    ) -> ChunkStream<'a, R> {
        let mut s = self.stream(source, buf);
        s.fixed = Some(size.clamp(1, self.params.max_size as usize));
        s
    }

    fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        )
        .1
    }
}

pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    source: R,
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    eof: bool,
    fixed: Option<usize>,
    /// Nanoseconds spent in the source's `read` since [`ChunkStream::take_read_ns`].
    read_ns: u64,
}

impl<R: Read> ChunkStream<'_, R> {
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunker.params.max_size as usize;
        if self.eof || self.end - self.start >= max {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            let t = std::time::Instant::now();
            let r = self.source.read(&mut self.buf[self.end..]);
            self.read_ns += t.elapsed().as_nanos() as u64;
            match r {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Time spent reading the source since the last call (for where-the-time-goes reports).
    pub fn take_read_ns(&mut self) -> u64 {
        std::mem::take(&mut self.read_ns)
    }

    /// The next chunk, or `None` at the end of the stream. The slice borrows the stream's
    /// buffer: copy it only if it must outlive the next call (most chunks are deduplicated and
    /// never copied).
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        if self.start == self.end {
            return Ok(None);
        }
        let n = match self.fixed {
            Some(size) => size.min(self.end - self.start),
            None => self.chunker.cut(&self.buf[self.start..self.end]).max(1),
        };
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Ok(Some(chunk))
    }
}

/// The chunk size for a file that starts with `head` (its first 100 bytes or more), when it is
/// made of fixed-size pages: a SQLite database (`SQLite format 3\0`, the page size at offset
/// 16, big-endian; 1 means 65536). Pages smaller than 4 KiB are taken four at a time or more, so
/// chunks stay at least 4 KiB.
pub fn page_size_of(head: &[u8]) -> Option<usize> {
    if head.len() < 100 || !head.starts_with(b"SQLite format 3\0") {
        return None;
    }
    let page = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536,
        p if p >= 512 && p.is_power_of_two() => p as usize,
        _ => return None,
    };
    Some(page.max(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = c.buffer();
        let mut s = c.stream(data, &mut buf);
        let mut out = vec![];
        while let Some(ch) = s.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let p = ChunkerParams::default();
        let c = Chunker::new(p, 42);
        let data = pseudo_random(20 << 20, 1);
        let out = chunks(&c, &data);
        assert_eq!(out.concat(), data);
        for ch in &out[..out.len() - 1] {
            assert!(ch.len() >= p.min_size as usize && ch.len() <= p.max_size as usize);
        }
        assert!(chunks(&c, &[]).is_empty());
    }

    #[test]
    fn insertion_only_changes_nearby_chunks() {
        let c = Chunker::new(ChunkerParams::default(), 7);
        let data = pseudo_random(30 << 20, 9);
        let mut edited = data[..15 << 20].to_vec();
        edited.extend_from_slice(b"inserted row");
        edited.extend_from_slice(&data[15 << 20..]);
        let a: std::collections::HashSet<_> = chunks(&c, &data).into_iter().collect();
        let b = chunks(&c, &edited);
        let new = b.iter().filter(|ch| !a.contains(*ch)).count();
        assert!(new <= 2, "{new} chunks changed for one insertion");
    }

    #[test]
    fn paged_files_are_cut_at_their_pages() {
        let c = Chunker::new(ChunkerParams::default(), 7);
        let data = pseudo_random(1_000_000, 5);
        let mut buf = c.buffer();
        let mut s = c.stream_fixed(&data[..], &mut buf, 4096);
        let mut out = vec![];
        while let Some(ch) = s.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        assert_eq!(out.concat(), data);
        assert!(out[..out.len() - 1].iter().all(|c| c.len() == 4096));
        assert_eq!(out.last().unwrap().len(), 1_000_000 % 4096);
        let mut head = b"SQLite format 3\0".to_vec();
        head.extend_from_slice(&[0x10, 0x00]);
        head.resize(100, 0);
        assert_eq!(page_size_of(&head), Some(4096));
        head[16..18].copy_from_slice(&[0, 1]);
        assert_eq!(page_size_of(&head), Some(65536));
        head[16..18].copy_from_slice(&[0x04, 0x00]);
        assert_eq!(
            page_size_of(&head),
            Some(4096),
            "1 KiB pages, four at a time"
        );
        head[16..18].copy_from_slice(&[0x03, 0x00]);
        assert_eq!(page_size_of(&head), None);
        assert_eq!(page_size_of(b"SQLite format 3"), None);
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(8 << 20, 3);
        let a = chunks(&Chunker::new(ChunkerParams::default(), 1), &data);
        let b = chunks(&Chunker::new(ChunkerParams::default(), 2), &data);
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}
