//! ffprobe-compatible per-stream dictionaries (`video_info` / `audio_info` in `media_info`),
//! read from libav's structures in-process.
//!
//! Keys, order and value types follow ffprobe 5.1's `-show_streams -of json` output; values
//! ffprobe prints as `N/A` are omitted, as its JSON writer does. Left out (they need an opened
//! decoder or a decoder's private options): `coded_width`, `coded_height`, `closed_captions`,
//! `film_grain`, `refs`, `is_avc`, `nal_length_size`, `max_bit_rate`.

use std::ffi::CStr;

use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::format::stream::Stream;
use serde_json::{json, Map, Value};

/// ffprobe's disposition names, in its output order.
const DISPOSITIONS: [(&str, i32); 17] = [
    ("default", ffi::AV_DISPOSITION_DEFAULT),
    ("dub", ffi::AV_DISPOSITION_DUB),
    ("original", ffi::AV_DISPOSITION_ORIGINAL),
    ("comment", ffi::AV_DISPOSITION_COMMENT),
    ("lyrics", ffi::AV_DISPOSITION_LYRICS),
    ("karaoke", ffi::AV_DISPOSITION_KARAOKE),
    ("forced", ffi::AV_DISPOSITION_FORCED),
    ("hearing_impaired", ffi::AV_DISPOSITION_HEARING_IMPAIRED),
    ("visual_impaired", ffi::AV_DISPOSITION_VISUAL_IMPAIRED),
    ("clean_effects", ffi::AV_DISPOSITION_CLEAN_EFFECTS),
    ("attached_pic", ffi::AV_DISPOSITION_ATTACHED_PIC),
    ("timed_thumbnails", ffi::AV_DISPOSITION_TIMED_THUMBNAILS),
    ("captions", ffi::AV_DISPOSITION_CAPTIONS),
    ("descriptions", ffi::AV_DISPOSITION_DESCRIPTIONS),
    ("metadata", ffi::AV_DISPOSITION_METADATA),
    ("dependent", ffi::AV_DISPOSITION_DEPENDENT),
    ("still_image", ffi::AV_DISPOSITION_STILL_IMAGE),
];

/// Builds the ffprobe-style dictionary of one stream.
pub(super) fn stream_dict(input: &Input, stream: &Stream) -> Map<String, Value> {
    let mut m = Map::new();
    // SAFETY: both pointers come from a live, opened input context borrowed for this call.
    unsafe {
        let st = &*stream.as_ptr();
        let par = &*st.codecpar;
        m.insert("index".into(), json!(st.index));
        codec_fields(&mut m, par);
        match par.codec_type {
            ffi::AVMediaType::AVMEDIA_TYPE_VIDEO => video_fields(&mut m, input, stream, par),
            ffi::AVMediaType::AVMEDIA_TYPE_AUDIO => audio_fields(&mut m, par),
            _ => {}
        }
        timing_fields(&mut m, input, st, par);
    }
    m
}

