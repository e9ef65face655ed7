//! SHA-256: parsing expected digests, hashing while copying, with a byte limit.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::ArtifactError;

/// Normalise a user-given digest: optional `sha256:` prefix, any case, 64 hex digits.
pub fn parse_expected(origin: &str, value: &str) -> Result<String, ArtifactError> {
    let trimmed = value.trim();
    let hex_part = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    if hex_part.len() == 64 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex_part.to_ascii_lowercase())
    } else {
        Err(ArtifactError::InvalidChecksum {
            origin: origin.to_string(),
            value: value.to_string(),
        })
    }
}

/// Sizes and digests of an artifact as fetched and, when it was compressed, as decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub fetched_sha256: String,
    pub fetched_size: u64,
    pub content_sha256: String,
    pub content_size: u64,
}

/// The expected digest may name the fetched (compressed) bytes or the decompressed bytes.
pub fn check(origin: &str, expected: Option<&str>, d: &Digests) -> Result<(), ArtifactError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    if expected == d.fetched_sha256 || expected == d.content_sha256 {
        return Ok(());
    }
    let actual = if d.fetched_sha256 == d.content_sha256 {
        d.fetched_sha256.clone()
    } else {
        format!("{} (decompressed: {})", d.fetched_sha256, d.content_sha256)
    };
    Err(ArtifactError::ChecksumMismatch {
        origin: origin.to_string(),
        expected: expected.to_string(),
        actual,
    })
}

/// Marker inside an `io::Error` when a [`HashingWriter`] would pass its limit.
#[derive(Debug, thiserror::Error)]
#[error("size limit of {0} bytes exceeded")]
pub struct LimitExceeded(pub u64);

pub fn is_limit_exceeded(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<LimitExceeded>().is_some())
}

/// Hashes and counts what passes through, and refuses to write past `limit` bytes in total.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, limit: u64) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
            limit,
        }
    }

    /// The byte count, the hex digest and the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<(u64, String, W)> {
        self.inner.flush()?;
        Ok((
            self.written,
            hex::encode(self.hasher.finalize()),
            self.inner,
        ))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::other(LimitExceeded(self.limit)));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it; [`HashingReader::finish`] reads the rest and gives the digest
/// of the whole input, whatever the consumer left unread.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Size and digest of everything `reader` yields, failing with [`LimitExceeded`] past `limit`.
pub fn hash_reader(mut reader: impl Read, limit: u64) -> io::Result<(u64, String)> {
    let mut w = HashingWriter::new(io::sink(), limit);
    io::copy(&mut reader, &mut w)?;
    let (size, digest, _) = w.finish()?;
    Ok((size, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hashes_known_vector() {
        assert_eq!(hash_reader(&b"abc"[..], 10).unwrap(), (3, ABC.to_string()));
    }

    #[test]
    fn a_hashing_reader_covers_what_the_consumer_did_not_read() {
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), ABC);
    }

    #[test]
    fn limit_is_enforced_and_recognisable() {
        let err = hash_reader(&b"abcd"[..], 3).unwrap_err();
        assert!(is_limit_exceeded(&err), "{err}");
        assert!(hash_reader(&b"abc"[..], 3).is_ok());
    }

    #[test]
    fn expected_digest_is_normalised_or_rejected() {
        let upper = ABC.to_ascii_uppercase();
        assert_eq!(parse_expected("k", &upper).unwrap(), ABC);
        assert_eq!(parse_expected("k", &format!("sha256:{ABC}")).unwrap(), ABC);
        for bad in ["", "abc", &ABC[1..], &format!("{}g", &ABC[1..])] {
            let err = parse_expected("kernel.gz", bad).unwrap_err();
            assert_eq!(err.kind().as_str(), "checksum_mismatch");
            assert!(err.to_string().contains("kernel.gz"));
        }
    }

    #[test]
    fn check_accepts_fetched_or_decompressed_digest_and_names_both_on_mismatch() {
        let d = Digests {
            fetched_sha256: "aa".repeat(32),
            fetched_size: 1,
            content_sha256: "bb".repeat(32),
            content_size: 2,
        };
        assert!(check("src", None, &d).is_ok());
        assert!(check("src", Some(&"aa".repeat(32)), &d).is_ok());
        assert!(check("src", Some(&"bb".repeat(32)), &d).is_ok());
        let msg = check("http://h/k", Some(&"cc".repeat(32)), &d)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("http://h/k"), "{msg}");
        assert!(msg.contains(&"cc".repeat(32)), "{msg}");
        assert!(msg.contains(&"aa".repeat(32)), "{msg}");
        assert!(msg.contains(&"bb".repeat(32)), "{msg}");
    }
}
