//! The bootfarm operator as a library: the binary is a thin CLI over these modules.
pub mod admission;
pub mod api;
pub mod callbacks;
pub mod client;
pub mod files;
pub mod kube;
pub mod metrics;
pub mod plans;
pub mod pools;
pub mod queue;
pub mod scaler;
pub mod shutdown;
pub mod standalone;
pub mod store;
pub mod ui;
