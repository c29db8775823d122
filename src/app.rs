//! Composition root (pending).
