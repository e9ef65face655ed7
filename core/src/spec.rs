//! The BootJob and RunnerPool resources (API group `bootfarm.dev`, version `v1alpha1`).
//!
//! One definition serves both modes: with the `crd` feature the operator derives the Kubernetes
//! custom resources from these structs; without it (the runner) they are plain serde types.
//! Timestamps are RFC 3339 strings, as they appear on the wire.

use crate::result::{IssueKind, Stage, Verdict};
use crate::Arch;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod location;
pub mod qemu_opts;
mod summary;
pub mod validate;

pub use location::{LocalDirs, Location};
pub use qemu_opts::{Cpu, Machine};
pub use summary::summarize;
pub use validate::{
    parse_guest_dir, validate, AccelMode, Artifact, FieldError, KernelBoot, Overlay, Slot,
    ValidatedSpec, MAX_OVERLAYS,
};

#[cfg(feature = "crd")]
use kube::CustomResource;
#[cfg(feature = "schema")]
use schemars::JsonSchema;

pub const GROUP: &str = "bootfarm.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "bootfarm.dev/v1alpha1";

/// An artifact to fetch: a URL (`file://`, `http(s)://`) or a path, optionally pinned by sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A tarball extracted into the guest's root filesystem at `path` (default `/`), as TuxRun's
/// `--overlay`: repacked into a cpio appended to the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct OverlayRef {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// An absolute directory in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Seconds until the expected prompt or power-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u64>,
    /// Seconds for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// What to boot and how to judge it; mirrors `bootfarm-runner boot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "bootfarm.dev",
        version = "v1alpha1",
        kind = "BootJob",
        namespaced,
        shortname = "bj",
        status = "BootJobStatus",
        printcolumn = r#"{"name":"Arch","type":"string","jsonPath":".spec.arch"}"#,
        printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
        printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.result.result"}"#,
        printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.result.stage"}"#,
        printcolumn = r#"{"name":"Runner","type":"string","jsonPath":".status.runner"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BootJobSpec {
    pub arch: Arch,
    pub kernel: ArtifactRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<ArtifactRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<ArtifactRef>,
    /// A `.cpio*` archive or a `modules.tar.{gz,xz,zst}` (repacked into a cpio), appended to
    /// the initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<ArtifactRef>,
    /// Tarballs extracted into the guest's root filesystem, in order (later ones win).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlays: Vec<OverlayRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtb: Option<ArtifactRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// QEMU memory size, e.g. `512M`, `2G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smp: Option<u32>,
    /// `auto`, `kvm` or `tcg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// `auto` (a bzImage's ELF booted at its PVH entry point when it has one) or `as-is`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<String>,
    /// `auto`, `poweroff`, `login` or `shell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// `USER` or `USER:PASSWORD` to answer the login prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_tests: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Infrastructure attempts before the job ends in Error (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Runner pool; chosen by arch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,
    /// Where the job's summary is POSTed when it ends (signed when a secret is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callback::CallbackRef>,
}

impl BootJobSpec {
    /// The smallest job: boot `kernel_url` on `arch` with every other setting at its default.
    pub fn new(arch: Arch, kernel_url: impl Into<String>) -> Self {
        BootJobSpec {
            arch,
            kernel: ArtifactRef {
                url: kernel_url.into(),
                sha256: None,
            },
            initrd: None,
            rootfs: None,
            modules: None,
            overlays: Vec::new(),
            dtb: None,
            boot_args: None,
            machine: None,
            cpu: None,
            memory: None,
            smp: None,
            accel: None,
            kernel_boot: None,
            expect: None,
            login: None,
            commands: Vec::new(),
            expect_tests: Vec::new(),
            fail_on: Vec::new(),
            ignore: Vec::new(),
            failure_patterns: Vec::new(),
            timeouts: None,
            priority: 0,
            max_attempts: None,
            pool: None,
            ttl_seconds_after_finished: None,
            callback: None,
        }
    }
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum JobPhase {
    #[default]
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Error,
    Canceled,
}

impl JobPhase {
    pub const ALL: [JobPhase; 7] = [
        JobPhase::Pending,
        JobPhase::Queued,
        JobPhase::Running,
        JobPhase::Succeeded,
        JobPhase::Failed,
        JobPhase::Error,
        JobPhase::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Pending => "Pending",
            JobPhase::Queued => "Queued",
            JobPhase::Running => "Running",
            JobPhase::Succeeded => "Succeeded",
            JobPhase::Failed => "Failed",
            JobPhase::Error => "Error",
            JobPhase::Canceled => "Canceled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Error | JobPhase::Canceled
        )
    }
}

