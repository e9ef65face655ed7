//! Runner pods as data: what state a pod is in, what a new one looks like, and the annotations
//! that keep cluster autoscalers off busy runners. Pure functions, no client.

use crate::scaler::{Runner, RunnerState};
use bootfarm_core::spec::RunnerPool;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Every runner pod carries its pool's name in this label.
pub const POOL_LABEL: &str = "bootfarm.dev/pool";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const COMPONENT_RUNNER: &str = "runner";
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// When the runner last finished (or gave back) a job: idle timeouts count from here, and it
/// survives an operator restart.
pub const IDLE_SINCE: &str = "bootfarm.dev/idle-since";
/// The container in the pod template that runs `bootfarm-runner work`.
pub const RUNNER_CONTAINER: &str = "runner";

/// A JSON merge patch marking a runner pod busy (not evictable) or idle (evictable).
pub fn eviction_patch(busy: bool, now: Timestamp) -> Value {
    if busy {
        json!({"metadata": {"annotations": {
            SAFE_TO_EVICT: "false",
            DO_NOT_DISRUPT: "true",
        }}})
    } else {
        json!({"metadata": {"annotations": {
            SAFE_TO_EVICT: "true",
            DO_NOT_DISRUPT: null,
            IDLE_SINCE: crate::queue::fmt_time(now),
        }}})
    }
}

/// Whether the pod's annotations already say `busy` (so no patch is needed).
pub fn eviction_annotations_match(pod: &Pod, busy: bool) -> bool {
    let a = pod.annotations();
    if busy {
        a.get(SAFE_TO_EVICT).map(String::as_str) == Some("false")
            && a.get(DO_NOT_DISRUPT).map(String::as_str) == Some("true")
    } else {
        a.get(SAFE_TO_EVICT).map(String::as_str) == Some("true") && !a.contains_key(DO_NOT_DISRUPT)
    }
}

/// What the operator has seen of each runner over HTTP (in memory: after a restart runners
/// count as starting until they poll again, which they do within one long-poll).
#[derive(Debug, Default)]
pub struct RunnerActivity {
    seen: Mutex<HashMap<String, Seen>>,
    /// Runners being scaled down: they get no new work, so a deletion never races a claim.
    draining: Mutex<std::collections::HashSet<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub first_poll: Timestamp,
    /// When it last became idle (first poll, or the end of its last job).
    pub idle_since: Timestamp,
    /// When it was last seen holding a lease (claim, heartbeat, or a pool reconcile that found
    /// it busy): a job deleted under it ends its work without an `idle` call.
    pub last_busy: Option<Timestamp>,
}

impl Seen {
    /// Idle since the later of the end of its last job and the last time it was seen busy.
    pub fn idle_since(&self) -> Timestamp {
        self.last_busy
            .map_or(self.idle_since, |b| b.max(self.idle_since))
    }
}

impl RunnerActivity {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Seen>) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the map is still usable.
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn polled(&self, runner: &str, now: Timestamp) {
        self.with(|m| {
            m.entry(runner.to_string()).or_insert(Seen {
                first_poll: now,
                idle_since: now,
                last_busy: None,
            });
        });
    }

    pub fn busy(&self, runner: &str, now: Timestamp) {
        self.with(|m| {
            let e = m.entry(runner.to_string()).or_insert(Seen {
                first_poll: now,
                idle_since: now,
                last_busy: None,
            });
            e.last_busy = Some(now);
        });
    }

    pub fn idle(&self, runner: &str, now: Timestamp) {
        self.with(|m| {
            let e = m.entry(runner.to_string()).or_insert(Seen {
                first_poll: now,
                idle_since: now,
                last_busy: None,
            });
            e.idle_since = now;
        });
    }

    pub fn get(&self, runner: &str) -> Option<Seen> {
        self.with(|m| m.get(runner).copied())
    }

    /// Forget runners whose pods are gone.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        self.with(|m| m.retain(|k, _| alive(k)));
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| alive(k));
    }

    /// From now on `runner` is handed no work (its pod is about to be deleted).
    pub fn drain(&self, runner: &str) {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(runner.to_string());
    }

    pub fn is_draining(&self, runner: &str) -> bool {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(runner)
    }
}

