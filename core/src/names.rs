//! Kubernetes' name rules, checked in one place for both modes: a name the API server would
//! refuse must never be accepted by the embedded store either (nor become a directory name).

/// The longest DNS-1123 subdomain (object names).
pub const MAX_SUBDOMAIN: usize = 253;
/// The longest DNS-1123 label (pool names, label values' own limit is also 63).
pub const MAX_LABEL: usize = 63;

/// A DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A DNS-1123 subdomain, as Kubernetes requires for object names: dot-separated labels of
/// `[a-z0-9-]` each starting and ending with a letter or digit, at most 253 characters. So
/// `a..b`, `.a`, `a.` and `a.-b` are all refused.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBDOMAIN
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
}

/// A `generateName` prefix: some random suffix of `[a-z0-9]` appended to it makes a subdomain.
/// `suffix_len` is how many characters the store appends.
pub fn is_generate_name_prefix(prefix: &str, suffix_len: usize) -> bool {
    prefix.len() + suffix_len <= MAX_SUBDOMAIN
        && !prefix.is_empty()
        && is_dns_subdomain(&format!("{prefix}{}", "x".repeat(suffix_len.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_follow_dns_1123() {
        for good in ["a", "boot-1", "a.b", "x86-64.boot.0", &"a".repeat(253)] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "a.-b",
            "a-.b",
            "A",
            "a_b",
            "a/b",
            "..",
            &"a".repeat(254),
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn labels_have_no_dots_and_at_most_63_characters() {
        assert!(is_dns_label("tcg-x86-64"));
        assert!(is_dns_label(&"a".repeat(63)));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label("Bad_Pool"));
    }

    #[test]
    fn generate_name_prefixes_may_end_with_a_dash() {
        assert!(is_generate_name_prefix("boot-", 5));
        assert!(is_generate_name_prefix("a.b-", 5));
        assert!(!is_generate_name_prefix("-boot", 5));
        assert!(!is_generate_name_prefix("Boot_", 5));
        assert!(!is_generate_name_prefix(&"a".repeat(249), 5));
        assert!(!is_generate_name_prefix("", 5));
    }
}
