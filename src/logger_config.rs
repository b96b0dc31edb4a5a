//! Logging set-up (feature `logging`): the guide's `configure_logger()` plus `logger.add(file,
//! rotation="10 MB")`, on `tracing`.
//!
//! Two sinks, each with its own level: the console (stderr), and optionally a file rotated by size,
//! keeping a bounded number of old files (rotation by the `file-rotate` crate, written off the request
//! path by `tracing-appender`). Text or JSON.
//!
//! At `debug`, the middleware logs key generation (the key's parts, never header or query values),
//! hits, misses, and why a request or response was not cached. At `info`, the demo logs its
//! configuration at start-up with passwords masked.
//!
//! ```no_run
//! use cache_middleware::logger_config::{FileSink, LogFormat, LoggerConfig};
//!
//! // configure_logger() reads the same settings from the environment (see `LoggerConfig::from_env`).
//! let _guard = LoggerConfig::new()
//!     .level("debug") // logger.add(sys.stderr, level="DEBUG")
//!     .file(FileSink::new("cache_middleware.log").rotation_bytes(10 * 1024 * 1024).keep(5).level("info"))
//!     .format(LogFormat::Text)
//!     .init()
//!     .expect("logging configured");
//! ```

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use std::path::PathBuf;
use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Console level when neither `CACHE_LOG_LEVEL` nor `RUST_LOG` is set.
pub const DEFAULT_LEVEL: &str = "info";
/// Level (or `EnvFilter` directives) of the console sink; `RUST_LOG` is read when it is unset.
pub const CACHE_LOG_LEVEL: &str = "CACHE_LOG_LEVEL";
/// `text` (default) or `json`.
pub const CACHE_LOG_FORMAT: &str = "CACHE_LOG_FORMAT";
/// Path of the log file; no file sink when unset.
pub const CACHE_LOG_FILE: &str = "CACHE_LOG_FILE";
/// Size at which the file is rotated, e.g. `10 MB` (default), `512 KB`, `1048576`.
pub const CACHE_LOG_ROTATION: &str = "CACHE_LOG_ROTATION";
/// Rotated files kept besides the current one (default 5).
pub const CACHE_LOG_KEEP: &str = "CACHE_LOG_KEEP";
/// Level of the file sink (default `info`).
pub const CACHE_LOG_FILE_LEVEL: &str = "CACHE_LOG_FILE_LEVEL";

/// Text for people, JSON for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A log file rotated by size.
#[derive(Debug, Clone)]
#[must_use]
pub struct FileSink {
    path: PathBuf,
    rotation_bytes: usize,
    keep: usize,
    level: String,
}

impl FileSink {
    /// A file at `path`, rotated at 10 MB, keeping 5 old files, at `info`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            rotation_bytes: 10 * 1024 * 1024,
            keep: 5,
            level: "info".to_owned(),
        }
    }

    /// Rotate once the file passes this size (`rotation="10 MB"`).
    pub fn rotation_bytes(mut self, bytes: usize) -> Self {
        self.rotation_bytes = bytes.max(1);
        self
    }

    /// Old files kept (`path.1` newest .. `path.N` oldest); older ones are deleted.
    pub fn keep(mut self, files: usize) -> Self {
        self.keep = files;
        self
    }

    /// Level (or `EnvFilter` directives) of this sink.
    pub fn level(mut self, level: impl Into<String>) -> Self {
        self.level = level.into();
        self
    }
}

/// Console and file sinks, their levels and format.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct LoggerConfig {
    level: Option<String>,
    format: LogFormat,
    file: Option<FileSink>,
}

/// A setting that cannot be used; the message names the variable or option and what is accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggerError {
    #[error("{variable}={value:?} is not valid: {accepted}")]
    Invalid {
        variable: &'static str,
        value: String,
        accepted: &'static str,
    },
    #[error("cannot open log file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Keeps the file writer alive; logs still buffered are flushed when it is dropped. Hold it for as
/// long as the program runs.
#[must_use = "dropping the guard stops file logging"]
pub struct LoggerGuard {
    _file: Option<WorkerGuard>,
}

/// Sets up logging from the environment (see [`LoggerConfig::from_env`]) and installs it globally.
pub fn configure_logger() -> Result<LoggerGuard, LoggerError> {
    LoggerConfig::from_env()?.init()
}

