//! The glance that spares a keep-on-server session its full listing when the
//! mailbox is as the last session left it: that session's STAT (count and
//! octets) and the unique-ids of its first and last message, kept beside the
//! state (`MAILBOX.glance`), checked with `STAT`, `UIDL 1` and `UIDL n` in one
//! round trip.
//!
//! Why a match means nothing new (RFC 1939 §7 keeps a unique-id for a message
//! across sessions, and a maildrop takes new mail at its end):
//! - a message that arrived is last, under a unique-id the last session did not
//!   see there, unless one also went: then the count is the same only if
//!   another was deleted, and the octets the same only if it was of the very
//!   same size; and the last unique-id is still the new one's;
//! - a deletion alone lowers the count;
//! - a server that renumbers its unique-ids changes the first and the last;
//! - a reordering that keeps the first and the last, the count and the octets
//!   brings nothing new either: the same messages, known already.
//!
//! A mailbox that only grew (more messages, both ends where they were) lists
//! just its new messages, `UIDL n` and `LIST n` each: see [`tail_fits`] for
//! why the messages before them need no listing.
//!
//! A server that files new mail in the middle would escape the unique-ids, not
//! the octets unless the sizes matched byte for byte; for that, and for anything
//! else this argument does not foresee, a full listing still happens at least
//! every `full_listing_interval`. The glance is written only after a session
//! that listed everything, or the new messages on top of a glance, and left
//! nothing to do (every message known and
//! kept), never for a server that repeats unique-ids (whose new message may
//! come under the last one's), and it names how many records the state held then, so a state
//! changed by other hands (import-state, adopt, a restored copy) is listed in
//! full again. It also names the journal's fingerprint: while the file on disk
//! is that very journal, the glance is checked before the state is read to its
//! end ([`trusted`]).
//!
//! A trusted glance does not read the state, so damage inside the journal that
//! keeps its length and header shows only at the next run that reads it; an
//! unchanged mailbox has nothing to fetch or delete meanwhile.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::policy::Policy;
use crate::config::Account;
use crate::pop3::{Glimpse, ListedMessage};
use crate::sync::policy::Known;
use crate::sync::state::fingerprint::{self, Fingerprint};

/// What the last session that left nothing to do saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Glance {
    pub count: u32,
    pub octets: u64,
    pub first: String,
    pub last: String,
    /// Records the state held then.
    pub known: usize,
    /// When the mailbox was last listed in full (Unix seconds).
    pub listed_at: u64,
    /// The journal as this glance left it: while it is the same, the state
    /// need not even be read to trust the glance (see [`trusted`]).
    #[serde(default)]
    pub journal: Option<Fingerprint>,
}

/// `STATE_DIR/MAILBOX.glance`.
pub(crate) fn path(account: &Account) -> PathBuf {
    crate::sync::state::Place::of(account).glance()
}

/// Whether the account's sessions may rely on a glance: messages stay on the
/// server, none is fetched again, no limit leaves work for the next run, none
/// is due under `delete_after`, and none kept until deleted locally is gone.
pub(crate) fn applies(account: &Account, known: &dyn Known, now: u64) -> bool {
    let policy = &account.policy;
    if !leaves_all_kept(policy) {
        return false;
    }
    if known.any_deleted_locally() {
        return false;
    }
    match policy.delete_after {
        None => true,
        Some(limit) => {
            let oldest = known
                .uids()
                .into_iter()
                .flat_map(|uid| known.records(uid).iter().map(|r| r.first_seen))
                .min();
            oldest.is_none_or(|seen| now.saturating_sub(seen) <= limit.as_secs())
        }
    }
}

/// Whether a session under `policy` leaves every message on the server and
/// no work for the next run: kept, none fetched again, no limit.
fn leaves_all_kept(policy: &Policy) -> bool {
    policy.keep && !policy.fetch_all && policy.max_messages.is_none()
}

