//! docker/Dockerfile's build context holds what its dependency layer needs: every Cargo target
//! present or stubbed (benches included), checked by replaying that layer in a temp dir.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether `path` (relative, `/`-separated) passes docker/Dockerfile.dockerignore. The file is an
/// allow-list: `*`, then `!entry` lines; an entry admits itself and everything under it.
fn in_context(ignore: &str, path: &str) -> bool {
    let mut allowed = false;
    for line in ignore.lines().map(str::trim) {
        if line == "*" {
            allowed = false;
        } else if let Some(entry) = line.strip_prefix('!') {
            let entry = entry.trim_end_matches('/');
            if path == entry || path.starts_with(&format!("{entry}/")) {
                allowed = true;
            }
        }
    }
    allowed
}

fn cargo_metadata_ok(dir: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(dir)
        .output()
        .expect("cargo runs");
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Regression: the stub loop covered only targets with an explicit `path = …`, so `[[bench]]
/// name = "codec"` (benches/codec.rs, not in the context) stopped `docker build` with "can't
/// find 'codec' bench at 'benches/codec.rs'".
#[test]
fn docker_build_context_has_every_cargo_target() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/docker/Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(format!("{ROOT}/docker/Dockerfile.dockerignore")).unwrap();
    // What the dependency layer COPYs must be in the context, and it must run the stub maker.
    for src in [
        "Cargo.toml",
        "Cargo.lock",
        "docker/stub-targets.sh",
        "src/main.rs",
    ] {
        assert!(
            in_context(&ignore, src),
            "{src} is not in the build context"
        );
    }
    assert!(
        dockerfile.contains("COPY docker/stub-targets.sh"),
        "stub maker not copied"
    );
    assert!(dockerfile.contains("&& stub-targets"), "stub maker not run");

    // Replay the dependency layer: only the manifests, then the stub maker.
    let dir = tempfile::tempdir().unwrap();
    for f in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(format!("{ROOT}/{f}"), dir.path().join(f)).unwrap();
    }
    let status = Command::new("sh")
        .arg(format!("{ROOT}/docker/stub-targets.sh"))
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    cargo_metadata_ok(dir.path()).unwrap_or_else(|e| panic!("dependency layer: {e}"));

    // The second step: stubbed src/ replaced by the real one, the other stubs kept.
    std::fs::remove_dir_all(dir.path().join("src")).unwrap();
    let copied = Command::new("cp")
        .args([
            "-r",
            &format!("{ROOT}/src"),
            &dir.path().display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());
    cargo_metadata_ok(dir.path()).unwrap_or_else(|e| panic!("source layer: {e}"));
}

#[test]
fn dockerignore_allow_list_semantics() {
    let ignore = "*\n!Cargo.toml\n!src/\n";
    assert!(in_context(ignore, "src/main.rs"));
    assert!(in_context(ignore, "Cargo.toml"));
    assert!(!in_context(ignore, "benches/codec.rs"));
    assert!(!in_context(ignore, "srcx/a.rs"));
}
