//! Shared helpers for the integration tests: a fresh Postgres database per test, a private Redis
//! database per test, the Python Celery peer, generated media clips, the worker binary.
//! Each test binary uses a subset, hence the allow.
#![allow(dead_code)]

pub mod db;
pub mod env;
pub mod fault;
pub mod gpu;
pub mod media;
pub mod proxy;
pub mod redis;
pub mod worker;
