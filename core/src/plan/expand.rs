//! A plan's matrix, expanded into the jobs it stands for.

use super::{
    BootPlanSpec, CALLBACK_ANNOTATION, KERNEL_LABEL, KEY_ANNOTATION, PLAN_LABEL, SIZE_ANNOTATION,
    VARIANT_LABEL,
};
use crate::spec::FieldError;
use crate::Arch;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The most jobs one plan may expand to: a plan is one submission, and a farm's queue is shared.
pub const MAX_PLAN_JOBS: usize = 2000;
/// The longest kernel or variant name (a label value; the job name is built from them).
const MAX_PART: usize = 40;
const MAX_REPEAT: u32 = 20;
/// The fields the matrix itself sets.
const RESERVED: [&str; 2] = ["arch", "kernel"];

/// One job of a plan, before it is a BootJob: its name, its place in the matrix, its metadata,
/// and its spec as fields (the operator checks them with the parser of a submitted BootJob, so a
/// misspelt field in the defaults is refused the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    pub name: String,
    /// `KERNEL/ARCH[/VARIANT]`: the same for the same cell of any plan.
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: Map<String, Value>,
}

/// Expands plan `name` into its jobs, in matrix order (kernel, then arch, then variant, then
/// repeat). Every problem is reported with its field, none creates a partial plan.
pub fn expand(name: &str, plan: &BootPlanSpec) -> Result<Vec<PlannedJob>, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push(FieldError { field, message });
    if !crate::names::is_dns_label(name) {
        err(
            "metadata.name".into(),
            format!("{name:?} is not a valid plan name (a lowercase DNS label: it is also a label value)"),
        );
    }
    if plan.arches.is_empty() {
        err("spec.arches".into(), "at least one arch is required".into());
    }
    if plan.kernels.is_empty() {
        err(
            "spec.kernels".into(),
            "at least one kernel is required".into(),
        );
    }
    let repeat = plan.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        err(
            "spec.repeat".into(),
            format!("{repeat} is out of range (1 to {MAX_REPEAT})"),
        );
    }
    reserved(&plan.defaults, "spec.defaults", &mut err);
    if let Some(cb) = &plan.callback {
        if let Err((field, message)) = crate::callback::check(cb) {
            err(format!("spec.callback.{field}"), message);
        }
    }
    let callback = plan
        .callback
        .as_ref()
        .and_then(|cb| serde_json::to_string(cb).ok());
    for (k, v) in &plan.labels {
        if [PLAN_LABEL, KERNEL_LABEL, VARIANT_LABEL].contains(&k.as_str()) {
            err(
                format!("spec.labels.{k}"),
                format!("{k} is set by the plan itself"),
            );
        } else if !is_label_value(v, crate::names::MAX_LABEL) {
            err(
                format!("spec.labels.{k}"),
                format!("{v:?} is not a valid label value"),
            );
        }
    }
    let mut seen_kernels = BTreeSet::new();
    for (i, k) in plan.kernels.iter().enumerate() {
        let field = format!("spec.kernels[{i}]");
        part_name(&k.name, &format!("{field}.name"), &mut err);
        if !seen_kernels.insert(slug(&k.name)) {
            err(
                format!("{field}.name"),
                format!("{:?}: another kernel of the plan has the same name (names differing only in case, '.' or '_' collide)", k.name),
            );
        }
        if let Some(a) = k.arches.iter().find(|a| !plan.arches.contains(a)) {
            err(
                format!("{field}.arches"),
                format!("{a} is not one of the plan's arches"),
            );
        }
        reserved(&k.spec, &format!("{field}.spec"), &mut err);
    }
    let mut seen_variants = BTreeSet::new();
    for (i, v) in plan.variants.iter().enumerate() {
        let field = format!("spec.variants[{i}]");
        part_name(&v.name, &format!("{field}.name"), &mut err);
        if !seen_variants.insert(slug(&v.name)) {
            err(
                format!("{field}.name"),
                format!("{:?}: another variant has the same name", v.name),
            );
        }
        reserved(&v.spec, &format!("{field}.spec"), &mut err);
    }
    let cells: usize = plan
        .kernels
        .iter()
        .map(|k| arches_of(plan, k).len())
        .sum::<usize>()
        .saturating_mul(plan.variants.len().max(1))
        .saturating_mul(repeat as usize);
    if cells > MAX_PLAN_JOBS {
        err(
            "spec".into(),
            format!("the plan expands to {cells} jobs, more than the {MAX_PLAN_JOBS} allowed"),
        );
    }
    if !errs.is_empty() {
        return Err(errs);
    }

    let variants: Vec<Option<&super::PlanVariant>> = if plan.variants.is_empty() {
        vec![None]
    } else {
        plan.variants.iter().map(Some).collect()
    };
    let mut jobs = Vec::with_capacity(cells);
    for k in &plan.kernels {
        for arch in arches_of(plan, k) {
            for v in &variants {
                let mut spec = plan.defaults.clone();
                spec.extend(k.spec.clone());
                if let Some(v) = v {
                    spec.extend(v.spec.clone());
                }
                let mut kernel = Map::new();
                kernel.insert("url".into(), Value::String(k.url.clone()));
                if let Some(sha) = &k.sha256 {
                    kernel.insert("sha256".into(), Value::String(sha.clone()));
                }
                spec.insert("kernel".into(), Value::Object(kernel));
                spec.insert("arch".into(), Value::String(arch.as_str().into()));
                if let Some(p) = plan.priority {
                    spec.insert("priority".into(), Value::from(p));
                }
                let mut spec = Value::Object(spec);
                substitute(&mut spec, arch, &k.name);
                let Value::Object(spec) = spec else {
                    unreachable!("substitution keeps an object an object")
                };

                let mut key = format!("{}/{arch}", k.name);
                let mut base = format!("{name}-{}-{}", slug(&k.name), slug(arch.as_str()));
                let mut labels = plan.labels.clone();
                labels.insert(PLAN_LABEL.into(), name.into());
                labels.insert(KERNEL_LABEL.into(), k.name.clone());
                if let Some(v) = v {
                    key.push('/');
                    key.push_str(&v.name);
                    base.push('-');
                    base.push_str(&slug(&v.name));
                    labels.insert(VARIANT_LABEL.into(), v.name.clone());
                }
                for r in 1..=repeat {
                    let name = if repeat > 1 {
                        format!("{base}-r{r}")
                    } else {
                        base.clone()
                    };
                    let mut annotations = BTreeMap::from([
                        (KEY_ANNOTATION.to_string(), key.clone()),
                        (SIZE_ANNOTATION.to_string(), cells.to_string()),
                    ]);
                    if let Some(cb) = &callback {
                        annotations.insert(CALLBACK_ANNOTATION.to_string(), cb.clone());
                    }
                    jobs.push(PlannedJob {
                        name,
                        key: key.clone(),
                        labels: labels.clone(),
                        annotations,
                        spec: spec.clone(),
                    });
                }
            }
        }
    }
    Ok(jobs)
}

