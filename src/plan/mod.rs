//! Pure encode planning: profile + media info + settings (+ capabilities) → ffmpeg argv (pending).
