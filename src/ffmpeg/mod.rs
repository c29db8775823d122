//! ffmpeg adapters: the only process spawner, progress parsing, in-process probing, capabilities (pending).
