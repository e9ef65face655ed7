//! Measure the classifier on a directory of syzkaller-style crash reports (the files of
//! syzkaller's `pkg/report/testdata/linux/report/`, kept outside the repository): each file is
//! `TITLE:`/`FRAME:`/`CORRUPTED:`... headers, a blank line, the console text, and maybe a
//! `REPORT:` section (syzkaller's expected report, not console output: cut off).
//!
//! `cargo run --release -p bootfarm-core --example eval_reports -- DIR [-v]`
//!
//! Prints one line per mismatch (`-v`: per file) and the totals. The report's issue is the
//! first one that is not a one-line errno or user-space fault line (how many logs have the
//! right kind on their very first issue is printed too). Its kind is compared with the kind the
//! title implies (`expected_kind`), its title with syzbot's, its function with the reference
//! frame (`FRAME:`, else the title's word after its last ` in `, the first of `X / Y`), the
//! function only over reports not marked `CORRUPTED: Y`. A file with an empty title is a
//! crash-free log: it must produce no fatal issue.

use bootfarm_core::console::{Classifier, ClassifierConfig};
use bootfarm_core::result::Issue;
use std::path::{Path, PathBuf};

/// The bootfarm kind a syzbot title implies (the README's kinds). Checked in order: the
/// sanitiser and lockdep families first, then the generic `BUG:`/`WARNING` heads. `None`:
/// a title bootfarm has no kind for (left out of the kind metric).
fn expected_kind(title: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("KASAN:", "kasan"),
        ("KMSAN:", "kmsan"),
        ("KCSAN:", "kcsan"),
        ("KFENCE:", "kfence"),
        ("UBSAN:", "ubsan"),
        ("memory leak", "memleak"),
        ("possible deadlock", "lockdep"),
        ("inconsistent lock state", "lockdep"),
        ("suspicious RCU usage", "lockdep"),
        ("bad unlock balance", "lockdep"),
        ("held lock freed", "lockdep"),
        ("still has locks held", "lockdep"),
        ("lock held when returning to user space", "lockdep"),
        ("nested lock was not taken", "lockdep"),
        ("WARNING: locking bug", "lockdep"),
        ("trying to register non-static key", "lockdep"),
        ("MAX_LOCKDEP", "lockdep"),
        ("MAX_LOCK_DEPTH", "lockdep"),
        ("looking up invalid subclass", "lockdep"),
        ("Invalid wait context", "lockdep"),
        ("INFO: rcu detected stall", "rcu_stall"),
        ("INFO: rcu_", "rcu_stall"),
        ("INFO: task hung", "hung_task"),
        ("INFO: task can't die", "hung_task"),
        ("BUG: soft lockup", "soft_lockup"),
        ("hard LOCKUP", "hard_lockup"),
        ("general protection fault", "fault"),
        ("BUG: unable to handle kernel", "oops"),
        ("BUG: Unable to handle kernel", "oops"),
        ("Unable to handle kernel", "oops"),
        ("Internal error", "oops"),
        ("divide error", "oops"),
        ("stack segment", "oops"),
        ("PANIC: double fault", "oops"),
        ("invalid opcode", "invalid_opcode"),
        ("kernel panic", "panic"),
        ("kernel stack overflow", "panic"),
        ("kernel BUG", "bug"),
        ("BUG:", "bug"),
        ("WARNING", "warning"),
        ("out of memory", "oom"),
    ];
    TABLE
        .iter()
        .find(|(p, _)| title.contains(p))
        .map(|(_, k)| *k)
}

struct Report {
    name: String,
    title: String,
    corrupted: bool,
    frame: Option<String>,
    log: Vec<u8>,
}

/// Titles whose ` in ` names no function.
const FIXED_TITLES: &[&str] = &["BUG: Dentry still in use in unmount"];

fn reference_function(title: &str) -> Option<String> {
    if FIXED_TITLES.contains(&title) {
        return None;
    }
    let (_, rest) = title.rsplit_once(" in ")?;
    let f: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!f.is_empty() && f != "corrupted").then_some(f)
}

