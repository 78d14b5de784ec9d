//! One account's sync, told in the order it happens: lock the account, open the
//! target, read the state and finish what a killed run left while connecting and
//! logging in, list, plan, fetch and deliver, make the state durable, delete, quit.
//!
//! The order is the never-lose-mail promise: a message gets a DELE only after its
//! delivery and its state record are durable, and deletions take effect only at QUIT.
//! Once logged in, the story ([`run_session`]) is generic over the stream, the
//! target and the state, so its tests run it over a scripted server and watch the
//! order of every step.

pub mod auth;
pub mod connect;
pub mod filter;
pub mod lock;
pub mod policy;
pub mod preview;
pub mod state;

use std::cell::Cell;
use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};

use crate::config::Account;
use crate::deliver::{DeliverError, Recovered, Target};
use connect::open_session;

use crate::pop3::net::Stream;
use crate::pop3::{self, Flow, ListedMessage, Retrieved, Session, Trace, Wire};
use crate::sync::lock::AccountLock;
use crate::sync::preview::Headline;
use crate::sync::state::identity::Identity;
use crate::sync::state::{StateError, UidlState};
use policy::{Action, SessionPlan};

/// Told how a sync advances, for a progress bar.
pub trait Progress: Send {
    /// The plan is made: this many messages and bytes to fetch.
    fn planned(&self, messages: u64, bytes: u64);
    /// One message was delivered.
    fn delivered(&self, bytes: u64);
}

/// How to run a sync.
#[derive(Default)]
pub struct Options {
    /// Told how the sync advances.
    pub progress: Option<Box<dyn Progress>>,
    /// Receives the protocol steps, passwords redacted.
    pub trace: Option<Trace>,
    /// Plan only: change nothing on the server, on disk or in the state.
    pub dry_run: bool,
    /// Receives warnings that are not errors.
    pub warn: Option<Warn>,
}

/// Where warnings that are not errors go.
pub type Warn = Box<dyn Fn(&str) + Send>;

/// What a sync did (or, for a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
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
}

