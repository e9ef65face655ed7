//! A recorded console replayed at its own pace: lines are timed by their printk timestamps and
//! gathered into the chunks a runner would post in its batching window.

use std::time::Duration;

/// One POST of console bytes, `at` after the boot started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub at: Duration,
    pub bytes: Vec<u8>,
}

/// The seconds of a printk timestamp at the start of `line` (`[    1.234567] ...`).
pub fn printk_time(line: &[u8]) -> Option<f64> {
    let rest = line.strip_prefix(b"[")?;
    let end = rest.iter().position(|&b| b == b']')?;
    let stamp = std::str::from_utf8(&rest[..end]).ok()?.trim();
    // Seconds and a fraction, nothing else: "[ OK ]" from an init system is not a time.
    let (secs, frac) = stamp.split_once('.')?;
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    stamp.parse().ok()
}

/// Splits `log` into chunks of `window`, each line at its printk time divided by `speed` (a
/// line without a timestamp goes with the line before it; times never go backwards).
pub fn chunks(log: &[u8], window: Duration, speed: f64) -> Vec<Chunk> {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let window_s = window.as_secs_f64().max(1e-3);
    let mut out: Vec<Chunk> = Vec::new();
    let mut now = 0.0_f64;
    for line in log.split_inclusive(|&b| b == b'\n') {
        if let Some(t) = printk_time(line) {
            now = now.max(t / speed);
        }
        let slot = (now / window_s).floor();
        let at = Duration::from_secs_f64(slot * window_s);
        match out.last_mut() {
            Some(c) if c.at == at => c.bytes.extend_from_slice(line),
            _ => out.push(Chunk {
                at,
                bytes: line.to_vec(),
            }),
        }
    }
    out
}

/// How long the replayed boot lasts: its last chunk's time plus one window.
pub fn duration(chunks: &[Chunk], window: Duration) -> Duration {
    chunks.last().map_or(Duration::ZERO, |c| c.at + window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printk_times_are_read_and_other_brackets_are_not() {
        assert_eq!(printk_time(b"[    1.250000] Linux version"), Some(1.25));
        assert_eq!(printk_time(b"[    0.000000] x"), Some(0.0));
        assert_eq!(printk_time(b"[  OK  ] Started"), None);
        assert_eq!(printk_time(b"no stamp"), None);
        assert_eq!(printk_time(b"[1.5e3] x"), None);
    }

    #[test]
    fn lines_go_to_the_window_of_their_time_and_unstamped_lines_follow_the_last_stamp() {
        let log = b"early\n[    0.100000] a\n[    0.200000] b\nplain\n[    1.300000] c\n[    1.000000] back\n";
        let c = chunks(log, Duration::from_millis(250), 1.0);
        let at: Vec<u128> = c.iter().map(|c| c.at.as_millis()).collect();
        assert_eq!(at, [0, 1250]);
        assert_eq!(
            c[0].bytes,
            b"early\n[    0.100000] a\n[    0.200000] b\nplain\n"
        );
        assert_eq!(
            c[1].bytes, b"[    1.300000] c\n[    1.000000] back\n",
            "time never goes back"
        );
        assert_eq!(duration(&c, Duration::from_millis(250)).as_millis(), 1500);
        let all: Vec<u8> = c.iter().flat_map(|c| c.bytes.clone()).collect();
        assert_eq!(all, log, "every byte is sent once, in order");
    }

    #[test]
    fn speed_compresses_the_timeline() {
        let log = b"[    4.000000] a\n[    8.000000] b\n";
        let c = chunks(log, Duration::from_millis(250), 4.0);
        let at: Vec<u128> = c.iter().map(|c| c.at.as_millis()).collect();
        assert_eq!(at, [1000, 2000]);
        assert_eq!(
            chunks(log, Duration::from_millis(250), 0.0)[1].at.as_secs(),
            8,
            "a bad speed is 1"
        );
    }
}
