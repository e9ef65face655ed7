//! QEMU itself: per-architecture command lines (pure) and the child process.

pub mod process;
pub mod profile;
pub mod sandbox;