/// Syncs one account.
pub fn sync_account(account: &Account, options: Options) -> Result<Report> {
    if options.dry_run {
        return preview(account, options);
    }
    let Options {
        progress,
        trace,
        warn,
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
    let mut target = account.deliver.open(&account.target_context())?;
    let (mut state, session) = open_state_and_session(account, target.as_mut(), trace, tls)?;
    if let Some(adoption) = state.adoption() {
        warn(&adoption.to_string());
    }
    run_session(
        session,
        account,
        target.as_mut(),
        &mut state,
        progress.as_deref(),
        &warn,
    )
}

/// The session once logged in: list, plan, fetch and deliver, make the target and
/// the state durable, delete, quit. Every error path before the DELEs returns
/// without QUIT, so the server never enters its UPDATE state (RFC 1939 §6) and
/// every message stays there.
fn run_session<S: Wire>(
    mut session: Session<S>,
    account: &Account,
    target: &mut dyn Target,
    state: &mut dyn Ledger,
    progress: Option<&dyn Progress>,
    warn: &dyn Fn(&str),
) -> Result<Report> {
    let mut failures = Failures::default();
    let plan = plan_session(
        &mut session,
        account,
        &*state,
        Shown::No,
        warn,
        &mut failures,
    )?;
    // Adopted records first: a crash between them and the forgetting of their old
    // form leaves both, never neither.
    for (uid, record) in &plan.adopt {
        state.record_delivered(uid, record.first_seen, record.id)?;
    }
    state.forget_records(&plan.stale)?;
    state.forget(&plan.forget)?;

    let mut report = Report {
        skipped: plan.skipped().len(),
        ..Report::default()
    };
    if let Some(progress) = progress {
        let fetch = plan.fetch();
        progress.planned(fetch.len() as u64, fetch.iter().map(|m| m.size).sum());
    }
    let mut sink = Sink {
        target: &mut *target,
        state: &mut *state,
        progress,
    };
    let fetched = fetch_and_deliver(
        &mut session,
        &plan,
        account,
        &mut sink,
        &mut report,
        &mut failures,
    );
    // Whatever happened while fetching, every completed delivery is made durable,
    // in the target and in the state, before a single DELE goes out.
    let flushed = target.flush();
    state.sync()?;
    flushed?;
    let delivered = fetched?;

    let mut deletions = plan.delete();
    if plan.delete_after_delivery {
        deletions.extend(delivered);
    }
    let refused = session.delete(&deletions)?;
    session.quit()?;
    report.deleted = deletions.len() - refused.len();
    state.tidy();
    if let Some(err) = refused_deletions(&refused) {
        warn(&format!("{err:#}"));
        failures.add(err);
    }

    if let Some(err) = failures.worst() {
        return Err(err);
    }
    if report.refused > 0 {
        return Err(anyhow!(crate::pop3::Error::Protocol(format!(
            "the server refused to send {} message(s); they stay on the server",
            report.refused
        ))));
    }
    Ok(report)
}

/// What a session needs of the state: the records the plan reads, the records it
/// writes, and a way to make them durable. [`UidlState`] keeps them on disk; the
/// tests put an instrumented one in its place, to see when each record becomes
/// durable and to make that fail.
trait Ledger: policy::Known {
    fn record_intent(
        &mut self,
        uid: &str,
        location: &str,
        id: Option<Identity>,
    ) -> Result<(), StateError>;
    fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError>;
    fn record_delivered(
        &mut self,
        uid: &str,
        first_seen: u64,
        id: Option<Identity>,
    ) -> Result<(), StateError>;
    fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError>;
    fn forget(&mut self, uids: &[String]) -> Result<(), StateError>;
    fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError>;
    fn sync(&mut self) -> Result<(), StateError>;
    fn tidy(&mut self);
}

impl Ledger for UidlState {
    fn record_intent(
        &mut self,
        uid: &str,
        location: &str,
        id: Option<Identity>,
    ) -> Result<(), StateError> {
        UidlState::record_intent(self, uid, location, id)
    }

    fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError> {
        UidlState::record_identity(self, uid, id)
    }

    fn record_delivered(
        &mut self,
        uid: &str,
        first_seen: u64,
        id: Option<Identity>,
    ) -> Result<(), StateError> {
        UidlState::record_delivered(self, uid, first_seen, id)
    }

    fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError> {
        UidlState::record_abandoned(self, uid)
    }

    fn forget(&mut self, uids: &[String]) -> Result<(), StateError> {
        UidlState::forget(self, uids)
    }

    fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError> {
        UidlState::forget_records(self, records)
    }

    fn sync(&mut self) -> Result<(), StateError> {
        UidlState::sync(self)
    }

    fn tidy(&mut self) {
        UidlState::tidy(self)
    }
}

/// The error for DELEs the server refused (RFC 1939 §5 allows -ERR): the messages
/// stay on the server, and the run must not look like a success. The first refusal
/// decides the exit: `[IN-USE]` or `[SYS/TEMP]` (RFC 2449 §8, RFC 3206) is worth a
/// retry (75), anything else is a protocol error (76).
fn refused_deletions(refused: &[(u32, crate::pop3::Status)]) -> Option<anyhow::Error> {
    use crate::pop3::RespCode;
    let (_, first) = refused.first()?;
    // Only these two codes make it temporary; any other (even [AUTH]) is a
    // protocol error here.
    let code = first
        .code
        .clone()
        .filter(|c| matches!(c, RespCode::InUse | RespCode::SysTemp));
    let err = crate::pop3::Error::Server {
        command: "DELE",
        code,
        text: first.text.clone(),
    };
    Some(anyhow::Error::new(err).context(format!(
        "the server refused to delete {} message(s); they stay on the server, and the next run tries again",
        refused.len()
    )))
}

/// Reads the state and finishes what a killed run left while connecting and logging
/// in, which is mostly waiting for the server (a login takes Dovecot some 15 ms
/// before it answers; replaying the state of 20,000 messages takes about as long).
/// A state that cannot be read is reported first, as it would be without the
/// overlap; the session then ends with QUIT, having done nothing.
fn open_state_and_session(
    account: &Account,
    target: &mut dyn Target,
    trace: Option<crate::pop3::Trace>,
    tls: connect::PreparedTls,
) -> Result<(UidlState, Session<Stream>)> {
    std::thread::scope(|scope| {
        let connecting = scope.spawn(|| connect::open_prepared_session(account, trace, tls));
        let state = UidlState::open(&account.state_place())
            .map_err(anyhow::Error::from)
            .and_then(|mut state| {
                recover(&mut state, target)?;
                Ok(state)
            });
        let session = connecting
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (state, session) {
            (Ok(state), Ok(session)) => Ok((state, session)),
            (Err(err), Ok(session)) => {
                let _ = session.quit();
                Err(err)
            }
            (Err(err), Err(_)) | (Ok(_), Err(err)) => Err(err),
        }
    })
}

/// A dry run: the same session up to the plan, then QUIT. Nothing is locked,
/// created, recorded, delivered or deleted.
fn preview(account: &Account, options: Options) -> Result<Report> {
    let warn = |text: &str| {
        if let Some(w) = &options.warn {
            w(text)
        }
    };
    let state = UidlState::peek(&account.state_place())?;
    let mut session = open_session(account, options.trace)?;
    let mut failures = Failures::default();
    let plan = plan_session(
        &mut session,
        account,
        &state,
        Shown::Yes,
        &warn,
        &mut failures,
    )?;
    // The table shows date, sender and subject as `list` does; a server without
    // TOP still gets its plan, without those columns.
    let messages: Vec<(u32, u64)> = plan.messages.iter().map(|(m, _)| (m.num, m.size)).collect();
    let mut heads = foldhash::HashMap::default();
    connect::headers(&mut session, &messages, |num, head| {
        if let Ok(head) = head {
            heads.insert(num, Headline::of(head));
        }
        Flow::Continue
    })?;
    session.quit()?;
    let fetch = plan.fetch();
    Ok(Report {
        fetched: fetch.len(),
        bytes: 0,
        octets: fetch.iter().map(|m| m.size).sum(),
        heads,
        deleted: plan.delete().len()
            + if plan.delete_after_delivery {
                fetch.len()
            } else {
                0
            },
        skipped: plan.skipped().len(),
        refused: 0,
        plan: Some(plan),
    })
}

/// Whether a plan is shown to the user (a dry run) or only carried out.
#[derive(Clone, Copy)]
enum Shown {
    Yes,
    No,
}

/// Lists the server, plans what to do with each message, and asks the filter.
fn plan_session<S: Wire>(
    session: &mut Session<S>,
    account: &Account,
    known: &dyn policy::Known,
    shown: Shown,
    warn: &dyn Fn(&str),
    failures: &mut Failures,
) -> Result<SessionPlan> {
    // Only a message that may be fetched needs its size, but a plan that is shown
    // shows every size.
    let now = now();
    let sized = |uid: &str| policy::needs_size(uid, known, &account.policy, now);
    let sized: Option<&dyn Fn(&str) -> bool> = match shown {
        Shown::No => Some(&sized),
        Shown::Yes => None,
    };
    let listing = connect::listing(session, sized, warn)?;
    let probes = connect::probe(session, &listing, known, &account.policy, now, warn)?;
    let mut plan = policy::plan(listing, &probes, known, &account.policy, now);
    run_filter(session, &mut plan, account, failures)?;
    Ok(plan)
}

/// Runs the filter on each message planned for fetching, by its headers.
fn run_filter<S: Wire>(
    session: &mut Session<S>,
    plan: &mut SessionPlan,
    account: &Account,
    failures: &mut Failures,
) -> Result<()> {
    let Some(argv) = &account.filter else {
        return Ok(());
    };
    let mut judged = HashSet::new();
    let mut stop = None;
    // A verdict can let another message in under max_messages, so look again.
    loop {
        let batch: Vec<(u32, u64)> = (plan.fetch().into_iter())
            .filter(|m| !judged.contains(&m.num))
            .map(|m| (m.num, m.size))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        connect::headers(session, &batch, |num, head| {
            judged.insert(num);
            let head = match head {
                Ok(head) => head,
                Err(status) => {
                    stop = Some(anyhow::Error::new(pop3::Error::Server {
                        command: "TOP",
                        code: status.code,
                        text: status.text,
                    }));
                    return Flow::Stop;
                }
            };
            let verdict = match filter::judge(argv, head, account.mda_timeout) {
                Ok(verdict) => verdict,
                // A filter that cannot start judges no message: stop before fetching
                // any, rather than report the same cause once per message.
                Err(err @ filter::FilterError::Spawn { .. }) => {
                    stop = Some(err.into());
                    return Flow::Stop;
                }
                Err(err) => {
                    failures.add(anyhow::Error::new(err));
                    Action::Skip(policy::Reason::Filter)
                }
            };
            plan.apply_filter(num, verdict, &account.policy);
            Flow::Continue
        })?;
        if let Some(stop) = stop {
            return Err(stop);
        }
    }
}

fn lock(account: &Account) -> Result<AccountLock> {
    crate::sys::durable::create_dir_all(&account.state_dir).map_err(|source| {
        crate::sync::state::StateError::Io {
            action: "create the directory of",
            path: account.state_file(),
            source,
        }
    })?;
    Ok(AccountLock::acquire(&account.lock_file())?)
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

/// Fetches every planned message and delivers it. Returns the numbers of the
/// messages delivered; a failed session is an `Err`. A failure of the target itself
/// (a full disk) stops the fetching; one that concerns a single message (an MDA's
/// verdict) does not. Both are collected in `failures`.
fn fetch_and_deliver<S: Wire>(
    session: &mut Session<S>,
    plan: &SessionPlan,
    account: &Account,
    sink: &mut Sink,
    report: &mut Report,
    failures: &mut Failures,
) -> Result<Vec<u32>> {
    let fetch: Vec<ListedMessage> = plan.fetch();
    let listed: Vec<(u32, u64)> = fetch.iter().map(|m| (m.num, m.size)).collect();
    let mut done = Batch::default();
    let mut index = 0;
    let retrieved = session.retrieve(&listed, |num, body| {
        let message = &fetch[index];
        index += 1;
        debug_assert_eq!(message.num, num);
        let Ok(body) = body else {
            report.refused += 1;
            return Flow::Continue;
        };
        let trace_header = received_header(account, &message.uid);
        let id = Cell::new(None);
        let mut chained = std::io::Cursor::new(trace_header).chain(Noted {
            body: &mut *body,
            id: &id,
        });
        let delivered = deliver_one(sink.target, sink.state, &message.uid, &mut chained, &id)
            .and_then(|bytes| {
                // Read to its end, so checked (see `Session::retrieve`).
                let id = body.identity();
                if let (Some(id), true) = (id, sink.target.stages()) {
                    // Recovery must find the identity with the intent: a delivery
                    // that cannot say it is not committed.
                    if let Err(err) = sink.state.record_identity(&message.uid, id) {
                        sink.target.unstage();
                        return Err(err.into());
                    }
                }
                done.add(sink, message, bytes, id, report)
            });
        match delivered {
            Ok(()) => Flow::Continue,
            Err(err) => {
                let per_message = is_per_message(&err);
                // A broken connection is reported by `retrieve` itself.
                if !is_source_error(&err) {
                    failures.add(err.context(format!("message {num} stays on the server")));
                }
                if per_message {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
        }
    });
    // Staged messages are whole even if the connection broke after them.
    if let Err(err) = done.commit(sink, report) {
        failures.add(err);
    }
    retrieved?;
    Ok(done.delivered)
}

/// Staged deliveries share one commit (one syncfs, one fsync of new/) until there
/// are this many, or this many bytes, or the first has waited this long. The bounds
/// only limit what a crash throws away — staged messages were never recorded, so
/// they are fetched again — not what is safe: nothing is deleted before its commit.
const BATCH_MESSAGES: usize = 256;
const BATCH_BYTES: u64 = 32 << 20;
const BATCH_AGE: Duration = Duration::from_secs(2);

/// Deliveries waiting for their commit, and those committed.
#[derive(Default)]
struct Batch {
    /// Staged: (unique-id, message number, bytes, listed size, identity).
    staged: Vec<(String, u32, u64, u64, Option<Identity>)>,
    staged_bytes: u64,
    /// When the first staged delivery arrived.
    began: Option<Instant>,
    /// Committed and recorded.
    delivered: Vec<u32>,
}

impl Batch {
    /// Takes a delivery: recorded at once if the target delivered it durably, or
    /// staged until a batch is full if the target stages.
    fn add(
        &mut self,
        sink: &mut Sink,
        message: &ListedMessage,
        bytes: u64,
        id: Option<Identity>,
        report: &mut Report,
    ) -> Result<()> {
        self.staged
            .push((message.uid.clone(), message.num, bytes, message.size, id));
        self.staged_bytes += bytes;
        let began = *self.began.get_or_insert_with(Instant::now);
        let full = self.staged.len() >= BATCH_MESSAGES
            || self.staged_bytes >= BATCH_BYTES
            || began.elapsed() >= BATCH_AGE;
        if !sink.target.stages() || full {
            self.commit(sink, report)?;
        }
        Ok(())
    }

    /// Intents durable, then the target's commit, then the records: in that order a
    /// crash anywhere leaves each message either recorded and in place, or findable
    /// by recovery, or absent and still on the server.
    fn commit(&mut self, sink: &mut Sink, report: &mut Report) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.staged_bytes = 0;
        self.began = None;
        if sink.target.stages() {
            sink.state.sync()?;
        }
        let flushed = sink.target.flush();
        if let Err(err) = flushed {
            self.staged.clear();
            return Err(err.into());
        }
        for (uid, num, bytes, size, id) in self.staged.drain(..) {
            sink.state.record_delivered(&uid, now(), id)?;
            self.delivered.push(num);
            report.fetched += 1;
            report.bytes += bytes;
            report.octets += size;
            if let Some(progress) = sink.progress {
                progress.delivered(size);
            }
        }
        Ok(())
    }
}

/// The Received: trace header (RFC 5322 §3.6.7) added when `received_header` is on;
/// empty otherwise, so that by default every byte is the server's.
fn received_header(account: &Account, uid: &str) -> Vec<u8> {
    if !account.received_header {
        return Vec::new();
    }
    let local = gethostname::gethostname().to_string_lossy().into_owned();
    format!(
        "Received: from {} by {local} with POP3 (popfetch {})\n\tid {uid} for <{}>; {}\n",
        account.host,
        env!("CARGO_PKG_VERSION"),
        account.user,
        chrono::Utc::now().to_rfc2822()
    )
    .into_bytes()
}

/// Where fetched messages go, and who hears of it.
struct Sink<'a> {
    target: &'a mut dyn Target,
    state: &'a mut dyn Ledger,
    progress: Option<&'a dyn Progress>,
}

/// Delivery failures of one session: the worst is reported, with a count of the rest.
#[derive(Default)]
struct Failures {
    worst: Option<anyhow::Error>,
    count: usize,
}

impl Failures {
    fn add(&mut self, err: anyhow::Error) {
        self.count += 1;
        let worse = self
            .worst
            .as_ref()
            .is_none_or(|w| crate::cmd::exit::classify(&err) > crate::cmd::exit::classify(w));
        if worse {
            self.worst = Some(err);
        }
    }

    fn worst(self) -> Option<anyhow::Error> {
        let others = self.count.saturating_sub(1);
        self.worst.map(|err| {
            if others == 0 {
                err
            } else {
                err.context(format!(
                    "{others} other message(s) were not delivered either"
                ))
            }
        })
    }
}

fn is_source_error(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<DeliverError>(),
        Some(DeliverError::Source(_))
    )
}

fn is_per_message(err: &anyhow::Error) -> bool {
    err.downcast_ref::<DeliverError>()
        .is_some_and(DeliverError::is_per_message)
}

/// A RETR body that leaves the message's identity in `id` once read to its end
/// (and so checked), where the announcement of its delivery finds it if the target
/// read the whole message first (mbox does).
struct Noted<'a> {
    body: &'a mut dyn Retrieved,
    id: &'a Cell<Option<Identity>>,
}

