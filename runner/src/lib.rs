//! bootfarm-runner as a library: the binary is a thin CLI over these modules, and the operator's
//! `work` loop reuses the same boot path (`boot::run_boot`).

pub mod accel;
pub mod artifacts;
pub mod boot;
pub mod classify;
pub mod cli;
pub mod console;
pub mod host;
pub mod qemu;
pub mod qmp;
pub mod work;
