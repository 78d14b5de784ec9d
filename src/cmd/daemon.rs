//! `popfetch daemon`: polls each account every `poll_interval` (with a little
//! jitter, never sooner than the server's LOGIN-DELAY), backs off after failures,
//! and answers signals — SIGUSR1 polls now, SIGHUP reloads the config (a broken
//! one is reported and the old one kept), SIGTERM and SIGINT stop it.
//!
//! Stopping is an exit at once, as Ctrl-C is for `sync` (see `sys::interrupt`):
//! no QUIT is sent in the middle of a session, so no DELE takes effect, and what
//! a delivery cut short left is recovered by the next run. The account lock is
//! `sync`'s, so a cron run and the daemon never sync one account at once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::cmd::exit::{classify, Exit};
use crate::cmd::log::{Format, Level, Logger};
use crate::cmd::{hooks, status};
use crate::config::{Account, Config, Paths};
use crate::sync::lock::{AccountLock, LockError};
use crate::sync::{sync_account, Failed, Options, Report};

/// The longest back-off after failures, whatever the interval.
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The longest LOGIN-DELAY heeded: a server's number must not stop polling.
const LOGIN_DELAY_MAX: Duration = Duration::from_secs(86_400);

/// How the daemon was asked to run.
pub(crate) struct Settings<'a> {
    pub config: Option<&'a Path>,
    pub names: &'a [String],
    pub foreground: bool,
    pub verbose: bool,
    pub jobs: usize,
    pub log_format: Format,
}

/// What the main loop hears.
enum Event {
    Signal(i32),
    Polled(Box<Polled>),
}

/// One account's poll, as a worker thread reports it.
struct Polled {
    name: String,
    started: chrono::DateTime<Utc>,
    outcome: Result<Report, Failed>,
    /// Another popfetch held the account: not a run of ours.
    held: bool,
}

/// Where each account stands.
struct Schedule {
    next: Instant,
    /// No login before this: the last one plus the server's LOGIN-DELAY.
    not_before: Instant,
    /// Failures in a row, for the back-off.
    failures: u32,
    running: bool,
}

