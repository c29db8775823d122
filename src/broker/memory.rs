//! In-memory broker for orchestration tests (pending).
