//! docker/ agrees with the code, checked statically (no Docker engine): Dockerfiles and compose
//! files use `config::defaults` (MEDIA_ROOT, port, drain), only env names `config` knows, a
//! command line `config` accepts; the dashboard and README use only catalogue metric names.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use clap::{CommandFactory, Parser};
use mediacms_worker::config::{defaults, HwAccel, RawConfig};
use mediacms_worker::telemetry::Metrics;

/// `run`'s options as the binary parses them (flags + env), without depending on `main.rs`.
#[derive(Parser)]
struct Run {
    #[command(flatten)]
    c: RawConfig,
}

const BINARY: &str = "/usr/local/bin/mediacms-worker";
/// Variables the NVIDIA Container Toolkit or libva read; not the worker's.
const TOOLKIT_ENV: [&str; 3] = [
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "LIBVA_DRIVER_NAME",
];

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn env_names() -> BTreeSet<String> {
    Run::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

fn http_port() -> u16 {
    defaults::HTTP_ADDR.parse::<SocketAddr>().unwrap().port()
}

/// MEDIA_ROOT as a mount point (Docker paths carry no trailing slash).
fn media_mount() -> &'static str {
    defaults::MEDIA_ROOT.trim_end_matches('/')
}

// ---- Dockerfile parsing ----------------------------------------------------------------

/// (INSTRUCTION, arguments) with continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        cur.push_str(t.trim_end_matches('\\'));
        cur.push(' ');
        if !t.ends_with('\\') {
            let (kw, args) = cur.trim().split_once(' ').unwrap_or((cur.trim(), ""));
            out.push((kw.to_ascii_uppercase(), args.trim().to_owned()));
            cur.clear();
        }
    }
    out
}

fn all<'a>(ins: &'a [(String, String)], kw: &str) -> Vec<&'a str> {
    ins.iter()
        .filter(|(k, _)| k == kw)
        .map(|(_, a)| a.as_str())
        .collect()
}

fn last<'a>(ins: &'a [(String, String)], kw: &str) -> &'a str {
    all(ins, kw).pop().unwrap_or_else(|| panic!("no {kw}"))
}

/// `ENV A=1 B=2` pairs across all ENV instructions.
fn env_pairs(ins: &[(String, String)]) -> Vec<(String, String)> {
    all(ins, "ENV")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("ENV uses KEY=value form");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not an exec-form list: {s}: {e}"))
}

/// What every image must share: user, port, exec-form entrypoint, self-probing healthcheck,
/// and only env names the worker (or the NVIDIA toolkit) reads.
fn assert_common_image_contract(ins: &[(String, String)]) {
    assert_eq!(
        last(ins, "USER"),
        "33:33",
        "www-data is uid/gid 33 in Debian"
    );
    assert_eq!(last(ins, "EXPOSE"), http_port().to_string());
    assert_eq!(json_list(last(ins, "ENTRYPOINT")), vec![BINARY]);
    assert_eq!(json_list(last(ins, "CMD")), vec!["run"]);
    let hc = last(ins, "HEALTHCHECK");
    let probe = hc.split_once("CMD ").expect("HEALTHCHECK CMD").1;
    assert_eq!(json_list(probe), vec![BINARY, "healthcheck"]);
    let known = env_names();
    for (k, v) in env_pairs(ins) {
        assert!(
            known.contains(&k) || TOOLKIT_ENV.contains(&k.as_str()),
            "ENV {k} is not read by the worker"
        );
        if k == "WORKER_HTTP_ADDR" {
            assert_eq!(v, defaults::HTTP_ADDR);
        }
    }
}

#[test]
fn cpu_dockerfile_matches_config_defaults() {
    let ins = instructions(&read("docker/Dockerfile"));
    assert_common_image_contract(&ins);
    let froms = all(&ins, "FROM");
    assert_eq!(froms.first().copied(), Some("rust:1-bookworm AS builder"));
    assert_eq!(
        froms.last().copied(),
        Some("debian:bookworm-slim AS runtime")
    );
    let env = env_pairs(&ins);
    assert!(env.contains(&("MEDIA_ROOT".into(), defaults::MEDIA_ROOT.into())));
    assert_eq!(last(&ins, "VOLUME"), media_mount());
    assert_eq!(last(&ins, "STOPSIGNAL"), "SIGTERM");
    // The libav* the binary links (libavcodec59, libavformat59, libavutil57) are dependencies
    // of Debian's `ffmpeg` package, so naming `ffmpeg` installs all of FFmpeg 5.1.
    let runtime_install = all(&ins, "RUN")
        .into_iter()
        .find(|r| r.contains("apt-get install") && r.contains(" ffmpeg"))
        .expect("runtime apt-get install");
    for pkg in ["ffmpeg", "ca-certificates", "--no-install-recommends"] {
        let words: Vec<&str> = runtime_install.split_whitespace().collect();
        assert!(words.contains(&pkg), "runtime lacks {pkg}");
    }
    assert!(
        !runtime_install.contains("curl"),
        "healthcheck needs no curl"
    );
}