/// One runner pod as the pool reconciler sees it: the scaler's view plus the pod's uid (the
/// precondition of its deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerView {
    pub runner: Runner,
    pub uid: Option<String>,
}

/// Classifies a runner pod from its phase, whether it holds a lease, and what the HTTP API saw.
pub fn classify(
    pod: &Pod,
    busy: bool,
    seen: Option<Seen>,
    operator_started: Timestamp,
    now: Timestamp,
) -> RunnerView {
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let (state, created_at) = if pod.metadata.deletion_timestamp.is_some() {
        (RunnerState::Terminating, created)
    } else if matches!(phase, Some("Failed") | Some("Succeeded")) {
        // A runner never exits on its own while wanted: either way the pod is spent.
        (RunnerState::Failed, created)
    } else if busy {
        (RunnerState::Busy, created)
    } else if phase != Some("Running") {
        (RunnerState::Pending, created)
    } else if let Some(seen) = seen {
        // The annotation outlives an operator restart; the in-memory record may be fresher.
        let annotated = pod
            .annotations()
            .get(IDLE_SINCE)
            .and_then(|s| crate::queue::parse_time(s));
        let since = annotated.map_or(seen.idle_since(), |a| a.max(seen.idle_since()));
        (RunnerState::Idle { since }, created)
    } else {
        // Running but not polled since this operator started: starting, its startup clock from
        // the later of its creation and our start (a restart must not make old pods look stuck).
        (RunnerState::Starting, created.max(operator_started))
    };
    RunnerView {
        runner: Runner {
            id: pod.name_any(),
            state,
            created_at,
        },
        uid: pod.metadata.uid.clone(),
    }
}

/// How runner pods are built: the base pod (the chart's template, or the built-in default) and
/// how they reach the operator.
#[derive(Debug, Clone)]
pub struct PodSettings {
    pub base: Pod,
    /// `--server` for `bootfarm-runner work`.
    pub server_url: String,
    /// The runner image when the pool's template names none.
    pub default_image: String,
    /// The volume and mount added for `kvm: true` pools.
    pub kvm_volume: Volume,
    pub kvm_mount: VolumeMount,
    /// Set on every runner container (the operator's artifact rules), over the template's.
    pub extra_env: Vec<(String, String)>,
}

impl PodSettings {
    /// The built-in base pod: non-root, read-only root, no privileges, no ServiceAccount token,
    /// the runner token from a Secret in the environment (no file QEMU could open: the runner is
    /// not dumpable, so its environment is not readable by its QEMU).
    pub fn builtin(server_url: &str, image: &str, token_secret: &str) -> PodSettings {
        let base: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"labels": {COMPONENT_LABEL: COMPONENT_RUNNER, "app.kubernetes.io/part-of": "bootfarm"}},
            "spec": {
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 30,
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"}
                },
                "containers": [{
                    "name": RUNNER_CONTAINER,
                    "image": image,
                    "args": ["work", "--server", server_url, "--pool", "POOL"],
                    "env": [
                        {"name": "BOOTFARM_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}}},
                        {"name": "BOOTFARM_CACHE", "value": "/var/cache/bootfarm"},
                        {"name": "TMPDIR", "value": "/tmp"},
                        {"name": "HOME", "value": "/tmp"}
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true, "privileged": false, "capabilities": {"drop": ["ALL"]}
                    },
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "cache", "mountPath": "/var/cache/bootfarm"}
                    ]
                }],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "cache", "emptyDir": {}}
                ]
            }
        }))
        .expect("the built-in runner pod is a valid Pod");
        PodSettings {
            base,
            server_url: server_url.to_string(),
            default_image: image.to_string(),
            kvm_volume: kvm_volume(),
            kvm_mount: kvm_mount(),
            extra_env: Vec::new(),
        }
    }

    /// The chart's template: `pod.yaml` (a Pod) and optionally `kvm.yaml` ({volume, volumeMount})
    /// from the same directory.
    pub fn from_template_file(
        path: &std::path::Path,
        server_url: &str,
        default_image: &str,
    ) -> Result<PodSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        yaml11_file_modes(&mut doc);
        let base: Pod =
            serde_yaml_ng::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut kvm_volume, mut kvm_mount) = (kvm_volume(), kvm_mount());
        if let Some(dir) = path.parent() {
            let kvm = dir.join("kvm.yaml");
            if let Ok(text) = std::fs::read_to_string(&kvm) {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Kvm {
                    volume: Volume,
                    volume_mount: VolumeMount,
                }
                let k: Kvm = serde_yaml_ng::from_str(&text)
                    .map_err(|e| format!("{}: {e}", kvm.display()))?;
                kvm_volume = k.volume;
                kvm_mount = k.volume_mount;
            }
        }
        if !base
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == RUNNER_CONTAINER))
        {
            return Err(format!(
                "{}: no container named {RUNNER_CONTAINER:?}",
                path.display()
            ));
        }
        Ok(PodSettings {
            base,
            server_url: server_url.to_string(),
            default_image: default_image.to_string(),
            kvm_volume,
            kvm_mount,
            extra_env: Vec::new(),
        })
    }
}

