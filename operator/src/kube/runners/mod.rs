//! Runner pods as data: what state a pod is in, what a new one looks like, and the annotations
//! that keep cluster autoscalers off busy runners. Pure functions, no client.

use bootfarm_core::spec::RunnerPool;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

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

mod activity;
mod pod_state;
mod pod_template;

pub use activity::{RunnerActivity, Seen};
pub use pod_state::{classify, start_evidence, RunnerView, StartEvidence};
pub use pod_template::{build_pod, runner_name, PodSettings};

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
    use super::pod_template::yaml11_file_modes;
    use super::*;
    use crate::scaler::RunnerState;
    use bootfarm_core::spec::RunnerPoolSpec;
    use bootfarm_core::Arch;
    use k8s_openapi::api::core::v1::Container;

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
