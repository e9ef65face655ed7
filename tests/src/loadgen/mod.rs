//! The load generator's decisions, apart from its I/O: how a recorded console is replayed, and
//! what the claims it saw add up to.

pub mod replay;
pub mod stats;
