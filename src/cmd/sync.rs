//! What `sync` does at the command line: the accounts run in parallel jobs, each
//! one's output gathered and printed in one piece, passwords asked for first, and
//! the summary, the dry-run plan or the `--json` report. What goes to stderr goes
//! through a [`Logger`], in the `--log-format` asked for.

use std::io::IsTerminal;
use std::sync::Mutex;

use super::{Cli, SyncFlags};
use crate::cmd::exit::{classify, Exit};
use crate::cmd::log::{Level, Logger};
use crate::cmd::ui::Ui;
use crate::cmd::{hooks, status};
use crate::config::secret;
use crate::config::Account;
use crate::sync::lock::LockError;
use crate::sync::preview;
use crate::sync::state::{Place, UidlState};
use crate::sync::{sync_account, Failed, Options, Report};

pub(super) fn sync(cli: &Cli, names: &[String], flags: &SyncFlags) -> Exit {
    let logger = Logger::stderr(cli.log_format);
    // As `over_accounts`, with the error through the logger.
    let config = match super::load(cli) {
        Ok(config) => config,
        Err(e) => return failed(&logger, None, &e),
    };
    match config.select(names) {
        Ok(accounts) => sync_accounts(cli, logger, accounts, flags),
        Err(e) => failed(&logger, None, &e.into()),
    }
}

/// Logs an error that ends a sync (of one account, or before any) as one line and
/// returns its exit code.
fn failed(logger: &Logger, account: Option<&str>, err: &anyhow::Error) -> Exit {
    let exit = classify(err);
    logger.log(
        Level::Error,
        account,
        "sync_failed",
        &format!("{err:#}"),
        serde_json::json!({ "exit_code": exit as u8 }),
    );
    exit
}

fn sync_accounts(cli: &Cli, logger: Logger, accounts: Vec<&Account>, flags: &SyncFlags) -> Exit {
    let ui = Ui::new(cli.loudness(), cli.log_format, logger);
    let (accounts, mut results) = prompt_first(&ui, accounts);
    // From here a Ctrl-C clears the bars and says what it means; see crate::sys::interrupt.
    let _interrupt = crate::sys::interrupt::install(ui.bars(), Exit::Interrupted as i32);
    let width = if flags.json {
        None
    } else {
        crate::cmd::ui::stdout_width()
    };
    let jobs = flags.jobs.unwrap_or_else(super::default_jobs);
    results.extend(in_parallel(jobs, &accounts, |account| {
        sync_one(&ui, account, flags, width)
    }));
    results.sort_by_key(|(index, _)| *index);
    let worst = results
        .iter()
        .map(|(_, o)| o.exit)
        .max()
        .unwrap_or(Exit::Ok);
    if flags.json {
        let accounts: Vec<_> = results.iter().map(|(_, o)| &o.json).collect();
        println!(
            "{}",
            serde_json::json!({ "accounts": accounts, "exit_code": worst as u8 })
        );
    }
    worst
}

/// Items with their place among the accounts named, so output keeps that order.
type Numbered<T> = Vec<(usize, T)>;

/// Runs `work` on every item, on up to `jobs` threads that each take the next
/// item as soon as they finish one: a slow account holds up no other, only its
/// own thread. The results come in the order they finished, each with its item's
/// number.
fn in_parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[(usize, T)],
    work: impl Fn(&T) -> R + Sync,
) -> Numbered<R> {
    let queue = Mutex::new(items.iter());
    let done = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let Some((index, item)) = queue.lock().unwrap().next() else {
                    break;
                };
                let result = work(item);
                done.lock().unwrap().push((*index, result));
            });
        }
    });
    done.into_inner().unwrap()
}

/// At a terminal, asks for the passwords that only a person can give before any
/// progress bar is drawn, one prompt a line, so no prompt shares a line with a bar.
/// An account whose password cannot be had is reported here and not synced.
fn prompt_first(ui: &Ui, accounts: Vec<&Account>) -> (Numbered<Account>, Numbered<Outcome>) {
    let asks = ui.interactive() && std::io::stdin().is_terminal();
    let mut ready = Vec::new();
    let mut failures = Vec::new();
    for (index, account) in accounts.into_iter().enumerate() {
        let mut account = account.clone();
        let source = if account.uses_token() {
            &mut account.oauth_token
        } else {
            &mut account.password
        };
        if asks && matches!(source, secret::PasswordSource::Keyring(_)) {
            match source.resolve() {
                Ok(secret) => *source = secret::PasswordSource::Inline(secret),
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    let exit = failed(ui.logger(), Some(&account.name), &e);
                    let line = format!("{e:#}");
                    failures.push((
                        index,
                        Outcome {
                            exit,
                            json: outcome_json(&account, &Report::default(), Some(line), exit),
                        },
                    ));
                    continue;
                }
            }
        }
        ready.push((index, account));
    }
    (ready, failures)
}

/// What `sync --json` says of one account.
struct Outcome {
    exit: Exit,
    json: serde_json::Value,
}

fn outcome_json(
    account: &Account,
    report: &Report,
    error: Option<String>,
    exit: Exit,
) -> serde_json::Value {
    serde_json::json!({
        "account": account.name,
        "fetched": report.fetched,
        "bytes": report.bytes,
        "octets": report.octets,
        "deleted": report.deleted,
        "skipped": report.skipped,
        "errors": error.into_iter().collect::<Vec<_>>(),
        "exit_code": exit as u8,
    })
}