pub(crate) fn daemon(settings: Settings) -> Exit {
    let mut logger = Logger::stderr(settings.log_format);
    let paths = match Paths::discover() {
        Ok(paths) => paths,
        Err(e) => return fail(&logger, e.into()),
    };
    // Absolute, so that a reload after detaching (in /) reads the same file.
    let config_path = settings
        .config
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let load = || -> anyhow::Result<Vec<Account>> {
        let config = Config::load(config_path.as_deref(), &paths)?;
        Ok(config
            .select(settings.names)?
            .into_iter()
            .cloned()
            .collect())
    };
    let mut accounts = match load() {
        Ok(accounts) => accounts,
        Err(e) => return fail(&logger, e),
    };
    // One daemon per user: a second would poll everything twice.
    let _single = match single_instance(&paths.state_dir) {
        Ok(file) => file,
        Err(e) => return fail(&logger, e),
    };
    if !settings.foreground {
        let log = paths.state_dir.join("daemon.log");
        eprintln!(
            "popfetch: daemon polling {} account(s); its log is {}",
            accounts.len(),
            log.display()
        );
        if let Err(e) = detach(&log) {
            return fail(&logger, anyhow::anyhow!("cannot start the daemon: {e}"));
        }
        // stderr is the log file now: no journal behind it.
        logger = Logger::stderr(settings.log_format);
    }
    let (events, heard) = mpsc::channel();
    if let Err(e) = listen(events.clone()) {
        return fail(&logger, anyhow::anyhow!("cannot catch signals: {e}"));
    }
    let pid = std::process::id();
    logger.log(
        Level::Notice,
        None,
        "started",
        &format!(
            "daemon started (pid {pid}), polling {} account(s)",
            accounts.len()
        ),
        serde_json::json!({ "pid": pid, "accounts": accounts.len() }),
    );
    let now = Instant::now();
    let mut schedule: BTreeMap<String, Schedule> = accounts
        .iter()
        .map(|a| (a.name.clone(), Schedule::due(now)))
        .collect();
    loop {
        start_due(&accounts, &mut schedule, &settings, &logger, &events);
        let running = schedule.values().filter(|s| s.running).count();
        let event = if running >= settings.jobs.max(1) {
            // No slot is free: only a poll ending (or a signal) changes that.
            match heard.recv() {
                Ok(event) => event,
                Err(_) => return Exit::Software,
            }
        } else {
            let wait = schedule
                .values()
                .filter(|s| !s.running)
                .map(|s| s.next.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            match heard.recv_timeout(wait) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Exit::Software,
            }
        };
        match event {
            Event::Polled(polled) => {
                let Some(account) = accounts.iter().find(|a| a.name == polled.name) else {
                    // Removed by a reload while it ran.
                    schedule.remove(&polled.name);
                    continue;
                };
                let Some(entry) = schedule.get_mut(&polled.name) else {
                    continue;
                };
                done(account, entry, &polled, &logger, settings.verbose);
            }
            Event::Signal(SIGUSR1) => {
                logger.log(Level::Notice, None, "poll_now", "SIGUSR1: polling every account now", serde_json::json!({}));
                let now = Instant::now();
                for entry in schedule.values_mut() {
                    entry.next = now.max(entry.not_before);
                }
            }
            Event::Signal(SIGHUP) => match load() {
                Ok(fresh) => {
                    let now = Instant::now();
                    schedule.retain(|name, entry| entry.running || fresh.iter().any(|a| &a.name == name));
                    for account in &fresh {
                        schedule
                            .entry(account.name.clone())
                            .or_insert_with(|| Schedule::due(now));
                    }
                    for gone in accounts.iter().filter(|a| !fresh.iter().any(|f| f.name == a.name)) {
                        status::clear_daemon(gone);
                    }
                    logger.log(
                        Level::Notice,
                        None,
                        "reloaded",
                        &format!("SIGHUP: configuration reloaded, {} account(s)", fresh.len()),
                        serde_json::json!({ "accounts": fresh.len() }),
                    );
                    accounts = fresh;
                }
                Err(e) => logger.log(
                    Level::Error,
                    None,
                    "reload_failed",
                    &format!("SIGHUP: the configuration was not reloaded, the old one keeps running: {e:#}"),
                    serde_json::json!({ "exit_code": classify(&e) as u8 }),
                ),
            },
            Event::Signal(signal) => {
                logger.log(
                    Level::Notice,
                    None,
                    "stopped",
                    &format!("signal {signal}: stopping; nothing is lost, a message in flight is fetched again"),
                    serde_json::json!({ "signal": signal }),
                );
                for account in &accounts {
                    status::clear_daemon(account);
                }
                // At once and without atexit handlers, as sys::interrupt does:
                // the workers are cut where they are, as by a kill.
                let _ = std::io::Write::flush(&mut std::io::stderr());
                // SAFETY: ends the process; nothing runs after it.
                unsafe { libc::_exit(0) }
            }
        }
    }
}

impl Schedule {
    fn due(now: Instant) -> Schedule {
        Schedule {
            next: now,
            not_before: now,
            failures: 0,
            running: false,
        }
    }
}

