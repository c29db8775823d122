//! Job slots, prefetch, ETA holding, lease renewal and dispatch (pending).