#[test]
fn nvidia_dockerfile_exposes_video_and_compute_to_the_same_binary() {
    let ins = instructions(&read("docker/Dockerfile.nvidia"));
    assert_common_image_contract(&ins);
    let env = env_pairs(&ins);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("NVIDIA_VISIBLE_DEVICES").as_deref(), Some("all"));
    let caps = get("NVIDIA_DRIVER_CAPABILITIES").unwrap();
    for cap in ["compute", "video", "utility"] {
        assert!(
            caps.split(',').any(|c| c == cap),
            "missing capability {cap}"
        );
    }
    assert_eq!(
        all(&ins, "ARG").first().copied(),
        Some("BASE_IMAGE=mediacms-worker:latest")
    );
}

// ---- compose parsing (indentation-based; the files are validated by docker-compose too) ----

/// The lines nested under `key:` found at exactly `indent` spaces (first match after `from`).
fn section<'a>(lines: &[&'a str], key: &str, indent: usize) -> Vec<&'a str> {
    let head = format!("{}{key}:", " ".repeat(indent));
    let start = lines
        .iter()
        .position(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no `{key}:` at indent {indent}"));
    lines[start + 1..]
        .iter()
        .take_while(|l| {
            let t = l.trim_start();
            t.is_empty() || t.starts_with('#') || l.len() - t.len() > indent
        })
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .copied()
        .collect()
}

/// The value of `key: value` at `indent` inside `lines`.
fn scalar<'a>(lines: &[&'a str], key: &str, indent: usize) -> Option<&'a str> {
    let head = format!("{}{key}:", " ".repeat(indent));
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&head))
        .map(|v| v.trim().trim_matches('"'))
}

/// A flow-style list (`[...]`, possibly over several lines), which is JSON when all items are
/// double-quoted, as ours are.
fn flow_list(lines: &[&str], key: &str, indent: usize) -> Vec<String> {
    let head = format!("{}{key}:", " ".repeat(indent));
    let start = lines.iter().position(|l| l.starts_with(&head)).unwrap();
    let mut text = lines[start][head.len()..].to_owned();
    for l in &lines[start + 1..] {
        if text.trim_end().ends_with(']') {
            break;
        }
        text.push_str(l.trim());
    }
    json_list(text.trim())
}

/// `KEY: value` pairs of a service's environment block, with `${VAR:-default}` reduced to its
/// default (what a host without a .env gets) and `${VAR:?msg}` to None (required).
fn environment(service: &[&str]) -> Vec<(String, Option<String>)> {
    section(service, "environment", 4)
        .iter()
        .map(|l| {
            let (k, v) = l.trim().split_once(':').unwrap();
            let v = v.trim();
            let v = match v.strip_prefix("${") {
                Some(rest) if rest.contains(":?") => None,
                Some(rest) => Some(rest.split_once(":-").unwrap().1.trim_end_matches('}')),
                None => Some(v),
            };
            (k.to_owned(), v.map(str::to_owned))
        })
        .collect()
}

fn secs(duration: &str) -> u64 {
    duration
        .trim_end_matches('s')
        .parse()
        .expect("stop_grace_period in seconds")
}

