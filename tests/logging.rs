//! Logging: size-rotated files with a bounded number of old files, and what debug logs show.

use cache_middleware::logger_config::{FileSink, LogFormat, LoggerConfig};

fn files_in(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_log_file_is_rotated_past_its_size_keeping_a_bounded_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache_middleware.log");
    let sink = FileSink::new(&path)
        .rotation_bytes(4096)
        .keep(3)
        .level("debug");
    let (subscriber, guard) = LoggerConfig::new().level("off").file(sink).build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..2000 {
            tracing::info!(request = i, "cache hit");
        }
    });
    drop(guard); // flushes the writer thread
    let files = files_in(dir.path());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "cache_middleware.log",
            "cache_middleware.log.1",
            "cache_middleware.log.2",
            "cache_middleware.log.3"
        ]
    );
    // Rotation happens once a write passes the limit: a file holds the limit plus at most one line.
    for (name, size) in &files {
        assert!(*size < 4096 + 512, "{name}: {size} bytes");
    }
    let newest = std::fs::read_to_string(&path).unwrap();
    assert!(
        newest.contains("request=1999"),
        "the newest lines are in the current file"
    );
    assert!(!newest.contains('\u{1b}'), "no colour codes in files");
}

#[test]
fn json_files_hold_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("json.log");
    let (subscriber, guard) = LoggerConfig::new()
        .level("off")
        .format(LogFormat::Json)
        .file(FileSink::new(&path))
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(key = "cache:abc", "cache store failed")
    });
    drop(guard);
    let line = std::fs::read_to_string(&path).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["fields"]["message"], "cache store failed");
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
    let error = match LoggerConfig::new()
        .file(FileSink::new("/proc/forbidden/x.log"))
        .build()
    {
        Err(error) => error.to_string(),
        Ok(_) => panic!("opened an impossible file"),
    };
    assert!(error.contains("/proc/forbidden/x.log"), "{error}");
}
