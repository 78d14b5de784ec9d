//! One account's sync, told in the order it happens: lock the account, open the
//! target, read the state and finish what a killed run left while connecting and
//! logging in, list, plan, fetch and deliver, make the state durable, delete, quit.
//!
//! The order is the never-lose-mail promise: a message gets a DELE only after its
//! delivery and its state record are durable, and deletions take effect only at QUIT.
//! Once logged in, the story ([`run_session`]) is generic over the stream, the
//! target and the state, so its tests run it over a scripted server and watch the
//! order of every step.

pub(crate) mod auth;
pub(crate) mod connect;
mod fetch;
pub(crate) mod filter;
mod glance;
pub(crate) mod lock;
pub(crate) mod policy;
pub(crate) mod preview;
mod session;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::config::Account;
use crate::deliver::{Recovered, Target};
use crate::net::Stream;
use crate::pop3::Trace;
use lock::AccountLock;
use policy::SessionPlan;
use preview::Headline;
use state::{Ledger, Place, UidlState};

/// Told how a sync advances, for a progress bar.
pub(crate) trait Progress: Send {
    /// The plan is made: this many messages and bytes to fetch.
    fn planned(&self, messages: u64, bytes: u64);
    /// One message was delivered.
    fn delivered(&self, bytes: u64);
}

/// How to run a sync.
#[derive(Default)]
pub(crate) struct Options {
    /// Told how the sync advances.
    pub progress: Option<Box<dyn Progress>>,
    /// Receives the protocol steps, passwords redacted.
    pub trace: Option<Trace>,
    /// Plan only: change nothing on the server, on disk or in the state.
    pub dry_run: bool,
    /// Receives warnings that are not errors.
    pub warn: Option<Warn>,
    /// Which of several failures is the worst, the one a failed sync reports (the
    /// caller's exit codes order them); without it, the first.
    pub rank: Option<Rank>,
}

/// Orders failures: the higher, the worse.
pub(crate) type Rank = fn(&anyhow::Error) -> u8;

/// Where warnings that are not errors go.
pub(crate) type Warn = Box<dyn Fn(&str) + Send>;

/// What a sync did (or, for a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub fetched: usize,
    /// Bytes written to disk for what was fetched (after CRLF→LF; none in a dry run).
    pub bytes: u64,
    /// The server's octets (its LIST sizes, RFC 1939 §5) of what was, or would be, fetched.
    pub octets: u64,
    pub deleted: usize,
    /// Messages left on the server this time (too large, over the limit, filtered).
    pub skipped: usize,
    /// Messages the server refused to send; they stay on the server.
    pub refused: usize,
    /// The plan, for a dry run to show.
    pub plan: Option<SessionPlan>,
    /// What a dry run read of each message's headers (`TOP n 0`), for its table.
    pub heads: foldhash::HashMap<u32, Headline>,
    /// The messages delivered this run, in order, the first [`fetch::DELIVERED_LISTED`]
    /// of them (`fetched` counts them all; none in a dry run).
    pub delivered: Vec<Delivered>,
    /// Messages on the server when the session ended: listed, less those deleted.
    pub on_server: usize,
    /// Unique-ids the state records as delivered after the run.
    pub known: usize,
    /// The server's LOGIN-DELAY (RFC 2449 §6.5) in seconds, when CAPA announced one.
    pub login_delay: Option<u64>,
}

/// One delivered message, for the status and the on_new_mail hook.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub uid: String,
    /// The server's size (LIST octets).
    pub size: u64,
    /// From:, Subject: and Date: as the message has them, decoded (RFC 2047) and made safe to print; None when absent.
    pub from: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    /// Where it went: the target as configured (e.g. "maildir:/home/u/Mail").
    pub location: String,
}

/// A sync that failed, and what it had done by then: mail it delivered is
/// delivered, and counts.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: anyhow::Error,
    pub report: Box<Report>,
}

impl From<anyhow::Error> for Failed {
    /// A failure before anything was delivered.
    fn from(error: anyhow::Error) -> Failed {
        Failed {
            error,
            report: Box::default(),
        }
    }
}

/// Syncs one account.
pub(crate) fn sync_account(account: &Account, options: Options) -> Result<Report, Failed> {
    if options.dry_run {
        return Ok(session::dry_run(account, options)?);
    }
    let Options {
        progress,
        trace,
        warn,
        rank,
        ..
    } = options;
    let warn = |text: &str| {
        if let Some(w) = &warn {
            w(text)
        }
    };
    // The TLS setup is the longest step before the first byte to the server: it
    // starts first, and the lock, the target and the state are readied meanwhile.
    let tls = connect::prepare_tls(account);
    let _lock = lock(account)?;
    // Read under the lock: no other run of this mailbox writes the journal now.
    let trusted = glance::trusted(account, now());
    let Ready {
        mut target,
        mut state,
        connected,
    } = match open_state_and_session(account, trace, tls, trusted.as_ref())? {
        Opened::Unchanged(report) => return Ok(*report),
        Opened::Ready(ready) => *ready,
    };
    if let Some(adoption) = state.adoption() {
        warn(&adoption.to_string());
    }
    session::run_session(
        connected,
        account,
        target.as_mut(),
        &mut state,
        progress.as_deref(),
        &warn,
        rank.unwrap_or(|_| 0),
    )
}

