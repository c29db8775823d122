//! MediaCMS's database and media volume: all SQL ([`store`]), the Django signal side effects
//! replayed explicitly ([`signals`]), row types ([`model`]) and file layout ([`layout`]).
//!
//! Call order for one `encode_media` task:
//! 1. [`signals::Signals::begin_encoding`] — one transaction, one read of the Encoding row:
//!    `Missing`/`Dropped` → return false; `ClaimedByLadder` → whether that row succeeded;
//!    `Started` → encode from its fresh `media`/`profile`/`encoding`.
//! 2. [`store::Store::set_commands`], then [`store::Store::update_progress`] while ffmpeg runs
//!    (`false` = the row was deleted: kill ffmpeg, return false).
//! 3. Success: [`signals::Signals::encoding_succeeded`] (places the file, writes the row, runs
//!    post_save once) → hand its follow-ups to the job; if `saved.concat` is `Some(key)`:
//!    [`signals::Signals::begin_concat`] → ffmpeg concat → [`signals::Signals::finish_concat`]
//!    (or `ConcatJob::abandon`) → hand its follow-ups to the job (the pool publishes them).
//! 4. Failure with a retry to come: [`store::Store::mark_failed`] +
//!    [`signals::Signals::encoding_saved`]; final failure (no retry left, non-retryable error,
//!    gif failure): [`signals::Signals::on_failure`].
//!
//! Errors carry a [`Disposition`].

pub mod layout;
pub mod model;
pub mod signals;
pub mod store;

/// What the task layer should do with an error from this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient (connection lost, deadlock, pool timeout, I/O): retry the task later.
    Retry,
    /// Permanent for this task (bad data, refused path): fail it, no retry.
    Fail,
}
