//! The `berth` command line.