/// Syncs one account, gathering its output and printing it in one piece.
fn sync_one(ui: &Ui, account: &Account, flags: &SyncFlags, width: Option<usize>) -> Outcome {
    let mut out = ui.account(&account.name);
    if account.tls_insecure_skip_verify {
        // Shown on every run, even with -q: this must never be forgotten.
        out.warning_always(
            "tls_insecure_skip_verify = true, the server's certificate is not checked and anyone on the path can read the mail and the password"
                .to_string(),
        );
    }
    let options = Options {
        trace: out.trace(),
        dry_run: flags.dry_run,
        warn: Some(out.warn()),
        progress: out.progress(),
        rank: Some(|err| classify(err) as u8),
    };
    let started = chrono::Utc::now();
    let result = sync_account(account, options);
    if !flags.dry_run {
        after_run(account, &mut out, started, &result);
    }
    let (exit, mut report, error) = match result {
        Ok(report) => (Exit::Ok, report, None),
        // What it delivered before it failed still counts, in --json too.
        Err(Failed { error, report }) => {
            let exit = classify(&error);
            let line = format!("{error:#}");
            out.error(line.clone(), exit);
            (exit, *report, Some(line))
        }
    };
    let mut plan = None;
    if let (true, Some(planned)) = (flags.dry_run, &report.plan) {
        // The plan as `list` shows it: date, sender and subject from the headers
        // the dry run read.
        let mut entries = match UidlState::peek(&Place::of(account)) {
            Ok(state) => preview::entries(planned, &state),
            Err(_) => Vec::new(),
        };
        for entry in &mut entries {
            if let Some(headline) = report.heads.remove(&entry.number) {
                headline.fill(entry);
            }
        }
        if flags.json {
            plan = Some(serde_json::json!(entries));
        } else {
            out.print(format!(
                "{}: would fetch {} message(s) ({} octets on the server), delete {}, skip {}",
                account.name, report.fetched, report.octets, report.deleted, report.skipped
            ));
            out.print(preview::table(&entries, width).trim_end().to_string());
        }
    } else if error.is_none() {
        out.summary(
            summary(&report),
            serde_json::json!({
                "fetched": report.fetched,
                "bytes": report.bytes,
                "deleted": report.deleted,
                "skipped": report.skipped,
            }),
        );
    }
    out.finish();
    let mut json = outcome_json(account, &report, error, exit);
    if let Some(plan) = plan {
        json["plan"] = plan;
    }
    Outcome { exit, json }
}

/// Runs the account's hooks and records the run in its status file; a run
/// that found another popfetch syncing the account did not happen.
fn after_run(
    account: &Account,
    out: &mut crate::cmd::ui::AccountUi,
    started: chrono::DateTime<chrono::Utc>,
    outcome: &Result<Report, Failed>,
) {
    if matches!(outcome, Err(failed) if LockError::held(&failed.error)) {
        return;
    }
    let warn = out.warn();
    hooks::after_sync(account, outcome, &*warn);
    let ran = status::Ran {
        started,
        outcome,
        next_poll: None,
        daemon_pid: None,
    };
    // After a failure its error line says what is wrong (a full disk, say);
    // the status file failing with it is no news.
    if let (Err(e), Ok(_)) = (status::record(account, &ran), outcome) {
        warn(&format!("cannot write the status file: {e}"));
    }
}

/// Bytes here are what was written to disk (after CRLF→LF), not the server's octets.
fn summary(report: &Report) -> String {
    format!(
        "{} message(s) fetched ({} bytes written), {} deleted, {} skipped",
        report.fetched, report.bytes, report.deleted, report.skipped
    )
}

#[cfg(test)]
mod tests {
    use super::in_parallel;
    use std::time::{Duration, Instant};

    #[test]
    fn a_slow_item_holds_up_no_other() {
        // Two threads, one item that takes 600 ms and twelve of 20 ms: the other
        // thread takes the short ones one after another, so all twelve are done
        // long before the slow one (fixed batches of two would wait 600 ms after
        // the first batch).
        let items: Vec<(usize, u64)> = std::iter::once(600)
            .chain(std::iter::repeat_n(20, 12))
            .enumerate()
            .collect();
        let start = Instant::now();
        let done = in_parallel(2, &items, |ms| {
            std::thread::sleep(Duration::from_millis(*ms));
            start.elapsed()
        });
        assert_eq!(done.len(), 13);
        assert_eq!(
            done.last().unwrap().0,
            0,
            "the slow item finishes last: {done:?}"
        );
        let fast_done = done.iter().filter(|(i, _)| *i != 0).map(|(_, t)| *t).max();
        assert!(fast_done.unwrap() < Duration::from_millis(500), "{done:?}");
    }

    #[test]
    fn every_item_runs_once_whatever_the_jobs() {
        let items: Vec<(usize, usize)> = (0..7).map(|i| (i, i * 10)).collect();
        for jobs in [0, 1, 3, 7, 100] {
            let mut done = in_parallel(jobs, &items, |v| *v + 1);
            done.sort();
            let want: Vec<(usize, usize)> = (0..7).map(|i| (i, i * 10 + 1)).collect();
            assert_eq!(done, want, "jobs {jobs}");
        }
    }

    #[test]
    fn the_default_jobs_are_four_per_cpu_from_8_to_32() {
        use crate::cmd::jobs_for;
        assert_eq!(jobs_for(1), 8);
        assert_eq!(jobs_for(2), 8);
        assert_eq!(jobs_for(3), 12);
        assert_eq!(jobs_for(8), 32);
        assert_eq!(jobs_for(64), 32);
    }
}
