//! Logging: `tracing` events go to `--log` (or standard error) as runc writes them, in text
//! (`time="…" level=error msg="…"`) or JSON (`{"level":"error","msg":"…","time":"…"}`).
//! containerd's shim shows the last `"level":"error"` line of the JSON log when a command fails,
//! so every error that ends a command is logged there as one line.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Log line formats of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("invalid log format {other:?}: use text or json")),
        }
    }
}

struct Sink {
    file: Option<Mutex<File>>,
    format: LogFormat,
    max_level: Level,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Open the log (`None`: standard error) and install the tracing subscriber. Call once, first
/// thing.
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> Result<()> {
    let file = match log {
        Some(path) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?,
        )),
        None => None,
    };
    let max_level = if debug { Level::DEBUG } else { Level::WARN };
    let _ = SINK.set(Sink {
        file,
        format,
        max_level,
    });
    let _ = tracing::subscriber::set_global_default(LogSubscriber);
    Ok(())
}

/// Print the error that ends a command on standard error as runc does, one line with its level
/// (`time="…" level=error msg="…"`): tools that drive runc look for the level there. (With
/// `--log`, the log file has it too, in the log's own format.)
pub fn report_error(msg: &str) {
    if SINK.get().is_some_and(|s| s.file.is_none()) {
        return; // The log is standard error: the error event is there already.
    }
    let line = format_line(LogFormat::Text, Level::ERROR, msg, &now_rfc3339());
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The runtime's only subscriber: it writes events and ignores spans (the runtime opens none).
/// Implemented on `tracing` itself rather than tracing-subscriber's registry, whose span
/// storage (sharded-slab) cost pages at every start for nothing.
struct LogSubscriber;

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for LogSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        SINK.get()
            .is_some_and(|sink| *metadata.level() <= sink.max_level)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        SINK.get()
            .map(|sink| LevelFilter::from_level(sink.max_level))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some(sink) = SINK.get() else { return };
        let level = *event.metadata().level();
        if level > sink.max_level {
            return;
        }
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let msg = format!("{}{}", visitor.message, visitor.fields);
        let line = format_line(sink.format, level, &msg, &now_rfc3339());
        match &sink.file {
            Some(file) => {
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// One log line, newline included, in runc's text or JSON form.
pub fn format_line(format: LogFormat, level: Level, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let value = serde_json::json!({ "level": level_name(level), "msg": msg, "time": time });
            format!("{value}\n")
        }
        LogFormat::Text => format!("time={time:?} level={} msg={msg:?}\n", level_name(level)),
    }
}

/// The current time in RFC 3339 with nanoseconds, as runc logs it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_the_keys_the_shim_reads() {
        let line = format_line(
            LogFormat::Json,
            Level::ERROR,
            "container \"a\" does not exist",
            "t",
        );
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"a\" does not exist");
        assert_eq!(v["time"], "t");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_line_quotes_the_message() {
        let line = format_line(LogFormat::Text, Level::WARN, "a \"b\"", "t");
        assert_eq!(line, "time=\"t\" level=warning msg=\"a \\\"b\\\"\"\n");
    }
}
