//! Real crash reports from syzkaller's `pkg/report/testdata/linux/report/` (see the README in
//! `fixtures/syzkaller/`): each is classified as a console log, and its first issue must
//! have the kind given in the fixture and exactly syzbot's title and guilty frame.
//!
//! A fixture is syzkaller's file as it is (`TITLE:`, `FRAME:`, ... headers, a blank line, the
//! report) with `KIND:` (and, where the title names no frame, `FUNCTION:`) added on top.

use bootfarm_core::console::{Classifier, ClassifierConfig};
use std::path::{Path, PathBuf};

struct Case {
    name: String,
    kind: String,
    title: String,
    function: Option<String>,
    log: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syzkaller");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/syzkaller")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable fixture");
            let split = bytes
                .windows(2)
                .position(|w| w == b"\n\n")
                .expect("headers, a blank line, the report");
            let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
            let field = |k: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            let title = field("TITLE:").expect("TITLE");
            // syzbot's frame is the word after the title's last ` in `.
            let from_title = title
                .rsplit_once(" in ")
                .map(|(_, f)| {
                    f.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .filter(|f| !f.is_empty());
            let function = match field("FUNCTION:") {
                Some(f) if f == "-" => None,
                Some(f) => Some(f),
                None => field("FRAME:").or(from_title),
            };
            Case {
                name: p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string(),
                kind: field("KIND:").expect("KIND"),
                title,
                function,
                log: bytes[split + 2..].to_vec(),
            }
        })
        .collect()
}

#[test]
fn syzkaller_reports_have_syzbots_kind_title_and_frame() {
    let cases = cases();
    let mut failures = Vec::new();
    let (mut kinds, mut functions) = (0, 0);
    for c in &cases {
        let mut cl = Classifier::new(ClassifierConfig::default());
        cl.feed(&c.log);
        let class = cl.finish();
        let Some(first) = class.issues.first() else {
            failures.push(format!("{}: no issue", c.name));
            continue;
        };
        let kind_ok = first.kind.as_str() == c.kind;
        let fn_ok = first.function == c.function;
        kinds += usize::from(kind_ok);
        functions += usize::from(fn_ok);
        if !kind_ok || !fn_ok || first.title != c.title {
            failures.push(format!(
                "{}: got {} {:?} {:?}, want {} {:?} {:?}",
                c.name,
                first.kind.as_str(),
                first.title,
                first.function,
                c.kind,
                c.title,
                c.function
            ));
        }
    }
    eprintln!(
        "{} syzkaller reports: kind {}/{}, function {}/{}",
        cases.len(),
        kinds,
        cases.len(),
        functions,
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 9, "only {} fixtures", cases.len());
}

#[test]
fn chunking_a_syzkaller_report_never_changes_the_result() {
    for c in cases() {
        let mut whole = Classifier::new(ClassifierConfig::default());
        whole.feed(&c.log);
        let mut bytewise = Classifier::new(ClassifierConfig::default());
        for chunk in c.log.chunks(7) {
            bytewise.feed(chunk);
        }
        assert_eq!(whole.finish(), bytewise.finish(), "{}", c.name);
    }
}
