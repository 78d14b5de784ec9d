//! How popfetch writes -v, warnings and errors to stderr: the text lines it has
//! always printed, or one JSON object a line for log collectors, each line written
//! in one piece. Under systemd (stderr is the journal's stream, `$JOURNAL_STREAM`)
//! each line starts with the `<N>` priority the journal reads (sd-daemon(3)).

use std::io::Write;
#[cfg(test)]
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How the lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    // No doc comments on the values: clap would show them in a long --help of its
    // own; the flag's help says what they are.
    #[default]
    Text,
    Json,
}

/// How much a line matters, most first; the journal's priorities 3 to 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Error,
    Warning,
    /// For the daemon (starts, stops); `sync` has no use for it.
    Notice,
    Info,
    Debug,
}

impl Level {
    /// The syslog priority, which sd-daemon(3)'s `<N>` prefix carries.
    fn priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Notice => 5,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Where the lines go.
#[derive(Clone)]
enum Sink {
    /// The process's stderr, each line one `write_all` under stderr's own lock.
    /// That lock is reentrant: a caller holding `std::io::stderr().lock()` across
    /// several lines keeps them together, and no second lock can deadlock with it.
    Stderr,
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

/// Writes log lines in one format; cheap to clone, shared between threads.
#[derive(Clone)]
pub(crate) struct Logger {
    format: Format,
    /// Whether stderr is the journal's stream: lines get `<N>` prefixes.
    journal: bool,
    sink: Sink,
}

/// One JSON line, its keys in this order.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    level: &'static str,
    account: Option<&'a str>,
    event: &'a str,
    fields: serde_json::Value,
}

impl Logger {
    /// stderr; `journal` is on when the JOURNAL_STREAM env var names stderr's
    /// device:inode (systemd.exec(5) "$JOURNAL_STREAM", compared with fstat of fd 2).
    pub(crate) fn stderr(format: Format) -> Logger {
        Logger {
            format,
            journal: stderr_is_journal(),
            sink: Sink::Stderr,
        }
    }

    /// For tests: lines go to a shared buffer.
    #[cfg(test)]
    pub(crate) fn capture(format: Format, journal: bool) -> (Logger, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let logger = Logger {
            format,
            journal,
            sink: Sink::Buffer(buffer.clone()),
        };
        (logger, buffer)
    }

    /// One line. Text is `popfetch: account "NAME": MESSAGE` for an error,
    /// `popfetch: warning: account "NAME": MESSAGE` for a warning and
    /// `NAME: MESSAGE` otherwise (without an account, `popfetch: MESSAGE`,
    /// `popfetch: warning: MESSAGE`); control characters in it are escaped, so it
    /// stays one line. JSON is an object with time (RFC 3339, UTC, milliseconds),
    /// level, account (or null), event and fields, `message` among the fields.
    pub(crate) fn log(
        &self,
        level: Level,
        account: Option<&str>,
        event: &str,
        message: &str,
        fields: serde_json::Value,
    ) {
        let mut line = Vec::with_capacity(128);
        if self.journal {
            line.extend_from_slice(format!("<{}>", level.priority()).as_bytes());
        }
        match self.format {
            Format::Text => line.extend_from_slice(text_line(level, account, message).as_bytes()),
            Format::Json => {
                let json = JsonLine {
                    time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    level: level.name(),
                    account,
                    event,
                    fields: with_message(fields, message),
                };
                // Serializing a struct of strings and a Value cannot fail.
                serde_json::to_writer(&mut line, &json).expect("JSON of a log line");
            }
        }
        line.push(b'\n');
        match &self.sink {
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(&line);
            }
            #[cfg(test)]
            Sink::Buffer(buffer) => buffer.lock().unwrap().extend_from_slice(&line),
        }
    }
}

fn text_line(level: Level, account: Option<&str>, message: &str) -> String {
    use crate::config::shown;
    let message = shown(message);
    match (level, account) {
        (Level::Error, Some(name)) => format!("popfetch: account \"{}\": {message}", shown(name)),
        (Level::Warning, Some(name)) => {
            format!("popfetch: warning: account \"{}\": {message}", shown(name))
        }
        (Level::Warning, None) => format!("popfetch: warning: {message}"),
        (_, Some(name)) => format!("{}: {message}", shown(name)),
        (_, None) => format!("popfetch: {message}"),
    }
}

/// The fields with the message among them; fields that are no object are kept
/// under "value".
fn with_message(fields: serde_json::Value, message: &str) -> serde_json::Value {
    let mut map = match fields {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("value".to_string(), other);
            map
        }
    };
    map.insert("message".to_string(), message.into());
    serde_json::Value::Object(map)
}

/// Whether `$JOURNAL_STREAM` ("DEVICE:INODE", in decimal) names what fd 2 is: then
/// systemd connected stderr to the journal, and not some redirection since.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
    stream.to_str().is_some_and(|s| names(s, dev, ino))
}

