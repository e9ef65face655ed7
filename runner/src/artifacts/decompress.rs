//! Streaming decompression of gzip, xz and zstd, chosen by magic bytes (never by file name), with
//! the size limit applied to the output so a decompression bomb stops at the limit.

use std::io::{self, Read, Write};

use super::verify::{is_limit_exceeded, HashingWriter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Xz,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Codec> {
        [Codec::Gzip, Codec::Xz, Codec::Zstd]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// Bytes needed by [`detect`].
pub const MAGIC_LEN: usize = 6;

pub fn detect(header: &[u8]) -> Option<Codec> {
    if header.starts_with(&[0x1f, 0x8b]) {
        Some(Codec::Gzip)
    } else if header.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Codec::Xz)
    } else if header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Codec::Zstd)
    } else {
        None
    }
}

/// Read up to [`MAGIC_LEN`] bytes from the start of `reader`.
pub fn read_header(mut reader: impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(MAGIC_LEN);
    reader
        .by_ref()
        .take(MAGIC_LEN as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("decompressed size exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("corrupt {codec} data: {source}")]
    Corrupt {
        codec: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("writing decompressed data: {0}")]
    Write(#[source] io::Error),
}

/// A reader of `input` decompressed with `codec` (multi-member gzip and xz, `zstd --long`).
pub fn reader<'a>(
    codec: Codec,
    input: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, DecompressError> {
    let input = io::BufReader::with_capacity(1 << 16, input);
    Ok(match codec {
        // Multi-member/multi-stream decoders: concatenated archives are valid and common.
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Codec::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
        Codec::Zstd => {
            let corrupt = |e| DecompressError::Corrupt {
                codec: codec.name(),
                source: e,
            };
            let mut d = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
            // Accept archives made with `zstd --long` (windows up to 2 GiB).
            d.window_log_max(31).map_err(corrupt)?;
            Box::new(d)
        }
    })
}

/// Decompress all of `input` into `output`; returns the decompressed size and sha256.
pub fn decompress(
    codec: Codec,
    input: impl Read,
    output: impl Write,
    limit: u64,
) -> Result<(u64, String), DecompressError> {
    let mut decoder = reader(codec, input)?;
    let mut out = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, output), limit);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DecompressError::Corrupt {
                    codec: codec.name(),
                    source: e,
                })
            }
        };
        out.write_all(&buf[..n]).map_err(|e| {
            if is_limit_exceeded(&e) {
                DecompressError::TooLarge(limit)
            } else {
                DecompressError::Write(e)
            }
        })?;
    }
    let (size, digest, _) = out.finish().map_err(DecompressError::Write)?;
    Ok((size, digest))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::artifacts::verify::hash_reader;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    pub(crate) fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from(i * 7 % 251).expect("below 251"))
            .collect()
    }

    #[test]
    fn detects_by_magic_not_name() {
        let data = sample(1000);
        assert_eq!(detect(&gzip(&data)), Some(Codec::Gzip));
        assert_eq!(detect(&xz(&data)), Some(Codec::Xz));
        assert_eq!(detect(&zstd(&data)), Some(Codec::Zstd));
        assert_eq!(detect(&data), None);
        assert_eq!(detect(b""), None);
        assert_eq!(detect(&[0x1f]), None);
        // bzImage starts with an MZ/boot sector, ELF with 0x7f ELF: never mistaken.
        assert_eq!(detect(b"MZ\x00\x00\x00\x00"), None);
        assert_eq!(detect(b"\x7fELF\x02\x01"), None);
    }

    #[test]
    fn round_trips_each_codec_with_digest_of_the_output() {
        let data = sample(300_000);
        let want = hash_reader(&data[..], u64::MAX).unwrap();
        for (codec, packed) in [
            (Codec::Gzip, gzip(&data)),
            (Codec::Xz, xz(&data)),
            (Codec::Zstd, zstd(&data)),
        ] {
            let mut out = Vec::new();
            let got = decompress(codec, &packed[..], &mut out, u64::MAX).unwrap();
            assert_eq!(got, want, "{codec:?}");
            assert_eq!(out, data, "{codec:?}");
        }
    }

    #[test]
    fn concatenated_gzip_members_are_all_decompressed() {
        let mut packed = gzip(b"first ");
        packed.extend(gzip(b"second"));
        let mut out = Vec::new();
        decompress(Codec::Gzip, &packed[..], &mut out, 100).unwrap();
        assert_eq!(out, b"first second");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 16 MiB of zeros packs into a few KiB; with a 1 MiB limit at most ~1 MiB is written.
        let zeros = vec![0u8; 16 << 20];
        for (codec, packed) in [
            (Codec::Gzip, gzip(&zeros)),
            (Codec::Xz, xz(&zeros)),
            (Codec::Zstd, zstd(&zeros)),
        ] {
            assert!(
                packed.len() < 1 << 20,
                "{codec:?} packed to {}",
                packed.len()
            );
            let mut out = Vec::new();
            let err = decompress(codec, &packed[..], &mut out, 1 << 20).unwrap_err();
            assert!(
                matches!(err, DecompressError::TooLarge(_)),
                "{codec:?}: {err}"
            );
            assert!(out.len() <= 1 << 20, "{codec:?} wrote {}", out.len());
        }
    }

    #[test]
    fn output_exactly_at_the_limit_is_accepted() {
        let data = sample(4096);
        let mut out = Vec::new();
        assert_eq!(
            decompress(Codec::Zstd, &zstd(&data)[..], &mut out, 4096)
                .unwrap()
                .0,
            4096
        );
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error_not_a_short_file() {
        let data = sample(100_000);
        for (codec, packed) in [
            (Codec::Gzip, gzip(&data)),
            (Codec::Xz, xz(&data)),
            (Codec::Zstd, zstd(&data)),
        ] {
            let cut = &packed[..packed.len() / 2];
            let err = decompress(codec, cut, io::sink(), u64::MAX).unwrap_err();
            assert!(
                matches!(err, DecompressError::Corrupt { .. }),
                "{codec:?}: {err}"
            );
        }
    }
}