fn arches_of<'p>(plan: &'p BootPlanSpec, k: &'p super::PlanKernel) -> &'p [Arch] {
    if k.arches.is_empty() {
        &plan.arches
    } else {
        &k.arches
    }
}

fn reserved(fields: &Map<String, Value>, at: &str, err: &mut impl FnMut(String, String)) {
    for r in RESERVED {
        if fields.contains_key(r) {
            err(
                format!("{at}.{r}"),
                format!("{r} is set by the plan's matrix (spec.arches, spec.kernels), not here"),
            );
        }
    }
}

fn part_name(name: &str, field: &str, err: &mut impl FnMut(String, String)) {
    if !is_label_value(name, MAX_PART) {
        err(
            field.into(),
            format!(
                "{name:?} is not a valid name: 1 to {MAX_PART} of [A-Za-z0-9._-], starting and \
                 ending with a letter or digit (it becomes a label value and part of job names)"
            ),
        );
    }
}

/// A Kubernetes label value of at most `max` characters (and not empty).
fn is_label_value(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label value as part of a DNS label: lowercase, `.` and `_` as `-`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .collect()
}

fn substitute(v: &mut Value, arch: &Arch, kernel: &str) {
    match v {
        Value::String(s) if s.contains('{') => {
            *s = s
                .replace("{arch}", arch.as_str())
                .replace("{kernel}", kernel);
        }
        Value::Array(items) => items.iter_mut().for_each(|i| substitute(i, arch, kernel)),
        Value::Object(m) => m.values_mut().for_each(|i| substitute(i, arch, kernel)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanKernel, PlanVariant};
    use crate::spec::BootJobSpec;
    use serde_json::json;

    fn plan(doc: Value) -> BootPlanSpec {
        serde_json::from_value(doc).unwrap()
    }

    fn fields(errs: Vec<FieldError>) -> Vec<String> {
        errs.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_matrix_expands_kernel_by_arch_by_variant_with_substitution() {
        let p = plan(json!({
            "arches": ["x86_64", "arm64"],
            "defaults": {"initrd": {"url": "file:///f/{arch}/initrd.cpio.gz"}, "expect": "poweroff"},
            "kernels": [
                {"name": "v6.12", "url": "file:///k/{kernel}/{arch}/kernel"},
                {"name": "next", "url": "file:///next", "sha256": "ab", "arches": ["arm64"],
                 "spec": {"bootArgs": "quiet"}},
            ],
            "variants": [{"name": "boot"}, {"name": "smoke", "spec": {"commands": ["uname -a"], "expect": "shell"}}],
            "labels": {"series": "s1"},
            "priority": 5,
        }));
        let jobs = expand("nightly", &p).unwrap();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nightly-v6-12-x86-64-boot",
                "nightly-v6-12-x86-64-smoke",
                "nightly-v6-12-arm64-boot",
                "nightly-v6-12-arm64-smoke",
                "nightly-next-arm64-boot",
                "nightly-next-arm64-smoke",
            ]
        );
        let smoke = &jobs[3];
        assert_eq!(smoke.key, "v6.12/arm64/smoke");
        assert_eq!(smoke.annotations[KEY_ANNOTATION], "v6.12/arm64/smoke");
        assert_eq!(smoke.annotations[SIZE_ANNOTATION], "6");
        assert_eq!(smoke.labels[PLAN_LABEL], "nightly");
        assert_eq!(smoke.labels[KERNEL_LABEL], "v6.12");
        assert_eq!(smoke.labels[VARIANT_LABEL], "smoke");
        assert_eq!(smoke.labels["series"], "s1");
        let spec: BootJobSpec = serde_json::from_value(Value::Object(smoke.spec.clone())).unwrap();
        assert_eq!(spec.arch, Arch::Arm64);
        assert_eq!(spec.kernel.url, "file:///k/v6.12/arm64/kernel");
        assert_eq!(spec.initrd.unwrap().url, "file:///f/arm64/initrd.cpio.gz");
        assert_eq!(
            spec.expect.as_deref(),
            Some("shell"),
            "the variant wins over the defaults"
        );
        assert_eq!(spec.commands, ["uname -a"]);
        assert_eq!(spec.priority, 5);
        let next: BootJobSpec =
            serde_json::from_value(Value::Object(jobs[4].spec.clone())).unwrap();
        assert_eq!(next.kernel.sha256.as_deref(), Some("ab"));
        assert_eq!(next.boot_args.as_deref(), Some("quiet"));
        assert_eq!(next.expect.as_deref(), Some("poweroff"));
    }

    #[test]
    fn without_variants_each_cell_is_one_job_and_repeats_share_the_key() {
        let p = plan(
            json!({"arches": ["x86_64"], "kernels": [{"name": "a", "url": "file:///a"}], "repeat": 3}),
        );
        let jobs = expand("p", &p).unwrap();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["p-a-x86-64-r1", "p-a-x86-64-r2", "p-a-x86-64-r3"]);
        assert!(jobs.iter().all(|j| j.key == "a/x86_64"));
        assert!(!jobs[0].labels.contains_key(VARIANT_LABEL));
    }

    #[test]
    fn every_problem_is_reported_with_its_field_and_nothing_expands() {
        let p = BootPlanSpec {
            arches: vec![Arch::X86_64],
            kernels: vec![
                PlanKernel {
                    name: "v6.1".into(),
                    url: "file:///a".into(),
                    sha256: None,
                    arches: vec![Arch::S390x],
                    spec: Map::new(),
                },
                PlanKernel {
                    name: "V6_1".into(),
                    url: "file:///b".into(),
                    sha256: None,
                    arches: vec![],
                    spec: Map::from_iter([("arch".to_string(), json!("arm64"))]),
                },
                PlanKernel {
                    name: "-bad".into(),
                    url: "file:///c".into(),
                    sha256: None,
                    arches: vec![],
                    spec: Map::new(),
                },
            ],
            variants: vec![PlanVariant {
                name: "x".repeat(41),
                spec: Map::new(),
            }],
            defaults: Map::from_iter([("kernel".to_string(), json!({"url": "file:///k"}))]),
            labels: BTreeMap::from([("bootfarm.dev/plan".to_string(), "x".to_string())]),
            repeat: Some(0),
            priority: None,
            callback: Some(crate::callback::CallbackRef {
                url: "gopher://x".into(),
                secret_name: None,
            }),
        };
        let errs = fields(expand("Bad_Name", &p).unwrap_err());
        for want in [
            "metadata.name",
            "spec.repeat",
            "spec.defaults.kernel",
            "spec.labels.bootfarm.dev/plan",
            "spec.kernels[0].arches",
            "spec.kernels[1].name",
            "spec.kernels[1].spec.arch",
            "spec.kernels[2].name",
            "spec.variants[0].name",
            "spec.callback.url",
        ] {
            assert!(
                errs.iter().any(|e| e == want),
                "{want} missing from {errs:?}"
            );
        }
    }

    #[test]
    fn an_empty_matrix_and_an_oversized_one_are_refused() {
        let empty = plan(json!({"arches": [], "kernels": []}));
        let errs = fields(expand("p", &empty).unwrap_err());
        assert_eq!(errs, ["spec.arches", "spec.kernels"]);
        let kernels: Vec<Value> = (0..MAX_PLAN_JOBS / 2 + 1)
            .map(|i| json!({"name": format!("k{i}"), "url": "file:///k"}))
            .collect();
        let big = plan(json!({"arches": ["x86_64", "arm64"], "kernels": kernels}));
        let errs = expand("p", &big).unwrap_err();
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.contains("2002 jobs"), "{}", errs[0].message);
    }
}
