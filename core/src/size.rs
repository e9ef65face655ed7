//! Sizes as people write them (`512M`, `2G`, `64MiB`), one parser for every flag and field.
//! What a bare number means is the caller's contract: QEMU's `-m` reads MiB, byte limits bytes.

/// The unit of a number written without a suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Mebibytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a size (a number with an optional K, M, G or T suffix, e.g. 512M)")]
pub struct BadSize(pub String);

/// Parses `N[K|M|G|T][B|iB]` (case-insensitive suffix) into bytes; `bare` is the unit without
/// a suffix. Overflow is an error.
pub fn parse_size(s: &str, bare: Unit) -> Result<u64, BadSize> {
    let bad = || BadSize(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => match bare {
            Unit::Bytes => 0,
            Unit::Mebibytes => 20,
        },
        "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_bare_numbers() {
        assert_eq!(parse_size("64M", Unit::Bytes), Ok(64 << 20));
        assert_eq!(parse_size("512k", Unit::Bytes), Ok(512 << 10));
        assert_eq!(parse_size("1G", Unit::Bytes), Ok(1 << 30));
        assert_eq!(parse_size("2GiB", Unit::Bytes), Ok(2 << 30));
        assert_eq!(parse_size("2GB", Unit::Bytes), Ok(2 << 30));
        assert_eq!(parse_size("4096", Unit::Bytes), Ok(4096));
        assert_eq!(parse_size("256", Unit::Mebibytes), Ok(256 << 20));
        assert_eq!(parse_size(" 1T ", Unit::Mebibytes), Ok(1 << 40));
    }

    #[test]
    fn nonsense_and_overflow_are_errors() {
        for bad in [
            "",
            "M",
            "12Q",
            "-1G",
            "1.5G",
            "99999999999999999999",
            "16777216T",
            "1 G",
        ] {
            assert!(parse_size(bad, Unit::Bytes).is_err(), "{bad:?}");
        }
    }
}
