//! berth-store (work in progress).
