//! What the user sees while accounts sync: progress bars at a terminal, silence in
//! cron (errors only), a summary with -v, JSON for scripts. Each account's output is
//! gathered and printed in one piece, so parallel accounts never interleave. Lines
//! for stderr are written by a [`Logger`]: as text, or with `--log-format json` as
//! one JSON object each (and then no bars are drawn).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cmd::exit::Exit;
use crate::cmd::log::{Format, Level, Logger};
use crate::pop3::Trace;
use crate::sync::preview::human_size;
use crate::sync::{Progress, Warn};

/// How loud to be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loudness {
    pub verbose: bool,
    pub quiet: bool,
}

/// The output of a whole run.
pub(crate) struct Ui {
    loudness: Loudness,
    logger: Logger,
    /// Progress bars, when a person is watching a terminal.
    bars: Option<MultiProgress>,
}

impl Ui {
    /// `format` is the logger's: bars only go with text.
    pub(crate) fn new(loudness: Loudness, format: Format, logger: Logger) -> Ui {
        let watching = std::io::stderr().is_terminal() && !loudness.quiet && format == Format::Text;
        Ui {
            loudness,
            logger,
            bars: watching.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// The bars of the run, for the interrupt notice to clear.
    pub(crate) fn bars(&self) -> Option<MultiProgress> {
        self.bars.clone()
    }

    /// Where lines for stderr go.
    pub(crate) fn logger(&self) -> &Logger {
        &self.logger
    }

    /// Whether a person is watching (progress bars and summaries shown).
    pub(crate) fn interactive(&self) -> bool {
        self.bars.is_some()
    }

    /// The output of one account.
    pub(crate) fn account(&self, name: &str) -> AccountUi {
        // The bar joins the screen only once there is something to fetch (see
        // `Bar::planned`): an account that fails before never leaves a line behind.
        let bar = self.bars.as_ref().map(|_| {
            let bar = ProgressBar::hidden();
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} messages, {msg} {elapsed}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar
        });
        AccountUi {
            name: name.to_string(),
            loudness: self.loudness,
            logger: self.logger.clone(),
            stderr: Arc::new(Mutex::new(Vec::new())),
            stdout: Vec::new(),
            bar,
            multi: self.bars.clone(),
        }
    }
}

/// A line for stderr, held until its account is done.
struct Entry {
    level: Level,
    event: &'static str,
    message: String,
    fields: serde_json::Value,
}

impl Entry {
    fn new(level: Level, event: &'static str, message: String) -> Entry {
        Entry {
            level,
            event,
            message,
            fields: serde_json::json!({}),
        }
    }
}

/// One account's output, held until the account is done.
pub(crate) struct AccountUi {
    name: String,
    loudness: Loudness,
    logger: Logger,
    stderr: Arc<Mutex<Vec<Entry>>>,
    stdout: Vec<String>,
    bar: Option<ProgressBar>,
    multi: Option<MultiProgress>,
}

impl AccountUi {
    /// With -v, the protocol steps, each line naming the account.
    pub(crate) fn trace(&self) -> Option<Trace> {
        let lines = self.stderr.clone();
        self.loudness.verbose.then(|| {
            Box::new(move |line: &str| {
                lines
                    .lock()
                    .unwrap()
                    .push(Entry::new(Level::Debug, "protocol", line.to_string()))
            }) as Trace
        })
    }

    /// Warnings that are not errors, unless -q.
    pub(crate) fn warn(&self) -> Warn {
        let lines = self.stderr.clone();
        let quiet = self.loudness.quiet;
        Box::new(move |text: &str| {
            if !quiet {
                lines
                    .lock()
                    .unwrap()
                    .push(Entry::new(Level::Warning, "warning", text.to_string()));
            }
        })
    }

    /// The progress bar's feed, at a terminal.
    pub(crate) fn progress(&self) -> Option<Box<dyn Progress>> {
        let multi = self.multi.clone()?;
        self.bar.clone().map(|bar| {
            Box::new(Bar {
                bar,
                multi,
                bytes: Mutex::new((0, 0)),
            }) as Box<dyn Progress>
        })
    }

    /// A line for stdout (a dry run's plan, a listing).
    pub(crate) fn print(&mut self, line: String) {
        self.stdout.push(line);
    }

    /// The error that ended the account's sync, always shown.
    pub(crate) fn error(&mut self, message: String, exit: Exit) {
        let mut entry = Entry::new(Level::Error, "sync_failed", message);
        entry.fields = serde_json::json!({ "exit_code": exit as u8 });
        self.stderr.lock().unwrap().push(entry);
    }

    /// A warning shown even with -q.
    pub(crate) fn warning_always(&mut self, message: String) {
        let entry = Entry::new(Level::Warning, "warning", message);
        self.stderr.lock().unwrap().push(entry);
    }

    /// The summary line: shown at a terminal, or with -v. `fields` are its numbers.
    pub(crate) fn summary(&mut self, message: String, fields: serde_json::Value) {
        if self.multi.is_some() || self.loudness.verbose {
            let mut entry = Entry::new(Level::Info, "synced", message);
            entry.fields = fields;
            self.stderr.lock().unwrap().push(entry);
        }
    }

    /// Prints everything gathered, in one piece.
    pub(crate) fn finish(self) {
        if let (Some(bar), Some(multi)) = (&self.bar, &self.multi) {
            bar.finish_and_clear();
            multi.remove(bar);
        }
        let err_lines = std::mem::take(&mut *self.stderr.lock().unwrap());
        let print = || {
            // Held across the lines: stderr's lock is reentrant, so the logger's
            // writes pass and other accounts' wait until this one is done.
            let _err = std::io::stderr().lock();
            for line in err_lines {
                let fields = line.fields;
                let account = Some(self.name.as_str());
                (self.logger).log(line.level, account, line.event, &line.message, fields);
            }
            let mut out = std::io::stdout().lock();
            for line in &self.stdout {
                let _ = writeln!(out, "{line}");
            }
        };
        match &self.multi {
            Some(multi) => multi.suspend(print),
            None => print(),
        }
    }
}

/// Feeds a progress bar: messages as its position, the server's octets in its
/// message (what the plan counts; bytes on disk differ by the line endings).
struct Bar {
    bar: ProgressBar,
    multi: MultiProgress,
    /// (bytes done, bytes planned)
    bytes: Mutex<(u64, u64)>,
}

impl Progress for Bar {
    fn planned(&self, messages: u64, bytes: u64) {
        *self.bytes.lock().unwrap() = (0, bytes);
        self.bar.set_length(messages);
        self.bar.set_message(format!("0/{}", human_size(bytes)));
        if messages > 0 {
            // Elapsed counts from here, not from when the account began.
            self.bar.reset_elapsed();
            self.multi.add(self.bar.clone());
            self.bar.tick();
        }
    }

    fn delivered(&self, bytes: u64) {
        let mut b = self.bytes.lock().unwrap();
        b.0 += bytes;
        self.bar.inc(1);
        self.bar
            .set_message(format!("{}/{}", human_size(b.0), human_size(b.1)));
    }
}

/// The width of the terminal on stdout, if stdout is one: what `list` and the dry
/// run's table must fit. $COLUMNS, when set, wins, as for ls(1).
pub(crate) fn stdout_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return Some(columns);
    }
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize, which `size` is.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}