/// Starts a worker for each account that is due, up to `jobs` at once.
fn start_due(
    accounts: &[Account],
    schedule: &mut BTreeMap<String, Schedule>,
    settings: &Settings,
    logger: &Logger,
    events: &mpsc::Sender<Event>,
) {
    let now = Instant::now();
    let mut running = schedule.values().filter(|s| s.running).count();
    for account in accounts {
        if running >= settings.jobs.max(1) {
            return;
        }
        let Some(entry) = schedule.get_mut(&account.name) else {
            continue;
        };
        if entry.running || entry.next > now {
            continue;
        }
        entry.running = true;
        running += 1;
        let account = account.clone();
        let logger = logger.clone();
        let verbose = settings.verbose;
        let events = events.clone();
        std::thread::spawn(move || {
            let started = Utc::now();
            // A panic (a bug) must not leave the account "running" for ever.
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                poll(&account, &logger, verbose)
            }))
            .unwrap_or_else(|_| Polled {
                name: account.name.clone(),
                started,
                outcome: Err(anyhow::anyhow!("popfetch panicked while syncing (a bug)").into()),
                held: false,
            });
            let _ = events.send(Event::Polled(Box::new(polled)));
        });
    }
}

/// One sync of one account, its hooks run; what the main loop needs of it.
fn poll(account: &Account, logger: &Logger, verbose: bool) -> Polled {
    let name = account.name.clone();
    let started = Utc::now();
    let warn_logger = logger.clone();
    let warn_name = name.clone();
    let trace = verbose.then(|| {
        let logger = logger.clone();
        let name = name.clone();
        Box::new(move |line: &str| {
            logger.log(
                Level::Debug,
                Some(&name),
                "protocol",
                line,
                serde_json::json!({}),
            )
        }) as crate::pop3::Trace
    });
    let options = Options {
        trace,
        dry_run: false,
        warn: Some(Box::new(move |text: &str| {
            warn_logger.log(
                Level::Warning,
                Some(&warn_name),
                "warning",
                text,
                serde_json::json!({}),
            )
        })),
        progress: None,
        rank: Some(|err| classify(err) as u8),
    };
    let warn = |text: &str| {
        logger.log(
            Level::Warning,
            Some(&name),
            "hook_failed",
            text,
            serde_json::json!({}),
        )
    };
    let outcome = sync_account(account, options);
    let held = matches!(&outcome, Err(failed) if LockError::held(&failed.error));
    if !held {
        hooks::after_sync(account, &outcome, &warn);
    }
    Polled {
        name,
        started,
        outcome,
        held,
    }
}

/// A poll ended: log it, schedule the next one, record the status.
fn done(account: &Account, entry: &mut Schedule, polled: &Polled, logger: &Logger, verbose: bool) {
    entry.running = false;
    let interval = account.poll_interval;
    let name = Some(account.name.as_str());
    let now = Instant::now();
    let wait = match &polled.outcome {
        _ if polled.held => {
            logger.log(
                Level::Info,
                name,
                "skipped",
                "another popfetch is syncing this account; polled again at the next interval",
                serde_json::json!({}),
            );
            interval
        }
        Ok(report) => {
            entry.failures = 0;
            // A poll that found nothing is said only with -v: the log stays quiet.
            if report.fetched > 0 || verbose {
                logger.log(
                    if report.fetched > 0 {
                        Level::Info
                    } else {
                        Level::Debug
                    },
                    name,
                    "synced",
                    &format!(
                        "{} message(s) fetched, {} deleted, {} skipped",
                        report.fetched, report.deleted, report.skipped
                    ),
                    serde_json::json!({
                        "fetched": report.fetched,
                        "bytes": report.bytes,
                        "deleted": report.deleted,
                        "skipped": report.skipped,
                    }),
                );
            }
            // RFC 2449 §6.5: no login sooner than LOGIN-DELAY after this one.
            if let Some(delay) = report.login_delay {
                let delay = Duration::from_secs(delay).min(LOGIN_DELAY_MAX);
                entry.not_before = now.checked_add(delay).unwrap_or(now);
            }
            interval
        }
        Err(failed) => {
            entry.failures = entry.failures.saturating_add(1);
            let wait = backoff(interval, entry.failures);
            let exit = classify(&failed.error);
            logger.log(
                Level::Error,
                name,
                "sync_failed",
                &format!("{:#}; next try in {} s", failed.error, wait.as_secs()),
                serde_json::json!({
                    "exit_code": exit as u8,
                    "failures": entry.failures,
                    "retry_in_s": wait.as_secs(),
                }),
            );
            wait
        }
    };
    let wait = wait + jitter(wait);
    entry.next = now
        .checked_add(wait)
        .unwrap_or(now + BACKOFF_MAX)
        .max(entry.not_before);
    if polled.held {
        return;
    }
    let next_poll = Utc::now()
        + chrono::Duration::from_std(entry.next.saturating_duration_since(now)).unwrap_or_default();
    let recorded = status::record(
        account,
        &status::Ran {
            started: polled.started,
            outcome: &polled.outcome,
            next_poll: Some(next_poll),
            daemon_pid: Some(std::process::id()),
        },
    );
    if let Err(e) = recorded {
        logger.log(
            Level::Warning,
            name,
            "status_not_written",
            &format!("cannot write the status file: {e}"),
            serde_json::json!({}),
        );
    }
}