impl LoggerConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// `CACHE_LOG_LEVEL` (else `RUST_LOG`), `CACHE_LOG_FORMAT`, and a file sink when `CACHE_LOG_FILE`
    /// is set, with `CACHE_LOG_ROTATION`, `CACHE_LOG_KEEP` and `CACHE_LOG_FILE_LEVEL`.
    pub fn from_env() -> Result<Self, LoggerError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with variables from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LoggerError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = LoggerConfig::new();
        if let Some(level) = get(CACHE_LOG_LEVEL).or_else(|| get("RUST_LOG")) {
            config = config.level(level);
        }
        if let Some(format) = get(CACHE_LOG_FORMAT) {
            config = config.format(match format.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid(CACHE_LOG_FORMAT, &format, "text or json")),
            });
        }
        if let Some(path) = get(CACHE_LOG_FILE) {
            let mut sink = FileSink::new(path);
            if let Some(size) = get(CACHE_LOG_ROTATION) {
                let bytes = parse_size(&size).ok_or_else(|| {
                    invalid(
                        CACHE_LOG_ROTATION,
                        &size,
                        "a size such as 10 MB, 512 KB or 1048576",
                    )
                })?;
                sink = sink.rotation_bytes(bytes);
            }
            if let Some(keep) = get(CACHE_LOG_KEEP) {
                let files = keep
                    .trim()
                    .parse()
                    .map_err(|_| invalid(CACHE_LOG_KEEP, &keep, "a whole number of files"))?;
                sink = sink.keep(files);
            }
            if let Some(level) = get(CACHE_LOG_FILE_LEVEL) {
                sink = sink.level(level);
            }
            config = config.file(sink);
        }
        Ok(config)
    }

    /// Console level or `EnvFilter` directives, e.g. `"debug"` or `"info,cache_middleware=debug"`.
    pub fn level(mut self, level: impl Into<String>) -> Self {
        self.level = Some(level.into());
        self
    }

    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Also log to a size-rotated file.
    pub fn file(mut self, sink: FileSink) -> Self {
        self.file = Some(sink);
        self
    }

    /// Builds the subscriber without installing it (for tests, or to add layers of one's own).
    pub fn build(self) -> Result<(impl Subscriber + Send + Sync, LoggerGuard), LoggerError> {
        let console_level = self.level.as_deref().unwrap_or(DEFAULT_LEVEL);
        let console_filter = filter(console_level, CACHE_LOG_LEVEL)?;
        // Colours only for a terminal, and never when NO_COLOR is set.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none();
        let mut layers = vec![sink_layer(
            self.format,
            std::io::stderr,
            ansi,
            console_filter,
        )];
        let guard = match self.file {
            None => None,
            Some(sink) => {
                let file_filter = filter(&sink.level, CACHE_LOG_FILE_LEVEL)?;
                if let Some(dir) = sink.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| LoggerError::File {
                        path: sink.path.clone(),
                        source,
                    })?;
                }
                // Fail now, with the path in the message, rather than silently in the writer thread.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&sink.path)
                    .map_err(|source| LoggerError::File {
                        path: sink.path.clone(),
                        source,
                    })?;
                let rotating = FileRotate::new(
                    &sink.path,
                    AppendCount::new(sink.keep),
                    ContentLimit::BytesSurpassed(sink.rotation_bytes),
                    Compression::None,
                    None,
                );
                let (writer, guard) = tracing_appender::non_blocking(rotating);
                layers.push(sink_layer(self.format, writer, false, file_filter));
                Some(guard)
            }
        };
        let subscriber = Registry::default().with(layers);
        Ok((subscriber, LoggerGuard { _file: guard }))
    }

    /// Builds and installs the subscriber for the whole program.
    pub fn init(self) -> Result<LoggerGuard, LoggerError> {
        let (subscriber, guard) = self.build()?;
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| LoggerError::AlreadyInstalled)?;
        Ok(guard)
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// One sink: a formatter writing to `writer`, behind its own level filter.
fn sink_layer<W>(format: LogFormat, writer: W, ansi: bool, filter: EnvFilter) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().with_filter(filter).boxed(),
    }
}

fn filter(directives: &str, variable: &'static str) -> Result<EnvFilter, LoggerError> {
    EnvFilter::try_new(directives).map_err(|_| {
        invalid(
            variable,
            directives,
            "a level (error, warn, info, debug, trace) or RUST_LOG-style directives",
        )
    })
}

fn invalid(variable: &'static str, value: &str, accepted: &'static str) -> LoggerError {
    LoggerError::Invalid {
        variable,
        value: value.to_owned(),
        accepted,
    }
}

/// `"10 MB"`, `"10MB"`, `"512 KiB"`, `"1048576"`: bytes. Decimal and binary units both count 1024.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * multiplier;
    (1.0..1e15).contains(&bytes).then_some(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_guide_writes_them() {
        assert_eq!(parse_size("10 MB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("10MB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("512 KiB"), Some(512 * 1024));
        assert_eq!(parse_size("1.5 kb"), Some(1536));
        assert_eq!(parse_size("2048"), Some(2048));
        for bad in ["", "MB", "ten MB", "10 parsecs", "0"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_settings_name_the_variable_and_what_is_accepted() {
        let config = |pairs: &'static [(&'static str, &'static str)]| {
            LoggerConfig::from_lookup(|name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        let error = config(&[(CACHE_LOG_FORMAT, "xml")])
            .unwrap_err()
            .to_string();
        assert_eq!(error, "CACHE_LOG_FORMAT=\"xml\" is not valid: text or json");
        let error = config(&[(CACHE_LOG_FILE, "x.log"), (CACHE_LOG_ROTATION, "huge")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("CACHE_LOG_ROTATION=\"huge\""), "{error}");
        let error = match config(&[(CACHE_LOG_LEVEL, "loud=[")]).unwrap().build() {
            Err(error) => error.to_string(),
            Ok(_) => panic!("accepted a bad level"),
        };
        assert!(error.starts_with("CACHE_LOG_LEVEL"), "{error}");
    }
}
