//! Kubernetes mode: CRDs, the BootJob and RunnerPool controllers, runner pods, and the
//! BootJob-backed job store behind the HTTP API.

pub mod crd;
