//! The bootfarm operator as a library: the binary is a thin CLI over these modules.
