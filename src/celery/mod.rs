//! Pure Celery protocol code: no I/O, no transport types.
//!
//! - [`envelope`]: kombu's Redis list entry (base64 body, properties, delivery_info, tag),
//!   parsed once into the transport's facts and the task ([`envelope::read_redis`]).
//! - [`message`]: protocol-v2 headers and `[args, kwargs, embed]` body → [`message::TaskMessage`];
//!   [`message::OutgoingTask`] → bytes Celery 5.4 would publish.
//! - [`python`]: Python `json.dumps` bytes and Celery `saferepr` renderings.
//! - [`time`]: ETA/expires parsing (any offset; naive = Europe/London).
//! - [`args`]: the closed set of task names ([`args::TaskName`]) and typed argument binding.
//! - [`result`]: result documents.
//! - [`control`]: pidbox requests/replies and worker events.

pub mod args;
pub mod control;
pub mod envelope;
pub mod message;
pub mod python;
pub mod result;
pub mod time;
