//! bootfarm-runner as a library: the binary is a thin CLI over these modules, and the operator's
//! `work` loop reuses the same boot path (`boot::run_boot`).
// Every write may fail (a full disk, a closed pipe): the print macros would panic.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod accel;
pub mod artifacts;
pub mod boot;
pub mod classify;
pub mod cli;
pub mod console_sink;
pub mod host;
pub mod kernel;
pub mod output;
pub mod qemu;
pub mod qmp;
pub mod work;
