//! What each account's last run did, kept in `STATE_DIR/NAME.status.json` and
//! replaced atomically by every run, from cron, by hand or from the daemon; and
//! `popfetch status`, which reads it back.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::cmd::exit::{classify, Exit};
use crate::config::Account;
use crate::sync::{Failed, Report};
use crate::sys::durable;

/// One account's status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Status {
    pub account: String,
    /// The last run, successful or not.
    pub last_run: Option<LastRun>,
    /// When a run last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// Messages delivered by every run so far.
    pub delivered_total: u64,
    /// Unique-ids the state knows, after the last successful run.
    pub known: Option<u64>,
    /// Messages on the server after the last successful run.
    pub on_server: Option<u64>,
    /// When the daemon polls next (RFC 3339), while one runs.
    pub next_poll: Option<String>,
    /// The daemon that polls this account, if one does.
    pub daemon_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LastRun {
    pub started: String,
    pub finished: String,
    /// "ok" or "failed".
    pub result: String,
    pub exit_code: u8,
    pub error: Option<String>,
    /// Messages delivered by this run.
    pub delivered: u64,
}

/// The status file of an account.
pub(crate) fn path(account: &Account) -> PathBuf {
    account
        .state_dir
        .join(format!("{}.status.json", account.name))
}

/// The account's status; `None` before its first run. A damaged file counts as
/// none: it is rewritten whole by the next run.
pub(crate) fn load(account: &Account) -> Option<Status> {
    let text = fs::read_to_string(path(account)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A run's result, to record.
pub(crate) struct Ran<'a> {
    pub started: DateTime<Utc>,
    pub outcome: &'a Result<Report, Failed>,
    /// The daemon's next poll of this account.
    pub next_poll: Option<DateTime<Utc>>,
    pub daemon_pid: Option<u32>,
}

/// Records a run: the last run, the totals (mail a failed run delivered
/// counts), and what the state and the server hold after a success (a failure
/// keeps the last known numbers).
pub(crate) fn record(account: &Account, ran: &Ran) -> io::Result<()> {
    update(account, |status| {
        fill(status, account, ran);
        true
    })
}

fn fill(status: &mut Status, account: &Account, ran: &Ran) {
    let now = Utc::now();
    let (report, failure) = match ran.outcome {
        Ok(report) => (report, None),
        Err(failed) => (&*failed.report, Some(&failed.error)),
    };
    let delivered = report.fetched as u64;
    status.account = account.name.clone();
    status.last_run = Some(LastRun {
        started: stamp(ran.started),
        finished: stamp(now),
        result: if failure.is_none() { "ok" } else { "failed" }.to_string(),
        exit_code: failure.map_or(Exit::Ok, classify) as u8,
        error: failure.map(|e| format!("{e:#}")),
        delivered,
    });
    status.delivered_total = status.delivered_total.saturating_add(delivered);
    if failure.is_none() {
        status.last_success = Some(stamp(now));
        status.known = Some(report.known as u64);
        status.on_server = Some(report.on_server as u64);
    }
    // A run from cron or by hand leaves a running daemon's schedule as it is.
    if ran.daemon_pid.is_some() {
        status.next_poll = ran.next_poll.map(stamp);
        status.daemon_pid = ran.daemon_pid;
    }
}

/// The daemon has stopped: no next poll to show.
pub(crate) fn clear_daemon(account: &Account) {
    let _ = update(account, |status| {
        let had = status.daemon_pid.is_some() || status.next_poll.is_some();
        status.next_poll = None;
        status.daemon_pid = None;
        had
    });
}

/// Loads the status, lets `change` edit it and, when it says it did, replaces
/// the file whole — all under the status file's lock, so that a cron run and
/// the daemon ending at once both count.
fn update(account: &Account, change: impl FnOnce(&mut Status) -> bool) -> io::Result<()> {
    durable::create_dir_all(&account.state_dir)?;
    let lock = durable::open_private(
        &account
            .state_dir
            .join(format!("{}.status.lock", account.name)),
    )?;
    lock.lock()?;
    let mut status = load(account).unwrap_or_default();
    if !change(&mut status) {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&status).expect("plain data serializes");
    durable::replace_lazily(&path(account), text.as_bytes())
}

fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `popfetch status`: one line per account, or one JSON document.
pub(crate) fn show(accounts: &[&Account], json: bool) -> Exit {
    let mut all = Vec::new();
    let mut out = io::stdout().lock();
    for account in accounts {
        let mut status = load(account).unwrap_or_else(|| Status {
            account: account.name.clone(),
            ..Status::default()
        });
        // A daemon that has gone (killed, crashed) polls nothing.
        if status.daemon_pid.is_some_and(|pid| !alive(pid)) {
            status.daemon_pid = None;
            status.next_poll = None;
        }
        if json {
            all.push(status);
        } else {
            let _ = writeln!(out, "{}", line(&status));
        }
    }
    if json {
        let _ = writeln!(out, "{}", serde_json::json!({ "accounts": all }));
    }
    Exit::Ok
}

/// One line of `popfetch status`.
fn line(status: &Status) -> String {
    let Some(run) = &status.last_run else {
        return format!("{}: never synced", status.account);
    };
    let mut parts = vec![match run.result.as_str() {
        "ok" => format!("ok at {}", local(&run.finished)),
        _ => format!(
            "FAILED at {} (exit {}): {}",
            local(&run.finished),
            run.exit_code,
            run.error.as_deref().unwrap_or("")
        ),
    }];
    parts.push(format!(
        "{} delivered ({} in all)",
        run.delivered, status.delivered_total
    ));
    if let (Some(known), Some(on_server)) = (status.known, status.on_server) {
        parts.push(format!("{known} known, {on_server} on the server"));
    }
    if run.result != "ok" {
        parts.push(match &status.last_success {
            Some(when) => format!("last success {}", local(when)),
            None => "never succeeded".to_string(),
        });
    }
    if let Some(next) = &status.next_poll {
        parts.push(format!("next poll {}", local(next)));
    }
    format!("{}: {}", status.account, parts.join("; "))
}

/// An RFC 3339 time in the local zone, to the second.
fn local(stamp: &str) -> String {
    DateTime::parse_from_rfc3339(stamp)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| stamp.to_string())
}

/// Whether a process of this id exists (signal 0 tests without sending).
fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        // EPERM: it exists, as someone else.
        .is_some_and(|pid| {
            !matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_what_the_last_run_did() {
        let mut status = Status {
            account: "work".into(),
            ..Status::default()
        };
        assert_eq!(line(&status), "work: never synced");
        status.last_run = Some(LastRun {
            started: "2026-11-30T10:00:00Z".into(),
            finished: "2026-11-30T10:00:01Z".into(),
            result: "failed".into(),
            exit_code: 75,
            error: Some("the server is busy".into()),
            delivered: 0,
        });
        status.delivered_total = 12;
        let text = line(&status);
        assert!(text.starts_with("work: FAILED at "), "{text}");
        assert!(
            text.contains(
                "(exit 75): the server is busy; 0 delivered (12 in all); never succeeded"
            ),
            "{text}"
        );
    }
}