fn parse(path: &Path) -> Option<Report> {
    let bytes = std::fs::read(path).ok()?;
    // No headers at all (a crash-free log): the file starts with the blank line.
    let split = if bytes.first() == Some(&b'\n') {
        0
    } else {
        bytes.windows(2).position(|w| w == b"\n\n")? + 1
    };
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let field = |k: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let mut log = bytes[split + 1..].to_vec();
    if let Some(i) = log.windows(9).position(|w| w == b"\nREPORT:\n") {
        log.truncate(i + 1);
    }
    Some(Report {
        name: path.file_name()?.to_str()?.to_string(),
        title: field("TITLE:").unwrap_or_default(),
        corrupted: field("CORRUPTED:").is_some_and(|v| v == "Y"),
        frame: field("FRAME:"),
        log,
    })
}

fn classify(log: &[u8]) -> Vec<Issue> {
    let mut cl = Classifier::new(ClassifierConfig::default());
    cl.feed(log);
    cl.finish().issues
}

#[derive(Default)]
struct Totals {
    crashes: usize,
    kinds_known: usize,
    kind_ok: usize,
    title_ok: usize,
    with_function: usize,
    function_ok: usize,
    clean: usize,
    clean_ok: usize,
    /// The very first issue (errno lines included) has the right kind.
    first_strict: usize,
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let Some(dir) = args.iter().find(|a| !a.starts_with('-')) else {
        eprintln!("usage: eval_reports DIR [-v]");
        std::process::exit(2);
    };
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            eprintln!("{dir}: {e}");
            std::process::exit(2);
        }
    };
    paths.sort_by_key(|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (n.parse::<u64>().unwrap_or(u64::MAX), n.to_string())
    });
    let mut t = Totals::default();
    for p in &paths {
        let Some(r) = parse(p) else { continue };
        let issues = classify(&r.log);
        if r.title.is_empty() {
            t.clean += 1;
            let fatal: Vec<&Issue> = issues.iter().filter(|i| i.fatal).collect();
            if fatal.is_empty() {
                t.clean_ok += 1;
            } else {
                println!("{}: CLEAN but fatal {:?}", r.name, fatal[0].title);
            }
            continue;
        }
        t.crashes += 1;
        // The report's issue: one-line errno and user-space lines before it are not the crash.
        let first = issues
            .iter()
            .find(|i| !matches!(i.kind.as_str(), "error_code" | "user_fault"));
        t.first_strict += usize::from(
            expected_kind(&r.title).is_some()
                && issues.first().map(|i| i.kind.as_str()) == expected_kind(&r.title),
        );
        let got_kind = first.map(|i| i.kind.as_str()).unwrap_or("-");
        let got_title = first.map(|i| i.title.as_str()).unwrap_or("-");
        let got_fn = first.and_then(|i| i.function.clone());
        let want_kind = expected_kind(&r.title);
        let kind_ok = want_kind == Some(got_kind);
        if want_kind.is_some() {
            t.kinds_known += 1;
            t.kind_ok += usize::from(kind_ok);
        }
        let title_ok = got_title == r.title;
        t.title_ok += usize::from(title_ok);
        let want_fn = r.frame.clone().or_else(|| reference_function(&r.title));
        let mut fn_ok = true;
        if !r.corrupted {
            if let Some(want) = &want_fn {
                t.with_function += 1;
                fn_ok = got_fn.as_deref() == Some(want.as_str());
                t.function_ok += usize::from(fn_ok);
            }
        }
        let mark = |ok: bool| if ok { "ok" } else { "XX" };
        if verbose || !kind_ok || !fn_ok || !title_ok {
            println!(
                "{}: kind {} {}/{} | fn {} {:?}/{:?} | title {} {:?} want {:?}",
                r.name,
                mark(kind_ok || want_kind.is_none()),
                got_kind,
                want_kind.unwrap_or("?"),
                mark(fn_ok),
                got_fn,
                want_fn,
                mark(title_ok),
                got_title,
                r.title
            );
        }
    }
    println!(
        "reports {} | kind {}/{} {:.1}% (first issue of all: {}) | title {}/{} {:.1}% | function {}/{} {:.1}% | clean {}/{}",
        t.crashes,
        t.kind_ok,
        t.kinds_known,
        pct(t.kind_ok, t.kinds_known),
        t.first_strict,
        t.title_ok,
        t.crashes,
        pct(t.title_ok, t.crashes),
        t.function_ok,
        t.with_function,
        pct(t.function_ok, t.with_function),
        t.clean_ok,
        t.clean
    );
}
