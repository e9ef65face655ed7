//! A bzImage's compressed kernel, decoded on the host. The codec is told by its magic, as the
//! kernel's `scripts/extract-vmlinux` tells it, and each is decoded by a crate made for it. The
//! kernel's build appends the uncompressed size after most streams (`size_append`), so every
//! decoder stops at the end of its first stream and ignores what follows.

use std::io::{self, Read, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadCodec {
    Gzip,
    Xz,
    Zstd,
    Lzma,
    Lz4,
    Bzip2,
    Lzo,
}

impl PayloadCodec {
    pub const ALL: [PayloadCodec; 7] = [
        PayloadCodec::Gzip,
        PayloadCodec::Xz,
        PayloadCodec::Zstd,
        PayloadCodec::Lzma,
        PayloadCodec::Lz4,
        PayloadCodec::Bzip2,
        PayloadCodec::Lzo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayloadCodec::Gzip => "gzip",
            PayloadCodec::Xz => "xz",
            PayloadCodec::Zstd => "zstd",
            PayloadCodec::Lzma => "lzma",
            PayloadCodec::Lz4 => "lz4",
            PayloadCodec::Bzip2 => "bzip2",
            PayloadCodec::Lzo => "lzo",
        }
    }

    /// The magic `extract-vmlinux` looks for.
    fn magic(self) -> &'static [u8] {
        match self {
            PayloadCodec::Gzip => &[0x1f, 0x8b, 0x08],
            PayloadCodec::Xz => &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            PayloadCodec::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            PayloadCodec::Lzma => &[0x5d, 0x00, 0x00, 0x00],
            PayloadCodec::Lz4 => &LZ4_LEGACY_MAGIC,
            PayloadCodec::Bzip2 => b"BZh",
            PayloadCodec::Lzo => &LZOP_MAGIC,
        }
    }
}

/// The codec of a payload, from its first bytes.
pub fn detect(payload: &[u8]) -> Option<PayloadCodec> {
    PayloadCodec::ALL
        .into_iter()
        .find(|c| payload.starts_with(c.magic()))
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the payload's first bytes match no kernel compressor")]
    UnknownCodec,
    #[error("corrupt {codec} payload: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("writing the extracted kernel: {0}")]
    Write(#[source] io::Error),
}

/// Decodes `payload` into `out`; returns its codec.
pub fn decode(payload: &[u8], out: &mut impl Write) -> Result<PayloadCodec, DecodeError> {
    let codec = detect(payload).ok_or(DecodeError::UnknownCodec)?;
    let corrupt = |reason: String| DecodeError::Corrupt {
        codec: codec.as_str(),
        reason,
    };
    match codec {
        PayloadCodec::Gzip => copy(flate2::read::GzDecoder::new(payload), out, codec)?,
        PayloadCodec::Xz => {
            let stream = xz2::stream::Stream::new_stream_decoder(u64::MAX, 0)
                .map_err(|e| corrupt(e.to_string()))?;
            liblzma(stream, payload, out, codec)?
        }
        PayloadCodec::Lzma => {
            let stream = xz2::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| corrupt(e.to_string()))?;
            liblzma(stream, payload, out, codec)?
        }
        PayloadCodec::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| corrupt(e.to_string()))?
                .single_frame();
            // `zstd -22 --ultra` (the kernel's choice) uses windows beyond the default limit.
            d.window_log_max(31).map_err(|e| corrupt(e.to_string()))?;
            copy(d, out, codec)?
        }
        PayloadCodec::Bzip2 => copy(bzip2::read::BzDecoder::new(payload), out, codec)?,
        PayloadCodec::Lz4 => lz4_legacy(payload, out)?,
        PayloadCodec::Lzo => lzop(payload, out)?,
    }
    Ok(codec)
}

fn copy(mut r: impl Read, out: &mut impl Write, codec: PayloadCodec) -> Result<(), DecodeError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    codec: codec.as_str(),
                    reason: e.to_string(),
                })
            }
        };
        total += n as u64;
        out.write_all(&buf[..n]).map_err(DecodeError::Write)?;
    }
    if total == 0 {
        return Err(DecodeError::Corrupt {
            codec: codec.as_str(),
            reason: "no data".into(),
        });
    }
    Ok(())
}

