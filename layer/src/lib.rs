//! berth-layer (work in progress).