/// The wait after `failures` failures in a row: the interval doubled each time,
/// up to 16 intervals and never more than an hour (nor less than the interval).
fn backoff(interval: Duration, failures: u32) -> Duration {
    let doubled = interval.saturating_mul(1u32 << failures.min(4));
    doubled.min(BACKOFF_MAX.max(interval))
}

/// Up to a tenth of `wait`, so that many accounts (or many users' daemons) on
/// one interval do not all knock at once.
fn jitter(wait: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    let fraction = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
    wait.mul_f64(0.1 * fraction)
}

/// The signals, as events on the main loop's channel.
fn listen(events: mpsc::Sender<Event>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGHUP, SIGTERM, SIGINT])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// The daemon's lock, `STATE_DIR/daemon.lock`, held for its life.
fn single_instance(state_dir: &Path) -> anyhow::Result<AccountLock> {
    crate::sys::durable::create_dir_all(state_dir)?;
    // The accounts' own flock, its refusal worded for the daemon.
    AccountLock::acquire(&state_dir.join("daemon.lock")).map_err(|e| {
        match e {
            LockError::Held { path } => LockError::DaemonRunning { path },
            other => other,
        }
        .into()
    })
}

/// Leaves the terminal: fork, a new session, fork again (so no terminal can be
/// acquired), stdin from /dev/null, stdout and stderr to the log, and `/` as
/// the working directory. Called before any thread is started.
fn detach(log: &PathBuf) -> std::io::Result<()> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    let null = File::open("/dev/null")?;
    for _ in 0..2 {
        // SAFETY: the process is single-threaded here; the child only goes on
        // with ordinary code, and the parent exits at once.
        match unsafe { libc::fork() } {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => unsafe { libc::_exit(0) },
        }
        // SAFETY: plain system calls on our own process.
        unsafe { libc::setsid() };
    }
    std::env::set_current_dir("/")?;
    // SAFETY: dup2 onto the standard descriptors, from files we hold open.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    Ok(())
}

/// Logs an error that stops the daemon and returns its exit.
fn fail(logger: &Logger, e: anyhow::Error) -> Exit {
    let exit = classify(&e);
    logger.log(
        Level::Error,
        None,
        "daemon_failed",
        &format!("{e:#}"),
        serde_json::json!({ "exit_code": exit as u8 }),
    );
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_sixteen_intervals_and_an_hour() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(minute, 1), 2 * minute);
        assert_eq!(backoff(minute, 3), 8 * minute);
        assert_eq!(backoff(minute, 9), 16 * minute);
        assert_eq!(backoff(Duration::from_secs(600), 5), BACKOFF_MAX);
        assert_eq!(
            backoff(Duration::from_secs(7200), 2),
            Duration::from_secs(7200)
        );
        let tenth = Duration::from_millis(100);
        assert_eq!(backoff(tenth, 30), tenth * 16);
    }

    #[test]
    fn jitter_is_at_most_a_tenth() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(300)) <= Duration::from_secs(30));
        }
    }
}
