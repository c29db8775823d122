//! ffmpeg adapters: the only process spawner, progress parsing, in-process probing, capabilities.

pub mod backend;
pub mod caps;
mod drain;
pub mod hwfail;
mod hwtest;
pub mod keyframes;
pub mod libav;
pub mod probe;
pub mod progress;
pub mod report;
pub mod run;
mod stream_info;
