//! Compression sniffing, decompressing readers and compressing writers (gzip via flate2 with the
//! zlib-rs backend, zstd via the zstd crate).

use std::io::{self, BufReader, Read, Write};

use crate::LayerError;

/// Buffer between the compressed source and the decoder: big reads, few syscalls.
const INPUT_BUFFER: usize = 256 * 1024;

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`application/vnd.oci.image.layer.v1.tar+gzip`).
    Gzip,
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
}

/// Sniff the magic bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, anything else is [`Compression::None`].
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wrap a reader so it yields the uncompressed tar stream, sniffing the compression from the
/// first bytes. Decoder errors surface as `io::Error`s from `read` (the apply turns them into
/// [`LayerError::Corrupt`]).
pub fn decompressed<R: Read + Send + 'static>(
    mut r: R,
) -> Result<Box<dyn Read + Send>, LayerError> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(LayerError::Corrupt {
                    context: "reading the first bytes of the layer".into(),
                    source: e,
                })
            }
        }
    }
    let whole = io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok(match detect_compression(&head[..n]) {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(INPUT_BUFFER, whole),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(INPUT_BUFFER, whole))
                .map_err(|e| LayerError::Corrupt {
                    context: "starting the zstd decoder".into(),
                    source: e,
                })?,
        ),
    })
}

/// A writer that compresses what it is given. Call [`Compressor::finish`] at the end: it writes
/// the trailer (gzip CRC, zstd frame end) and returns the inner writer. Dropping it without
/// `finish` may leave a truncated stream.
pub enum Compressor<W: Write> {
    /// Pass-through.
    None(W),
    /// gzip at the default level (6).
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd at the default level (3).
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// Compress a stream while writing: gzip at the default level, zstd at the default level, or
/// nothing. See [`Compressor`]; remember to call `finish`.
pub fn compressor<W: Write>(w: W, c: Compression) -> Result<Compressor<W>, LayerError> {
    Ok(match c {
        Compression::None => Compressor::None(w),
        Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
            w,
            flate2::Compression::default(),
        )),
        Compression::Zstd => Compressor::Zstd(
            zstd::stream::write::Encoder::new(w, zstd::DEFAULT_COMPRESSION_LEVEL).map_err(|e| {
                LayerError::Io {
                    path: "<zstd encoder>".into(),
                    op: "start zstd encoder",
                    source: e,
                }
            })?,
        ),
    })
}

impl<W: Write> Compressor<W> {
    /// Flush the compressed trailer and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.write_all(buf),
            Compressor::Gzip(e) => e.write_all(buf),
            Compressor::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
        }
    }
}
