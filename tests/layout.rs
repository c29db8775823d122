//! Files under MEDIA_ROOT on a real filesystem: Django-compatible placement (collision suffix
//! before all suffixes, never overwriting, mode 0644, no staging leftovers) and confinement of
//! every removal (`..`, symlink escapes, absolute paths elsewhere, non-regular files).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use mediacms_worker::mediacms::layout::{
    self, confine, place_file, remove_media_file, LayoutError,
};

const H: &str = "41905ce2087146cdba79c28a24c33a9a";

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[test]
fn place_file_names_like_django_and_never_overwrites() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rel = layout::encoded_relative_path(10, "refuser", H, &format!("{H}.my clip (1).mp4.mp4"))
        .unwrap();
    assert_eq!(rel, format!("encoded/10/refuser/{H}.{H}.my_clip_1.mp4.mp4"));

    let first = work.path().join("a");
    write(&first, b"first");
    assert_eq!(place_file(root.path(), &rel, &first).unwrap(), rel);
    let dest = root.path().join(&rel);
    assert_eq!(std::fs::read(&dest).unwrap(), b"first");
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o644
    );

    let second = work.path().join("b");
    write(&second, b"second");
    let used = place_file(root.path(), &rel, &second).unwrap();
    let (dir, file) = layout::split_dir(&used);
    assert_eq!(dir, format!("encoded/10/refuser"));
    let (file_root, ext) = layout::split_root_ext(file);
    assert_eq!(
        ext,
        format!(".{H}.my_clip_1.mp4.mp4"),
        "suffix goes before all suffixes"
    );
    assert_eq!(file_root.len(), H.len() + 8);
    assert!(file_root.starts_with(&format!("{H}_")));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"first",
        "foreign file untouched"
    );
    assert_eq!(std::fs::read(root.path().join(&used)).unwrap(), b"second");
    assert_eq!(
        std::fs::read_dir(root.path().join(dir)).unwrap().count(),
        2,
        "no staging leftovers"
    );
}

#[test]
fn place_file_refuses_a_directory_symlinked_out_of_the_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("encoded")).unwrap();
    symlink(outside.path(), root.path().join("encoded/7")).unwrap();
    let src = root.path().join("src.mp4");
    write(&src, b"x");
    let err = place_file(root.path(), "encoded/7/u/f.mp4", &src).unwrap_err();
    assert!(matches!(err, LayoutError::Escapes { .. }), "{err}");
    assert!(
        !outside.path().join("u").exists(),
        "nothing created outside"
    );
}

#[test]
fn confine_rejects_escapes() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("encoded/1")).unwrap();
    symlink(outside.path(), r.join("encoded/evil")).unwrap();

    let inside = confine(r, Path::new("encoded/1/new/file.mp4")).unwrap();
    assert_eq!(
        inside,
        r.canonicalize().unwrap().join("encoded/1/new/file.mp4")
    );
    assert!(
        confine(r, &r.join("encoded/1/x.mp4")).is_ok(),
        "absolute inside the root"
    );
    for bad in [
        "../x",
        "encoded/../../x",
        "encoded/1/../../../etc/passwd",
        "encoded/evil/f",
        "encoded/nope/../../../x",
    ] {
        let err = confine(r, Path::new(bad)).unwrap_err();
        assert!(matches!(err, LayoutError::Escapes { .. }), "{bad}: {err}");
    }
    assert!(matches!(
        confine(r, Path::new("/etc/passwd")),
        Err(LayoutError::Escapes { .. })
    ));
}

#[test]
fn remove_media_file_deletes_only_regular_files_inside_the_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    let victim = outside.path().join("victim.mp4");
    write(&victim, b"keep me");
    let target = r.join("encoded/1/u/a.mp4");
    write(&target, b"x");
    std::fs::create_dir_all(r.join("encoded/dir")).unwrap();
    symlink(&victim, r.join("encoded/1/u/link_out.mp4")).unwrap();
    symlink(&target, r.join("encoded/1/u/link_in.mp4")).unwrap();

    // Refusals, each typed; nothing outside (or behind a link) is touched.
    let out = remove_media_file(r, &victim).unwrap_err();
    assert!(matches!(out, LayoutError::Escapes { .. }));
    let dots = remove_media_file(
        r,
        &r.join("encoded/../..")
            .join(victim.strip_prefix("/").unwrap()),
    )
    .unwrap_err();
    assert!(matches!(dots, LayoutError::Escapes { .. }));
    let link_out = remove_media_file(r, Path::new("encoded/1/u/link_out.mp4")).unwrap_err();
    assert!(matches!(link_out, LayoutError::Escapes { .. }));
    let link_in = remove_media_file(r, Path::new("encoded/1/u/link_in.mp4")).unwrap_err();
    assert!(matches!(link_in, LayoutError::NotRegularFile(_)));
    let dir = remove_media_file(r, Path::new("encoded/dir")).unwrap_err();
    assert!(matches!(dir, LayoutError::NotRegularFile(_)));
    assert!(victim.exists() && target.exists() && r.join("encoded/dir").is_dir());

    // A regular file inside: removed; a second time: nothing there.
    assert!(remove_media_file(r, &target).unwrap());
    assert!(!target.exists());
    assert!(!remove_media_file(r, Path::new("encoded/1/u/a.mp4")).unwrap());
}
