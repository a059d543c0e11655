//! The archive codec: one tar stream cut into zstd frames, where files that are already
//! compressed travel in *stored* frames and everything else in compressed ones.
//!
//! A zstd stream may be any sequence of frames, and every zstd decoder (`zstd -d`,
//! `tar --zstd`, libarchive, the `zstd` crate) decodes them one after the other as a single
//! stream, so the result is an ordinary `.tar.zst`. What a single frame cannot do is skip
//! compression for one file in the middle of a tar stream; ending the frame before such a file
//! and writing its bytes in a frame made only of raw blocks can. A stored frame is written
//! here by hand — magic, a frame header with a 128 KiB window, then raw blocks of at most
//! 128 KiB, each behind a 3-byte header — so those bytes cost a `memcpy`, not a compressor
//! pass. Compressed frames use zstd level [`LEVEL`] with a content checksum, on worker
//! threads (see [`workers`]).
//!
//! Reading detects the format by its magic bytes: zstd (`28 b5 2f fd`) or gzip (`1f 8b`),
//! which is what archives made before the switch to zstd are, in caches on disk and in
//! servers' blob stores.

use std::io::{self, BufRead, BufReader, Read, Write};

use zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation, OutBuffer};

/// The zstd frame magic number, as it appears in the stream.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The gzip magic number (archives written before zstd).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The zstd level of compressed frames: `zstd -1`, the fast end where a CI archive belongs
/// (the archive is written once and read once or twice, usually on the same machine).
pub const LEVEL: i32 = 1;
/// Largest raw block (zstd's `Block_Maximum_Size`).
const BLOCK: usize = 128 * 1024;
/// Window descriptor for a 128 KiB window: exponent 7 (2^(10+7)), mantissa 0.
const STORED_WINDOW: u8 = 7 << 3;
/// Largest window a reader accepts from an archive (2^27 = 128 MiB, zstd's own default
/// limit): bounds the memory an untrusted archive can make us allocate.
const MAX_WINDOW_LOG: u32 = 27;

/// The compression format of an archive, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zstd,
    Gzip,
}

impl Format {
    /// Detects the format from the first bytes of an archive.
    pub fn detect(prefix: &[u8]) -> Option<Format> {
        if prefix.starts_with(&ZSTD_MAGIC) {
            Some(Format::Zstd)
        } else if prefix.starts_with(&GZIP_MAGIC) {
            Some(Format::Gzip)
        } else {
            None
        }
    }

    /// The usual file name extension of a tar in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Zstd => "tar.zst",
            Format::Gzip => "tar.gz",
        }
    }

    /// The media type of a tar in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Zstd => "application/zstd",
            Format::Gzip => "application/gzip",
        }
    }
}

/// Wraps an archive stream in the decoder its magic bytes call for.
pub fn decoder<'a>(archive: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(BLOCK, archive);
    let prefix = loop {
        match input.fill_buf() {
            Ok(b) => break b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    // A short first read could split the magic: bring the prefix to 4 bytes when it can be.
    let prefix = if prefix.len() < ZSTD_MAGIC.len() && !prefix.is_empty() {
        let mut head = prefix.to_vec();
        let n = head.len();
        input.consume(n);
        while head.len() < ZSTD_MAGIC.len() {
            let mut b = [0u8; 1];
            match input.read(&mut b) {
                Ok(0) => break,
                Ok(_) => head.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let chained = BufReader::with_capacity(BLOCK, io::Cursor::new(head.clone()).chain(input));
        return with_format(Format::detect(&head), chained);
    } else {
        Format::detect(prefix)
    };
    with_format(prefix, input)
}

fn with_format<'a, R: BufRead + 'a>(format: Option<Format>, input: R) -> io::Result<Box<dyn Read + 'a>> {
    match format {
        Some(Format::Zstd) => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)?;
            d.window_log_max(MAX_WINDOW_LOG)?;
            Ok(Box::new(d))
        }
        Some(Format::Gzip) => Ok(Box::new(flate2::bufread::GzDecoder::new(input))),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "not an archive: expected zstd or gzip magic bytes")),
    }
}

/// Compressor threads for one archive: the machine's parallelism, at most 4, at least one
/// worker (zstd's output does not depend on how many workers there are once there is one,
/// so archives stay reproducible from one machine to another).
pub fn workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) as u32
}

/// Which kind of frame the bytes being written belong in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Compressed,
    Stored,
}