unsafe fn cstr(p: *const libc::c_char) -> Option<String> {
    (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
}

fn q(r: ffi::AVRational, sep: char) -> String {
    format!("{}{sep}{}", r.num, r.den)
}

unsafe fn codec_fields(m: &mut Map<String, Value>, par: &ffi::AVCodecParameters) {
    let desc = ffi::avcodec_descriptor_get(par.codec_id);
    let (name, long) = match desc.as_ref() {
        Some(d) => (cstr(d.name), cstr(d.long_name)),
        None => (None, None),
    };
    m.insert("codec_name".into(), json!(name.unwrap_or("unknown".into())));
    m.insert(
        "codec_long_name".into(),
        json!(long.unwrap_or("unknown".into())),
    );
    if let Some(profile) = cstr(ffi::avcodec_profile_name(par.codec_id, par.profile)) {
        m.insert("profile".into(), json!(profile));
    } else if par.profile != ffi::FF_PROFILE_UNKNOWN {
        m.insert("profile".into(), json!(par.profile.to_string()));
    }
    let kind = cstr(ffi::av_get_media_type_string(par.codec_type));
    m.insert("codec_type".into(), json!(kind.unwrap_or("unknown".into())));
    let mut buf = [0 as libc::c_char; 32];
    let tag = cstr(ffi::av_fourcc_make_string(buf.as_mut_ptr(), par.codec_tag));
    m.insert("codec_tag_string".into(), json!(tag.unwrap_or_default()));
    m.insert(
        "codec_tag".into(),
        json!(format!("0x{:04x}", par.codec_tag)),
    );
}

unsafe fn video_fields(
    m: &mut Map<String, Value>,
    input: &Input,
    stream: &Stream,
    par: &ffi::AVCodecParameters,
) {
    m.insert("width".into(), json!(par.width));
    m.insert("height".into(), json!(par.height));
    m.insert("has_b_frames".into(), json!(par.video_delay));
    let sar = ffi::av_guess_sample_aspect_ratio(
        input.as_ptr() as *mut _,
        stream.as_ptr() as *mut _,
        std::ptr::null_mut(),
    );
    if sar.num != 0 {
        let mut dar = ffi::AVRational { num: 0, den: 0 };
        ffi::av_reduce(
            &mut dar.num,
            &mut dar.den,
            i64::from(par.width) * i64::from(sar.num),
            i64::from(par.height) * i64::from(sar.den),
            1024 * 1024,
        );
        m.insert("sample_aspect_ratio".into(), json!(q(sar, ':')));
        m.insert("display_aspect_ratio".into(), json!(q(dar, ':')));
    }
    if (0..ffi::AVPixelFormat::AV_PIX_FMT_NB as i32).contains(&par.format) {
        // SAFETY: range-checked above; AVPixelFormat is a C enum over 0..NB.
        let fmt: ffi::AVPixelFormat = std::mem::transmute(par.format);
        if let Some(name) = cstr(ffi::av_get_pix_fmt_name(fmt)) {
            m.insert("pix_fmt".into(), json!(name));
        }
    }
    m.insert("level".into(), json!(par.level));
    color_fields(m, par);
    if let Some(order) = field_order_name(par.field_order) {
        m.insert("field_order".into(), json!(order));
    }
}

unsafe fn color_fields(m: &mut Map<String, Value>, par: &ffi::AVCodecParameters) {
    use ffi::*;
    let mut put = |key: &str, unspecified: bool, name: *const libc::c_char| {
        if let (false, Some(n)) = (unspecified, cstr(name)) {
            m.insert(key.into(), json!(n));
        }
    };
    let r = par.color_range;
    put(
        "color_range",
        r == AVColorRange::AVCOL_RANGE_UNSPECIFIED,
        av_color_range_name(r),
    );
    let s = par.color_space;
    put(
        "color_space",
        s == AVColorSpace::AVCOL_SPC_UNSPECIFIED,
        av_color_space_name(s),
    );
    let t = par.color_trc;
    put(
        "color_transfer",
        t == AVColorTransferCharacteristic::AVCOL_TRC_UNSPECIFIED,
        av_color_transfer_name(t),
    );
    let p = par.color_primaries;
    put(
        "color_primaries",
        p == AVColorPrimaries::AVCOL_PRI_UNSPECIFIED,
        av_color_primaries_name(p),
    );
    let c = par.chroma_location;
    put(
        "chroma_location",
        c == AVChromaLocation::AVCHROMA_LOC_UNSPECIFIED,
        av_chroma_location_name(c),
    );
}

/// ffprobe's `field_order` names; `None` where it prints `unknown` (omitted in JSON).
pub(super) fn field_order_name(order: ffi::AVFieldOrder) -> Option<&'static str> {
    use ffi::AVFieldOrder::*;
    match order {
        AV_FIELD_PROGRESSIVE => Some("progressive"),
        AV_FIELD_TT => Some("tt"),
        AV_FIELD_BB => Some("bb"),
        AV_FIELD_TB => Some("tb"),
        AV_FIELD_BT => Some("bt"),
        AV_FIELD_UNKNOWN => None,
    }
}

