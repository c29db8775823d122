//! Shutdown owner (pending).