/// The glance of the last session, when it may be trusted before the state is
/// read: the account's policy never needs the records for it (keep, no
/// `delete_after`, no limit, nothing kept until deleted locally), and the
/// journal is byte for byte the one the glance was taken over (see
/// [`Fingerprint`]), so every record it counted is still there, and no
/// delivery was left half done since.
pub(crate) fn trusted(account: &Account, now: u64) -> Option<Glance> {
    let policy = &account.policy;
    if !leaves_all_kept(policy) || policy.delete_after.is_some() || policy.until_deleted_locally {
        return None;
    }
    let glance = read(&path(account), account, now)?;
    let journal = fingerprint::of(&crate::sync::state::Place::of(account).path())?;
    (glance.journal == Some(journal)).then_some(glance)
}

/// The glance file, if it parses and is recent enough (`full_listing_interval`).
fn read(path: &Path, account: &Account, now: u64) -> Option<Glance> {
    let glance: Glance = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let age = now.checked_sub(glance.listed_at)?;
    (age < account.policy.full_listing.as_secs()).then_some(glance)
}

/// The glance of the last session, if it may stand for this one: recent enough
/// (`full_listing_interval`) and taken over the same records.
pub(crate) fn load(path: &Path, account: &Account, known: &dyn Known, now: u64) -> Option<Glance> {
    read(path, account, now).filter(|glance| glance.known == known.count())
}

/// What the server shows against what the glance saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The very mailbox the glance saw: nothing to list.
    Same,
    /// More messages, the glance's first and last still at 1 and at its count:
    /// new mail on top of the messages it saw, if [`tail_fits`] agrees.
    Grown { count: u32, octets: u64 },
    /// Anything else: list everything.
    Changed,
}

/// Compares the server's STAT and the unique-ids at 1 and at the glance's count
/// with the glance.
pub(crate) fn compare(glance: &Glance, (stat, ends): Glimpse) -> Seen {
    let ends_match = ends.is_some_and(|(first, last)| first == glance.first && last == glance.last);
    match stat {
        Some(stat) if ends_match && stat == (glance.count, glance.octets) => Seen::Same,
        Some((count, octets)) if ends_match && count > glance.count => {
            Seen::Grown { count, octets }
        }
        _ => Seen::Changed,
    }
}

/// How many new messages are listed one by one (`UIDL n` and `LIST n`) rather
/// than with the whole mailbox: a pipeline window, or a few where every command
/// waits for its reply.
pub(crate) fn tail_limit(pipelining: bool) -> u32 {
    if pipelining {
        crate::pop3::WINDOW as u32
    } else {
        8
    }
}

/// Whether `tail`, the messages after the glance's count, is only new mail on
/// top of the messages the glance saw, so that those need no listing.
///
/// The glance's first and last unique-ids are still at 1 and at its count
/// ([`Seen::Grown`]). A deletion among the messages it saw would have moved a
/// later message, a new one, into its last position; a server that renumbers
/// changes both ends; one that files mail in the middle moves the last. The
/// octets before the tail must be the glance's, so a message replaced by one of
/// another size shows too. And the tail must be new: unique-ids the state has
/// never seen, each once, neither of the glance's ends — a server that repeats
/// unique-ids (a digest of the message) could list a copy of a known message
/// there, and only the full listing tells such messages apart.
pub(crate) fn tail_fits(
    glance: &Glance,
    octets: u64,
    tail: &[ListedMessage],
    known: &dyn Known,
) -> bool {
    let tail_octets = tail.iter().try_fold(0u64, |sum, m| sum.checked_add(m.size));
    let mut uids = foldhash::HashSet::default();
    tail_octets.and_then(|t| octets.checked_sub(t)) == Some(glance.octets)
        && tail.iter().all(|m| {
            uids.insert(m.uid.as_str())
                && m.uid != glance.first
                && m.uid != glance.last
                && known.records(&m.uid).is_empty()
                && known.forms(&m.uid).is_empty()
        })
}

/// Keeps `glance` for the next session; a failure only costs that session a
/// full listing. Not fsynced: it is written after the state it speaks for is
/// durable, and a power cut leaves no glance, a torn one that does not parse,
/// or the one before, which is still true of the mailbox it saw (and names a
/// record count the state has likely left).
pub(crate) fn save(path: &Path, glance: &Glance) {
    if let Ok(text) = serde_json::to_vec(glance) {
        let _ = crate::sys::durable::replace_lazily(path, &text);
    }
}

/// Forgets the glance: the next session lists in full.
pub(crate) fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}
