//! Properties of the console-log policy: however the bytes are chunked, every layer keeps the
//! same head and tail, stays within its limit, and its marker reads back.

use bootfarm_core::console_cap::{marker, Cap, HeadTail, MarkerFilter, ALIGN_MAX};
use proptest::prelude::*;

/// Lines and pieces that exercise line starts, markers and near-markers.
fn log() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"[    1.000000] Kernel panic - not syncing\n".to_vec()),
        Just(b"[bootfarm: attempt 2 on runner r at t]\n".to_vec()),
        Just(b"[bootfarm: console cut: 77 bytes omitted by the runner]\n".to_vec()),
        Just(b"[bootfarm: console cut: 9 bytes omitted by the upload]\r\n".to_vec()),
        Just(b"[bootf".to_vec()),
        Just(b"\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(data[at..p].to_vec());
        at = p;
    }
    out.push(data[at..].to_vec());
    out
}

fn filter(chunks: &[Vec<u8>]) -> (Vec<u8>, u64, u64) {
    let mut f = MarkerFilter::new();
    let mut out = Vec::new();
    for c in chunks {
        f.feed(c, &mut |b| out.extend_from_slice(b));
    }
    f.finish(&mut |b| out.extend_from_slice(b));
    (out, f.cuts(), f.omitted())
}

fn head_tail(limit: u64, chunks: &[Vec<u8>]) -> (Vec<u8>, bool) {
    let mut ht = HeadTail::new(limit);
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(ht.push(c));
    }
    out.extend(ht.finish());
    (out, ht.truncated())
}

proptest! {
    #[test]
    fn the_filter_does_not_depend_on_chunking(data in log(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let whole = filter(std::slice::from_ref(&data));
        prop_assert_eq!(filter(&chunked(&data, &cuts)), whole.clone());
        // It only ever removes whole marker lines.
        prop_assert!(whole.0.len() <= data.len());
    }

    #[test]
    fn the_runner_log_keeps_head_and_tail_within_its_limit(
        data in log(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        limit in 9000u64..20_000,
        repeat in 1usize..100,
    ) {
        let data = data.repeat(repeat);
        let cap = Cap::new(limit);
        let whole = head_tail(limit, std::slice::from_ref(&data));
        prop_assert_eq!(head_tail(limit, &chunked(&data, &cuts)), whole.clone());
        let (out, truncated) = whole;
        let head = data.len().min(usize::try_from(cap.head).expect("a test cap fits in memory"));
        prop_assert_eq!(&out[..head], &data[..head]);
        if data.len() as u64 <= cap.limit() {
            prop_assert!(!truncated);
            prop_assert_eq!(out, data);
        } else {
            prop_assert!(truncated);
            prop_assert!(out.len() as u64 <= cap.limit() + marker::MAX_LINE as u64);
            // At least the tail's last bytes, less the start of a cut line.
            let tail = usize::try_from(cap.tail).expect("a test cap fits in memory").saturating_sub(ALIGN_MAX);
            prop_assert!(out.ends_with(&data[data.len() - tail..]));
            let gap = &out[head..];
            let line_at = usize::from(gap.first() == Some(&b'\n'));
            let line = gap[line_at..].split(|&b| b == b'\n').next().unwrap_or(&[]);
            prop_assert!(marker::parse(line).is_some(), "{}", String::from_utf8_lossy(line));
        }
    }
}
