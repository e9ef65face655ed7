//! The BootPlan: many jobs as one submission. A matrix of kernels × arches × (optional) variants
//! over shared defaults, expanded into BootJobs that carry the plan's labels, and summarised from
//! them. Pure: the operator does the creating and the listing.

mod expand;
mod summary;

pub use expand::{expand, PlannedJob, MAX_PLAN_JOBS};
pub use summary::{summarize_plan, FailingJob, PlanJob, PlanPhase, MAX_FAILING_LISTED};

use crate::Arch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "crd")]
use kube::CustomResource;
#[cfg(feature = "schema")]
use schemars::JsonSchema;

/// Every job of a plan carries its name in this label.
pub const PLAN_LABEL: &str = "bootfarm.dev/plan";
/// The kernel's name in the plan (its role: `defconfig`, `v6.12-rc1`, `commit-3`).
pub const KERNEL_LABEL: &str = "bootfarm.dev/plan-kernel";
/// The variant's name, on jobs of a plan that has variants.
pub const VARIANT_LABEL: &str = "bootfarm.dev/plan-variant";
/// The job's place in the matrix, `KERNEL/ARCH[/VARIANT]`: what `compare` matches jobs by.
pub const KEY_ANNOTATION: &str = "bootfarm.dev/plan-key";
/// How many jobs the plan expands to, on each of them: a plan's summary knows its size from any
/// one job, even while the others are still being created.
pub const SIZE_ANNOTATION: &str = "bootfarm.dev/plan-jobs";
/// The plan's callback (JSON), on each of its jobs: whichever ends last sends it.
pub const CALLBACK_ANNOTATION: &str = "bootfarm.dev/plan-callback";

/// A matrix of boots over shared defaults.
///
/// ```yaml
/// apiVersion: bootfarm.dev/v1alpha1
/// kind: BootPlan
/// metadata: {name: nightly}
/// spec:
///   arches: [x86_64, arm64]
///   defaults: {initrd: {url: "https://example.org/{arch}/rootfs.cpio.gz"}, expect: poweroff}
///   kernels:
///     - {name: v6-12, url: "https://example.org/v6.12/{arch}/kernel"}
///     - {name: v6-13, url: "https://example.org/v6.13/{arch}/kernel", arches: [x86_64]}
///   variants:                       # optional: one job per variant of each kernel and arch
///     - {name: boot}
///     - {name: smoke, spec: {login: root, commands: ["uname -a"]}}
/// ```
/// `{arch}` and `{kernel}` in any string of the defaults, a kernel or a variant are replaced
/// by the job's arch and kernel name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "bootfarm.dev",
        version = "v1alpha1",
        kind = "BootPlan",
        namespaced,
        shortname = "bp",
        status = "PlanSummary",
        printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
        printcolumn = r#"{"name":"Jobs","type":"integer","jsonPath":".status.jobs"}"#,
        printcolumn = r#"{"name":"Finished","type":"integer","jsonPath":".status.finished"}"#,
        printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BootPlanSpec {
    /// The arches each kernel boots on (a kernel's own `arches` narrows them).
    pub arches: Vec<Arch>,
    pub kernels: Vec<PlanKernel>,
    /// Optional: one job per variant for each kernel and arch (none: one job each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<PlanVariant>,
    /// Fields of a BootJob spec shared by every job (`initrd`, `expect`, `timeouts`...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::spec::preserve_unknown")
    )]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// Labels put on every job besides the plan's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Boots of each matrix cell (default 1): more than one shows flaky cases to `compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Higher runs first (every job of the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Where the plan's summary is POSTed once every job ended (jobs may carry their own in
    /// the defaults too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callback::CallbackRef>,
}

/// One kernel of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlanKernel {
    /// The kernel's name in the plan: a label value (`[A-Za-z0-9._-]`, at most 40 characters).
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Only these of the plan's arches (default: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<Arch>,
    /// BootJob spec fields for this kernel's jobs, over the plan's defaults.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::spec::preserve_unknown")
    )]
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// One variant (commands, tests, settings) booted for every kernel and arch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlanVariant {
    /// A label value (`[A-Za-z0-9._-]`, at most 40 characters).
    pub name: String,
    /// BootJob spec fields for this variant, over the defaults and the kernel's own.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::spec::preserve_unknown")
    )]
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// A plan's state from its jobs: counts by phase and by result, the failing jobs. The status of
/// a BootPlan and the answer of `GET /api/v1/plans/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    #[serde(default)]
    pub phase: PlanPhase,
    /// Jobs the plan expands to.
    #[serde(default)]
    pub jobs: u32,
    /// Jobs that exist so far.
    #[serde(default)]
    pub created: u32,
    /// Jobs in a final phase.
    #[serde(default)]
    pub finished: u32,
    /// Jobs that ended Failed.
    #[serde(default)]
    pub failed: u32,
    /// Job phase → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, u32>,
    /// Verdict (pass, fail, error) → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<String, u32>,
    /// The jobs that did not pass, with their first failure (the first [`MAX_FAILING_LISTED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<FailingJob>,
    /// Why the plan could not be expanded (a BootPlan whose matrix is invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
