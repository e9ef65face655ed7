//! A job's stored console log under the one console-log policy
//! ([`bootfarm_core::console_cap`]), on disk, in bounded memory, surviving restarts:
//!
//! - `console.log`: the head, the first half of the limit, appended as it comes. Its bytes never
//!   move, so links into it (byte ranges, line numbers) hold while the job runs and after.
//! - `console.tail/<position>`: the tail, in segments of a quarter of its half of the limit,
//!   each named by the stream position it starts at (the count of bytes received before it).
//!   When dropping the oldest segment still leaves the tail its half of the limit, it goes: the
//!   last half of the limit is always kept, and the log never takes more than 1.125 × the limit.
//! - `console.cut`: written before a segment goes: where the kept tail starts (at a line) and
//!   how many console bytes are left out before it (a dropped marker's count included).
//!
//! Readers see one log, joined at read time: head, marker (when bytes were left out), tail
//! ([`super::log_layout`]). A [`LogView`] opens every file at once, so a segment removed while
//! it is being read stays readable through its open file. Past the head, offsets move when the
//! tail rolls; a follower reads by stream position and gets a marker when the tail rolled past
//! it. Nothing is rewritten when the job ends: the files are the log.

use super::log_layout::{CutRecord, Layout, Next, Place};
use bootfarm_core::console_cap::{line_start_skip, Cap, MarkerFilter, ALIGN_MAX};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEAD: &str = "console.log";
const TAIL_DIR: &str = "console.tail";
const CUT: &str = "console.cut";
/// Largest piece read at once while counting what a roll drops.
const READ_CHUNK: usize = 64 << 10;

#[derive(Debug)]
struct Segment {
    start: u64,
    len: u64,
    path: PathBuf,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

fn segment_size(cap: Cap) -> u64 {
    (cap.tail / 4).max(1)
}

fn file_len(path: &Path) -> io::Result<u64> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn append_to(path: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(data)
}

/// The tail's segments, oldest first.
fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let entries = match fs::read_dir(dir.join(TAIL_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut segs = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Anything else (a temporary file) is not a segment.
        let Some(start) = entry
            .file_name()
            .to_str()
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segs.push(Segment {
            start,
            len: entry.metadata()?.len(),
            path: entry.path(),
        });
    }
    segs.sort_by_key(|s| s.start);
    Ok(segs)
}

/// The roll record; when it is unreadable, what the files themselves say (a tail starting
/// past the head: the bytes between are gone, their number is all that is known).
fn cut_record(dir: &Path, head_len: u64, segs: &[Segment]) -> io::Result<Option<CutRecord>> {
    let derived = || {
        segs.first()
            .filter(|s| s.start > head_len)
            .map(|s| CutRecord {
                tail_start: s.start,
                omitted: s.start - head_len,
                head_ends_line: false,
            })
    };
    let raw = match fs::read(dir.join(CUT)) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(derived()),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice(&raw) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "Unreadable console.cut; using the tail's files");
            Ok(derived())
        }
    }
}

fn write_cut(dir: &Path, record: &CutRecord) -> io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, record)?;
    tmp.persist(dir.join(CUT)).map_err(|e| e.error)?;
    Ok(())
}

