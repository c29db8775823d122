//! Logging setup: one tracing subscriber, human-readable or JSON lines, on stderr (where
//! Celery logs too, so `docker compose logs` shows the same stream either way).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
#[error("invalid log filter `{filter}`")]
pub struct LogError {
    pub filter: String,
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

/// Install the global subscriber. `filter` is an `EnvFilter` directive (`info`,
/// `mediacms_worker=debug,info`). Returns `Ok(false)` when a subscriber was already installed
/// (tests call this many times), so a second call is harmless rather than a panic.
pub fn init(filter: &str, format: LogFormat) -> Result<bool, LogError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LogError {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        // Colours only for a person at a terminal; container log drivers get plain text.
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
            .is_ok(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
            .is_ok(),
    };
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_init_is_harmless_and_bad_filters_are_errors() {
        // "off": the subscriber stays global for this test binary; keep other tests quiet.
        let first = init("off", LogFormat::Json).unwrap();
        let second = init("debug", LogFormat::Human).unwrap();
        // Another test in this binary may have installed one first; never both true.
        assert!(!(first && second));
        assert!(!second);
        let err = init("info,=[{", LogFormat::Human).unwrap_err();
        assert!(err.to_string().contains("info,=[{"));
    }
}