unsafe fn audio_fields(m: &mut Map<String, Value>, par: &ffi::AVCodecParameters) {
    let fmt_name = if (0..ffi::AVSampleFormat::AV_SAMPLE_FMT_NB as i32).contains(&par.format) {
        // SAFETY: range-checked; AVSampleFormat is a C enum over 0..NB.
        cstr(ffi::av_get_sample_fmt_name(std::mem::transmute::<
            i32,
            ffi::AVSampleFormat,
        >(par.format)))
    } else {
        None
    };
    m.insert(
        "sample_fmt".into(),
        json!(fmt_name.unwrap_or("unknown".into())),
    );
    m.insert("sample_rate".into(), json!(par.sample_rate.to_string()));
    m.insert("channels".into(), json!(par.ch_layout.nb_channels));
    if par.ch_layout.order != ffi::AVChannelOrder::AV_CHANNEL_ORDER_UNSPEC {
        let mut buf = [0 as libc::c_char; 128];
        if ffi::av_channel_layout_describe(&par.ch_layout, buf.as_mut_ptr(), buf.len()) > 0 {
            if let Some(layout) = cstr(buf.as_ptr()) {
                m.insert("channel_layout".into(), json!(layout));
            }
        }
    }
    m.insert(
        "bits_per_sample".into(),
        json!(ffi::av_get_bits_per_sample(par.codec_id)),
    );
}

fn time_string(ts: i64, tb: ffi::AVRational) -> Option<String> {
    (ts != ffi::AV_NOPTS_VALUE && tb.den != 0)
        .then(|| format!("{:.6}", ts as f64 * f64::from(tb.num) / f64::from(tb.den)))
}

unsafe fn timing_fields(
    m: &mut Map<String, Value>,
    input: &Input,
    st: &ffi::AVStream,
    par: &ffi::AVCodecParameters,
) {
    let show_ids = (*(*input.as_ptr()).iformat).flags & ffi::AVFMT_SHOW_IDS != 0;
    if show_ids {
        m.insert("id".into(), json!(format!("0x{:x}", st.id)));
    }
    m.insert("r_frame_rate".into(), json!(q(st.r_frame_rate, '/')));
    m.insert("avg_frame_rate".into(), json!(q(st.avg_frame_rate, '/')));
    m.insert("time_base".into(), json!(q(st.time_base, '/')));
    if st.start_time != ffi::AV_NOPTS_VALUE {
        m.insert("start_pts".into(), json!(st.start_time));
    }
    if let Some(t) = time_string(st.start_time, st.time_base) {
        m.insert("start_time".into(), json!(t));
    }
    if st.duration != ffi::AV_NOPTS_VALUE {
        m.insert("duration_ts".into(), json!(st.duration));
    }
    if let Some(t) = time_string(st.duration, st.time_base) {
        m.insert("duration".into(), json!(t));
    }
    if par.bit_rate > 0 {
        m.insert("bit_rate".into(), json!(par.bit_rate.to_string()));
    }
    if par.bits_per_raw_sample > 0 {
        m.insert(
            "bits_per_raw_sample".into(),
            json!(par.bits_per_raw_sample.to_string()),
        );
    }
    if st.nb_frames != 0 {
        m.insert("nb_frames".into(), json!(st.nb_frames.to_string()));
    }
    if par.extradata_size > 0 {
        m.insert("extradata_size".into(), json!(par.extradata_size));
    }
    let disposition: Map<String, Value> = DISPOSITIONS
        .iter()
        .map(|(name, flag)| {
            (
                (*name).to_owned(),
                json!(i32::from(st.disposition & flag != 0)),
            )
        })
        .collect();
    m.insert("disposition".into(), Value::Object(disposition));
    let tags = dict_map(st.metadata);
    if !tags.is_empty() {
        m.insert("tags".into(), Value::Object(tags));
    }
}

/// An AVDictionary as an ordered JSON object of strings.
pub(super) unsafe fn dict_map(dict: *const ffi::AVDictionary) -> Map<String, Value> {
    let mut out = Map::new();
    let mut entry: *mut ffi::AVDictionaryEntry = std::ptr::null_mut();
    loop {
        entry = ffi::av_dict_get(dict, c"".as_ptr(), entry, ffi::AV_DICT_IGNORE_SUFFIX);
        let Some(e) = entry.as_ref() else { break };
        if let (Some(k), Some(v)) = (cstr(e.key), cstr(e.value)) {
            out.insert(k, json!(v));
        }
    }
    out
}