impl Read for Noted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.body.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.id.set(self.body.identity());
        }
        Ok(n)
    }
}

/// Delivers one message: the target announces where it goes, recorded as an intent
/// (made durable at once for a target that delivers durably, or with the batch for
/// one that stages), and delivers or stages it.
fn deliver_one(
    target: &mut dyn Target,
    state: &mut dyn Ledger,
    uid: &str,
    body: &mut dyn Read,
    id: &Cell<Option<Identity>>,
) -> Result<u64> {
    let mut announced = false;
    let stages = target.stages();
    let result = target.deliver(body, &mut |location| {
        state.record_intent(uid, location, id.get())?;
        if !stages {
            state.sync()?;
        }
        announced = true;
        Ok(())
    });
    match result {
        // Recorded as delivered by the batch, once the delivery is committed.
        Ok(bytes) => Ok(bytes),
        Err(err) => {
            // The target left nothing behind; if this record is lost, recovery
            // finds the location empty and comes to the same conclusion.
            if announced {
                let _ = state.record_abandoned(uid);
            }
            Err(err.into())
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    //! The never-lose-mail order, pinned without sockets: a scripted server, a
    //! target and a state that write every step into one log, so a test sees what
    //! went out on the wire relative to when deliveries and records became durable.

    use std::cell::RefCell;
    use std::io::{self, Cursor, Write};
    use std::path::PathBuf;
    use std::rc::Rc;

    use super::*;
    use crate::config::{Config, Paths};
    use crate::deliver::{Announce, Class, TargetError};
    use crate::pop3::{Client, Credentials};
    use crate::sync::policy::Known;
    use crate::sync::state::identity::Record as Delivered;

    type Log = Rc<RefCell<Vec<String>>>;

    /// A server that says its script and logs each line the client sends as `C: …`.
    struct Scripted {
        server: Cursor<Vec<u8>>,
        line: Vec<u8>,
        log: Log,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.server.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            for &byte in buf {
                if byte == b'\n' {
                    let line = String::from_utf8_lossy(&self.line);
                    let line = line.trim_end_matches('\r');
                    self.log.borrow_mut().push(format!("C: {line}"));
                    self.line.clear();
                } else {
                    self.line.push(byte);
                }
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Wire for Scripted {}

    /// A target in memory that logs its steps; its flush can fail, as on a full disk.
    struct Shelf {
        log: Log,
        stages: bool,
        fail_flush: bool,
        staged: Vec<Vec<u8>>,
        kept: Vec<Vec<u8>>,
        announced: usize,
    }

    impl Shelf {
        fn new(log: &Log, stages: bool) -> Shelf {
            Shelf {
                log: log.clone(),
                stages,
                fail_flush: false,
                staged: Vec::new(),
                kept: Vec::new(),
                announced: 0,
            }
        }
    }

    impl Target for Shelf {
        fn deliver(
            &mut self,
            message: &mut dyn Read,
            announce: Announce,
        ) -> Result<u64, DeliverError> {
            self.announced += 1;
            announce(&format!("shelf-{}", self.announced)).map_err(DeliverError::State)?;
            let mut body = Vec::new();
            message
                .read_to_end(&mut body)
                .map_err(DeliverError::Source)?;
            self.log.borrow_mut().push("target.deliver".into());
            let bytes = body.len() as u64;
            if self.stages {
                self.staged.push(body);
            } else {
                self.kept.push(body);
            }
            Ok(bytes)
        }

        fn recover(&mut self, _: &str) -> Result<Recovered, DeliverError> {
            Ok(Recovered::NotDelivered)
        }

        fn stages(&self) -> bool {
            self.stages
        }

        fn unstage(&mut self) {
            self.staged.pop();
        }

        fn flush(&mut self) -> Result<(), DeliverError> {
            self.log.borrow_mut().push("target.flush".into());
            if self.fail_flush {
                self.staged.clear();
                return Err(Full(io::Error::other("disk full")).into());
            }
            self.kept.append(&mut self.staged);
            Ok(())
        }
    }

    /// The shelf's own error: its disk filled up.
    #[derive(Debug, thiserror::Error)]
    #[error("the shelf is full")]
    struct Full(#[source] io::Error);

    impl TargetError for Full {
        fn class(&self) -> Class {
            Class::Failed
        }
    }

    /// The real state, logging its records and syncs. With `fail_records`, a sync
    /// fails once a delivery has been recorded, as when the disk fills up then.
    struct Watched {
        state: UidlState,
        log: Log,
        fail_records: bool,
        unsynced_records: bool,
    }

    impl Known for Watched {
        fn records(&self, uid: &str) -> &[Delivered] {
            self.state.records(uid)
        }
        fn forms(&self, uid: &str) -> &[String] {
            self.state.forms(uid)
        }
        fn uids(&self) -> Vec<&str> {
            self.state.uids()
        }
        fn count(&self) -> usize {
            self.state.count()
        }
        fn own(&self, uid: &str) -> bool {
            self.state.own(uid)
        }
    }

    impl Ledger for Watched {
        fn record_intent(
            &mut self,
            uid: &str,
            location: &str,
            id: Option<Identity>,
        ) -> Result<(), StateError> {
            self.log.borrow_mut().push(format!("state.intent {uid}"));
            self.state.record_intent(uid, location, id)
        }
        fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError> {
            self.state.record_identity(uid, id)
        }
        fn record_delivered(
            &mut self,
            uid: &str,
            first_seen: u64,
            id: Option<Identity>,
        ) -> Result<(), StateError> {
            self.log.borrow_mut().push(format!("state.delivered {uid}"));
            self.unsynced_records = true;
            self.state.record_delivered(uid, first_seen, id)
        }
        fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError> {
            self.log.borrow_mut().push(format!("state.abandoned {uid}"));
            self.state.record_abandoned(uid)
        }
        fn forget(&mut self, uids: &[String]) -> Result<(), StateError> {
            self.state.forget(uids)
        }
        fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError> {
            self.state.forget_records(records)
        }
        fn sync(&mut self) -> Result<(), StateError> {
            if self.fail_records && self.unsynced_records {
                self.log.borrow_mut().push("state.sync failed".into());
                return Err(StateError::Io {
                    action: "write",
                    path: PathBuf::from("state"),
                    source: io::Error::other("disk full"),
                });
            }
            self.log.borrow_mut().push("state.sync".into());
            self.unsynced_records = false;
            self.state.sync()
        }
        fn tidy(&mut self) {
            self.state.tidy()
        }
    }

    const FIRST: &str = "Subject: a\r\n\r\nfirst\r\n";
    const SECOND: &str = "Subject: b\r\n\r\nsecond\r\n";

    /// Greeting, USER, PASS, UIDL and LIST of two messages (no CAPA: nothing is
    /// pipelined, so each reply answers one command).
    fn listed() -> String {
        format!(
            "+OK hi\r\n+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n1 {}\r\n2 {}\r\n.\r\n",
            FIRST.len(),
            SECOND.len()
        )
    }

    /// `listed`, then both messages retrieved whole (each RETR followed by its
    /// `LIST n` fence), then `after`.
    fn served(after: &str) -> String {
        format!(
            "{}{}{}{after}",
            listed(),
            retrieved(1, FIRST),
            retrieved(2, SECOND)
        )
    }

    fn retrieved(num: u32, body: &str) -> String {
        format!("+OK\r\n{body}.\r\n+OK {num} {}\r\n", body.len())
    }

    struct Run {
        result: Result<Report>,
        log: Vec<String>,
        warned: Vec<String>,
        /// The unique-ids the state holds as delivered afterwards.
        recorded: Vec<String>,
        kept: usize,
    }

    impl Run {
        fn sent(&self, command: &str) -> Vec<usize> {
            let prefix = format!("C: {command}");
            positions(&self.log, |e| e.starts_with(&prefix))
        }
    }

    fn positions(log: &[String], pick: impl Fn(&str) -> bool) -> Vec<usize> {
        log.iter()
            .enumerate()
            .filter(|(_, e)| pick(e))
            .map(|(i, _)| i)
            .collect()
    }

    /// Runs a session against `server` into a `Shelf`, the real state underneath.
    fn run(server: &str, stages: bool, fail_flush: bool, fail_records: bool) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("config.toml");
        std::fs::write(
            &config_file,
            "[accounts.a]\nhost = \"pop.example\"\nuser = \"u\"\ndeliver = \"maildir:/nowhere\"\n",
        )
        .unwrap();
        let paths = Paths {
            home: dir.path().to_path_buf(),
            config_file: config_file.clone(),
            state_dir: dir.path().join("state"),
        };
        let config = Config::load(Some(&config_file), &paths).unwrap();
        let account = &config.accounts[0];
        std::fs::create_dir_all(&account.state_dir).unwrap();

        let log: Log = Rc::default();
        let stream = Scripted {
            server: Cursor::new(server.as_bytes().to_vec()),
            line: Vec::new(),
            log: log.clone(),
        };
        let session = Client::new(stream, None)
            .unwrap()
            .login(Credentials::User {
                user: "u",
                password: "p",
            })
            .map_err(|f| f.error)
            .unwrap();
        let mut target = Shelf::new(&log, stages);
        target.fail_flush = fail_flush;
        let mut state = Watched {
            state: UidlState::open(&account.state_place()).unwrap(),
            log: log.clone(),
            fail_records,
            unsynced_records: false,
        };
        let warned = RefCell::new(Vec::new());
        let warn = |text: &str| warned.borrow_mut().push(text.to_string());
        let result = run_session(session, account, &mut target, &mut state, None, &warn);
        drop(state);
        let recorded = UidlState::peek(&account.state_place())
            .unwrap()
            .delivered_uids()
            .map(String::from)
            .collect();
        let log = log.borrow().clone();
        Run {
            result,
            log,
            warned: warned.into_inner(),
            recorded,
            kept: target.kept.len(),
        }
    }

    #[test]
    fn dele_goes_out_only_once_the_target_and_the_state_are_durable() {
        for stages in [false, true] {
            let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), stages, false, false);
            let report = run.result.as_ref().unwrap();
            assert_eq!((report.fetched, report.deleted), (2, 2), "{:?}", run.log);
            assert_eq!(run.kept, 2);
            let mut recorded = run.recorded.clone();
            recorded.sort();
            assert_eq!(recorded, ["a", "b"]);

            let deles = run.sent("DELE");
            assert_eq!(deles.len(), 2, "{:?}", run.log);
            let first_dele = deles[0];
            let last = |name: &str| *positions(&run.log, |e| e.starts_with(name)).last().unwrap();
            // After the last delivery and the last record: a flush of the target,
            // then a sync of the state, and only then a DELE.
            let flushed = last("target.flush");
            let synced = last("state.sync");
            assert!(last("target.deliver") < flushed, "{:?}", run.log);
            assert!(last("state.delivered") < synced, "{:?}", run.log);
            assert!(flushed < first_dele && synced < first_dele, "{:?}", run.log);
            // A delivery is recorded only once the target has committed it.
            for record in positions(&run.log, |e| e.starts_with("state.delivered")) {
                let before = &run.log[..record];
                let delivered = before.iter().rposition(|e| e == "target.deliver");
                let committed = before.iter().rposition(|e| e == "target.flush");
                assert!(committed > delivered, "{:?}", run.log);
            }
            assert_eq!(run.sent("QUIT"), [run.log.len() - 1], "{:?}", run.log);
        }
    }

    #[test]
    fn a_failed_flush_sends_neither_dele_nor_quit() {
        for stages in [false, true] {
            let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), stages, true, false);
            let err = run.result.as_ref().unwrap_err();
            assert!(format!("{err:#}").contains("disk full"), "{err:#}");
            assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
            assert!(run.sent("QUIT").is_empty(), "{:?}", run.log);
            assert!(run.recorded.is_empty(), "{:?}", run.recorded);
        }
    }

    #[test]
    fn a_state_that_cannot_be_made_durable_sends_neither_dele_nor_quit() {
        for stages in [false, true] {
            let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), stages, false, true);
            let err = run.result.as_ref().unwrap_err();
            assert!(format!("{err:#}").contains("disk full"), "{err:#}");
            assert!(run.log.iter().any(|e| e == "state.sync failed"));
            assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
            assert!(run.sent("QUIT").is_empty(), "{:?}", run.log);
        }
    }

    #[test]
    fn a_body_cut_mid_retr_is_neither_recorded_nor_deleted() {
        for stages in [false, true] {
            let cut = format!(
                "{}{}+OK\r\nSubject: b\r\n\r\nsec",
                listed(),
                retrieved(1, FIRST)
            );
            let run = run(&cut, stages, false, false);
            assert!(run.result.is_err(), "{:?}", run.log);
            // The whole first message is delivered and recorded; the second is not.
            assert_eq!(run.recorded, ["a"], "{:?}", run.log);
            assert_eq!(run.kept, 1);
            assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
            assert!(run.sent("QUIT").is_empty(), "{:?}", run.log);
        }
    }

    #[test]
    fn a_refused_dele_is_reported_and_the_others_still_go() {
        let run = run(
            &served("-ERR [IN-USE] busy\r\n+OK\r\n+OK bye\r\n"),
            true,
            false,
            false,
        );
        let err = run.result.as_ref().unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("refused to delete 1 message(s); they stay on the server"),
            "{text}"
        );
        assert_eq!(
            crate::cmd::exit::classify(err),
            crate::cmd::exit::Exit::TempFail
        );
        assert_eq!(run.warned, [text]);
        // The other deletion takes effect: QUIT still goes out.
        assert_eq!(run.sent("DELE").len(), 2);
        assert_eq!(run.sent("QUIT").len(), 1);
    }
}
