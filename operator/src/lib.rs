//! The bootfarm operator as a library: the binary is a thin CLI over these modules.
pub mod files;
pub mod kube;
pub mod queue;
pub mod store;
