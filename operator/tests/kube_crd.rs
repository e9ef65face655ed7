//! The committed CRDs match the Rust types, and every printer column shows a real field.

use bootfarm_core::result::{Stage, Verdict};
use bootfarm_core::spec::{
    BootJob, BootJobSpec, BootJobStatus, JobPhase, ResultSummary, RunnerPool, RunnerPoolSpec,
    RunnerPoolStatus,
};
use bootfarm_core::Arch;
use bootfarm_operator::kube::crd;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use std::path::Path;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate sits in the workspace root")
}

#[test]
fn committed_crds_match_the_rust_types() {
    for (path, generated) in crd::generated().expect("CRDs serialize") {
        let committed = std::fs::read_to_string(repo_root().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p bootfarm-operator -- crdgen --write-to .`"
        );
    }
}

fn creation_time() -> Time {
    Time("2026-01-02T03:04:05Z".parse().expect("a valid timestamp"))
}

fn finished_bootjob() -> BootJob {
    let mut job = BootJob::new("x", BootJobSpec::new(Arch::Arm64, "file:///k"));
    job.metadata.creation_timestamp = Some(creation_time());
    job.status = Some(BootJobStatus {
        phase: JobPhase::Succeeded,
        runner: Some("tcg-arm64-abcde".into()),
        result: Some(ResultSummary {
            result: Verdict::Pass,
            reason: "poweroff".into(),
            stage: Stage::Userspace,
            kernel_version: None,
            accel: None,
            issues: Default::default(),
            tests_passed: 0,
            tests_failed: 0,
            tests_skipped: 0,
            first_failure: None,
        }),
        ..BootJobStatus::default()
    });
    job
}

fn busy_runnerpool() -> RunnerPool {
    let mut pool = RunnerPool::new(
        "tcg-arm64",
        RunnerPoolSpec {
            arches: vec![Arch::Arm64],
            ..RunnerPoolSpec::default()
        },
    );
    pool.metadata.creation_timestamp = Some(creation_time());
    pool.status = Some(RunnerPoolStatus {
        desired: 2,
        pending: 0,
        idle: 1,
        busy: 1,
        queued: 1,
        conditions: vec![],
    });
    pool
}

/// Evaluates the simple `.a.b.c` JSONPath form printer columns use.
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix('.')?;
    rest.split('.')
        .try_fold(doc, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// The schema node a `.a.b.c` path names, so a column cannot point at a field the CRD prunes.
fn schema_at<'a>(root: &'a JSONSchemaProps, path: &str) -> Option<&'a JSONSchemaProps> {
    let rest = path.strip_prefix('.')?;
    rest.split('.')
        .try_fold(root, |s, key| s.properties.as_ref()?.get(key))
}

fn assert_columns_resolve(crd: &CustomResourceDefinition, object: &Value) {
    let version = &crd.spec.versions[0];
    let columns = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns are declared");
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    assert!(!columns.is_empty());
    for column in columns {
        let value = lookup(object, &column.json_path).unwrap_or_else(|| {
            panic!(
                "{} column {} ({}) is empty for a complete object",
                crd.spec.names.kind, column.name, column.json_path
            )
        });
        if !column.json_path.starts_with(".metadata.") {
            assert!(
                schema_at(schema, &column.json_path).is_some(),
                "{} column {} points at {} which the schema does not have",
                crd.spec.names.kind,
                column.name,
                column.json_path
            );
        }
        match column.type_.as_str() {
            "integer" => assert!(value.is_u64() || value.is_i64(), "{}", column.name),
            "date" | "string" => assert!(value.is_string() || value.is_array(), "{}", column.name),
            other => panic!("unexpected column type {other}"),
        }
    }
}

#[test]
fn every_bootjob_printer_column_points_at_a_real_field() {
    let crd = crd::bootjob_crd();
    let names: Vec<&str> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["Arch", "Phase", "Result", "Stage", "Runner", "Age"]);
    let job = serde_json::to_value(finished_bootjob()).expect("serializes");
    assert_columns_resolve(&crd, &job);
    assert_eq!(
        lookup(&job, ".status.phase"),
        Some(&Value::from("Succeeded"))
    );
    assert_eq!(
        lookup(&job, ".status.result.result"),
        Some(&Value::from("pass"))
    );
}

#[test]
fn every_runnerpool_printer_column_points_at_a_real_field() {
    let pool = serde_json::to_value(busy_runnerpool()).expect("serializes");
    assert_columns_resolve(&crd::runnerpool_crd(), &pool);
}

#[test]
fn a_column_path_missing_from_the_object_is_caught() {
    // The checker itself must be able to fail.
    let job = serde_json::to_value(finished_bootjob()).expect("serializes");
    assert!(lookup(&job, ".status.results.result").is_none());
    assert!(lookup(&job, ".status.completionTime").is_none());
    let crd = crd::bootjob_crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    assert!(schema_at(schema, ".status.verdict").is_none());
}

/// Kubernetes 1.20 rejects or prunes what newer servers accept: the schemas must be structural
/// without CEL, and preserve unknown fields only where a passthrough is intended.
#[test]
fn the_schemas_are_structural_for_a_1_20_apiserver() {
    fn walk(path: &str, s: &JSONSchemaProps, preserved: &mut Vec<String>) {
        assert!(
            s.type_.is_some() || s.x_kubernetes_int_or_string.is_some(),
            "{path}: no type"
        );
        assert!(
            s.x_kubernetes_validations.is_none(),
            "{path}: CEL needs Kubernetes 1.25+"
        );
        assert!(
            s.one_of.is_none() && s.any_of.is_none() && s.all_of.is_none(),
            "{path}: combinators are not structural here"
        );
        if s.x_kubernetes_preserve_unknown_fields == Some(true) {
            preserved.push(path.to_string());
        }
        for (k, v) in s.properties.iter().flatten() {
            walk(&format!("{path}.{k}"), v, preserved);
        }
        if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
            walk(&format!("{path}[]"), items, preserved);
        }
    }
    let mut preserved = Vec::new();
    for crd in [crd::bootjob_crd(), crd::runnerpool_crd()] {
        let v = &crd.spec.versions[0];
        let schema = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema");
        walk(&crd.spec.names.kind, schema, &mut preserved);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
    }
    assert_eq!(
        preserved,
        [
            "RunnerPool.spec.template.resources",
            "RunnerPool.spec.template.tolerations[]"
        ]
    );
}
