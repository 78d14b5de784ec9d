//! The hooks run after a sync: `on_new_mail` when messages were delivered (a JSON
//! array of them on stdin) and `on_error` when the sync failed (the error as JSON).
//! They run through the one child runner, without a shell, bounded by the
//! account's `timeout`, in a process group of their own, their output
//! discarded; a hook that fails is a warning and changes nothing that was
//! delivered nor the exit status.

use crate::cmd::exit::classify;
use crate::config::Account;
use crate::sync::{Failed, Report};
use crate::sys::child::{Outcome, Run, Stdin, Stdout};

/// Runs the hooks a run calls for: `on_new_mail` when it delivered mail (even
/// if it failed later), `on_error` when it failed; `warn` hears of a hook that
/// failed.
pub(crate) fn after_sync(account: &Account, outcome: &Result<Report, Failed>, warn: &dyn Fn(&str)) {
    let report = match outcome {
        Ok(report) => report,
        Err(failed) => &*failed.report,
    };
    if let (Some(argv), false) = (&account.on_new_mail, report.delivered.is_empty()) {
        run(
            "on_new_mail",
            argv,
            new_mail(account, report),
            account,
            warn,
        );
    }
    if let (Some(argv), Err(failed)) = (&account.on_error, outcome) {
        let input = serde_json::json!({
            "account": account.name,
            "error": format!("{:#}", failed.error),
            "exit_code": classify(&failed.error) as u8,
        });
        run("on_error", argv, input, account, warn);
    }
}

/// One hook: the JSON on its stdin, its output to none of ours (a log of JSON
/// lines, a cron mail), a warning when it fails.
fn run(
    key: &str,
    argv: &[String],
    input: serde_json::Value,
    account: &Account,
    warn: &dyn Fn(&str),
) {
    let ended = Run::new(argv, account.timeout)
        .own_group()
        .stdin(Stdin::Offer(input.to_string().into_bytes()))
        .stdout(Stdout::Null)
        .run();
    match ended.outcome {
        Outcome::Exited(0) => {}
        outcome => warn(&format!(
            "{key} \"{}\" failed ({outcome}); the mail is as it was delivered",
            argv[0]
        )),
    }
}

/// What `on_new_mail` reads: one object per delivered message.
fn new_mail(account: &Account, report: &Report) -> serde_json::Value {
    report
        .delivered
        .iter()
        .map(|message| {
            serde_json::json!({
                "account": account.name,
                "unique_id": message.uid,
                "size": message.size,
                "from": message.from,
                "subject": message.subject,
                "date": message.date,
                "location": message.location,
            })
        })
        .collect()
}
