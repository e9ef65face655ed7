//! Kubernetes mode: CRDs, the BootJob, BootPlan and RunnerPool controllers, runner pods, and the
//! BootJob-backed job store behind the HTTP API.

pub mod bootjob;
pub mod context;
pub mod crd;
pub mod plan;
pub mod pool;
pub mod run;
pub mod runners;
pub mod status;
pub mod store;
pub mod view;
