//! What a new runner pod looks like: the chart's template (or the built-in one) made into a
//! runner of one pool.

use super::{COMPONENT_LABEL, COMPONENT_RUNNER, POOL_LABEL, RUNNER_CONTAINER, SAFE_TO_EVICT};
use bootfarm_core::spec::RunnerPool;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;

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
pub(super) fn yaml11_file_modes(v: &mut serde_yaml_ng::Value) {
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
