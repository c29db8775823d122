//! `mediacms-worker` CLI: run | transcode | probe | check-config | healthcheck.
//! Thin: parse, resolve config (exit 64 naming the bad field), hand over to `app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mediacms_worker::app;
use mediacms_worker::config::{Config, ConfigError, RawConfig};

#[derive(Parser)]
#[command(
    name = "mediacms-worker",
    version,
    about = "MediaCMS celery_long worker in Rust"
)]
struct Cli {
    /// Accepted and ignored so Celery's `-A cms worker …` command lines keep working.
    #[arg(short = 'A', long = "app", global = true, hide = true)]
    _app: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the queues and run tasks (also accepted as Celery's `worker`).
    #[command(alias = "worker")]
    Run(ConfigArgs),
    /// Transcode a local file with MediaCMS's profiles; no services needed.
    Transcode(app::TranscodeArgs),
    /// Report hardware acceleration capabilities.
    Probe {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Validate the configuration and print it (credentials redacted).
    CheckConfig(ConfigArgs),
    /// Exit 0 when the local worker's /healthz answers 200 (for Docker HEALTHCHECK).
    Healthcheck(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Optional TOML file; keys are the long flag names with underscores.
    #[arg(long, env = "WORKER_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    raw: RawConfig,
}

/// EX_USAGE from sysexits.h: configuration errors.
const EXIT_CONFIG: u8 = 64;

fn resolve(args: ConfigArgs) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                field: "config",
                reason: format!("{}: {e}", path.display()),
            })?;
            RawConfig::from_toml(&text)?
        }
        None => RawConfig::default(),
    };
    args.raw.or(file).resolve(&app::host_name())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, action): (ConfigArgs, Box<dyn FnOnce(Config) -> anyhow::Result<()>>) =
        match cli.command {
            Command::Run(args) => (args, Box::new(app::run)),
            Command::CheckConfig(args) => (
                args,
                Box::new(|c| {
                    println!("{c:#?}");
                    Ok(())
                }),
            ),
            Command::Healthcheck(args) => (args, Box::new(app::healthcheck)),
            Command::Probe { json, config } => (config, Box::new(move |c| app::probe(c, json))),
            Command::Transcode(t) => {
                return match app::transcode(t) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
        };
    let config = match resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match action(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<ConfigError>() {
                Some(_) => ExitCode::from(EXIT_CONFIG),
                None => ExitCode::FAILURE,
            }
        }
    }
}
