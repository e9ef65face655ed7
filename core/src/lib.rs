//! bootfarm's shared vocabulary, used by the runner and the operator alike.
//!
//! Nothing here does I/O or needs an async runtime: the console classifier is fed bytes and
//! answers with events, so the live runner and `bootfarm-runner classify` share one implementation.

pub mod arch;
pub mod bisect;
pub mod callback;
#[cfg(feature = "cli")]
pub mod cli;
pub mod compare;
pub mod console;
pub mod console_cap;
pub mod early_init;
pub mod names;
pub mod netpolicy;
pub mod paths;
pub mod plan;
pub mod protocol;
pub mod result;
pub mod size;
pub mod spec;
pub mod verdict;

pub use arch::Arch;
pub use result::BootResult;
