//! File I/O under MEDIA_ROOT: confinement, Django-compatible placement (O_EXCL, never
//! overwrite, 0644), and guarded removal of files named by the DB or a message.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};

use super::{alternative_name, split_dir, LayoutError};

/// Resolves `path` (relative to `media_root`, or absolute) and proves it lies inside
/// `media_root`: existing ancestors are canonicalised (so symlinks are followed), the rest may
/// only hold plain components. `..` escapes, symlink escapes and absolute paths elsewhere are
/// [`LayoutError::Escapes`]. Used before every delete/read of a DB- or message-supplied path.
pub fn confine(media_root: &Path, path: &Path) -> Result<PathBuf, LayoutError> {
    let root = media_root
        .canonicalize()
        .map_err(|e| LayoutError::io("canonicalize MEDIA_ROOT", media_root, e))?;
    let escapes = || LayoutError::Escapes {
        path: path.display().to_string(),
        root: root.display().to_string(),
    };
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    // Walk up to the deepest existing ancestor; the not-yet-existing tail is kept lexically.
    let mut existing = joined.as_path();
    let mut tail: Vec<&std::ffi::OsStr> = Vec::new();
    let resolved_base = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match (existing.parent(), existing.components().next_back()) {
                    (Some(parent), Some(Component::Normal(name))) => {
                        tail.push(name);
                        existing = parent;
                    }
                    // `..`, `.` or the filesystem root in a missing tail: refuse rather than guess.
                    _ => return Err(escapes()),
                }
            }
            Err(e) => return Err(LayoutError::io("canonicalize", existing, e)),
        }
    };
    let mut resolved = resolved_base;
    for name in tail.into_iter().rev() {
        resolved.push(name);
    }
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(escapes())
    }
}

/// Moves `src_tmp` into MEDIA_ROOT under `relative` the way Django's storage saves a file, and
/// returns the relative name actually used (with a `_<7 random>` suffix before all suffixes
/// when the name was taken). The name is reserved with `O_CREAT|O_EXCL` (a foreign file is never
/// overwritten), the content is staged under a hidden name in the destination directory and
/// renamed over the reservation, so readers never see a partial file; mode 0644.
pub fn place_file(
    media_root: &Path,
    relative: &str,
    src_tmp: &Path,
) -> Result<String, LayoutError> {
    let (dir, file) = split_dir(relative);
    // Confine before creating (no directory is ever made outside the root) and again after,
    // in case a symlink appeared meanwhile.
    let dir_abs = confine(media_root, Path::new(dir))?;
    fs::create_dir_all(&dir_abs).map_err(|e| LayoutError::io("create_dir_all", &dir_abs, e))?;
    let dir_abs = confine(media_root, Path::new(dir))?;
    let mut name = file.to_owned();
    let dest = loop {
        let candidate = dir_abs.join(&name);
        let reserved = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&candidate);
        match reserved {
            Ok(_) => break candidate,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                name = alternative_name(dir, file)?;
            }
            Err(e) => return Err(LayoutError::io("create", &candidate, e)),
        }
    };
    if let Err(e) = stage_and_rename(&dir_abs, &name, src_tmp, &dest) {
        let _ = fs::remove_file(&dest);
        return Err(e);
    }
    Ok(if dir.is_empty() {
        name
    } else {
        format!("{dir}/{name}")
    })
}

/// [`place_file`] on the blocking pool (an encoded file may be gigabytes, copied when TEMP and
/// MEDIA_ROOT are different filesystems): what every async caller uses.
pub async fn place_file_async(
    media_root: &Path,
    relative: &str,
    src_tmp: &Path,
) -> Result<String, LayoutError> {
    let (root, relative, src) = (
        media_root.to_path_buf(),
        relative.to_owned(),
        src_tmp.to_path_buf(),
    );
    crate::blocking::run(move || place_file(&root, &relative, &src)).await
}

fn stage_and_rename(dir: &Path, name: &str, src: &Path, dest: &Path) -> Result<(), LayoutError> {
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    let staged = dir.join(format!(".{name}.{tag}.part"));
    // Same filesystem: a rename; otherwise copy (the source temp file stays for its owner).
    if fs::rename(src, &staged).is_err() {
        if let Err(e) = fs::copy(src, &staged) {
            let _ = fs::remove_file(&staged);
            return Err(LayoutError::io("copy", src, e));
        }
    }
    let result = fs::set_permissions(&staged, fs::Permissions::from_mode(0o644))
        .map_err(|e| LayoutError::io("chmod", &staged, e))
        .and_then(|()| fs::rename(&staged, dest).map_err(|e| LayoutError::io("rename", dest, e)));
    if result.is_err() {
        let _ = fs::remove_file(&staged);
    }
    result
}

/// `remove_media_file` (contract §5.6, and every post_delete file removal): deletes `path` only
/// when it resolves inside MEDIA_ROOT and is a regular file (not a symlink, directory or special
/// file). `Ok(false)` when nothing exists there; every refusal is a typed error.
pub fn remove_media_file(media_root: &Path, path: &Path) -> Result<bool, LayoutError> {
    // Check the path as given first: a symlink (even to a file inside the root) is refused, so
    // a link planted in the volume can never redirect a delete.
    let given = if path.is_absolute() {
        path.to_path_buf()
    } else {
        media_root.join(path)
    };
    let resolved = confine(media_root, path)?;
    let meta = match fs::symlink_metadata(&given) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(LayoutError::io("stat", &given, e)),
    };
    if !meta.file_type().is_file() {
        return Err(LayoutError::NotRegularFile(given.display().to_string()));
    }
    match fs::remove_file(&resolved) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LayoutError::io("remove", &resolved, e)),
    }
}
