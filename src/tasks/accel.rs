//! The hardware acceleration state every encode shares: probed capabilities, the operator's
//! `--hwaccel`, device health with backoff, and the hardware job slots of each device (one pool
//! per GPU / render node). The decisions themselves are pure (`ffmpeg::backend`); this module
//! owns the shared, locked state they read and update.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::HwAccel;
use crate::ffmpeg::backend::{backend_name, choose_healthy, Choice, HealthBook, HwFailure};
use crate::ffmpeg::caps::Capabilities;
use crate::plan::Backend;

/// Probed capabilities, the operator's choice, recent hardware failures and hardware slots.
pub struct Accel {
    caps: Capabilities,
    hwaccel: HwAccel,
    health: Mutex<HealthBook>,
    /// Slots per device: `hw_slots` concurrent hardware jobs on each GPU / render node.
    hw_slots: usize,
    pools: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A backend decision for one job, holding a hardware slot on its device when it is not
/// software.
pub struct Granted {
    pub choice: Choice,
    slot: Option<OwnedSemaphorePermit>,
}

impl Granted {
    /// Gives the hardware slot back (before a software re-run, so other jobs get the device).
    pub fn release(&mut self) {
        self.slot = None;
    }

    pub fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }
}

impl Accel {
    /// A device that failed at the device level is avoided with backoff up to `cooldown`;
    /// `hw_slots` bounds concurrent encoder sessions per device.
    pub fn new(caps: Capabilities, hwaccel: HwAccel, hw_slots: usize, cooldown: Duration) -> Self {
        Self {
            caps,
            hwaccel,
            health: Mutex::new(HealthBook::new(cooldown)),
            hw_slots: hw_slots.max(1),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Software only: for tests and the `transcode` CLI without probing.
    pub fn software() -> Self {
        let caps = Capabilities {
            ffmpeg: String::new(),
            ffmpeg_version: "not probed".into(),
            hwaccel: HwAccel::Software,
            backends: vec![],
            probe_ms: 0,
        };
        Self::new(caps, HwAccel::Software, 1, Duration::ZERO)
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The slot pool of one device (created on first use).
    fn pool(&self, device: &str) -> Arc<Semaphore> {
        let mut pools = self.pools.lock().expect("slot pools lock");
        pools
            .entry(device.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.hw_slots)))
            .clone()
    }

    /// Free hardware slots on `device` now (for logs and tests).
    pub fn free_slots(&self, device: &str) -> usize {
        self.pool(device).available_permits()
    }

    /// The backend for a profile codec. A hardware backend needs a free slot on one of its
    /// healthy devices — the one with the most free slots, so jobs spread across GPUs; when all
    /// are busy the job runs in software rather than queueing behind the GPU.
    pub fn grant(&self, codec: &str) -> Granted {
        let choice = {
            let health = self.health.lock().expect("health book lock");
            choose_healthy(&self.caps, self.hwaccel, codec, &health, Instant::now())
        };
        let mut pools: Vec<(Backend, Arc<Semaphore>)> = choice
            .candidates
            .iter()
            .map(|b| (b.clone(), self.pool(b.device().unwrap_or_default())))
            .collect();
        // Stable: equally free devices keep the probe's order.
        pools.sort_by_key(|(_, pool)| std::cmp::Reverse(pool.available_permits()));
        for (backend, pool) in pools {
            if let Ok(slot) = pool.try_acquire_owned() {
                let device = backend.device().map(String::from);
                return Granted {
                    choice: Choice {
                        backend,
                        device,
                        ..choice
                    },
                    slot: Some(slot),
                };
            }
        }
        if choice.backend == Backend::Software {
            return Granted { choice, slot: None };
        }
        Granted {
            choice: Choice {
                backend: Backend::Software,
                device: None,
                reason: format!("{}: all hardware slots busy", choice.reason),
                candidates: Vec::new(),
            },
            slot: None,
        }
    }

    /// When the operator forced a hardware backend (`--hwaccel nvenc|vaapi|qsv`) and this job
    /// runs in software anyway: the backend asked for and why, for the Encoding log.
    pub fn forced_fallback(&self, granted: &Granted) -> Option<(&'static str, String)> {
        let asked = match self.hwaccel {
            HwAccel::Auto | HwAccel::Software => return None,
            HwAccel::Nvenc => "nvenc",
            HwAccel::Vaapi => "vaapi",
            HwAccel::Qsv => "qsv",
        };
        (granted.choice.backend == Backend::Software)
            .then(|| (asked, granted.choice.reason.clone()))
    }

    /// Records how a hardware run failed: only a device-level failure marks the device
    /// unhealthy (with backoff); an input it cannot take, or a corrupt input, changes nothing.
    pub fn failed(&self, backend: &Backend, failure: HwFailure, reason: &str) {
        if !failure.locks_out_device() {
            tracing::info!(
                backend = backend_name(backend),
                class = failure.reason_class(),
                "hardware run failed for this input only; the device stays in use"
            );
            return;
        }
        let mut health = self.health.lock().expect("health book lock");
        health.record(backend, failure, Instant::now(), reason);
        tracing::warn!(
            backend = backend_name(backend),
            device = backend.device().unwrap_or_default(),
            class = failure.reason_class(),
            reason,
            "hardware device marked unhealthy"
        );
    }

    /// A hardware run that worked: the device's backoff starts over.
    pub fn succeeded(&self, backend: &Backend) {
        if *backend != Backend::Software {
            self.health
                .lock()
                .expect("health book lock")
                .mark_ok(backend);
        }
    }

    /// Why `backend` is avoided now, if it is (for logs and tests).
    pub fn unhealthy_reason(&self, backend: &Backend) -> Option<String> {
        let health = self.health.lock().expect("health book lock");
        health.unhealthy_reason(backend, Instant::now())
    }
}
