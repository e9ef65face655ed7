//! LAVA test-shell signals (`<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass>` and friends).

use crate::result::TestOutcome;

#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    StartRun { run: String },
    EndRun { run: String },
    TestCase(Case),
    StartTc(String),
    EndTc(String),
    TestSetStart(String),
    TestSetStop,
    TestRaise(String),
    RunnerExit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub result: TestOutcome,
    pub measurement: Option<f64>,
    pub units: Option<String>,
}

/// Find a signal anywhere in a line (after a kernel timestamp, after a shell's `+ echo`).
pub fn parse(line: &str) -> Option<Signal> {
    if let Some(start) = line.find("<LAVA_SIGNAL_") {
        let rest = &line[start + "<LAVA_SIGNAL_".len()..];
        let end = rest.find('>')?;
        let body = rest[..end].trim();
        let (name, params) = match body.split_once(char::is_whitespace) {
            Some((n, p)) => (n, p.trim()),
            None => (body, ""),
        };
        let first = |p: &str| p.split_whitespace().next().unwrap_or("").to_string();
        return match name {
            "STARTRUN" => Some(Signal::StartRun { run: first(params) }),
            "ENDRUN" => Some(Signal::EndRun { run: first(params) }),
            "TESTCASE" => case(params).map(Signal::TestCase),
            "STARTTC" => Some(Signal::StartTc(first(params))),
            "ENDTC" => Some(Signal::EndTc(first(params))),
            "TESTSET" => {
                let mut it = params.split_whitespace();
                match it.next() {
                    Some("START") => Some(Signal::TestSetStart(it.next()?.to_string())),
                    Some("STOP") => Some(Signal::TestSetStop),
                    _ => None,
                }
            }
            "TESTRAISE" => Some(Signal::TestRaise(params.to_string())),
            _ => None,
        };
    }
    if line.contains("<LAVA_TEST_RUNNER EXIT>") {
        return Some(Signal::RunnerExit);
    }
    // The helper-less fallback: `<TEST_CASE_ID=x RESULT=pass>`.
    let start = line.find("<TEST_CASE_ID=")?;
    let rest = &line[start + 1..];
    let end = rest.find('>')?;
    case(&rest[..end]).map(Signal::TestCase)
}

/// `KEY=value` pairs in any order.
fn case(params: &str) -> Option<Case> {
    let mut id = None;
    let mut result = None;
    let mut measurement = None;
    let mut units = None;
    for kv in params.split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "TEST_CASE_ID" => id = Some(v.to_string()),
            "RESULT" => result = Some(outcome(v)),
            "MEASUREMENT" => measurement = v.parse::<f64>().ok().filter(|m| m.is_finite()),
            "UNITS" => units = Some(v.to_string()),
            _ => {}
        }
    }
    let id = id.filter(|i| !i.is_empty())?;
    Some(Case {
        id,
        result: result?,
        measurement,
        units,
    })
}

fn outcome(v: &str) -> TestOutcome {
    match v.to_ascii_lowercase().as_str() {
        "pass" => TestOutcome::Pass,
        "fail" => TestOutcome::Fail,
        "skip" => TestOutcome::Skip,
        _ => TestOutcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_any_order() {
        let a =
            parse("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=lat RESULT=pass UNITS=ms MEASUREMENT=1.5>");
        let b =
            parse("x <LAVA_SIGNAL_TESTCASE MEASUREMENT=1.5 UNITS=ms RESULT=pass TEST_CASE_ID=lat>");
        assert_eq!(a, b);
        let Some(Signal::TestCase(c)) = a else {
            panic!("not a case")
        };
        assert_eq!(c.measurement, Some(1.5));
        assert_eq!(c.units.as_deref(), Some("ms"));
    }

    #[test]
    fn fallback_and_sets() {
        assert_eq!(
            parse("<TEST_CASE_ID=a RESULT=fail>"),
            Some(Signal::TestCase(Case {
                id: "a".into(),
                result: TestOutcome::Fail,
                measurement: None,
                units: None
            }))
        );
        assert_eq!(
            parse("<LAVA_SIGNAL_TESTSET START net>"),
            Some(Signal::TestSetStart("net".into()))
        );
        assert_eq!(
            parse("<LAVA_SIGNAL_TESTSET STOP>"),
            Some(Signal::TestSetStop)
        );
        assert_eq!(
            parse("<LAVA_SIGNAL_STARTRUN 0_smoke 1234-abcd>"),
            Some(Signal::StartRun {
                run: "0_smoke".into()
            })
        );
        assert_eq!(parse("<LAVA_SIGNAL_TESTCASE RESULT=pass>"), None);
    }
}
