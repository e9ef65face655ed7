//! What a kernel image is, from its first bytes: pure, so every format is unit-tested.
//!
//! The x86 boot protocol (Documentation/arch/x86/boot.rst) puts a setup header at 0x1f1 of a
//! bzImage: `HdrS` at 0x202, the protocol version at 0x206, and (from 2.08) the compressed
//! payload's offset and length at 0x248 and 0x24c, relative to the protected-mode code, which
//! starts after the `setup_sects` 512-byte sectors of real-mode setup (and the boot sector).

/// Bytes [`detect`] and [`bzimage_payload`] look at.
pub const HEADER_LEN: usize = 0x250;

/// A kernel image's format, as `qemu.kernel.format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    BzImage,
    /// 32-bit ARM self-decompressing image.
    ZImage,
    /// arm64 or riscv64 `Image` (QEMU loads it, or its gzip form, on the host).
    Image,
    /// U-Boot legacy image.
    UImage,
    Elf,
    Gzip,
    Unknown,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::BzImage => "bzImage",
            ImageFormat::ZImage => "zImage",
            ImageFormat::Image => "Image",
            ImageFormat::UImage => "uImage",
            ImageFormat::Elf => "elf",
            ImageFormat::Gzip => "gzip",
            ImageFormat::Unknown => "unknown",
        }
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
}

pub fn detect(header: &[u8]) -> ImageFormat {
    if header.get(0x202..0x206) == Some(b"HdrS") {
        ImageFormat::BzImage
    } else if le32(header, 0x24) == Some(0x016f_2818) {
        ImageFormat::ZImage
    } else if matches!(header.get(0x38..0x3c), Some(b"ARM\x64" | b"RSC\x05")) {
        ImageFormat::Image
    } else if header.starts_with(b"\x7fELF") {
        ImageFormat::Elf
    } else if header.starts_with(&[0x27, 0x05, 0x19, 0x56]) {
        ImageFormat::UImage
    } else if header.starts_with(&[0x1f, 0x8b]) {
        ImageFormat::Gzip
    } else {
        ImageFormat::Unknown
    }
}

/// Why a bzImage's payload cannot be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not a bzImage (no HdrS setup header)")]
    NotBzImage,
    #[error("boot protocol {major}.{minor:02} predates the payload fields (2.08)")]
    OldProtocol { major: u8, minor: u8 },
    #[error("the payload ({offset}+{length}) lies outside the {size}-byte image")]
    OutOfBounds { offset: u64, length: u64, size: u64 },
}

/// The byte range of a bzImage's compressed kernel within the whole file of `file_len` bytes.
pub fn bzimage_payload(header: &[u8], file_len: u64) -> Result<std::ops::Range<u64>, PayloadError> {
    if detect(header) != ImageFormat::BzImage {
        return Err(PayloadError::NotBzImage);
    }
    let version = le16(header, 0x206).ok_or(PayloadError::NotBzImage)?;
    if version < 0x0208 {
        let [major, minor] = version.to_be_bytes();
        return Err(PayloadError::OldProtocol { major, minor });
    }
    // 0 means 4, for historical reasons.
    let setup_sects = match header.get(0x1f1).copied().ok_or(PayloadError::NotBzImage)? {
        0 => 4,
        n => u64::from(n),
    };
    let offset = u64::from(le32(header, 0x248).ok_or(PayloadError::NotBzImage)?);
    let length = u64::from(le32(header, 0x24c).ok_or(PayloadError::NotBzImage)?);
    let start = (setup_sects + 1) * 512 + offset;
    let end = start + length;
    if length == 0 || end > file_len {
        return Err(PayloadError::OutOfBounds {
            offset: start,
            length,
            size: file_len,
        });
    }
    Ok(start..end)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bzImage-shaped file: a setup header (protocol 2.15, 3 setup sectors) and `payload`.
    pub(crate) fn bzimage_with(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let pm = (usize::from(setup_sects) + 1) * 512;
        let offset = 0x40usize;
        let mut b = vec![0u8; pm + offset];
        b[0x1f1] = setup_sects;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        b.extend_from_slice(payload);
        // What follows the payload in a real bzImage (the CRC, padding).
        b.extend_from_slice(&[0xaa; 16]);
        b
    }

    #[test]
    fn formats_are_told_apart_by_their_magic() {
        let bz = bzimage_with(b"payload");
        assert_eq!(detect(&bz), ImageFormat::BzImage);
        let mut z = vec![0u8; 0x40];
        z[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
        assert_eq!(detect(&z), ImageFormat::ZImage);
        let mut arm64 = vec![0u8; 0x40];
        arm64[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(detect(&arm64), ImageFormat::Image);
        let mut riscv = b"MZ".to_vec();
        riscv.resize(0x40, 0);
        riscv[0x38..0x3c].copy_from_slice(b"RSC\x05");
        assert_eq!(detect(&riscv), ImageFormat::Image);
        assert_eq!(detect(b"\x7fELF\x02\x01"), ImageFormat::Elf);
        assert_eq!(detect(&[0x27, 0x05, 0x19, 0x56, 0]), ImageFormat::UImage);
        assert_eq!(detect(&[0x1f, 0x8b, 8]), ImageFormat::Gzip);
        assert_eq!(detect(b""), ImageFormat::Unknown);
        assert_eq!(detect(&[0u8; 4096]), ImageFormat::Unknown);
    }

    #[test]
    fn the_payload_is_located_from_the_setup_header() {
        let bz = bzimage_with(b"PAYLOAD");
        let r = bzimage_payload(&bz, bz.len() as u64).unwrap();
        let (start, end) = (
            usize::try_from(r.start).unwrap(),
            usize::try_from(r.end).unwrap(),
        );
        assert_eq!(&bz[start..end], b"PAYLOAD");
        // setup_sects 0 means 4.
        let mut b = bz.clone();
        b[0x1f1] = 0;
        assert_eq!(bzimage_payload(&b, 1 << 20).unwrap().start, 5 * 512 + 0x40);
    }

    #[test]
    fn headers_that_lie_are_refused() {
        let bz = bzimage_with(b"PAYLOAD");
        assert_eq!(
            bzimage_payload(&bz[..0x100], 0x100),
            Err(PayloadError::NotBzImage)
        );
        let mut old = bz.clone();
        old[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
        assert_eq!(
            bzimage_payload(&old, old.len() as u64),
            Err(PayloadError::OldProtocol { major: 2, minor: 4 })
        );
        let mut long = bz.clone();
        long[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            bzimage_payload(&long, long.len() as u64),
            Err(PayloadError::OutOfBounds { .. })
        ));
        let mut empty = bz;
        empty[0x24c..0x250].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            bzimage_payload(&empty, empty.len() as u64),
            Err(PayloadError::OutOfBounds { .. })
        ));
    }
}