/// Kubernetes reads manifests as YAML 1.1, where `defaultMode: 0440` is octal; serde_yaml reads
/// YAML 1.2 and sees a string. Convert those file modes the way the API server would.
fn yaml11_file_modes(v: &mut serde_yaml_ng::Value) {
    match v {
        serde_yaml_ng::Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let is_mode = matches!(k.as_str(), Some("defaultMode") | Some("mode"));
                if let (true, Some(s)) = (is_mode, val.as_str()) {
                    if let Ok(n) = i64::from_str_radix(s.trim_start_matches("0o"), 8) {
                        *val = serde_yaml_ng::Value::from(n);
                        continue;
                    }
                }
                yaml11_file_modes(val);
            }
        }
        serde_yaml_ng::Value::Sequence(items) => items.iter_mut().for_each(yaml11_file_modes),
        _ => {}
    }
}

fn kvm_volume() -> Volume {
    Volume {
        name: "kvm".into(),
        host_path: Some(HostPathVolumeSource {
            path: "/dev/kvm".into(),
            type_: Some("CharDevice".into()),
        }),
        ..Volume::default()
    }
}

fn kvm_mount() -> VolumeMount {
    VolumeMount {
        name: "kvm".into(),
        mount_path: "/dev/kvm".into(),
        ..VolumeMount::default()
    }
}

/// `<pool>-<5 random [a-z0-9]>`, the pod name and the runner's id, within the 63-byte label limit.
pub fn runner_name(pool: &str) -> String {
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(5)
        .collect();
    let prefix: String = pool.chars().take(63 - 6).collect();
    format!("{}-{suffix}", prefix.trim_end_matches('-'))
}

/// Replaces the value after `flag` in `args`, or appends `flag value`.
fn set_arg(args: &mut Vec<String>, flag: &str, value: &str) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if i + 1 < args.len() {
            args[i + 1] = value.to_string();
            return;
        }
        args.truncate(i);
    }
    args.push(flag.to_string());
    args.push(value.to_string());
}

