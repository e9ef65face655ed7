//! bootfarm-runner as a library: the binary is a thin CLI over these modules, and the operator's
//! `work` loop reuses the same boot path.

pub mod artifacts;
pub mod classify;
pub mod work;