/// Whether a `$JOURNAL_STREAM` value names this device and inode.
fn names(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LEVELS: [Level; 5] = [
        Level::Error,
        Level::Warning,
        Level::Notice,
        Level::Info,
        Level::Debug,
    ];

    fn one(format: Format, journal: bool, level: Level, account: Option<&str>) -> String {
        let (logger, buffer) = Logger::capture(format, journal);
        logger.log(level, account, "ev", "it happened", json!({ "n": 1 }));
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn text_is_what_popfetch_prints() {
        let a = Some("work");
        assert_eq!(
            one(Format::Text, false, Level::Error, a),
            "popfetch: account \"work\": it happened\n"
        );
        assert_eq!(
            one(Format::Text, false, Level::Warning, a),
            "popfetch: warning: account \"work\": it happened\n"
        );
        for level in [Level::Notice, Level::Info, Level::Debug] {
            assert_eq!(one(Format::Text, false, level, a), "work: it happened\n");
        }
        assert_eq!(
            one(Format::Text, false, Level::Error, None),
            "popfetch: it happened\n"
        );
        assert_eq!(
            one(Format::Text, false, Level::Warning, None),
            "popfetch: warning: it happened\n"
        );
        assert_eq!(
            one(Format::Text, false, Level::Info, None),
            "popfetch: it happened\n"
        );
    }

    #[test]
    fn json_parses_back_with_every_key() {
        for (level, name) in LEVELS
            .into_iter()
            .zip(["error", "warning", "notice", "info", "debug"])
        {
            let line = one(Format::Json, false, level, Some("work"));
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert!(line.starts_with("{\"time\":"), "{line}");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys.len(), 5, "{line}");
            assert_eq!(v["level"], name);
            assert_eq!(v["account"], "work");
            assert_eq!(v["event"], "ev");
            assert_eq!(v["fields"], json!({ "n": 1, "message": "it happened" }));
            let time = v["time"].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
            // Milliseconds, in UTC: 2026-01-02T03:04:05.678Z
            assert_eq!(time.len(), 24, "{time}");
            assert!(time.ends_with('Z'), "{time}");
        }
        let line = one(Format::Json, false, Level::Info, None);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["account"].is_null());
    }

    #[test]
    fn fields_without_an_object_still_carry_the_message() {
        let (logger, buffer) = Logger::capture(Format::Json, false);
        logger.log(Level::Info, None, "e", "m", serde_json::Value::Null);
        logger.log(Level::Info, None, "e", "m", json!(7));
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["fields"], json!({ "message": "m" }));
        assert_eq!(lines[1]["fields"], json!({ "message": "m", "value": 7 }));
    }

    #[test]
    fn the_journal_gets_priorities() {
        for (level, prefix) in LEVELS.into_iter().zip(["<3>", "<4>", "<5>", "<6>", "<7>"]) {
            let text = one(Format::Text, true, level, Some("w"));
            assert!(text.starts_with(prefix), "{text}");
            assert!(!text[3..].starts_with('<'), "{text}");
            let json = one(Format::Json, true, level, Some("w"));
            let rest = json.strip_prefix(prefix).expect(&json);
            assert!(serde_json::from_str::<serde_json::Value>(rest).is_ok());
            assert!(!one(Format::Json, false, level, Some("w")).starts_with('<'));
        }
    }

    #[test]
    fn a_message_stays_one_line() {
        let (logger, buffer) = Logger::capture(Format::Text, false);
        logger.log(
            Level::Warning,
            Some("a\nb"),
            "warning",
            "red \x1b[31m\r\nInjected: yes",
            json!({}),
        );
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "popfetch: warning: account \"a\\x0ab\": red \\x1b[31m\\x0d\\x0aInjected: yes\n"
        );
        let (logger, buffer) = Logger::capture(Format::Json, false);
        logger.log(Level::Error, None, "e", "x\ny\x1b", json!({}));
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["fields"]["message"], "x\ny\x1b");
    }

    #[test]
    fn threads_never_interleave() {
        let (logger, buffer) = Logger::capture(Format::Json, false);
        std::thread::scope(|s| {
            for t in 0..4 {
                let logger = logger.clone();
                s.spawn(move || {
                    for i in 0..200 {
                        logger.log(
                            Level::Debug,
                            Some("x"),
                            "protocol",
                            &"y".repeat(i),
                            json!({ "t": t }),
                        );
                    }
                });
            }
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 800);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn the_journal_stream_is_matched_by_device_and_inode() {
        assert!(names("64770:123456", 64770, 123456));
        assert!(!names("64770:123457", 64770, 123456));
        assert!(!names("64771:123456", 64770, 123456));
        assert!(!names("", 0, 0));
        assert!(!names("64770", 64770, 0));
        assert!(!names("x:1", 0, 1));
    }
}