/// A new runner pod for `pool`, named `name`: the base pod plus the pool's template, labels,
/// owner reference and arguments.
pub fn build_pod(pool: &RunnerPool, name: &str, settings: &PodSettings, now: Timestamp) -> Pod {
    let pool_name = pool.name_any();
    let mut pod = settings.base.clone();
    let tpl = &pool.spec.template;

    let meta = &mut pod.metadata;
    *meta = ObjectMeta {
        name: Some(name.to_string()),
        namespace: pool.namespace(),
        labels: meta.labels.take(),
        annotations: meta.annotations.take(),
        ..ObjectMeta::default()
    };
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POOL_LABEL.into(), pool_name.clone());
    labels.insert(COMPONENT_LABEL.into(), COMPONENT_RUNNER.into());
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SAFE_TO_EVICT.into(), "true".into());
    meta.owner_references = pool.controller_owner_ref(&()).map(|mut o: OwnerReference| {
        // Pods must go when their pool does; they need not block the pool's deletion.
        o.block_owner_deletion = Some(false);
        vec![o]
    });

    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.restart_policy = Some("Never".into());
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            ..PodSecurityContext::default()
        });
    }
    if !tpl.node_selector.is_empty() {
        spec.node_selector
            .get_or_insert_with(BTreeMap::new)
            .extend(tpl.node_selector.clone());
    }
    let tolerations: Vec<Toleration> = tpl
        .tolerations
        .iter()
        .filter_map(|t| serde_json::from_value(t.clone()).ok())
        .collect();
    if !tolerations.is_empty() {
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .extend(tolerations);
    }
    if pool.spec.kvm {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == settings.kvm_volume.name) {
            volumes.push(settings.kvm_volume.clone());
        }
    }

    if !spec.containers.iter().any(|c| c.name == RUNNER_CONTAINER) {
        spec.containers.push(Container {
            name: RUNNER_CONTAINER.into(),
            ..Container::default()
        });
    }
    for c in spec
        .containers
        .iter_mut()
        .filter(|c| c.name == RUNNER_CONTAINER)
    {
        c.image = Some(
            tpl.image
                .clone()
                .or_else(|| c.image.clone())
                .unwrap_or_else(|| settings.default_image.clone()),
        );
        if let Some(p) = &tpl.image_pull_policy {
            c.image_pull_policy = Some(p.clone());
        }
        if let Some(r) = &tpl.resources {
            if let Ok(r) = serde_json::from_value(r.clone()) {
                c.resources = Some(r);
            }
        }
        let args = c.args.get_or_insert_with(Vec::new);
        if args.first().map(String::as_str) != Some("work") {
            args.insert(0, "work".into());
        }
        set_arg(args, "--server", &settings.server_url);
        set_arg(args, "--pool", &pool_name);
        set_arg(args, "--runner-id", name);
        let arches = pool
            .spec
            .arches
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if !arches.is_empty() {
            set_arg(args, "--arches", &arches);
        }
        let env = c.env.get_or_insert_with(Vec::new);
        // When the runner was asked for: its first claim reports the start-up time.
        env.retain(|e| e.name != "BOOTFARM_RUNNER_CREATED_AT");
        env.push(EnvVar {
            name: "BOOTFARM_RUNNER_CREATED_AT".into(),
            value: Some(crate::queue::fmt_time(now)),
            ..EnvVar::default()
        });
        for (k, v) in tpl
            .extra_env
            .iter()
            .chain(settings.extra_env.iter().map(|(k, v)| (k, v)))
        {
            env.retain(|e| &e.name != k);
            env.push(EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                ..EnvVar::default()
            });
        }
        let sc = c
            .security_context
            .get_or_insert_with(SecurityContext::default);
        sc.run_as_non_root = Some(true);
        sc.allow_privilege_escalation = Some(false);
        sc.privileged = Some(false);
        if pool.spec.kvm {
            let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
            if !mounts.iter().any(|m| m.name == settings.kvm_mount.name) {
                mounts.push(settings.kvm_mount.clone());
            }
        }
    }
    pod
}

/// Kubelet reasons for a waiting container that waiting will not fix: the image cannot be had,
/// or the kubelet cannot set the container up.
const START_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "RegistryUnavailable",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What a runner pod's start says about its pool (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartEvidence {
    /// The runner container is stuck: the kubelet's reason and message, and the pod.
    Failing {
        pod: String,
        reason: String,
        message: String,
    },
    /// The runner container runs.
    Started,
}

/// The first stuck runner container among `pods` (they fail alike), else whether one runs;
/// None when no pod has got that far.
pub fn start_evidence(pods: &[Pod]) -> Option<StartEvidence> {
    let mut started = false;
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for cs in statuses.iter().filter(|c| c.name == RUNNER_CONTAINER) {
            let state = cs.state.as_ref();
            if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.clone().unwrap_or_default();
                if START_FAILURES.contains(&reason.as_str()) {
                    return Some(StartEvidence::Failing {
                        pod: pod.name_any(),
                        reason,
                        message: w.message.clone().unwrap_or_default(),
                    });
                }
            }
            started |= state.is_some_and(|s| s.running.is_some());
        }
    }
    started.then_some(StartEvidence::Started)
}

