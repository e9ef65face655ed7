//! Black-box tests live in `tests/*.rs`. The library holds the load generator's pure parts
//! (`bootfarm-loadgen`: hollow runners that speak the runner protocol without QEMU, to measure
//! the operator and the apiserver).

pub mod loadgen;
