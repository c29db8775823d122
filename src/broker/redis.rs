//! kombu-exact Redis transport (pending).
