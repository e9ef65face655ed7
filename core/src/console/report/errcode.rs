//! Driver and subsystem errors the kernel prints with an errno, as KernelCI's logspec reports
//! them: `probe of thermal-sensor1 failed with error -22`, `Direct firmware load for
//! regulatory.db failed with error -2`, `mmc0: error -110 whilst initialising SD card`. A new
//! one after a kernel change is often the first sign of a regression.

use regex::Regex;
use std::sync::OnceLock;

/// Highest errno (`MAX_ERRNO`): larger numbers are not error codes.
const MAX_ERRNO: u32 = 4095;

fn errno_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // An error word, then (within the clause) a negative errno or `-EINVAL` (`%pe`).
        Regex::new(
            r"(?i:\b(?:error|err|errno|fail|failed|failure|ret|rc|returned)\b)[^;]{0,100}?[\s(=:]-(\d{1,4}|E[A-Z][A-Z0-9_]{1,20})\b",
        )
        .expect("static regex")
    })
}

/// Whether a kernel line reports an error with an errno.
pub fn is_error_code(text: &str) -> bool {
    errno(text).is_some()
}

/// The errno of an error line (`-22`, `-EINVAL`).
pub fn errno(text: &str) -> Option<&str> {
    if text.starts_with("Kernel command line") || text.starts_with("Command line") {
        return None;
    }
    let c = errno_re().captures(text)?;
    let code = c.get(1)?;
    let digits = code.as_str();
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = digits.parse().ok()?;
        if n == 0 || n > MAX_ERRNO {
            return None;
        }
    }
    // Include the minus sign.
    Some(&text[code.start() - 1..code.end()])
}

/// The normalised title: from the well-known phrase when there is one (the driver prefix
/// before `probe of` differs between kernels), else the whole message.
pub fn title(text: &str) -> String {
    let t = text.trim();
    for phrase in ["probe of ", "Direct firmware load for "] {
        if let Some(i) = t.find(phrase) {
            return super::title::tidy(&strip_addresses(&t[i..]));
        }
    }
    super::title::tidy(&strip_addresses(t))
}

/// `0x...` numbers and long hex words change between boots; device names and errnos stay.
fn strip_addresses(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let hex = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let is_addr = (hex.starts_with("0x") && hex.len() > 2)
                || (hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_addr {
                w.replace(hex, "ADDR")
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_lines_of_many_drivers() {
        for (line, code) in [
            ("generic-adc-thermal: probe of thermal-sensor1 failed with error -22", "-22"),
            ("platform regulatory.0: Direct firmware load for regulatory.db failed with error -2", "-2"),
            ("mmc0: error -110 whilst initialising SD card", "-110"),
            ("usb 1-1: device descriptor read/64, error -71", "-71"),
            ("xhci-pci-renesas 0000:04:00.0: probe with driver xhci-pci-renesas failed with error -2", "-2"),
            ("panel-simple panel: error -EPROBE_DEFER: failed to get regulator", "-EPROBE_DEFER"),
            ("rockchip-pcie f8000000.pcie: failed to get ep GPIO (err=-22)", "-22"),
        ] {
            assert_eq!(errno(line), Some(code), "{line}");
        }
        for line in [
            "ACPI Error: AE_NOT_FOUND, While resolving a named reference package element (20220331/dspkginit-438)",
            "pci 0000:00:01.0: BAR 0: failed to assign [mem size 0x01000000 pref]",
            "Kernel command line: console=ttyS0 panic=-1 err=-1",
            "clocksource: tsc: mask: 0xffffffffffffffff max_cycles: 0x2b3e459bf4c, max_idle_ns: 440795289890 ns",
            "failed with error -99999",
        ] {
            assert_eq!(errno(line), None, "{line}");
        }
    }

    #[test]
    fn titles_start_at_the_known_phrase() {
        assert_eq!(
            title("generic-adc-thermal: probe of thermal-sensor1 failed with error -22"),
            "probe of thermal-sensor1 failed with error -22"
        );
        assert_eq!(
            title("cfg80211: Direct firmware load for regulatory.db failed with error -2"),
            "Direct firmware load for regulatory.db failed with error -2"
        );
        assert_eq!(
            title("foo 0x1234abcd: setup failed: -19"),
            "foo ADDR: setup failed: -19"
        );
    }
}