/// Appends received bytes to the log in `dir`, rolling the tail when it outgrows its half.
pub fn append(dir: &Path, cap: Cap, mut data: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let head_path = dir.join(HEAD);
    let mut segs = list_segments(dir)?;
    let mut head_len = file_len(&head_path)?;
    // Once a tail exists the head is closed, even if a restart raised the limit.
    if segs.is_empty() && head_len < cap.head {
        let room = usize::try_from(cap.head - head_len).unwrap_or(usize::MAX);
        let (now, rest) = data.split_at(data.len().min(room));
        append_to(&head_path, now)?;
        head_len += now.len() as u64;
        data = rest;
    }
    if data.is_empty() {
        return Ok(());
    }
    let tail_dir = dir.join(TAIL_DIR);
    fs::create_dir_all(&tail_dir)?;
    let cut = cut_record(dir, head_len, &segs)?;
    if let Some(c) = cut {
        // Segments a roll recorded but did not get to remove.
        segs.retain(|s| {
            let stale = s.end() <= c.tail_start;
            if stale {
                let _ = fs::remove_file(&s.path);
            }
            !stale
        });
    }
    let seg_size = segment_size(cap);
    let mut end = segs.last().map_or(head_len, Segment::end);
    while !data.is_empty() {
        let n = match segs.last_mut().filter(|s| s.len < seg_size) {
            Some(last) => {
                let n = usize::try_from(seg_size - last.len)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                append_to(&last.path, &data[..n])?;
                last.len += n as u64;
                n
            }
            None => {
                let path = tail_dir.join(format!("{end:020}"));
                let n = usize::try_from(seg_size)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                append_to(&path, &data[..n])?;
                segs.push(Segment {
                    start: end,
                    len: n as u64,
                    path,
                });
                n
            }
        };
        end += n as u64;
        data = &data[n..];
    }
    roll(dir, cap, head_len, cut, segs, end)
}

