//! MediaCMS's database and media volume: all SQL ([`store`]), the Django signal side effects
//! replayed explicitly ([`signals`]), row types ([`model`]) and file layout ([`layout`]).
//!
//! Call order for one `encode_media` task (see `signals` for the chunk path):
//! [`signals::Signals::begin_encoding`] → [`store::Store::set_commands`] →
//! [`store::Store::update_progress`] (false = row deleted = cancel) →
//! [`layout::place_file`] + [`store::Store::mark_success`] or [`store::Store::mark_failed`] →
//! [`signals::Signals::encoding_saved`] → publish the returned [`signals::FollowUp`]s.

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
