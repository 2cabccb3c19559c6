//! berth-manager (work in progress).