impl std::str::FromStr for JobPhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobPhase::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown phase {s:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub last_transition_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The verdict in brief, for `kubectl get` and dashboards; the full document is at `/result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResultSummary {
    /// pass, fail or error.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub result: Verdict,
    pub reason: String,
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// Issue kind → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, u32>"))]
    pub issues: BTreeMap<IssueKind, u32>,
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub tests_skipped: u32,
    /// The first failure's one-line summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BootJobStatus {
    #[serde(default)]
    pub phase: JobPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Attempts started so far (infrastructure retries included).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The current lease (while Running): its id and expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub lease_expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub queued_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub start_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub completion_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Whether an artifact source names a cpio archive (`.cpio`, `.cpio.gz`, …): such a rootfs or
/// modules archive is appended to the initramfs as it is; a modules tarball is repacked first.
pub fn is_cpio_name(source: &str) -> bool {
    let name = source.rsplit('/').next().unwrap_or(source);
    name.contains(".cpio")
}

/// Template for runner pods (Kubernetes) or runner processes (standalone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunnerTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Passed through to the pod spec (`resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "preserve_unknown"))]
    pub resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "preserve_unknown_list"))]
    pub tolerations: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "bootfarm.dev",
        version = "v1alpha1",
        kind = "RunnerPool",
        namespaced,
        shortname = "rp",
        status = "RunnerPoolStatus",
        printcolumn = r#"{"name":"Arches","type":"string","jsonPath":".spec.arches"}"#,
        printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
        printcolumn = r#"{"name":"Busy","type":"integer","jsonPath":".status.busy"}"#,
        printcolumn = r#"{"name":"Idle","type":"integer","jsonPath":".status.idle"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RunnerPoolSpec {
    pub arches: Vec<Arch>,
    #[serde(default)]
    pub min_idle: u32,
    #[serde(default = "default_max_runners")]
    pub max_runners: u32,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_seconds: u64,
    #[serde(default = "default_burst")]
    pub scale_up_burst: u32,
    /// Mount `/dev/kvm` into runner pods.
    #[serde(default)]
    pub kvm: bool,
    #[serde(default)]
    pub template: RunnerTemplate,
}

impl RunnerPoolSpec {
    /// Whether the pool runs jobs of `arch`: a pool with no arches serves all.
    pub fn serves(&self, arch: Arch) -> bool {
        self.arches.is_empty() || self.arches.contains(&arch)
    }
}

fn default_max_runners() -> u32 {
    10
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_startup_timeout() -> u64 {
    600
}
fn default_burst() -> u32 {
    10
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunnerPoolStatus {
    #[serde(default)]
    pub desired: u32,
    #[serde(default)]
    pub pending: u32,
    #[serde(default)]
    pub idle: u32,
    #[serde(default)]
    pub busy: u32,
    #[serde(default)]
    pub queued: u32,
    /// `RunnersCanStart`: False, with the kubelet's reason, while the pool's runner pods cannot
    /// start (an image that does not exist, a pod the kubelet cannot set up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(feature = "schema")]
pub(crate) fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

#[cfg(feature = "schema")]
fn preserve_unknown_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}