/// A writer that compresses what it is given, or stores it as raw blocks while
/// [`FrameWriter::set_stored`] is on, switching frames lazily at the next byte written.
pub struct FrameWriter<W: Write> {
    out: W,
    enc: Encoder<'static>,
    /// The encoder's output, passed on to `out` after every call.
    buf: Vec<u8>,
    /// Stored mode: the block being filled.
    block: Vec<u8>,
    open: Open,
    want_stored: bool,
    /// Bytes that went into stored frames.
    stored_bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W) -> io::Result<FrameWriter<W>> {
        let mut enc = Encoder::new(LEVEL)?;
        enc.set_parameter(CParameter::ChecksumFlag(true))?;
        enc.set_parameter(CParameter::NbWorkers(workers()))?;
        Ok(FrameWriter {
            out,
            enc,
            buf: Vec::with_capacity(zstd::zstd_safe::CCtx::out_size()),
            block: Vec::with_capacity(BLOCK),
            open: Open::None,
            want_stored: false,
            stored_bytes: 0,
        })
    }

    /// Whether the bytes written from now on are stored rather than compressed.
    pub fn set_stored(&mut self, stored: bool) {
        self.want_stored = stored;
    }

    /// Bytes written in stored frames so far.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Ends the open frame and returns the inner writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.close()?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn close(&mut self) -> io::Result<()> {
        match self.open {
            Open::None => {}
            Open::Compressed => loop {
                self.buf.clear();
                let mut out = OutBuffer::around(&mut self.buf);
                let left = self.enc.finish(&mut out, false)?;
                self.out.write_all(&self.buf)?;
                if left == 0 {
                    self.enc.reinit()?;
                    break;
                }
            },
            Open::Stored => self.flush_block(true)?,
        }
        self.open = Open::None;
        Ok(())
    }

    fn flush_block(&mut self, last: bool) -> io::Result<()> {
        // Block header, little endian: bit 0 last block, bits 1-2 type (0: raw), then size.
        let header = u32::from(last) | ((self.block.len() as u32) << 3);
        self.out.write_all(&header.to_le_bytes()[..3])?;
        self.out.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    fn compress(&mut self, data: &[u8]) -> io::Result<()> {
        let mut input = InBuffer::around(data);
        while input.pos < data.len() {
            self.buf.clear();
            let mut out = OutBuffer::around(&mut self.buf);
            self.enc.run(&mut input, &mut out)?;
            self.out.write_all(&self.buf)?;
        }
        Ok(())
    }

    fn store(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.stored_bytes += data.len() as u64;
        while !data.is_empty() {
            if self.block.len() == BLOCK {
                self.flush_block(false)?;
            }
            let take = (BLOCK - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let want = if self.want_stored { Open::Stored } else { Open::Compressed };
        if self.open != want {
            self.close()?;
            if want == Open::Stored {
                // Frame header: descriptor 0 (no content size, not single-segment, no
                // checksum, no dictionary), then the window descriptor.
                self.out.write_all(&ZSTD_MAGIC)?;
                self.out.write_all(&[0, STORED_WINDOW])?;
            }
            self.open = want;
        }
        match want {
            Open::Stored => self.store(data)?,
            _ => self.compress(data)?,
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(archive: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decoder(archive).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn mixed_frames_decode_as_one_stream() {
        let text = b"hello hello hello hello hello hello ".repeat(2000);
        let noise: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.write_all(&text).unwrap();
        w.set_stored(true);
        w.write_all(&noise).unwrap();
        w.write_all(b"").unwrap();
        w.set_stored(false);
        w.write_all(&text).unwrap();
        w.set_stored(true);
        w.write_all(&noise[..BLOCK]).unwrap(); // exactly one full block, then an empty last one
        let stored = w.stored_bytes();
        let archive = w.finish().unwrap();
        assert_eq!(stored, (noise.len() + BLOCK) as u64);
        let mut want = text.clone();
        want.extend_from_slice(&noise);
        want.extend_from_slice(&text);
        want.extend_from_slice(&noise[..BLOCK]);
        assert_eq!(decode(&archive), want);
        // the stored bytes are in the archive as they are (within one 128 KiB block)
        assert!(archive.windows(4096).any(|w| w == &noise[..4096]));
    }

    #[test]
    fn output_does_not_depend_on_the_worker_count() {
        let text: Vec<u8> = (0..3_000_000u32).flat_map(|i| format!("line {} of the log\n", i % 977).into_bytes()).collect();
        let run = |workers: u32| {
            let mut w = FrameWriter::new(Vec::new()).unwrap();
            w.enc.set_parameter(CParameter::NbWorkers(workers)).unwrap();
            w.write_all(&text).unwrap();
            w.finish().unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(decode(&one), text);
    }

    #[test]
    fn gzip_is_detected_and_garbage_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"old archive").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(Format::detect(&gz), Some(Format::Gzip));
        assert_eq!(decode(&gz), b"old archive");
        let err = decoder(&b"definitely not an archive"[..]).err().unwrap();
        assert!(err.to_string().contains("expected zstd or gzip"), "{err}");
        // a reader handing out one byte at a time still gets its magic detected
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else { return Ok(0) };
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        decoder(Trickle(&gz)).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"old archive");
    }
}