/// What [`open_state_and_session`] found.
enum Opened {
    /// The mailbox is as a trusted glance saw it: the session is over.
    Unchanged(Box<Report>),
    Ready(Box<Ready>),
}

/// The target, the state, and the session with what it asked for the glance.
struct Ready {
    target: Box<dyn Target>,
    state: UidlState,
    connected: session::Connected<Stream>,
}

/// Opens the target, reads the state and finishes what a killed run left while
/// connecting and logging in, which is mostly waiting for the servers (a login
/// takes Dovecot some 15 ms before it answers; replaying the state of 20,000
/// messages takes about as long; a mail server target has its own greeting and
/// login). A target or state that cannot be opened is reported first, as it would
/// be without the overlap; the session then ends with QUIT, having done nothing.
///
/// With a `trusted` glance the connection glances at the mailbox as soon as it
/// is logged in, and when nothing changed the state is not read to its end:
/// the glance vouches for it (a cron run on 100,000 messages spends its time
/// replaying the state otherwise).
fn open_state_and_session(
    account: &Account,
    trace: Option<crate::pop3::Trace>,
    tls: connect::PreparedTls,
    trusted: Option<&glance::Glance>,
) -> Result<Opened> {
    let unchanged = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let connecting = scope.spawn(|| -> Result<_> {
            let mut session = connect::open_prepared_session(account, trace, tls)?;
            let Some(glance) = trusted else {
                return Ok((session, None, None));
            };
            let glimpse = session.stat_and_ends(glance.count)?;
            if glance::compare(glance, glimpse.clone()) == glance::Seen::Same {
                unchanged.store(true, Ordering::Relaxed);
                return Ok((session, None, Some(glance)));
            }
            Ok((session, Some((glance.count, glimpse)), None))
        });
        let ready = account
            .deliver
            .open(&account.target_context())
            .map_err(anyhow::Error::from)
            .and_then(|mut target| {
                let located = account.policy.until_deleted_locally;
                let place = Place::of(account);
                let Some(mut state) = UidlState::open_unless(&place, located, &unchanged)? else {
                    return Ok(None);
                };
                recover(&mut state, target.as_mut())?;
                if located {
                    let gone = target.gone(&state.locations(), place.mailbox())?;
                    state.mark_gone(gone);
                }
                Ok(Some((target, state)))
            });
        let connected = connecting
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (ready, connected) {
            (Ok(_), Ok((session, _, Some(glance)))) => Ok(Opened::Unchanged(Box::new(
                session::unchanged(session, glance)?,
            ))),
            (Ok(Some((target, state))), Ok((session, asked, None))) => {
                Ok(Opened::Ready(Box::new(Ready {
                    target,
                    state,
                    connected: session::Connected { session, asked },
                })))
            }
            // Cannot happen: the state is left unread only when the connection
            // found the mailbox unchanged, and then it says so (the first arm).
            (Ok(None), Ok((session, _, None))) => {
                let _ = session.quit();
                Err(anyhow::anyhow!("the state was not read"))
            }
            (Err(err), Ok((session, _, _))) => {
                let _ = session.quit();
                Err(err)
            }
            (Err(err), Err(_)) | (Ok(_), Err(err)) => Err(err),
        }
    })
}

fn lock(account: &Account) -> Result<AccountLock> {
    crate::sys::durable::create_dir_all(&account.state_dir).map_err(|source| {
        crate::sync::state::StateError::Io {
            action: "create the directory of",
            path: Place::of(account).path(),
            source,
        }
    })?;
    Ok(AccountLock::acquire(&Place::of(account).lock())?)
}

/// Finishes what a killed run left: a delivery announced in the state either
/// completed (record it, so it is not fetched twice) or did not (clean up after it, so
/// it is fetched again).
fn recover(state: &mut UidlState, target: &mut dyn Target) -> Result<()> {
    for interrupted in state.interrupted() {
        match target.recover(&interrupted.location)? {
            // An intent adopted from an older state: not this mailbox's own record.
            Recovered::Delivered if interrupted.adopted => {
                state.record_adopted(&interrupted.uid, now())?
            }
            Recovered::Delivered => {
                state.record_delivered(&interrupted.uid, now(), interrupted.id)?
            }
            Recovered::NotDelivered => state.record_abandoned(&interrupted.uid)?,
        }
    }
    state.sync()?;
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
