//! Every real console log recorded in `fixtures/logs/` is classified and compared EXACTLY with
//! its reviewed expected result in `fixtures/expected/<name>.json`. `BLESS=1` rewrites the
//! expected files (review the diff by eye against the log before committing it).

use bootfarm_core::console::{Classifier, ClassifierConfig};
use bootfarm_core::verdict::{decide, result_from, End, Expect};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn logs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir().join("logs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn classify(bytes: &[u8], chunk: Option<&mut dyn FnMut() -> usize>) -> serde_json::Value {
    let mut c = Classifier::new(ClassifierConfig::default());
    match chunk {
        None => {
            c.feed(bytes);
        }
        Some(next) => {
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = next().clamp(1, rest.len());
                c.feed(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
    let class = c.finish();
    let d = decide(&class, Expect::Auto, End::LogEnded);
    serde_json::to_value(result_from(class, d)).expect("serialisable")
}

#[test]
fn real_logs_classify_exactly_as_reviewed() {
    let logs = logs();
    assert!(!logs.is_empty(), "no real logs in {}", dir().display());
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for log in &logs {
        let name = log
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let bytes = std::fs::read(log).expect("readable log");
        let got = classify(&bytes, None);
        let expected_path = dir().join("expected").join(format!("{name}.json"));
        if bless {
            let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
            std::fs::write(&expected_path, text).expect("write expected");
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!(
                "{name}: no expected file {}",
                expected_path.display()
            ));
            continue;
        };
        let want: serde_json::Value = serde_json::from_str(&text).expect("expected json parses");
        if got != want {
            failures.push(format!(
                "{name}: got\n{}\nwant\n{}",
                serde_json::to_string_pretty(&got).unwrap_or_default(),
                text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn chunking_a_real_log_never_changes_the_result() {
    for log in logs() {
        let bytes = std::fs::read(&log).expect("readable log");
        let whole = classify(&bytes, None);
        for seed in [1u64, 7, 1234] {
            let mut s = seed;
            let mut next = move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 97) as usize + 1
            };
            let chunked = classify(&bytes, Some(&mut next));
            assert_eq!(whole, chunked, "{} with seed {seed}", log.display());
        }
        let mut one = || 1usize;
        assert_eq!(
            whole,
            classify(&bytes, Some(&mut one)),
            "{} byte by byte",
            log.display()
        );
    }
}
