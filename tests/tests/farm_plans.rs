//! Plans and compare on the standalone farm, with real boots: two plans of the same matrix where
//! the candidate's `stable` kernel panics (a real panicking init). `wait --plan` exits by the
//! plan's outcome, `compare` names the regression (CLI, HTTP, and saved result directories), and
//! the same plan twice has nothing to report.

mod farm_support;

use farm_support::*;
use serde_json::{json, Value};

fn plan(fx: &std::path::Path, name: &str, stable_initrd: &str) -> Value {
    json!({
        "apiVersion": "bootfarm.dev/v1alpha1",
        "kind": "BootPlan",
        "metadata": {"name": name},
        "spec": {
            "arches": ["x86_64"],
            "defaults": {
                "initrd": {"url": url(fx, "{arch}/initrd-poweroff.cpio.gz")},
                "timeouts": {"total": 240},
            },
            "kernels": [
                {"name": "mainline", "url": url(fx, "{arch}/kernel")},
                {"name": "stable", "url": url(fx, "{arch}/kernel"),
                 "spec": {"initrd": {"url": url(fx, stable_initrd)}}},
            ],
            "labels": {"series": name},
        }
    })
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn a_plan_is_one_submission_and_compare_names_what_regressed() {
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    for (name, stable) in [
        ("base", "x86_64/initrd-poweroff.cpio.gz"),
        ("cand", "x86_64/initrd-panic.cpio.gz"),
    ] {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, plan(&fx, name, stable).to_string()).unwrap();
        let out = farm.cli(&["submit", "--plan", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", farm.operator_log());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    }

    // A plan of the same name again, and an invalid one: refused whole, nothing created.
    let again = plan(&fx, "base", "x86_64/initrd-poweroff.cpio.gz").to_string();
    let (code, body) = farm.http(
        "POST",
        "/api/v1/plans",
        None,
        Some(("application/json", again.as_bytes())),
    );
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    let mut bad = plan(&fx, "bad", "x86_64/initrd-poweroff.cpio.gz");
    bad["spec"]["defaults"]["bootArg"] = json!("typo");
    let (code, body) = farm.http(
        "POST",
        "/api/v1/plans",
        None,
        Some(("application/json", bad.to_string().as_bytes())),
    );
    assert_eq!(code, 422);
    let err = json_of(&body);
    assert_eq!(err["error"]["field"], "spec.bootArg", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plan job bad-mainline-x86-64"),
        "{err}"
    );
    assert_eq!(farm.http("GET", "/api/v1/plans/bad", None, None).0, 404);

    // wait --plan on a terminal (a pseudo-terminal from util-linux's script): a live table
    // redrawn in place while the plan runs, then the report.
    let wait = format!(
        "{} wait --plan base --timeout 400",
        bin_dir().join("bootfarm-operator").display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &wait, "/dev/null"])
        .env("BOOTFARM_SERVER", &farm.url)
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux)");
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(0), "{screen}");
    assert!(
        screen.contains("base  Running  "),
        "no live counts line: {screen:?}"
    );
    assert!(
        screen.contains("\x1b["),
        "nothing redrawn in place: {screen:?}"
    );
    assert!(screen.contains("stable/x86_64"), "no job rows: {screen:?}");
    assert!(
        screen.contains("base: Succeeded (2 jobs: 2 pass)"),
        "{screen:?}"
    );

    // Piped: one line per change (every job on the first look), then the report.
    let out = farm.cli(&["wait", "--plan", "base", "--timeout", "400"]);
    assert_eq!(out.status.code(), Some(0), "{}", farm.operator_log());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("base: Succeeded (2 jobs: 2 pass)"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("base-stable-x86-64  stable/x86_64"),
        "{stderr}"
    );
    let out = farm.cli(&["wait", "--plan", "cand", "--timeout", "400"]);
    assert_eq!(out.status.code(), Some(1), "{}", farm.operator_log());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("cand: Failed (2 jobs: 1 fail, 1 pass)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cand-stable-x86-64") && stdout.contains("panic"),
        "{stdout}"
    );

    // The plan's summary over HTTP, and its jobs carry its labels.
    let (code, body) = farm.http("GET", "/api/v1/plans/cand", None, None);
    assert_eq!(code, 200);
    let view = json_of(&body);
    assert_eq!(view["status"]["phase"], "Failed", "{view}");
    assert_eq!(view["status"]["jobs"], 2);
    assert_eq!(view["status"]["results"], json!({"fail": 1, "pass": 1}));
    assert_eq!(view["status"]["failing"][0]["key"], "stable/x86_64");
    let job = farm.job("cand-stable-x86-64");
    assert_eq!(job["metadata"]["labels"]["bootfarm.dev/plan"], "cand");
    assert_eq!(job["metadata"]["labels"]["series"], "cand");
    assert_eq!(
        job["metadata"]["annotations"]["bootfarm.dev/plan-key"],
        "stable/x86_64"
    );

    // compare by plan name: the stable kernel's boot regressed, with a new panic.
    let out = farm.cli(&["compare", "base", "cand", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&out.stdout);
    assert_eq!(report["matched"], 2);
    let regressions = report["regressions"].as_array().unwrap();
    assert!(
        regressions.iter().any(|r| r["key"] == "stable/x86_64"
            && r["subject"] == "boot"
            && r["baseline"] == "pass"
            && r["candidate"] == "fail"),
        "{report}"
    );
    assert!(
        regressions.iter().any(|r| r["subject"] == "issue"
            && r["name"]
                .as_str()
                .unwrap()
                .contains("Attempted to kill init")),
        "{report}"
    );
    assert!(
        regressions.iter().all(|r| r["key"] == "stable/x86_64"),
        "{report}"
    );
    // The reverse is a fix; a plan against itself has nothing to say; a selector works as a side.
    let out = farm.cli(&["compare", "cand", "base"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FIXES\n  stable/x86_64  boot: fail -> pass"),
        "{text}"
    );
    let out = farm.cli(&["compare", "series=base", "base"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("2 matched: 0 regressions, 0 fixes"));

    // The same view over HTTP.
    let (code, body) = farm.http(
        "GET",
        "/api/v1/compare?baseline=base&candidate=cand",
        None,
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(json_of(&body)["regressions"], report["regressions"]);
    assert_eq!(
        farm.http("GET", "/api/v1/compare?baseline=base", None, None)
            .0,
        400
    );
    assert_eq!(
        farm.http(
            "GET",
            "/api/v1/compare?baseline=base&candidate=nope",
            None,
            None
        )
        .0,
        404
    );

    // Saved result documents, matched by file name.
    for (plan, side) in [("base", "b"), ("cand", "c")] {
        let side = dir.path().join(side);
        std::fs::create_dir(&side).unwrap();
        for kernel in ["mainline", "stable"] {
            let out = farm.cli(&[
                "get",
                &format!("{plan}-{kernel}-x86-64"),
                "--result",
                "-o",
                "json",
            ]);
            assert!(out.status.success());
            std::fs::write(side.join(format!("{kernel}.json")), &out.stdout).unwrap();
        }
    }
    let (b, c) = (dir.path().join("b"), dir.path().join("c"));
    let out = farm.cli(&["compare", b.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("REGRESSIONS\n  stable  boot: pass -> fail"),
        "{text}"
    );
    // A directory against a plan: keys differ (file names against plan keys), nothing matches,
    // which is reported as missing, not as success.
    let out = farm.cli(&["compare", b.to_str().unwrap(), "base"]);
    assert_eq!(out.status.code(), Some(1));
    let out = farm.cli(&["compare", "/nonexistent-dir-or-plan", "base"]);
    assert_eq!(out.status.code(), Some(3));
}