/// One xz or lzma stream, up to its end: xz2's readers refuse the bytes after it.
fn liblzma(
    mut stream: xz2::stream::Stream,
    payload: &[u8],
    out: &mut impl Write,
    codec: PayloadCodec,
) -> Result<(), DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt {
        codec: codec.as_str(),
        reason,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (in_before, out_before) = (stream.total_in(), stream.total_out());
        let at = usize::try_from(in_before).map_err(|e| corrupt(e.to_string()))?;
        let input = payload.get(at..).unwrap_or_default();
        let action = if input.is_empty() {
            xz2::stream::Action::Finish
        } else {
            xz2::stream::Action::Run
        };
        let status = stream
            .process(input, &mut buf, action)
            .map_err(|e| corrupt(e.to_string()))?;
        let produced =
            usize::try_from(stream.total_out() - out_before).map_err(|e| corrupt(e.to_string()))?;
        out.write_all(&buf[..produced])
            .map_err(DecodeError::Write)?;
        if status == xz2::stream::Status::StreamEnd {
            return Ok(());
        }
        if produced == 0 && stream.total_in() == in_before {
            return Err(corrupt("truncated stream".into()));
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Every block of the legacy format decodes to at most this (`lz4 -l`).
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// `lz4 -l` output: the magic, then blocks of `[u32 LE compressed size][LZ4 block]`; another
/// magic starts a concatenated stream. What is too short for a block ends it: the size word
/// the kernel's build appends is exactly 4 bytes.
fn lz4_legacy(payload: &[u8], out: &mut impl Write) -> Result<(), DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt {
        codec: "lz4",
        reason,
    };
    let mut at = LZ4_LEGACY_MAGIC.len();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let mut blocks = 0usize;
    while let Some(n) = le32(payload, at) {
        if n.to_le_bytes() == LZ4_LEGACY_MAGIC {
            at += 4;
            continue;
        }
        let n = usize::try_from(n).map_err(|e| corrupt(e.to_string()))?;
        let Some(data) = payload.get(at + 4..at + 4 + n) else {
            // The appended size word (or nothing) after the last block.
            if blocks > 0 && payload.len() - at == 4 {
                break;
            }
            return Err(corrupt(format!("block at {at} runs past the end")));
        };
        let len = lz4_flex::block::decompress_into(data, &mut block)
            .map_err(|e| corrupt(e.to_string()))?;
        out.write_all(&block[..len]).map_err(DecodeError::Write)?;
        blocks += 1;
        at += 4 + n;
    }
    if blocks == 0 {
        return Err(corrupt("no blocks".into()));
    }
    Ok(())
}

const LZOP_MAGIC: [u8; 9] = [0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
const F_ADLER32_D: u32 = 0x1;
const F_ADLER32_C: u32 = 0x2;
const F_H_EXTRA_FIELD: u32 = 0x40;
const F_H_FILTER: u32 = 0x800;
const F_CRC32_D: u32 = 0x100;
const F_CRC32_C: u32 = 0x200;
/// The kernel's own unlzo refuses larger blocks (`lzop` writes 256 KiB ones); the bound also
/// bounds what a hostile block can expand to.
const LZOP_MAX_BLOCK: usize = 256 << 10;

/// `lzop -9` output, read as the kernel's `decompress_unlzo.c` reads it: a header (whose
/// fields depend on the version), then blocks of `[dst_len][src_len][checksums][data]`
/// (big-endian), stored as is when `src_len == dst_len`, until a `dst_len` of 0.
fn lzop(payload: &[u8], out: &mut impl Write) -> Result<(), DecodeError> {
    let corrupt = |reason: &str| DecodeError::Corrupt {
        codec: "lzo",
        reason: reason.to_string(),
    };
    let short = || corrupt("truncated header");
    let mut at = LZOP_MAGIC.len();
    let u16_at = |at: usize| {
        payload
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let version = u16_at(at).ok_or_else(short)?;
    at += 4; // version, library version
    if version >= 0x0940 {
        at += 2; // version needed to extract
    }
    let method = *payload.get(at).ok_or_else(short)?;
    if !(1..=3).contains(&method) {
        return Err(corrupt("not an LZO1X method"));
    }
    at += if version >= 0x0940 { 2 } else { 1 }; // method, level
    let flags = be32(payload, at).ok_or_else(short)?;
    at += 4;
    if flags & F_H_FILTER != 0 {
        at += 4;
    }
    if flags & F_H_EXTRA_FIELD != 0 {
        return Err(corrupt(
            "extra header fields are not supported (nor by the kernel)",
        ));
    }
    at += 8; // mode, mtime
    if version >= 0x0940 {
        at += 4; // mtime, high half
    }
    let name_len = usize::from(*payload.get(at).ok_or_else(short)?);
    at += 1 + name_len + 4; // name, header checksum
    let mut blocks = 0usize;
    loop {
        let dst_len = be32(payload, at).ok_or_else(|| corrupt("truncated block"))?;
        at += 4;
        if dst_len == 0 {
            break;
        }
        let dst_len = usize::try_from(dst_len).map_err(|_| corrupt("block too large"))?;
        if dst_len > LZOP_MAX_BLOCK {
            return Err(corrupt("block larger than 256 KiB"));
        }
        let src_len = be32(payload, at).ok_or_else(|| corrupt("truncated block"))?;
        let src_len = usize::try_from(src_len).map_err(|_| corrupt("block too large"))?;
        at += 4;
        if src_len > dst_len {
            return Err(corrupt("compressed block larger than its data"));
        }
        // Checksums of the data, then of the compressed bytes: QEMU's ELF load and the
        // kernel's own checks catch what a skipped checksum would.
        for (flag, stored) in [
            (F_ADLER32_D, true),
            (F_CRC32_D, true),
            (F_ADLER32_C, false),
            (F_CRC32_C, false),
        ] {
            if flags & flag != 0 && (stored || src_len < dst_len) {
                at += 4;
            }
        }
        let data = payload
            .get(at..at + src_len)
            .ok_or_else(|| corrupt("block runs past the end"))?;
        at += src_len;
        if src_len == dst_len {
            out.write_all(data).map_err(DecodeError::Write)?;
        } else {
            let block = lzokay_native::decompress_all(data, Some(dst_len))
                .map_err(|e| corrupt(&e.to_string()))?;
            if block.len() != dst_len {
                return Err(corrupt("block decoded to the wrong length"));
            }
            out.write_all(&block).map_err(DecodeError::Write)?;
        }
        blocks += 1;
    }
    if blocks == 0 {
        return Err(corrupt("no blocks"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/kernel")
            .join(name)
    }

    /// The same small ELF compressed by each tool the kernel's build uses, with the kernel's
    /// options, and the 4-byte size the build appends (`scripts/make-samples` there).
    pub(crate) fn sample(codec: PayloadCodec) -> Vec<u8> {
        let ext = match codec {
            PayloadCodec::Gzip => "gz",
            PayloadCodec::Xz => "xz",
            PayloadCodec::Zstd => "zst",
            PayloadCodec::Lzma => "lzma",
            PayloadCodec::Lz4 => "lz4",
            PayloadCodec::Bzip2 => "bz2",
            PayloadCodec::Lzo => "lzo",
        };
        std::fs::read(data(&format!("pvh.elf.{ext}"))).unwrap()
    }

    #[test]
    fn every_kernel_compressor_is_decoded_from_its_real_tools_output() {
        let elf = std::fs::read(data("pvh.elf")).unwrap();
        for codec in PayloadCodec::ALL {
            let payload = sample(codec);
            assert_eq!(detect(&payload), Some(codec));
            let mut out = Vec::new();
            assert_eq!(decode(&payload, &mut out).unwrap(), codec);
            assert!(out == elf, "{codec:?}: {} bytes, not the ELF", out.len());
        }
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        for codec in PayloadCodec::ALL {
            let payload = sample(codec);
            for cut in [codec.magic().len(), payload.len() / 2, payload.len() - 6] {
                let _ = decode(&payload[..cut], &mut Vec::new());
            }
            let mut flipped = payload.clone();
            let mid = flipped.len() / 2;
            flipped[mid..mid + 8].copy_from_slice(&[0xff; 8]);
            let mut out = Vec::new();
            if decode(&flipped, &mut out).is_ok() {
                // Stored blocks and weak checks may pass a flip; the ELF check comes after.
                assert_ne!(out, std::fs::read(data("pvh.elf")).unwrap(), "{codec:?}");
            }
        }
        assert!(matches!(
            decode(b"plain bytes", &mut Vec::new()),
            Err(DecodeError::UnknownCodec)
        ));
        // Looks compressed, is not.
        let mut fake = PayloadCodec::Xz.magic().to_vec();
        fake.extend_from_slice(&[0x5a; 4096]);
        assert!(matches!(
            decode(&fake, &mut Vec::new()),
            Err(DecodeError::Corrupt { codec: "xz", .. })
        ));
    }
}