/// Whether a pod is one of `pool`'s runners (label and owner), so foreign pods are never deleted.
pub fn owned_by(pod: &Pod, pool: &RunnerPool) -> bool {
    let uid = pool.meta().uid.as_deref();
    pod.labels().get(POOL_LABEL) == pool.metadata.name.as_ref()
        && pod
            .owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::spec::RunnerPoolSpec;
    use bootfarm_core::Arch;

    fn pool(kvm: bool) -> RunnerPool {
        let mut p = RunnerPool::new(
            "kvm-x86-64",
            RunnerPoolSpec {
                arches: vec![Arch::X86_64, Arch::I386],
                kvm,
                ..RunnerPoolSpec::default()
            },
        );
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("pool-uid".into());
        p
    }

    fn settings() -> PodSettings {
        PodSettings::builtin("http://op:8080", "runner:1", "tok")
    }

    fn runner_container(pod: &Pod) -> &Container {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == RUNNER_CONTAINER))
            .expect("a runner container")
    }

    #[test]
    fn only_kvm_pools_mount_the_kvm_device_as_a_char_device() {
        let with = build_pod(
            &pool(true),
            "kvm-x86-64-aaaaa",
            &settings(),
            Timestamp::now(),
        );
        let volumes = with
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let kvm: Vec<_> = volumes.iter().filter(|v| v.host_path.is_some()).collect();
        assert_eq!(kvm.len(), 1, "only /dev/kvm comes from the host");
        let hp = kvm[0].host_path.as_ref().expect("hostPath");
        assert_eq!(hp.path, "/dev/kvm");
        assert_eq!(hp.type_.as_deref(), Some("CharDevice"));
        let mounts = runner_container(&with)
            .volume_mounts
            .clone()
            .unwrap_or_default();
        assert!(mounts.iter().any(|m| m.mount_path == "/dev/kvm"));

        let without = build_pod(
            &pool(false),
            "kvm-x86-64-aaaaa",
            &settings(),
            Timestamp::now(),
        );
        let volumes = without
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        assert!(volumes.iter().all(|v| v.host_path.is_none()));
    }

    #[test]
    fn runner_pods_run_as_non_root_without_privileges() {
        let pod = build_pod(
            &pool(true),
            "kvm-x86-64-aaaaa",
            &settings(),
            Timestamp::now(),
        );
        let sc = runner_container(&pod)
            .security_context
            .clone()
            .expect("set");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            pod.spec
                .as_ref()
                .and_then(|s| s.automount_service_account_token),
            Some(false)
        );
    }

    #[test]
    fn the_template_pool_argument_is_replaced_and_the_runner_named_after_its_pod() {
        let pod = build_pod(
            &pool(false),
            "kvm-x86-64-bbbbb",
            &settings(),
            Timestamp::now(),
        );
        let args = runner_container(&pod).args.clone().expect("args");
        assert_eq!(
            args,
            [
                "work",
                "--server",
                "http://op:8080",
                "--pool",
                "kvm-x86-64",
                "--runner-id",
                "kvm-x86-64-bbbbb",
                "--arches",
                "x86_64,i386"
            ]
        );
        assert!(owned_by(&pod, &pool(false)));
        let mut other = pool(false);
        other.metadata.uid = Some("another".into());
        assert!(
            !owned_by(&pod, &other),
            "a pod of a re-created pool is not ours"
        );
    }

    #[test]
    fn the_charts_yaml_1_1_file_modes_are_read_as_octal() {
        let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            "volumes: [{secret: {defaultMode: \"0440\", items: [{mode: \"0600\"}]}}]",
        )
        .expect("yaml");
        yaml11_file_modes(&mut doc);
        assert_eq!(
            doc["volumes"][0]["secret"]["defaultMode"].as_i64(),
            Some(0o440)
        );
        assert_eq!(
            doc["volumes"][0]["secret"]["items"][0]["mode"].as_i64(),
            Some(0o600)
        );
    }

    #[test]
    fn runner_names_are_valid_pod_names_within_the_label_limit() {
        let long = "p".repeat(80);
        for pool in ["tcg-x86-64", long.as_str()] {
            let n = runner_name(pool);
            assert!(n.len() <= 63, "{n}");
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
        assert_ne!(runner_name("p"), runner_name("p"));
    }

    fn pod(phase: &str, annotations: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("r".into());
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_800_000_000).expect("in range"),
        ));
        p.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn pod_states_follow_phase_lease_and_first_poll() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("in range");
        let seen = Some(Seen {
            first_poll: t(10),
            idle_since: t(10),
            last_busy: Some(t(50)),
        });
        let state = |p: &Pod, busy, seen| classify(p, busy, seen, t(0), t(100)).runner.state;
        assert_eq!(
            state(&pod("Pending", &[]), false, None),
            RunnerState::Pending
        );
        assert_eq!(
            state(&pod("Running", &[]), false, None),
            RunnerState::Starting
        );
        assert_eq!(state(&pod("Running", &[]), true, seen), RunnerState::Busy);
        assert_eq!(
            state(&pod("Running", &[]), false, seen),
            RunnerState::Idle { since: t(50) },
            "idle from the last time it held a lease"
        );
        let annotated = pod("Running", &[(IDLE_SINCE, "2027-01-15T08:01:40Z")]);
        assert_eq!(
            state(&annotated, false, seen),
            RunnerState::Idle {
                since: "2027-01-15T08:01:40Z".parse().expect("time")
            }
        );
        assert_eq!(state(&pod("Failed", &[]), false, seen), RunnerState::Failed);
        let mut deleting = pod("Running", &[]);
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        assert_eq!(state(&deleting, true, seen), RunnerState::Terminating);
    }

    fn with_runner_state(mut p: Pod, state: serde_json::Value) -> Pod {
        let cs = serde_json::from_value(json!([{
            "name": RUNNER_CONTAINER, "image": "bootfarm/runner:x", "imageID": "", "ready": false,
            "restartCount": 0, "state": state
        }]))
        .expect("a container status");
        if let Some(s) = p.status.as_mut() {
            s.container_statuses = Some(cs);
        }
        p
    }

    #[test]
    fn a_runner_image_that_cannot_be_had_is_evidence_that_the_pool_cannot_start_runners() {
        assert_eq!(start_evidence(&[]), None);
        assert_eq!(start_evidence(&[pod("Pending", &[])]), None);
        let creating = with_runner_state(
            pod("Pending", &[]),
            json!({"waiting": {"reason": "ContainerCreating"}}),
        );
        assert_eq!(
            start_evidence(std::slice::from_ref(&creating)),
            None,
            "still starting"
        );
        let running = with_runner_state(
            pod("Running", &[]),
            json!({"running": {"startedAt": "2027-01-15T08:00:00Z"}}),
        );
        assert_eq!(
            start_evidence(&[creating.clone(), running.clone()]),
            Some(StartEvidence::Started)
        );
        let never = with_runner_state(
            pod("Pending", &[]),
            json!({"waiting": {"reason": "ErrImageNeverPull",
                "message": "Container image \"bootfarm/nope:1\" is not present with pull policy of Never"}}),
        );
        assert_eq!(
            start_evidence(&[running, never]),
            Some(StartEvidence::Failing {
                pod: "r".into(),
                reason: "ErrImageNeverPull".into(),
                message:
                    "Container image \"bootfarm/nope:1\" is not present with pull policy of Never"
                        .into(),
            }),
            "one stuck pod is enough: the others share its template"
        );
    }

    #[test]
    fn eviction_annotations_flip_between_busy_and_idle() {
        let now = Timestamp::from_second(1_800_000_000).expect("in range");
        let busy = eviction_patch(true, now);
        assert_eq!(busy["metadata"]["annotations"][SAFE_TO_EVICT], "false");
        assert_eq!(busy["metadata"]["annotations"][DO_NOT_DISRUPT], "true");
        let idle = eviction_patch(false, now);
        assert_eq!(idle["metadata"]["annotations"][SAFE_TO_EVICT], "true");
        assert!(idle["metadata"]["annotations"][DO_NOT_DISRUPT].is_null());
        assert!(eviction_annotations_match(
            &pod(
                "Running",
                &[(SAFE_TO_EVICT, "false"), (DO_NOT_DISRUPT, "true")]
            ),
            true
        ));
        assert!(!eviction_annotations_match(
            &pod(
                "Running",
                &[(SAFE_TO_EVICT, "true"), (DO_NOT_DISRUPT, "true")]
            ),
            false
        ));
    }
}
