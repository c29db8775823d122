#!/bin/sh
#! Dependency-layer helper for docker/Dockerfile: create an empty source file for every Cargo target
#! of the manifest in the current directory, so `cargo build` can compile the dependencies alone.
# Why a parser rather than a `path = ` grep: targets without an explicit path ([[bench]] name =
# "codec" → benches/codec.rs) must be stubbed too, or cargo stops at "can't find 'codec' bench".
# Existing files are left alone. POSIX sh + awk: it runs in the builder before any real source.
set -eu
manifest=${1:-Cargo.toml}
awk '
  function flush() {
    if (kind == "") return
    if (path == "") {
      if (kind == "lib") path = "src/lib.rs"
      else if (kind == "bin") path = "src/bin/" name ".rs"
      else if (kind == "bench") path = "benches/" name ".rs"
      else if (kind == "test") path = "tests/" name ".rs"
      else if (kind == "example") path = "examples/" name ".rs"
    }
    print kind, path
    kind = ""
  }
  /^[[:space:]]*\[/ {
    flush()
    if ($0 ~ /^[[:space:]]*\[lib\]/) kind = "lib"
    else if (match($0, /^[[:space:]]*\[\[(bin|bench|test|example)\]\]/)) {
      kind = $0; sub(/^[[:space:]]*\[\[/, "", kind); sub(/\]\].*/, "", kind)
    }
    name = ""; path = ""
    next
  }
  kind != "" && /^[[:space:]]*name[[:space:]]*=/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); name = v }
  kind != "" && /^[[:space:]]*path[[:space:]]*=/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); path = v }
  END { flush(); print "lib src/lib.rs"; print "bin src/main.rs" }
' "$manifest" | while read -r kind path; do
  [ -e "$path" ] && continue
  mkdir -p "$(dirname "$path")"
  if [ "$kind" = lib ]; then : >"$path"; else echo 'fn main() {}' >"$path"; fi
done
