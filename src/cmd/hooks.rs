//! The hooks run after a sync: `on_new_mail` when messages were delivered (a JSON
//! array of them on stdin) and `on_error` when the sync failed (the error as JSON).
//! They run through the one child runner, without a shell, bounded by the
//! account's `timeout`; a hook that fails is a warning and changes nothing that
//! was delivered nor the exit status.

use crate::cmd::exit::Exit;
use crate::config::Account;
use crate::sync::Report;
use crate::sys::child::{Outcome, Run, Stdin, Stdout};

/// Runs the hook the run calls for, if the account has one; `warn` hears of a
/// hook that failed.
pub(crate) fn after_sync(
    account: &Account,
    report: &Report,
    failed: Option<(&str, Exit)>,
    warn: &dyn Fn(&str),
) {
    let (key, argv, input) = match failed {
        Some((error, exit)) => match &account.on_error {
            Some(argv) => (
                "on_error",
                argv,
                serde_json::json!({
                    "account": account.name,
                    "error": error,
                    "exit_code": exit as u8,
                }),
            ),
            None => return,
        },
        None if report.delivered.is_empty() => return,
        None => match &account.on_new_mail {
            Some(argv) => ("on_new_mail", argv, new_mail(account, report)),
            None => return,
        },
    };
    let ended = Run::new(argv, account.timeout)
        .own_group()
        .stdin(Stdin::Offer(input.to_string().into_bytes()))
        .stdout(Stdout::ToStderr)
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
