//! One account's sync, told in the order it happens: lock the account, open the
//! target, read the state and finish what a killed run left while connecting and
//! logging in, list, plan, fetch and deliver, make the state durable, delete, quit.
//!
//! The order is the never-lose-mail promise: a message gets a DELE only after its
//! delivery and its state record are durable, and deletions take effect only at QUIT.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};

use crate::config::{Account, Delivery};
use crate::connect::{self, open_session};
use crate::deliver::{DeliverError, MaildirTarget, MboxTarget, MdaTarget, Recovered, Target};
use crate::filter;
use crate::identity::Identity;
use crate::lock::AccountLock;
use crate::policy::{self, Action, SessionPlan};
use crate::pop3::transport::Stream;
use crate::pop3::{Flow, ListedMessage, Retrieved, Session, Trace};
use crate::state::UidlState;

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
    /// A dry run's header blocks (message number, TOP n 0), for its table.
    pub heads: Vec<(u32, Vec<u8>)>,
}

/// Syncs one account.
pub fn sync_account(account: &Account, options: Options) -> Result<Report> {
    if options.dry_run {
        return preview(account, options);
    }
    let warn = |text: &str| {
        if let Some(w) = &options.warn {
            w(text)
        }
    };
    let _lock = lock(account)?;
    let mut target = open_target(account)?;
    let (mut state, mut session) = open_state_and_session(account, target.as_mut(), options.trace)?;
    if let Some(adoption) = state.adoption() {
        warn(&adoption.to_string());
    }
    let mut failures = Failures::default();
    let plan = plan_session(
        &mut session,
        account,
        &state,
        Shown::No,
        &warn,
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
    if let Some(progress) = &options.progress {
        let fetch = plan.fetch();
        progress.planned(fetch.len() as u64, fetch.iter().map(|m| m.size).sum());
    }
    let mut sink = Sink {
        target: target.as_mut(),
        state: &mut state,
        progress: options.progress.as_deref(),
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
) -> Result<(UidlState, Session<Stream>)> {
    std::thread::scope(|scope| {
        let connecting = scope.spawn(|| open_session(account, trace));
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
    let heads = plan
        .messages
        .iter()
        .filter_map(|(m, _)| {
            crate::connect::headers(&mut session, m.num)
                .ok()
                .map(|h| (m.num, h))
        })
        .collect();
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
fn plan_session(
    session: &mut Session<Stream>,
    account: &Account,
    known: &dyn policy::Known,
    shown: Shown,
    warn: &dyn Fn(&str),
    failures: &mut Failures,
) -> Result<SessionPlan> {
    // Only a message that may be fetched needs its size, but a plan that is shown
    // shows every size.
    let fetch_all = account.policy.fetch_all;
    let now = now();
    let sized = |uid: &str| fetch_all || policy::needs_size(uid, known, &account.policy, now);
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
fn run_filter(
    session: &mut Session<Stream>,
    plan: &mut SessionPlan,
    account: &Account,
    failures: &mut Failures,
) -> Result<()> {
    let Some(argv) = &account.filter else {
        return Ok(());
    };
    let mut judged = HashSet::new();
    // A verdict can let another message in under max_messages, so look again.
    while let Some(message) = plan.fetch().into_iter().find(|m| !judged.contains(&m.num)) {
        judged.insert(message.num);
        let head = connect::headers(session, message.num)?;
        let verdict = match filter::judge(argv, &head, account.mda_timeout) {
            Ok(verdict) => verdict,
            // A filter that cannot start judges no message: stop before fetching
            // any, rather than report the same cause once per message.
            Err(err @ filter::FilterError::Spawn { .. }) => return Err(err.into()),
            Err(err) => {
                failures.add(anyhow::Error::new(err));
                Action::Skip(policy::Reason::Filter)
            }
        };
        plan.apply_filter(message.num, verdict, &account.policy);
    }
    Ok(())
}

fn lock(account: &Account) -> Result<AccountLock> {
    crate::durable::create_dir_all(&account.state_dir).map_err(|source| {
        crate::state::StateError::Io {
            action: "create the directory of",
            path: account.state_file(),
            source,
        }
    })?;
    Ok(AccountLock::acquire(&account.lock_file())?)
}

fn open_target(account: &Account) -> Result<Box<dyn Target>> {
    Ok(match &account.deliver {
        Delivery::Maildir(dir) => Box::new(MaildirTarget::open(dir)?),
        Delivery::Mbox(file) => Box::new(MboxTarget::open(file, account.timeout)?),
        Delivery::Mda(argv) => Box::new(MdaTarget::new(
            argv.clone(),
            account.mda_recipient.clone(),
            account.mda_timeout,
        )),
    })
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
fn fetch_and_deliver(
    session: &mut Session<Stream>,
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
    state: &'a mut UidlState,
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
            .is_none_or(|w| crate::exit::classify(&err) > crate::exit::classify(w));
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
    state: &mut UidlState,
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
