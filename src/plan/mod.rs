//! Pure encode planning: profile + media info + settings (+ backend) → ffmpeg argv. No I/O.
//!
//! The software backend reproduces MediaCMS's `produce_ffmpeg_commands` argv exactly (contract
//! §3; ARCHITECTURE decision 6). Hardware backends ([`hw`]) map the same decisions (height box,
//! bitrate table, GOP, maxrate/bufsize, audio) onto their encoders. [`extras`] builds the gif,
//! sprite and concat commands, [`hls`] the HLS packaging, [`repr`] the `files_encoding.commands`
//! text.
//!
//! Allowed deviations from MediaCMS (contract §11), all opt-in or outside the software argv:
//! - `-threads N` is added (before `-strict -2`) only when [`EncodeSettings::ffmpeg_threads`] > 0.
//! - Hardware backends ([`hw`] documents their choices); the one-process sprite strip
//!   ([`plan_sprite_strip`]); HLS by ffmpeg instead of Bento4 ([`hls`]); concat list lines are
//!   quoted only for paths MediaCMS could not have produced ([`concat_list`]).
//!
//! The argv are MediaCMS's; the process runner adds its own `-nostdin -progress …` options.

pub mod eligibility;
pub mod extras;
pub mod hls;
pub mod hw;
pub mod ladder;
pub mod media_info;
pub mod rational;
pub mod repr;
pub mod rules;
pub mod software;

pub use eligibility::{HwFamily, Place, Route, SourceVideo};
pub use extras::{
    concat_list, ffmpeg_error_is_final, ffmpeg_reported_empty, gif_seek_past_end, plan_concat,
    plan_gif, plan_gif_from_start, plan_sprite_frames, plan_sprite_strip, sprite_frame_count,
    GIF_SEEK_SECS,
};
pub use hls::{
    avc1_codec_from_avcc, hls_variant_dirs, iframe_playlist, iframe_rates, master_playlist,
    plan_hls, HlsInput, IframeEntry,
};
pub use ladder::{
    gif_joins_ladder, ladder_groups, plan_ladder, plan_ladder_with, plan_ladder_with_gif,
    LadderExtras, LadderRung, LadderSkip, SpriteFrames,
};
pub use media_info::MediaInfo;
pub use repr::commands_repr;
pub use rules::Codec;

/// One `files_encodeprofile` row, as far as planning cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    pub id: i32,
    /// `mp4` | `webm` | `gif`.
    pub extension: String,
    pub resolution: Option<i32>,
    /// `h264` | `h265` | `vp9` (or `None` for gif).
    pub codec: Option<String>,
}

/// The MediaCMS settings planning reads; the lead maps `Config` onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeSettings {
    /// `FFMPEG_DEFAULT_PRESET` (x264/x265 `-preset`).
    pub preset: String,
    /// `MINIMUM_RESOLUTIONS_TO_ENCODE`: produced even when the source is smaller.
    pub minimum_resolutions: Vec<i32>,
    /// `SPRITE_NUM_SECS`.
    pub sprite_num_secs: u32,
    /// `-threads N` per ffmpeg; 0 = don't pass it (MediaCMS behaviour).
    pub ffmpeg_threads: u32,
}

impl Default for EncodeSettings {
    /// MediaCMS's defaults.
    fn default() -> Self {
        EncodeSettings {
            preset: "medium".to_string(),
            minimum_resolutions: vec![144, 240],
            sprite_num_secs: 10,
            ffmpeg_threads: 0,
        }
    }
}

/// Where video is decoded, scaled and encoded (ARCHITECTURE decision 10). Every hardware
/// backend carries the device the probe validated, and every argv it plans names that device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backend {
    /// libx264/libx265/libvpx-vp9 exactly as MediaCMS.
    Software,
    /// NVDEC decode + CUDA scale + NVENC encode on CUDA device `device` (an index); inputs NVDEC
    /// cannot decode are decoded in software and uploaded ([`eligibility`]).
    Nvenc { device: String },
    /// Software decode, VAAPI scale + encode on the given render node (e.g. `/dev/dri/renderD128`).
    Vaapi { device: String },
    /// Software decode, Quick Sync scale + encode on the given render node.
    Qsv { device: String },
    /// NVDEC decode + CUDA scale on CUDA device `device`, software encode (GPUs without NVENC,
    /// e.g. A100/H100).
    NvdecDecodeOnly { device: String },
}

impl Backend {
    /// The device every argv of this backend names (`None` for software).
    pub fn device(&self) -> Option<&str> {
        match self {
            Backend::Software => None,
            Backend::Nvenc { device }
            | Backend::Vaapi { device }
            | Backend::Qsv { device }
            | Backend::NvdecDecodeOnly { device } => Some(device),
        }
    }

    /// The vendor family the eligibility rules apply to (`None` for software).
    pub fn family(&self) -> Option<HwFamily> {
        Some(match self {
            Backend::Software => return None,
            Backend::Nvenc { .. } => HwFamily::Nvidia { encoder: true },
            Backend::NvdecDecodeOnly { .. } => HwFamily::Nvidia { encoder: false },
            Backend::Vaapi { .. } => HwFamily::Vaapi,
            Backend::Qsv { .. } => HwFamily::Qsv,
        })
    }
}

/// The file-level inputs of one encode (MediaCMS's `media_file`, `output_filename`, `pass_file`,
/// `chunk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeIo<'a> {
    /// The original's absolute path, or the chunk file for chunk encodes.
    pub input: &'a str,
    /// The temp output file; its extension picks the container.
    pub output: &'a str,
    /// Pass-log base for two-pass encodes.
    pub pass_file: &'a str,
    pub chunk: bool,
}

/// The resolved commands of one encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodePlan {
    /// Full argv per ffmpeg run, in order (`argv[0] == "ffmpeg"`): one for CRF, two for two-pass.
    pub passes: Vec<Vec<String>>,
    /// The backend the argv actually uses: differs from the requested one when a hardware backend
    /// cannot serve this encode (unknown source dimensions, an input no stage of it can take; VP9
    /// or a tiny rendition on NVENC becomes the NVDEC decode offload).
    pub backend: Backend,
    /// Where decode, scale and encode run for this input, and why not on the hardware.
    pub route: Route,
}

/// Why MediaCMS's `produce_ffmpeg_commands` would return False (or raise) for this encode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanSkip {
    #[error("unknown codec {0:?}")]
    UnknownCodec(Option<String>),
    #[error("no bitrate for {codec:?} at resolution {resolution:?}")]
    NoBitrate {
        codec: Codec,
        resolution: Option<i32>,
    },
    #[error("source height {source_height} is below {resolution} and not a minimum resolution")]
    SourceTooSmall { source_height: i64, resolution: i32 },
    /// MediaCMS would raise here (missing or malformed `media_info` field); the encode fails.
    #[error("media_info field {0} is missing or invalid")]
    InvalidMediaInfo(&'static str),
}

/// Plans one video encode. `Err` means MediaCMS would not encode (the Encoding becomes `fail`).
pub fn plan_encode(
    io: &EncodeIo<'_>,
    info: &MediaInfo,
    profile: &ProfileSpec,
    settings: &EncodeSettings,
    backend: &Backend,
) -> Result<EncodePlan, PlanSkip> {
    let decisions = rules::decide(info, profile, settings)?;
    let software = |route: Route| EncodePlan {
        passes: software::passes(io, &decisions, settings),
        backend: Backend::Software,
        route,
    };
    if *backend == Backend::Software {
        return Ok(software(Route::software("software backend")));
    }
    Ok(hw::passes(io, info, &decisions, settings, backend).unwrap_or_else(software))
}