/// Drops the oldest segments the tail can spare, after recording what they held.
fn roll(
    dir: &Path,
    cap: Cap,
    head_len: u64,
    cut: Option<CutRecord>,
    segs: Vec<Segment>,
    end: u64,
) -> io::Result<()> {
    let mut gone = 0;
    while gone + 1 < segs.len() && end - segs[gone + 1].start >= cap.tail {
        gone += 1;
    }
    if gone == 0 {
        return Ok(());
    }
    let tail_start = cut.map_or(head_len, |c| c.tail_start);
    let mut counted = MarkerFilter::new();
    let mut last = None;
    let mut buf = vec![0u8; READ_CHUNK];
    for s in &segs[..gone] {
        let file = File::open(&s.path)?;
        let mut at = tail_start.saturating_sub(s.start);
        while at < s.len {
            let n = file.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            counted.feed(&buf[..n], &mut |_| {});
            last = buf[..n].last().copied().or(last);
            at += n as u64;
        }
    }
    // The kept tail starts at a line.
    let first = &segs[gone];
    let mut start = vec![0u8; ALIGN_MAX.min(usize::try_from(first.len).unwrap_or(ALIGN_MAX))];
    let n = File::open(&first.path)?.read_at(&mut start, 0)?;
    let skip = line_start_skip(last, &start[..n]);
    counted.feed(&start[..skip], &mut |_| {});
    counted.finish(&mut |_| {});
    let head_ends_line = match cut {
        Some(c) => c.head_ends_line,
        None => last_byte(&dir.join(HEAD), head_len)?.is_none_or(|b| b == b'\n'),
    };
    let record = CutRecord {
        tail_start: first.start + skip as u64,
        omitted: cut.map_or(0, |c| c.omitted) + counted.represented(),
        head_ends_line,
    };
    write_cut(dir, &record)?;
    tracing::debug!(dir = %dir.display(), tail_start = record.tail_start, omitted = record.omitted, "Console log tail rolled");
    for s in &segs[..gone] {
        match fs::remove_file(&s.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn last_byte(path: &Path, len: u64) -> io::Result<Option<u8>> {
    if len == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 1];
    let n = File::open(path)?.read_at(&mut b, len - 1)?;
    Ok((n == 1).then_some(b[0]))
}

/// An open segment of a view.
#[derive(Debug)]
struct OpenSegment {
    start: u64,
    len: u64,
    file: File,
}

/// The log as it was when opened: its files stay readable whatever the writer does next.
#[derive(Debug)]
pub struct LogView {
    layout: Layout,
    head: Option<File>,
    segments: Vec<OpenSegment>,
}

fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens the log in `dir` (an absent log is empty). Call it while no append runs.
pub fn open(dir: &Path) -> io::Result<LogView> {
    let head = open_existing(&dir.join(HEAD))?;
    let head_len = match &head {
        Some(f) => f.metadata()?.len(),
        None => 0,
    };
    let segs = list_segments(dir)?;
    let cut = cut_record(dir, head_len, &segs)?;
    let tail_start = cut.map_or(head_len, |c| c.tail_start);
    let mut segments = Vec::new();
    for s in segs.into_iter().filter(|s| s.end() > tail_start) {
        let Some(file) = open_existing(&s.path)? else {
            continue;
        };
        let len = file.metadata()?.len();
        segments.push(OpenSegment {
            start: s.start,
            len,
            file,
        });
    }
    let tail_end = segments.last().map_or(tail_start, |s| s.start + s.len);
    Ok(LogView {
        layout: Layout::new(head_len, cut, tail_end),
        head,
        segments,
    })
}

impl LogView {
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The log's length as served.
    pub fn len(&self) -> u64 {
        self.layout.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }

    /// Up to `max` bytes of the log as served, from `offset`.
    pub fn read_at(&self, mut offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < max {
            let want = max - out.len();
            let piece = match self.layout.locate(offset) {
                Place::Head(pos) | Place::Tail(pos) => self.read_stored(pos, want)?,
                Place::Marker(i) => {
                    let m = &self.layout.marker[i..];
                    m[..m.len().min(want)].to_vec()
                }
                Place::End => break,
            };
            if piece.is_empty() {
                break;
            }
            offset += piece.len() as u64;
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    /// For a follower at stream position `pos`: the next bytes (at most `max`) and the position
    /// after them.
    pub fn read_from(&self, pos: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
        Ok(match self.layout.next(pos) {
            Next::Stored { at, until } => {
                let want = usize::try_from(until - at).unwrap_or(usize::MAX).min(max);
                let data = self.read_stored(at, want)?;
                let next = at + data.len() as u64;
                (data, next)
            }
            Next::Marker { bytes, resume } => (bytes, resume),
            Next::Wait => (Vec::new(), pos),
        })
    }

    /// Stored bytes from a stream position, within one file.
    fn read_stored(&self, pos: u64, max: usize) -> io::Result<Vec<u8>> {
        let (file, at, left) = if pos < self.layout.head_len {
            match &self.head {
                Some(f) => (f, pos, self.layout.head_len - pos),
                None => return Ok(Vec::new()),
            }
        } else {
            match self
                .segments
                .iter()
                .find(|s| s.start <= pos && pos < s.start + s.len)
            {
                Some(s) => (&s.file, pos - s.start, s.start + s.len - pos),
                None => return Ok(Vec::new()),
            }
        };
        let mut buf = vec![0u8; usize::try_from(left).unwrap_or(usize::MAX).min(max)];
        let n = file.read_at(&mut buf, at)?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::console_cap::marker;

    fn read_all(dir: &Path) -> Vec<u8> {
        let v = open(dir).unwrap();
        v.read_at(0, usize::MAX).unwrap()
    }

    fn lines(from: u32, to: u32) -> Vec<u8> {
        (from..to)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect()
    }

    #[test]
    fn a_log_within_the_limit_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Cap::new(8192);
        let data = lines(0, 900);
        assert!(data.len() as u64 <= cap.limit());
        for chunk in data.chunks(700) {
            append(dir.path(), cap, chunk).unwrap();
        }
        assert_eq!(read_all(dir.path()), data);
        assert!(!open(dir.path()).unwrap().layout().is_cut());
        assert_eq!(fs::read(dir.path().join(HEAD)).unwrap(), &data[..4096]);
    }

    #[test]
    fn a_flood_keeps_the_head_and_the_tail_with_one_marker() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Cap::new(8192);
        let data = lines(0, 20_000);
        for chunk in data.chunks(1000) {
            append(dir.path(), cap, chunk).unwrap();
        }
        let v = open(dir.path()).unwrap();
        assert!(v.layout().is_cut());
        let all = v.read_at(0, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, v.len());
        let text = String::from_utf8(all.clone()).unwrap();
        assert!(text.starts_with("line 0\n"));
        assert!(text.ends_with("line 19999\n"));
        assert_eq!(text.matches("bytes omitted by the operator]").count(), 1);
        // At least the tail's half is kept, and at most 1.125 × the limit is stored.
        let marker_end = text.find("operator]\n").unwrap() + "operator]\n".len();
        assert!(text[marker_end..].starts_with("line "));
        assert!((text.len() - marker_end) as u64 >= cap.tail - 4096);
        assert!(v.len() <= cap.limit() + cap.limit() / 8 + 100);
        // The count is exact: shown plus omitted is what was received (plus the line end put
        // before the marker when the head ended inside a line).
        let mut f = MarkerFilter::new();
        let mut shown = 0u64;
        f.feed(&all, &mut |b| shown += b.len() as u64);
        f.finish(&mut |b| shown += b.len() as u64);
        let total = data.len() as u64;
        assert!((total..=total + 1).contains(&(shown + f.omitted())));
    }

    #[test]
    fn a_runner_marker_that_rolls_away_is_counted_in_ours() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Cap::new(8192);
        append(dir.path(), cap, &lines(0, 600)).unwrap();
        append(
            dir.path(),
            cap,
            marker::render(1_000_000, marker::Layer::Runner).as_bytes(),
        )
        .unwrap();
        append(dir.path(), cap, &lines(600, 5000)).unwrap();
        let text = String::from_utf8(read_all(dir.path())).unwrap();
        assert_eq!(text.matches("[bootfarm: console cut: ").count(), 1);
        let line = text
            .lines()
            .find(|l| l.starts_with("[bootfarm: console cut"))
            .unwrap();
        let omitted = marker::parse(line.as_bytes()).unwrap().omitted;
        assert!(omitted > 1_000_000, "{line}");
    }

    #[test]
    fn a_view_stays_whole_while_the_tail_rolls_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Cap::new(8192);
        append(dir.path(), cap, &lines(0, 2000)).unwrap();
        let v = open(dir.path()).unwrap();
        let before = v.read_at(0, usize::MAX).unwrap();
        append(dir.path(), cap, &lines(2000, 9000)).unwrap();
        assert_eq!(v.read_at(0, usize::MAX).unwrap(), before);
        assert_ne!(read_all(dir.path()), before);
    }

    #[test]
    fn a_follower_reads_everything_it_can_and_a_marker_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Cap::new(8192);
        let follow = |pos: &mut u64, out: &mut Vec<u8>| loop {
            let (data, next) = open(dir.path()).unwrap().read_from(*pos, 500).unwrap();
            if data.is_empty() {
                return;
            }
            out.extend_from_slice(&data);
            *pos = next;
        };
        let (mut pos, mut seen) = (0u64, Vec::new());
        let first = lines(0, 1000);
        append(dir.path(), cap, &first).unwrap();
        follow(&mut pos, &mut seen);
        assert_eq!(seen, first, "a follower that keeps up sees everything");
        append(dir.path(), cap, &lines(1000, 10_000)).unwrap();
        follow(&mut pos, &mut seen);
        let text = String::from_utf8(seen).unwrap();
        assert!(text.starts_with("line 0\n") && text.ends_with("line 9999\n"));
        assert_eq!(text.matches("[bootfarm: console cut: ").count(), 1);
    }

    #[test]
    fn the_log_survives_a_restart_and_a_lost_record() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Cap::new(8192);
        append(dir.path(), cap, &lines(0, 5000)).unwrap();
        let before = read_all(dir.path());
        // A new process reads the same log from the files alone.
        assert_eq!(read_all(dir.path()), before);
        fs::write(dir.path().join(CUT), b"garbage").unwrap();
        let text = String::from_utf8(read_all(dir.path())).unwrap();
        assert!(text.ends_with("line 4999\n"));
        assert_eq!(text.matches("bytes omitted by the operator]").count(), 1);
        append(dir.path(), cap, b"more\n").unwrap();
        assert!(read_all(dir.path()).ends_with(b"line 4999\nmore\n"));
    }
}
