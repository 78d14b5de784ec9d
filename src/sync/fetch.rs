//! Fetching and delivering the planned messages: each body streamed from RETR into
//! its target, its intent and delivery recorded around it, staged deliveries
//! committed in batches, and failures sorted into those of one message and those
//! that end the session.

use std::cell::Cell;
use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::policy::SessionPlan;
use super::preview::Fields;
use super::state::identity::Identity;
use super::state::Ledger;
use super::{now, Delivered, Progress, Rank, Report};
use crate::config::Account;
use crate::deliver::{DeliverError, Target};
use crate::pop3::{Flow, ListedMessage, Retrieved, Session, Wire};

/// Fetches every planned message and delivers it. Returns the numbers of the
/// messages delivered; a failed session is an `Err`. A failure of the target itself
/// (a full disk) stops the fetching; one that concerns a single message (an MDA's
/// verdict) does not. Both are collected in `failures`.
pub(super) fn fetch_and_deliver<S: Wire>(
    session: &mut Session<S>,
    plan: &SessionPlan,
    account: &Account,
    sink: &mut Sink,
    report: &mut Report,
    failures: &mut Failures,
) -> Result<Vec<u32>> {
    let fetch: Vec<&ListedMessage> = plan.fetch();
    let listed: Vec<(u32, u64)> = fetch.iter().map(|m| (m.num, m.size)).collect();
    let mut done = Batch::default();
    let mut head = Head::default();
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
        head.clear();
        let mut chained = std::io::Cursor::new(trace_header).chain(Noted {
            body: &mut *body,
            id: &id,
            head: &mut head,
        });
        sink.target.expect(message.size);
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
                let staged = Staged {
                    uid: message.uid.clone(),
                    num: message.num,
                    bytes,
                    size: message.size,
                    id,
                    // Parsed only while the report still lists messages.
                    fields: if report.delivered.len() + done.staged.len() < DELIVERED_LISTED {
                        Fields::of(&head.bytes)
                    } else {
                        Fields::default()
                    },
                };
                done.add(sink, staged, report)
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
    for refused in done.refused.drain(..) {
        failures.add(refused);
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

/// A delivery waiting for its commit.
struct Staged {
    uid: String,
    num: u32,
    /// Bytes written.
    bytes: u64,
    /// The listed size.
    size: u64,
    id: Option<Identity>,
    /// What the report tells of it.
    fields: Fields,
}

/// Deliveries waiting for their commit, and those committed.
#[derive(Default)]
struct Batch {
    staged: Vec<Staged>,
    staged_bytes: u64,
    /// When the first staged delivery arrived.
    began: Option<Instant>,
    /// Committed and recorded.
    delivered: Vec<u32>,
    /// Refused one by one by a target's commit, for the session's failures.
    refused: Vec<anyhow::Error>,
}

impl Batch {
    /// Takes a delivery: recorded at once if the target delivered it durably, or
    /// staged until a batch is full if the target stages.
    fn add(&mut self, sink: &mut Sink, staged: Staged, report: &mut Report) -> Result<()> {
        self.staged_bytes += staged.bytes;
        self.staged.push(staged);
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
            if let Err(err) = sink.state.sync() {
                // Intents that may not be durable: nothing staged may be committed
                // on their strength, here or by the session's last flush.
                for _ in 0..self.staged.len() {
                    sink.target.unstage();
                }
                self.staged.clear();
                return Err(err.into());
            }
        }
        let flushed = sink.target.flush();
        if let Err(err) = flushed {
            self.staged.clear();
            return Err(err.into());
        }
        let landed = sink.target.landed();
        let told = !landed.is_empty();
        // A failure that is not one message's own (the connection broke) ends the
        // fetching, once what landed before it is recorded.
        let mut fatal = None;
        let mut landed = landed.into_iter();
        for staged in self.staged.drain(..) {
            let Staged {
                uid,
                num,
                bytes,
                size,
                id,
                fields,
            } = staged;
            match landed.next() {
                // Refused: surely not delivered. Any other failure (the connection
                // broke) leaves the intent for recovery to ask about next run.
                Some(Err(failed)) => {
                    let per_message = failed.is_per_message();
                    let err = anyhow::Error::from(failed)
                        .context(format!("message {num} stays on the server"));
                    if per_message {
                        sink.state.record_abandoned(&uid)?;
                        self.refused.push(err);
                    } else if fatal.is_none() {
                        fatal = Some(err);
                    } else {
                        self.refused.push(err);
                    }
                    continue;
                }
                Some(Ok(Some(location))) => sink.state.record_intent(&uid, &location, id)?,
                Some(Ok(None)) => {}
                None if told => {
                    self.refused.push(anyhow::anyhow!(
                        "the target did not say whether message {num} was delivered; it stays on the server and the next run asks"
                    ));
                    continue;
                }
                None => {}
            }
            sink.state.record_delivered(&uid, now(), id)?;
            self.delivered.push(num);
            report.fetched += 1;
            report.bytes += bytes;
            report.octets += size;
            // Named by the target as configured: the state's own codes for a
            // delivery (an mbox offset, an APPENDUID) mean nothing to a hook.
            // The first ones only: a mailbox of 100,000 must not be held twice.
            if report.delivered.len() < DELIVERED_LISTED {
                report.delivered.push(Delivered {
                    uid,
                    size,
                    from: fields.from,
                    subject: fields.subject,
                    date: fields.date,
                    location: sink.configured.clone(),
                });
            }
            if let Some(progress) = sink.progress {
                progress.delivered(size);
            }
        }
        fatal.map_or(Ok(()), Err)
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
pub(super) struct Sink<'a> {
    pub(super) target: &'a mut dyn Target,
    pub(super) state: &'a mut dyn Ledger,
    pub(super) progress: Option<&'a dyn Progress>,
    /// The target as configured, for a delivery it names no place for.
    pub(super) configured: String,
}

/// Delivery failures of one session: the worst (by the caller's [`Rank`]) is
/// reported, with a count of the rest.
pub(super) struct Failures {
    worst: Option<anyhow::Error>,
    count: usize,
    rank: Rank,
}

impl Failures {
    pub(super) fn new(rank: Rank) -> Self {
        Failures {
            worst: None,
            count: 0,
            rank,
        }
    }

    pub(super) fn add(&mut self, err: anyhow::Error) {
        self.count += 1;
        let rank = self.rank;
        let worse = self.worst.as_ref().is_none_or(|w| rank(&err) > rank(w));
        if worse {
            self.worst = Some(err);
        }
    }

    /// Whether nothing failed.
    pub(super) fn none(&self) -> bool {
        self.count == 0
    }

    pub(super) fn worst(self) -> Option<anyhow::Error> {
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
    head: &'a mut Head,
}

impl Read for Noted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.body.read(buf)?;
        self.head.see(&buf[..n]);
        if n == 0 && !buf.is_empty() {
            self.id.set(self.body.identity());
        }
        Ok(n)
    }
}

/// The most of a message kept for its headers: a longer header block is rare, and
/// From:, Subject: and Date: then come from what was kept.
pub(super) const MAX_HEAD: usize = 64 << 10;

/// How many delivered messages a report lists one by one (`fetched` counts all).
pub(crate) const DELIVERED_LISTED: usize = 1000;

/// The header block of a message (RFC 5322 §2.1: up to the first empty line) as it
/// streams past, so the report can tell its sender and subject without holding
/// the message.
#[derive(Default)]
pub(super) struct Head {
    pub(super) bytes: Vec<u8>,
    /// The empty line, or the bound, was reached.
    pub(super) done: bool,
}

impl Head {
    fn clear(&mut self) {
        self.bytes.clear();
        self.done = false;
    }

    pub(super) fn see(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        // The empty line may straddle two reads.
        let from = self.bytes.len().saturating_sub(2);
        let room = MAX_HEAD - self.bytes.len();
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        let seen = &self.bytes[from..];
        let empty_line = memchr::memmem::find(seen, b"\n\n").is_some()
            || memchr::memmem::find(seen, b"\n\r\n").is_some()
            || self.bytes.starts_with(b"\n")
            || self.bytes.starts_with(b"\r\n");
        self.done = empty_line || self.bytes.len() >= MAX_HEAD;
    }
}

/// Delivers one message: the target announces where it goes, recorded as an intent
/// (made durable at once for a target that delivers durably and can tell later
/// whether it did, or with the batch for one that stages), and delivers or stages
/// it.
fn deliver_one(
    target: &mut dyn Target,
    state: &mut dyn Ledger,
    uid: &str,
    body: &mut dyn Read,
    id: &Cell<Option<Identity>>,
) -> Result<u64> {
    let mut announced = false;
    // An intent is made durable before a delivery only where recovery can use it:
    // a target that cannot be asked afterwards (an MDA, a mail server) reaches the
    // same verdict, "not delivered", with the intent or without it.
    let durable_now = !target.stages() && target.recovers();
    let result = target.deliver(body, &mut |location| {
        state.record_intent(uid, location, id.get())?;
        if durable_now {
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
