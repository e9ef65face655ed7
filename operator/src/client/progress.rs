//! What `wait` shows and how it ends. Pure: the caller does the I/O.

use serde_json::Value;
use std::time::Duration;

/// Exit status for a job's final phase: 0 Succeeded, 1 Failed, 3 Error or Canceled.
pub fn exit_code(phase: &str) -> Option<i32> {
    match phase {
        "Succeeded" => Some(0),
        "Failed" => Some(1),
        "Error" | "Canceled" => Some(3),
        _ => None,
    }
}

/// Exit status when `wait --timeout` runs out before the job finishes.
pub const EXIT_TIMEOUT: i32 = 4;

pub fn phase(job: &Value) -> &str {
    job["status"]["phase"].as_str().unwrap_or("Pending")
}

fn fmt_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One progress line: name, phase, the stage the console shows, attempt, elapsed.
pub fn line(job: &Value, live_stage: Option<&str>, elapsed: Duration) -> String {
    let name = job["metadata"]["name"].as_str().unwrap_or("?");
    let mut s = format!("{name}  {}", phase(job));
    let stage = job["status"]["result"]["stage"].as_str().or(live_stage);
    if let Some(stage) = stage {
        s.push_str(&format!("  stage={stage}"));
    }
    if let Some(a) = job["status"]["attempts"].as_u64().filter(|a| *a > 1) {
        s.push_str(&format!("  attempt={a}"));
    }
    if let Some(r) = job["status"]["runner"].as_str() {
        s.push_str(&format!("  runner={r}"));
    }
    s.push_str(&format!("  {}", fmt_elapsed(elapsed)));
    s
}

/// The closing summary of a finished job.
pub fn verdict(job: &Value) -> String {
    let name = job["metadata"]["name"].as_str().unwrap_or("?");
    let st = &job["status"];
    let mut s = format!("{name}: {}", phase(job));
    let r = &st["result"];
    if let Some(result) = r["result"].as_str() {
        s.push_str(&format!(
            " (result {result}, stage {}",
            r["stage"].as_str().unwrap_or("?")
        ));
        if let Some(k) = r["kernelVersion"].as_str() {
            s.push_str(&format!(", kernel {k}"));
        }
        s.push(')');
        if let Some(f) = r["firstFailure"].as_str() {
            s.push_str(&format!("\n  first failure: {f}"));
        } else if let Some(reason) = r["reason"].as_str().filter(|x| !x.is_empty()) {
            s.push_str(&format!("\n  reason: {reason}"));
        }
    }
    // The condition of the final phase says why (canceled, invalid, all attempts failed...).
    if let Some(conds) = st["conditions"].as_array() {
        if let Some(c) = conds
            .iter()
            .find(|c| c["type"] == st["phase"] && c["status"] == "True")
        {
            if let Some(m) = c["message"].as_str().filter(|m| !m.is_empty()) {
                s.push_str(&format!("\n  {m}"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exit_codes_follow_the_runner_convention() {
        assert_eq!(exit_code("Succeeded"), Some(0));
        assert_eq!(exit_code("Failed"), Some(1));
        assert_eq!(exit_code("Error"), Some(3));
        assert_eq!(exit_code("Canceled"), Some(3));
        assert_eq!(exit_code("Running"), None);
        assert_eq!(exit_code("Queued"), None);
    }

    #[test]
    fn progress_line_shows_phase_stage_and_elapsed() {
        let job = json!({"metadata": {"name": "j1"}, "status": {"phase": "Running", "attempts": 2, "runner": "r-1"}});
        assert_eq!(
            line(&job, Some("kernel"), Duration::from_secs(75)),
            "j1  Running  stage=kernel  attempt=2  runner=r-1  1m15s"
        );
        let queued = json!({"metadata": {"name": "j2"}, "status": {"phase": "Queued"}});
        assert_eq!(
            line(&queued, None, Duration::from_secs(3)),
            "j2  Queued  3s"
        );
    }

    #[test]
    fn verdict_names_result_stage_and_failure() {
        let job = json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "result": {"result": "fail", "stage": "kernel", "kernelVersion": "6.1.0",
                       "firstFailure": "Kernel panic - not syncing: Attempted to kill init!"}}});
        let v = verdict(&job);
        assert!(
            v.starts_with("p: Failed (result fail, stage kernel, kernel 6.1.0)"),
            "{v}"
        );
        assert!(v.contains("Attempted to kill init"), "{v}");
    }
}
