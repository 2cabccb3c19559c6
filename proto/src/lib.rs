//! berth-proto (work in progress).