/// Resolve a compose service's `command` + `environment` exactly as the worker would: flags
/// parsed by `config`'s clap definition, env values turned into their flags, flags winning.
fn resolve_service(service: &[&str]) -> mediacms_worker::config::Config {
    let command = flow_list(service, "command", 4);
    assert_eq!(
        command[0], "run",
        "compose command starts with the subcommand"
    );
    let flags = Run::try_parse_from(
        std::iter::once("mediacms-worker".to_owned()).chain(command[1..].iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("config rejects compose command {command:?}: {e}"));
    let cmd = Run::command();
    let mut env_args = vec!["mediacms-worker".to_owned()];
    for (name, value) in environment(service) {
        if TOOLKIT_ENV.contains(&name.as_str()) {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .unwrap_or_else(|| panic!("compose sets {name}, which config does not read"));
        let long = arg.get_long().expect("every env option has a long flag");
        // Required settings (`${VAR:?…}`) get an example value, as the operator would.
        let value = value.unwrap_or_else(|| match name.as_str() {
            "REDIS_LOCATION" => "redis://192.0.2.10:6379/1".into(),
            _ => "192.0.2.10".into(),
        });
        env_args.push(format!("--{long}={value}"));
    }
    let env = Run::try_parse_from(&env_args).unwrap_or_else(|e| panic!("{env_args:?}: {e}"));
    flags
        .c
        .or(env.c)
        .resolve("node")
        .expect("compose settings resolve")
}

/// What every worker service shares: paths, port, grace above the drain, healthcheck.
fn assert_worker_service(service: &[&str]) -> mediacms_worker::config::Config {
    let config = resolve_service(service);
    assert_eq!(config.media_root.to_str(), Some(defaults::MEDIA_ROOT));
    assert_eq!(config.http_addr.port(), http_port());
    assert_eq!(config.drain.as_secs(), defaults::DRAIN_SECS);
    let grace = secs(scalar(service, "stop_grace_period", 4).expect("stop_grace_period"));
    assert!(
        grace > config.drain.as_secs(),
        "grace {grace}s must exceed the drain"
    );
    assert_eq!(flow_list(service, "entrypoint", 4), vec![BINARY]);
    assert_eq!(scalar(service, "user", 4), Some("33:33"));
    let mount = format!("- media_files:{}", media_mount());
    assert!(section(service, "volumes", 4)
        .iter()
        .any(|l| l.trim() == mount));
    let hc = section(service, "healthcheck", 4);
    assert_eq!(
        flow_list(&hc, "test", 6),
        vec!["CMD", BINARY, "healthcheck"]
    );
    config
}

#[test]
fn mediacms_override_swaps_celery_long_with_celerys_own_flags_and_scales() {
    let text = read("docker/docker-compose.mediacms.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let svc = section(&lines, "celery_long", 2);
    let config = assert_worker_service(&svc);
    assert_eq!(scalar(&svc, "image", 4), Some("mediacms-worker:latest"));
    assert_eq!(config.queues, vec![defaults::QUEUE.to_owned()]);
    assert_eq!((config.concurrency, config.prefetch_multiplier), (1, 1));
    assert_eq!(config.hostname, defaults::HOSTNAME.replace("%h", "node"));
    assert_eq!(config.redis_location, defaults::REDIS_LOCATION);
    assert_eq!(config.postgres.host, defaults::POSTGRES_HOST);
    // --scale celery_long=N: nothing that two replicas could both claim.
    let keys = lines.iter().filter(|l| !l.trim_start().starts_with('#'));
    assert!(!keys.clone().any(|l| l.contains("container_name:")));
    assert!(scalar(&svc, "ports", 4).is_none());
    let port = http_port().to_string();
    assert!(section(&svc, "expose", 4)
        .iter()
        .any(|l| l.trim() == format!("- \"{port}\"")));
    let deps = section(&svc, "depends_on", 4);
    for dep in ["redis", "db"] {
        assert!(scalar(&deps, dep, 6).is_some(), "depends_on {dep}");
    }
    // The same Celery flags MediaCMS 7.3 gives its Python celery_long (stand-in, §7.4).
    let standin = read("docker/mediacms-7.3-standin.yaml");
    let s_lines: Vec<&str> = standin.lines().collect();
    let python = flow_list(&section(&s_lines, "celery_long", 2), "command", 4);
    let after_worker = python.iter().position(|a| a == "worker").unwrap() + 1;
    assert_eq!(flow_list(&svc, "command", 4)[1..], python[after_worker..]);
}

#[test]
fn gpu_node_requires_its_remote_settings_and_mounts_nfs_at_media_root() {
    let text = read("docker/docker-compose.gpu-node.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let svc = section(&lines, "mediacms-worker-gpu", 2);
    let config = assert_worker_service(&svc);
    assert_eq!(config.hwaccel, HwAccel::Auto);
    assert_eq!(scalar(&svc, "image", 4), Some("mediacms-worker:nvidia"));
    let env = environment(&svc);
    for required in ["REDIS_LOCATION", "POSTGRES_HOST", "POSTGRES_PASSWORD"] {
        assert!(
            env.contains(&(required.into(), None)),
            "{required} must be required"
        );
    }
    let devices = section(&svc, "deploy", 4);
    assert!(devices.iter().any(|l| l.trim() == "- driver: nvidia"));
    assert!(devices
        .iter()
        .any(|l| l.contains("capabilities:") && l.contains("video")));
    let volume = section(&section(&lines, "volumes", 0), "media_files", 2);
    assert_eq!(scalar(&volume, "type", 6), Some("nfs"));
}

#[test]
fn vaapi_node_maps_the_render_nodes_with_a_numeric_render_group() {
    let text = read("docker/docker-compose.vaapi-node.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let svc = section(&lines, "mediacms-worker-vaapi", 2);
    let config = assert_worker_service(&svc);
    assert_eq!(config.hwaccel, HwAccel::Vaapi);
    assert_eq!(config.hw_device.as_deref(), Some("/dev/dri/renderD128"));
    let env = environment(&svc);
    for required in ["REDIS_LOCATION", "POSTGRES_HOST", "POSTGRES_PASSWORD"] {
        assert!(
            env.contains(&(required.into(), None)),
            "{required} must be required"
        );
    }
    assert!(env.contains(&("LIBVA_DRIVER_NAME".into(), Some("iHD".into()))));
    let devices = section(&svc, "devices", 4);
    assert_eq!(devices, vec!["      - /dev/dri:/dev/dri"]);
    // uid 33 reaches the render node only through the host's render gid, given as a number
    // (the image's /etc/group has no such group), and required: no guessed default.
    let groups = section(&svc, "group_add", 4);
    assert_eq!(groups.len(), 1);
    let group = groups[0].trim().trim_start_matches("- ").trim_matches('"');
    assert!(
        group.starts_with("${RENDER_GID:?") || group.parse::<u32>().is_ok(),
        "{group}"
    );
    assert!(scalar(&svc, "deploy", 4).is_none(), "no NVIDIA reservation");
    let volume = section(&section(&lines, "volumes", 0), "media_files", 2);
    assert_eq!(scalar(&volume, "type", 6), Some("nfs"));
}

// ---- metrics names in the dashboard and the docs -----------------------------------------

fn catalogue_names() -> BTreeSet<String> {
    Metrics::new()
        .catalogue()
        .iter()
        .map(|d| d.name.clone())
        .collect()
}

/// Every `mediacms_worker_*` token in `text`, histogram series suffixes folded to the family.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let families = catalogue_names();
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("mediacms_worker_") {
        let token: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| token.strip_suffix(s).filter(|f| families.contains(*f)))
            .map_or(token.clone(), str::to_owned);
        found.insert(family);
    }
    found
}

#[test]
fn dashboard_uses_only_catalogue_metrics_and_covers_the_operator_views() {
    let text = read("docker/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let used = referenced_names(&text);
    let unknown: Vec<_> = used.difference(&catalogue_names()).cloned().collect();
    assert!(
        unknown.is_empty(),
        "dashboard names not in the catalogue: {unknown:?}"
    );
    for needed in [
        "tasks_finished_total",
        "task_duration_seconds",
        "encode_speed_ratio",
        "queue_depth",
        "jobs_in_flight",
        "hw_fallbacks_total",
        "broker_reconnects_total",
        "db_reconnects_total",
    ] {
        assert!(
            used.contains(&format!("mediacms_worker_{needed}")),
            "no panel for {needed}"
        );
    }
}

/// The metrics reference table in docker/README.md, as generated from the catalogue.
fn metrics_table() -> String {
    let mut t = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for d in Metrics::new().catalogue() {
        let labels = d
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>();
        let labels = if labels.is_empty() {
            "—".to_owned()
        } else {
            labels.join(", ")
        };
        t.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.name, d.kind, labels, d.help
        ));
    }
    t
}

#[test]
fn readme_metrics_table_is_generated_from_the_catalogue() {
    let table = metrics_table();
    for file in ["README.md", "docker/README.md"] {
        let readme = read(file);
        assert!(
            readme.contains(&table),
            "{file}'s metrics table is stale; replace it with:\n{table}"
        );
        let unknown: Vec<_> = referenced_names(&readme)
            .difference(&catalogue_names())
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names not in the catalogue: {unknown:?}"
        );
    }
}
