//! Bisection on the standalone farm with real boots: a series of 16 builds (kernel + modules),
//! the first 6 boot cleanly, the rest carry a real panic (their modules archive replaces init
//! with one that exits). The k-ary search finds build 6 in fewer rounds than a binary search,
//! every round is a plan whose jobs keep their verdicts, and a series whose "good" end already
//! fails is refused.

mod farm_support;

use farm_support::*;
use serde_json::Value;

const BUILDS: usize = 16;
const FIRST_BAD: usize = 6;

fn series(fx: &std::path::Path, dir: &std::path::Path, first_bad: usize) -> std::path::PathBuf {
    let mut text = String::from("# build kernel [modules]\n");
    for i in 0..BUILDS {
        // Each build its own kernel file (a link to the fixture: same bytes, its own artifact).
        let kernel = dir.join(format!("build-{i}-kernel"));
        let _ = std::fs::remove_file(&kernel);
        std::os::unix::fs::symlink(fx.join("x86_64/kernel"), &kernel).expect("symlink");
        text.push_str(&format!("c{i:02} file://{}", kernel.display()));
        if i >= first_bad {
            text.push_str(&format!(
                " modules={}",
                url(fx, "x86_64/initrd-panic.cpio.gz")
            ));
        }
        text.push('\n');
    }
    let path = dir.join(format!("series-{first_bad}.txt"));
    std::fs::write(&path, text).expect("write the series");
    path
}

/// `bisect` of `series` with the template, under `name`, `parallel` boots per round.
fn bisect(
    farm: &Farm,
    series: &std::path::Path,
    name: &str,
    parallel: &str,
    extra: &[&str],
    template: &std::path::Path,
) -> std::process::Output {
    let mut args = vec![
        "bisect",
        "--kernels",
        series.to_str().expect("a UTF-8 path"),
        "--template",
        template.to_str().expect("a UTF-8 path"),
        "--name",
        name,
        "--parallel",
        parallel,
    ];
    args.extend_from_slice(extra);
    farm.cli(&args)
}

#[test]
fn a_k_ary_bisection_of_real_boots_finds_the_first_bad_build() {
    let fx = fixtures();
    let dir = tempfile::tempdir().expect("tempdir");
    let farm = Farm::start(Options {
        max_runners: 3,
        allow_local: vec![dir.path().to_path_buf()],
        ..Options::default()
    });
    let template = dir.path().join("job.yaml");
    std::fs::write(
        &template,
        format!(
            "apiVersion: bootfarm.dev/v1alpha1\nkind: BootJob\nmetadata: {{name: template}}\n\
             spec:\n  arch: x86_64\n  kernel: {{url: file:///replaced}}\n  initrd: {{url: \"{}\"}}\n  \
             timeouts: {{total: 240}}\n",
            url(&fx, "x86_64/initrd-poweroff.cpio.gz")
        ),
    )
    .expect("write the template");
    let kernels = series(&fx, dir.path(), FIRST_BAD);
    let out = bisect(&farm, &kernels, "bs", "3", &["--json"], &template);
    assert_eq!(out.status.code(), Some(0), "{}", farm.operator_log());
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(r["state"], "found", "{r}");
    assert_eq!(r["firstBadIndex"], FIRST_BAD);
    assert_eq!(r["lastGoodIndex"], FIRST_BAD - 1);
    assert_eq!(r["firstBad"]["name"], format!("c{FIRST_BAD:02}"));
    assert_eq!(r["lastGood"]["name"], format!("c{:02}", FIRST_BAD - 1));
    // "Bad" was the known-bad build's own panic.
    assert!(
        !r["signature"]["fingerprints"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );
    // The endpoints, then k-ary rounds of 3: 14 unknown builds take 2 rounds (binary: 4).
    let rounds = r["rounds"].as_array().unwrap();
    assert!(rounds.len() <= 3, "{} rounds: {r}", rounds.len());
    let boots = r["boots"].as_u64().unwrap();
    assert!(boots <= 2 + 2 * 3, "{boots} boots");
    assert!(r["skipped"].as_array().unwrap().is_empty());
    // Every round is a plan on the farm, each boot's verdict kept and consistent with the series.
    for round in rounds {
        let plan = round["plan"].as_str().unwrap();
        let (code, body) = farm.http("GET", &format!("/api/v1/plans/{plan}"), None, None);
        assert_eq!(code, 200, "{plan}");
        let view: Value = serde_json::from_slice(&body).unwrap();
        for boot in round["boots"].as_array().unwrap() {
            let i = usize::try_from(boot["index"].as_u64().unwrap()).unwrap();
            let want = if i >= FIRST_BAD { "bad" } else { "good" };
            assert_eq!(boot["outcome"], want, "{boot}");
            let job = view["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["name"] == boot["job"])
                .expect("the boot's job");
            assert_eq!(
                job["result"]["result"],
                if want == "bad" { "fail" } else { "pass" }
            );
        }
    }

    // The text report for people names the answer.
    let out = bisect(&farm, &kernels, "bs2", "7", &[], &template);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "bisect bs2: the first bad kernel is c{FIRST_BAD:02} ("
        )),
        "{text}"
    );

    // A series whose good end already fails cannot be bisected: a clear error, exit 3.
    let all_bad = series(&fx, dir.path(), 0);
    let out = bisect(&farm, &all_bad, "bs3", "2", &[], &template);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the good kernel c00 does not pass"));
}
