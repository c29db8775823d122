//! Paths under MEDIA_ROOT: MediaCMS's relative names (contract §4.2), Django's file naming
//! (§4.1), confinement of every DB/message path, atomic placement and guarded removal.
//!
//! Naming functions are pure; `fs` does the file I/O.

mod fs;

pub use fs::{confine, place_file, place_file_async, remove_media_file};

use rand::distr::{Alphanumeric, SampleString};

/// Django's `FileField` `max_length` for every path column the worker writes.
pub const MAX_NAME_LEN: usize = 500;

/// Why a path or file operation was refused. Disposition: every variant is a *fail* for the task
/// that asked (retrying cannot make a foreign path acceptable), except [`LayoutError::Io`] which
/// may be transient (disk full, NFS hiccup) and is a *retry*.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("file name {0:?} is empty after sanitising")]
    InvalidName(String),
    #[error("path {path:?} resolves outside MEDIA_ROOT {root:?}")]
    Escapes { path: String, root: String },
    #[error("path {0:?} is not a regular file (directory, symlink or special file): refused")]
    NotRegularFile(String),
    #[error("no free name for {0:?} within {MAX_NAME_LEN} characters")]
    NoAvailableName(String),
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl LayoutError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// True when retrying the same operation later could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// Django's `get_valid_filename`: strip surrounding whitespace, spaces → `_`, drop every char
/// outside `[-\w.]` (`\w` is Unicode-aware in Python 3). `""`, `.` and `..` are refused.
pub fn get_valid_filename(name: &str) -> Result<String, LayoutError> {
    let cleaned: String = name
        .trim()
        .replace(' ', "_")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(LayoutError::InvalidName(name.to_owned()));
    }
    Ok(cleaned)
}

/// `(file_root, file_ext)` as Django splits a name for collision suffixes: the ext is *all*
/// `PurePath.suffixes` joined, so the random suffix lands before the first dot.
pub fn split_root_ext(file_name: &str) -> (&str, &str) {
    // PurePath.suffixes: none when the name ends with '.', leading dots are not suffixes.
    if file_name.ends_with('.') {
        return (file_name, "");
    }
    let lead = file_name.len() - file_name.trim_start_matches('.').len();
    match file_name[lead..].find('.') {
        Some(i) => file_name.split_at(lead + i),
        None => (file_name, ""),
    }
}

/// Django's collision rename: `<root>_<7 random [A-Za-z0-9]><all suffixes>`, with the root
/// truncated when the whole relative path would exceed [`MAX_NAME_LEN`].
pub fn alternative_name(dir: &str, file_name: &str) -> Result<String, LayoutError> {
    let (root, ext) = split_root_ext(file_name);
    let suffix = Alphanumeric.sample_string(&mut rand::rng(), 7);
    let mut root = root.to_owned();
    let prefix_len = if dir.is_empty() { 0 } else { dir.len() + 1 };
    let total = prefix_len + root.len() + 1 + suffix.len() + ext.len();
    if total > MAX_NAME_LEN {
        let excess = total - MAX_NAME_LEN;
        if excess >= root.len() {
            return Err(LayoutError::NoAvailableName(file_name.to_owned()));
        }
        let mut cut = root.len() - excess;
        while !root.is_char_boundary(cut) {
            cut -= 1;
        }
        root.truncate(cut);
    }
    Ok(format!("{root}_{suffix}{ext}"))
}

/// Splits a relative name into `(dir, file)`; `dir` is `""` for a bare name.
pub fn split_dir(relative: &str) -> (&str, &str) {
    match relative.rfind('/') {
        Some(i) => (&relative[..i], &relative[i + 1..]),
        None => ("", relative),
    }
}

/// `encoded/<profile_id>/<username>/<uid_hex>.<name>` with Django's sanitising of the file
/// part (the directory part is not sanitised by Django either).
pub fn encoded_relative_path(
    profile_id: i32,
    username: &str,
    uid_hex: &str,
    name: &str,
) -> Result<String, LayoutError> {
    let file = get_valid_filename(&format!("{uid_hex}.{name}"))?;
    Ok(format!("encoded/{profile_id}/{username}/{file}"))
}

/// The `name` `encode_media` gives an encoding: `basename(input) + "." + extension` (so the
/// uid appears twice in final names, as MediaCMS does).
pub fn encoding_output_name(input_path: &str, extension: &str) -> String {
    let base = input_path.rsplit('/').next().unwrap_or(input_path);
    format!("{base}.{extension}")
}

/// A name shaped like Python's `NamedTemporaryFile(suffix=".gif")` basename, which MediaCMS
/// uses as the gif's stored name: `tmp` + 8 chars of `[a-z0-9_]` + `.gif`.
pub fn gif_output_name() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    let mut rng = rand::rng();
    let tail: String = (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("tmp{tail}.gif")
}

/// The original's file name without its directory and without the `<uid_hex>.` prefix that the
/// upload path added (thumbnail-dir names put the prefix back exactly once).
fn original_name<'a>(media_file: &'a str, uid_hex: &str) -> &'a str {
    let base = media_file.rsplit('/').next().unwrap_or(media_file);
    base.strip_prefix(uid_hex)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(base)
}

