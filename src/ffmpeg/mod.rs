//! ffmpeg adapters: the only process spawner, progress parsing, in-process probing, capabilities.

pub mod backend;
pub mod caps;
pub mod libav;
pub mod probe;
pub mod progress;
pub mod run;
mod report;
mod stream_info;