/// `original/thumbnails/user/<U>/<H>.<orig>sprites.jpg` (no separator before `sprites`).
pub fn sprites_relative_path(
    username: &str,
    uid_hex: &str,
    media_file: &str,
) -> Result<String, LayoutError> {
    let orig = original_name(media_file, uid_hex);
    let file = get_valid_filename(&format!("{uid_hex}.{orig}sprites.jpg"))?;
    Ok(format!("original/thumbnails/user/{username}/{file}"))
}

/// `original/subtitles/user/<U>/<H>.<orig without its last extension>.vtt`.
pub fn subtitle_relative_path(
    username: &str,
    uid_hex: &str,
    media_file: &str,
) -> Result<String, LayoutError> {
    let orig = original_name(media_file, uid_hex);
    let stem = match orig.rfind('.') {
        Some(i) if i > 0 => &orig[..i],
        _ => orig,
    };
    let file = get_valid_filename(&format!("{uid_hex}.{stem}.vtt"))?;
    Ok(format!("original/subtitles/user/{username}/{file}"))
}

/// Absolute HLS directory of a media: `<MEDIA_ROOT>/hls/<uid_hex>`.
pub fn hls_dir(media_root: &std::path::Path, uid_hex: &str) -> std::path::PathBuf {
    media_root.join("hls").join(uid_hex)
}

/// Absolute `master.m3u8` path stored in `files_media.hls_file`.
pub fn hls_master_path(media_root: &std::path::Path, uid_hex: &str) -> std::path::PathBuf {
    hls_dir(media_root, uid_hex).join("master.m3u8")
}

/// Absolute path string of a relative FileField value (what Django's `.path` returns), e.g.
/// for `files_media.preview_file_path`.
pub fn absolute(media_root: &std::path::Path, relative: &str) -> String {
    media_root.join(relative).to_string_lossy().into_owned()
}

/// `"<bytes/1e6 rounded to 1 decimal>MB"`, MediaCMS's `size` column format.
pub fn size_label(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "41905ce2087146cdba79c28a24c33a9a";

    #[test]
    fn valid_filename_matches_django() {
        assert_eq!(
            get_valid_filename("  my video (1).mp4 ").unwrap(),
            "my_video_1.mp4"
        );
        assert_eq!(get_valid_filename("a$b%c.mp4").unwrap(), "abc.mp4");
        assert_eq!(get_valid_filename("näme-x.mp4").unwrap(), "näme-x.mp4");
        assert!(get_valid_filename("..").is_err());
        assert!(get_valid_filename("$$$").is_err());
    }

    #[test]
    fn root_ext_split_takes_all_suffixes() {
        assert_eq!(split_root_ext("a.b.c.mp4"), ("a", ".b.c.mp4"));
        assert_eq!(split_root_ext("noext"), ("noext", ""));
        assert_eq!(split_root_ext(".hidden.mp4"), (".hidden", ".mp4"));
        assert_eq!(split_root_ext("trail."), ("trail.", ""));
    }

    #[test]
    fn alternative_name_inserts_before_first_dot() {
        let alt = alternative_name("d", &format!("{H}.reference_720p.mp4.jpg")).unwrap();
        let (root, ext) = split_root_ext(&alt);
        assert_eq!(ext, ".reference_720p.mp4.jpg");
        assert_eq!(root.len(), H.len() + 8);
        assert!(root.starts_with(&format!("{H}_")));
        assert!(root[H.len() + 1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn alternative_name_truncates_long_roots() {
        let long = format!("{}.mp4", "x".repeat(600));
        let alt = alternative_name("encoded/1/u", &long).unwrap();
        assert_eq!("encoded/1/u/".len() + alt.len(), MAX_NAME_LEN);
        assert!(alt.ends_with(".mp4"));
    }

    #[test]
    fn reference_names() {
        let src = format!("/m/original/user/refuser/{H}.reference_720p.mp4");
        let name = encoding_output_name(&src, "mp4");
        assert_eq!(
            encoded_relative_path(23, "refuser", H, &name).unwrap(),
            format!("encoded/23/refuser/{H}.{H}.reference_720p.mp4.mp4")
        );
        let media_file = format!("original/user/refuser/{H}.reference_720p.mp4");
        assert_eq!(
            sprites_relative_path("refuser", H, &media_file).unwrap(),
            format!("original/thumbnails/user/refuser/{H}.reference_720p.mp4sprites.jpg")
        );
        assert_eq!(
            subtitle_relative_path("refuser", H, &media_file).unwrap(),
            format!("original/subtitles/user/refuser/{H}.reference_720p.vtt")
        );
        let gif = gif_output_name();
        assert!(gif.starts_with("tmp") && gif.ends_with(".gif") && gif.len() == 15);
    }

    #[test]
    fn size_label_rounds_to_one_decimal() {
        assert_eq!(size_label(219_605), "0.2MB");
        assert_eq!(size_label(15_087_352), "15.1MB");
        assert_eq!(size_label(37_349), "0.0MB");
    }
}
