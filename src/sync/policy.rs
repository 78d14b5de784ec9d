//! What a session should do with each message on the server, decided as a pure
//! function: the server's listing, what the state knows and a clock go in, a
//! [`SessionPlan`] comes out. No I/O happens here, so every rule is unit-tested.

use std::time::Duration;

use foldhash::{HashMap, HashSet};

pub(crate) use crate::config::policy::{Policy, SizeAction};
use crate::pop3::ListedMessage;
use crate::sync::state::identity::{Identity, Record};

/// Why a message is skipped or deleted without being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Delivered by an earlier run.
    Delivered,
    /// Delivered, and first seen longer ago than `delete_after`.
    Expired { age: Duration },
    /// Over `max_size`.
    TooLarge { max: u64 },
    /// Over `max_messages` for this run.
    Limit,
    /// The filter said so.
    Filter,
    /// Kept until deleted locally, and its file is gone from the Maildir.
    DeletedLocally,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Reason::Delivered => write!(f, "already delivered"),
            Reason::Expired { age } => write!(f, "first seen {} ago", format_duration(*age)),
            Reason::TooLarge { max } => write!(f, "larger than max_size ({max} bytes)"),
            Reason::Limit => write!(f, "over max_messages for this run"),
            Reason::Filter => write!(f, "by the filter"),
            Reason::DeletedLocally => write!(f, "deleted from the Maildir"),
        }
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Fetch,
    /// Delivered earlier and left on the server.
    Keep,
    Skip(Reason),
    Delete(Reason),
}

/// What one session will do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionPlan {
    /// Each message on the server with its fate, in server order.
    pub messages: Vec<(ListedMessage, Action)>,
    /// Recorded unique-ids no longer on the server.
    pub forget: Vec<String>,
    /// Whether each message delivered in this session is then deleted.
    pub delete_after_delivery: bool,
    /// Whether delivered messages are fetched again (`fetch_all`).
    pub fetch_all: bool,
    /// Records to write before `forget`: a message an older popfetch recorded under
    /// the digest form of a repeated unique-id, now recorded under the unique-id.
    pub adopt: Vec<(String, Record)>,
    /// Records of unique-ids still listed that no listed message matches any more.
    pub stale: Vec<(String, Identity)>,
}

impl SessionPlan {
    /// Messages to fetch, oldest first: borrowed, not copied, as there may be
    /// 100,000 of them (issue 22).
    pub(crate) fn fetch(&self) -> Vec<&ListedMessage> {
        self.with(|a| a == Action::Fetch)
    }

    /// Messages to delete without fetching.
    pub(crate) fn delete(&self) -> Vec<u32> {
        self.with(|a| matches!(a, Action::Delete(_)))
            .iter()
            .map(|m| m.num)
            .collect()
    }

    /// Messages left alone this time, with why.
    pub(crate) fn skipped(&self) -> Vec<(ListedMessage, Reason)> {
        self.messages
            .iter()
            .filter_map(|(m, a)| match a {
                Action::Skip(r) => Some((m.clone(), *r)),
                _ => None,
            })
            .collect()
    }

    fn with(&self, keep: impl Fn(Action) -> bool) -> Vec<&ListedMessage> {
        self.messages
            .iter()
            .filter(|(_, a)| keep(*a))
            .map(|(m, _)| m)
            .collect()
    }

    /// Records a filter's verdict on a message planned for fetching, and applies
    /// `max_messages` again to what is left.
    pub(crate) fn apply_filter(&mut self, num: u32, verdict: Action, policy: &Policy) {
        for (m, action) in &mut self.messages {
            if m.num == num && *action == Action::Fetch {
                *action = verdict;
            }
        }
        self.limit(policy);
    }

    /// Skips the fetches beyond `max_messages`, or brings back ones skipped only for
    /// the limit when room has been freed.
    fn limit(&mut self, policy: &Policy) {
        let Some(max) = policy.max_messages else {
            return;
        };
        let mut taken = 0;
        for (_, action) in &mut self.messages {
            if matches!(*action, Action::Fetch | Action::Skip(Reason::Limit)) {
                *action = if taken < max {
                    taken += 1;
                    Action::Fetch
                } else {
                    Action::Skip(Reason::Limit)
                };
            }
        }
    }
}

/// What the state knows of delivered messages.
pub(crate) trait Known {
    /// The records of messages delivered under `uid`.
    fn records(&self, uid: &str) -> &[Record];
    /// The keys under which an older popfetch recorded messages whose unique-id
    /// `uid` repeated: `uid-HEX`, HEX being [`Probe::legacy`] of the message.
    fn forms(&self, uid: &str) -> &[String];
    /// Every key with records.
    fn uids(&self) -> Vec<&str>;
    /// How many keys have records.
    fn count(&self) -> usize;
    /// A hint: about `new` records are to be added in this run (the messages
    /// planned for fetching), so that the state can make room for them at once.
    fn expect_records(&self, new: usize) {
        let _ = new;
    }
    /// Whether the record of `uid` was written by this mailbox's own sessions. One
    /// that was not (adopted from an older popfetch's state, or imported) keeps the
    /// message from being fetched again, but is never grounds for a DELE: see
    /// [`crate::sync::state::Place`].
    fn own(&self, uid: &str) -> bool;
    /// Whether the message `id` of `uid` was delivered where the account keeps
    /// messages until they are deleted there, and is gone from there now.
    fn deleted_locally(&self, uid: &str, id: Identity) -> bool {
        let _ = (uid, id);
        false
    }
    /// Whether any message kept until deleted locally is gone from there.
    fn any_deleted_locally(&self) -> bool {
        false
    }
}

/// What `TOP n 0` told of a listed message whose records must be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The digest of its header section (see [`Identity`]).
    pub digest: [u8; 16],
    /// The digest an older popfetch appended to a repeated unique-id (of the TOP
    /// reply and the listed size), to find records kept under that form.
    pub legacy: String,
}

/// Probes by message number.
pub(crate) type Probes = HashMap<u32, Probe>;

/// Whether a listed message must be probed with TOP before it is planned: its
/// unique-id repeats in the listing, or has several records or records under the
/// digest form, or its one record would have it deleted without being retrieved.
/// A message merely kept, or new, needs nothing: a run with nothing to delete sends
/// no TOP.
pub(crate) fn needs_probe(
    uid: &str,
    repeated: bool,
    known: &dyn Known,
    policy: &Policy,
    now: u64,
) -> bool {
    let has_forms = !known.forms(uid).is_empty();
    probe_needed(uid, known, has_forms, repeated, policy, now)
}

/// [`needs_probe`] on records already looked up: the listing asks this of every
/// message, so each is looked up once.
fn probe_needed(
    uid: &str,
    known: &dyn Known,
    has_forms: bool,
    repeated: bool,
    policy: &Policy,
    now: u64,
) -> bool {
    let records = known.records(uid);
    if repeated || records.len() > 1 || has_forms {
        return true;
    }
    records.first().is_some_and(|record| {
        let unlisted = ListedMessage {
            num: 0,
            size: 0,
            uid: String::new(),
        };
        let gone = record.id.is_some_and(|id| known.deleted_locally(uid, id));
        matches!(
            decide(&unlisted, Some(record.first_seen), gone, policy, now),
            Action::Delete(Reason::Delivered | Reason::Expired { .. } | Reason::DeletedLocally)
        )
    })
}

/// Whether a message needs its listed size: to be fetched (new, or again with
/// `fetch_all`), or to be checked before a DELE without RETR.
pub(crate) fn needs_size(uid: &str, known: &dyn Known, policy: &Policy, now: u64) -> bool {
    if policy.fetch_all {
        return true;
    }
    let has_forms = !known.forms(uid).is_empty();
    (known.records(uid).is_empty() && !has_forms)
        || probe_needed(uid, known, has_forms, false, policy, now)
}

/// What the records say of one listed message.
enum Recalled {
    New,
    /// A record proves this is the message delivered, first seen then; and
    /// whether it is gone from where it was kept until deleted locally.
    Verified(u64, bool),
    /// Its unique-id was delivered, but no record proves it was this message: it
    /// may stay, but it is never deleted without being retrieved first. The flag
    /// says whether the records are this mailbox's own: an adopted one keeps the
    /// message from being fetched again too.
    Unverified(u64, bool),
}

/// Plans a session. `now` is in Unix seconds. `probes` holds what TOP told of the
/// messages [`needs_probe`] picked (a server may refuse TOP; such a message is
/// never deleted without being retrieved).
///
/// Why a DELE without RETR is safe: a message is deleted unretrieved only when a
/// record of its unique-id carries its identity — the size LIST gave and the
/// digest of the header section, both taken from the very reply delivered (see
/// `Session::retrieve`) — and the message listed now has the same listed size and
/// the same header digest by `TOP n 0`. A message reusing the unique-id of one
/// delivered and deleted earlier would need the same headers byte for byte (its
/// Message-ID, Date and Received trace included) and the same size to pass; and
/// messages of one listing that cannot be told apart that way stop the session
/// before any plan (`connect::probe`). Records without an identity (older
/// popfetch, imports, recovery of a delivery whose body was not yet checked) only
/// keep a message from being fetched twice; where one would delete it, the
/// message is fetched again instead: a possible duplicate, never a loss.
pub(crate) fn plan(
    listing: Vec<ListedMessage>,
    probes: &Probes,
    known: &dyn Known,
    policy: &Policy,
    now: u64,
) -> SessionPlan {
    plan_listed(listing, probes, known, policy, now, Listed::Whole)
}

/// The plan for new messages listed after the ones a glance vouches for (see
/// `glance::tail_fits`): as [`plan`], but nothing is forgotten, for the
/// messages not listed are still on the server.
pub(crate) fn plan_tail(
    tail: Vec<ListedMessage>,
    probes: &Probes,
    known: &dyn Known,
    policy: &Policy,
    now: u64,
) -> SessionPlan {
    plan_listed(tail, probes, known, policy, now, Listed::Tail)
}

/// How much of the mailbox a listing shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listed {
    Whole,
    Tail,
}

fn plan_listed(
    listing: Vec<ListedMessage>,
    probes: &Probes,
    known: &dyn Known,
    policy: &Policy,
    now: u64,
    listed: Listed,
) -> SessionPlan {
    let mut plan = SessionPlan {
        delete_after_delivery: !policy.keep,
        fetch_all: policy.fetch_all,
        ..SessionPlan::default()
    };
    let repeated: HashSet<String> =
        crate::pop3::repeated_uids(listing.iter().map(|m| m.uid.as_str()))
            .into_iter()
            .map(str::to_string)
            .collect();
    // Unique-ids whose every listed message was probed, with the records matched.
    let mut probed: HashMap<String, Vec<Identity>> = HashMap::default();
    let mut unprobed: HashSet<String> = HashSet::default();
    plan.messages.reserve_exact(listing.len());
    let mut listed_known = 0;
    let mut unknown_fetched = 0;
    for message in listing {
        let records = known.records(&message.uid);
        listed_known += usize::from(!records.is_empty());
        let probe = probes.get(&message.num);
        let recalled = match probe {
            Some(probe) => {
                let id = Identity {
                    size: message.size,
                    digest: probe.digest,
                };
                let matched = probed.entry(message.uid.clone()).or_default();
                matched.push(id);
                // Only a form this mailbox's own sessions recorded can become an
                // identity: an adopted one never grounds a DELE.
                let legacy = known.forms(&message.uid).iter().find(|key| {
                    known.own(key)
                        && key
                            .strip_prefix(message.uid.as_str())
                            .and_then(|rest| rest.strip_prefix('-'))
                            == Some(probe.legacy.as_str())
                });
                let adopted_form = known.forms(&message.uid).iter().find(|key| {
                    !known.own(key)
                        && key
                            .strip_prefix(message.uid.as_str())
                            .and_then(|rest| rest.strip_prefix('-'))
                            == Some(probe.legacy.as_str())
                });
                let earliest = |key: &str| known.records(key).iter().map(|r| r.first_seen).min();
                if let Some(record) = records.iter().find(|r| r.id == Some(id)) {
                    if known.own(&message.uid) {
                        let gone = known.deleted_locally(&message.uid, id);
                        Recalled::Verified(record.first_seen, gone)
                    } else {
                        Recalled::Unverified(record.first_seen, false)
                    }
                } else if let Some(first_seen) = adopted_form.and_then(|key| earliest(key)) {
                    // An older popfetch's record of this very message (the digest
                    // form matches), adopted: known, never grounds for a DELE.
                    Recalled::Unverified(first_seen, false)
                } else if let Some(first_seen) = legacy.and_then(|key| earliest(key)) {
                    // The digest form was taken from TOP and the listed size too:
                    // the same evidence as an identity, so it becomes one.
                    let record = Record {
                        first_seen,
                        id: Some(id),
                    };
                    plan.adopt.push((message.uid.clone(), record));
                    Recalled::Verified(first_seen, false)
                } else if let ([record], false) = (records, repeated.contains(&message.uid)) {
                    match record.id {
                        None => Recalled::Unverified(record.first_seen, known.own(&message.uid)),
                        Some(_) => Recalled::New,
                    }
                } else {
                    Recalled::New
                }
            }
            None => {
                // Read only for unique-ids some message of which was probed.
                if !probes.is_empty()
                    && (!records.is_empty() || !known.forms(&message.uid).is_empty())
                {
                    unprobed.insert(message.uid.clone());
                }
                let earliest = records
                    .iter()
                    .map(|r| r.first_seen)
                    .chain(
                        known
                            .forms(&message.uid)
                            .iter()
                            .flat_map(|key| known.records(key))
                            .map(|r| r.first_seen),
                    )
                    .min();
                let own = (records.is_empty() || known.own(&message.uid))
                    && known.forms(&message.uid).iter().all(|key| known.own(key));
                match earliest {
                    Some(first_seen) => Recalled::Unverified(first_seen, own),
                    None => Recalled::New,
                }
            }
        };
        let action = match recalled {
            Recalled::New => decide(&message, None, false, policy, now),
            Recalled::Verified(seen, gone) => decide(&message, Some(seen), gone, policy, now),
            Recalled::Unverified(seen, own) => {
                match decide(&message, Some(seen), false, policy, now) {
                    // A record this mailbox did not write (adopted, imported) keeps the
                    // message from being fetched again and never grounds a DELE.
                    Action::Delete(Reason::Delivered | Reason::Expired { .. })
                        if !own && !policy.fetch_all =>
                    {
                        Action::Keep
                    }
                    Action::Delete(Reason::Delivered | Reason::Expired { .. }) => {
                        decide(&message, None, false, policy, now)
                    }
                    action => action,
                }
            }
        };
        unknown_fetched += usize::from(records.is_empty() && action == Action::Fetch);
        plan.messages.push((message, action));
    }
    plan.limit(policy);
    // New unique-ids to be fetched: a message fetched again (`fetch_all`) adds no key.
    let fetching = (plan.messages.iter())
        .filter(|(_, action)| *action == Action::Fetch)
        .count();
    known.expect_records(unknown_fetched.min(fetching));
    // Records of a unique-id whose every message was probed and matched none of
    // them describe messages gone from the server.
    for (uid, matched) in &probed {
        if unprobed.contains(uid) {
            continue;
        }
        for record in known.records(uid) {
            if let Some(id) = record.id.filter(|id| !matched.contains(id)) {
                plan.stale.push((uid.clone(), id));
            }
        }
    }
    plan.stale.sort();
    // Listed unique-ids are distinct but for `repeated`, so when as many are known
    // as the state holds, none of the state's is gone: the usual run, spared a set
    // of the whole listing.
    if listed == Listed::Whole && (listed_known < known.count() || !repeated.is_empty()) {
        // An adopted digest form (`uid-HEX`) of a listed unique-id still names a
        // message on the server (an own one was made over to the unique-id).
        let on_server: HashSet<&str> = plan
            .messages
            .iter()
            .flat_map(|(m, _)| {
                let adopted = known.forms(&m.uid).iter().filter(|k| !known.own(k));
                std::iter::once(m.uid.as_str()).chain(adopted.map(String::as_str))
            })
            .collect();
        plan.forget = known
            .uids()
            .into_iter()
            .filter(|uid| !on_server.contains(uid))
            .map(str::to_string)
            .collect();
        plan.forget.sort();
    }
    plan
}

/// What to do with one message, given when it was first seen if a record proves
/// it delivered, and whether it is gone from where it was kept until deleted
/// locally.
fn decide(
    message: &ListedMessage,
    first_seen: Option<u64>,
    deleted_locally: bool,
    policy: &Policy,
    now: u64,
) -> Action {
    if let Some(seen) = first_seen {
        if !policy.keep {
            return Action::Delete(Reason::Delivered);
        }
        // `keep = "until-deleted-locally"`, with delete_after: whichever first.
        if deleted_locally {
            return Action::Delete(Reason::DeletedLocally);
        }
        let age = Duration::from_secs(now.saturating_sub(seen));
        if policy.delete_after.is_some_and(|limit| age > limit) {
            return Action::Delete(Reason::Expired { age });
        }
        if !policy.fetch_all {
            return Action::Keep;
        }
    }
    if let Some(max) = policy.max_size.filter(|&max| message.size > max) {
        return match policy.max_size_action {
            SizeAction::Skip => Action::Skip(Reason::TooLarge { max }),
            SizeAction::Delete => Action::Delete(Reason::TooLarge { max }),
        };
    }
    Action::Fetch
}

/// A duration in the largest whole unit that fits, for messages.
pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::{parse_duration, parse_size};
    use std::collections::HashMap;

    const DAY: u64 = 86_400;

    /// Records by unique-id; a digest form (`uid-HEX`) is indexed under its uid.
    #[derive(Default)]
    struct State {
        records: HashMap<String, Vec<Record>>,
        forms: HashMap<String, Vec<String>>,
        /// Records whose file is gone from the Maildir.
        gone: Vec<(String, Identity)>,
        /// The plan's last hint (see [`Known::expect_records`]).
        expected: std::cell::Cell<usize>,
    }

    impl State {
        fn of(seen: &[(&str, u64)]) -> State {
            let mut state = State::default();
            for (uid, first_seen) in seen {
                state.add(uid, *first_seen, None);
            }
            state
        }

        fn add(&mut self, uid: &str, first_seen: u64, id: Option<Identity>) {
            if let Some((base, _)) = uid.split_once('-') {
                self.forms
                    .entry(base.to_string())
                    .or_default()
                    .push(uid.to_string());
            }
            self.records
                .entry(uid.to_string())
                .or_default()
                .push(Record { first_seen, id });
        }
    }

    impl Known for State {
        fn records(&self, uid: &str) -> &[Record] {
            self.records.get(uid).map_or(&[], Vec::as_slice)
        }

        fn forms(&self, uid: &str) -> &[String] {
            self.forms.get(uid).map_or(&[], Vec::as_slice)
        }

        fn uids(&self) -> Vec<&str> {
            self.records.keys().map(String::as_str).collect()
        }

        fn count(&self) -> usize {
            self.records.len()
        }

        fn expect_records(&self, new: usize) {
            self.expected.set(new);
        }

        /// Uids starting with `L` stand for adopted records.
        fn own(&self, uid: &str) -> bool {
            !uid.starts_with('L')
        }

        fn deleted_locally(&self, uid: &str, id: Identity) -> bool {
            self.gone.iter().any(|(u, i)| u == uid && *i == id)
        }
    }

    fn listing() -> Vec<ListedMessage> {
        [("a", 100), ("b", 5000), ("c", 100), ("d", 100)]
            .iter()
            .enumerate()
            .map(|(i, (uid, size))| ListedMessage {
                num: u32::try_from(i + 1).unwrap(),
                size: *size,
                uid: uid.to_string(),
            })
            .collect()
    }

    /// Plans the four-message listing over records without identities.
    fn run(state: &[(&'static str, u64)], policy: Policy, now: u64) -> SessionPlan {
        plan(
            listing(),
            &Probes::default(),
            &State::of(state),
            &policy,
            now,
        )
    }

    fn actions(plan: &SessionPlan) -> Vec<Action> {
        plan.messages.iter().map(|(_, a)| *a).collect()
    }

    /// An identity for tests: the size, and a digest made of one byte.
    fn id(size: u64, tag: u8) -> Identity {
        Identity {
            size,
            digest: [tag; 16],
        }
    }

    fn probe(tag: u8) -> Probe {
        Probe {
            digest: [tag; 16],
            legacy: format!("{tag:032x}"),
        }
    }

    fn message(num: u32, uid: &str, size: u64) -> ListedMessage {
        ListedMessage {
            num,
            size,
            uid: uid.to_string(),
        }
    }

    #[test]
    fn fetches_only_new_and_deletes_delivered_without_keep() {
        let mut state = State::of(&[("gone", 0)]);
        state.add("b", 0, Some(id(5000, 2)));
        let probes: Probes = [(2, probe(2))].into_iter().collect();
        let plan = plan(listing(), &probes, &state, &Policy::default(), 10);
        use Action::*;
        assert_eq!(
            actions(&plan),
            [Fetch, Delete(Reason::Delivered), Fetch, Fetch]
        );
        assert_eq!(plan.forget, ["gone"]);
        assert!(plan.delete_after_delivery);
    }

    #[test]
    fn a_record_without_identity_never_deletes_but_keeps() {
        let policy = Policy::default();
        // Without keep, a message recorded by an older popfetch is fetched again
        // rather than deleted unseen.
        let plan = run(&[("b", 0)], policy, 10);
        assert_eq!(plan.fetch().len(), 4);
        assert!(plan.delete().is_empty());
        // With keep it stays, without TOP or LIST.
        let keep = Policy {
            keep: true,
            ..policy
        };
        let state = State::of(&[("b", 0)]);
        assert!(!needs_probe("b", false, &state, &keep, 10));
        assert!(!needs_size("b", &state, &keep, 10));
        assert!(needs_probe("b", false, &state, &policy, 10));
        assert_eq!(run(&[("b", 0)], keep, 10).messages[1].1, Action::Keep);
    }

    #[test]
    fn a_reused_unique_id_is_fetched_not_deleted() {
        // Session 1 delivered and deleted A under X; session 2 lists B under X.
        let mut state = State::default();
        state.add("X", 0, Some(id(100, 0xa)));
        let probes: Probes = [(1, probe(0xb))].into_iter().collect();
        let plan = plan(
            vec![message(1, "X", 120)],
            &probes,
            &state,
            &Policy::default(),
            9,
        );
        assert_eq!(actions(&plan), [Action::Fetch]);
        assert_eq!(plan.stale, [("X".to_string(), id(100, 0xa))]);
        // The same headers under another size are another message too.
        let probes: Probes = [(1, probe(0xa))].into_iter().collect();
        let plan = plan_of(
            &state,
            &probes,
            vec![message(1, "X", 101)],
            Policy::default(),
        );
        assert_eq!(actions(&plan), [Action::Fetch]);
    }

    fn plan_of(
        state: &State,
        probes: &Probes,
        listing: Vec<ListedMessage>,
        policy: Policy,
    ) -> SessionPlan {
        plan(listing, probes, state, &policy, 9)
    }

    #[test]
    fn a_message_arriving_under_a_known_unique_id_is_fetched_alone() {
        let keep = Policy {
            keep: true,
            ..Policy::default()
        };
        let mut state = State::default();
        state.add("X", 0, Some(id(100, 0xa)));
        let listing = vec![message(1, "X", 100), message(2, "X", 100)];
        assert!(needs_probe("X", true, &state, &keep, 9));
        let probes: Probes = [(1, probe(0xa)), (2, probe(0xb))].into_iter().collect();
        let plan = plan_of(&state, &probes, listing, keep);
        assert_eq!(actions(&plan), [Action::Keep, Action::Fetch]);
        assert!(plan.stale.is_empty() && plan.forget.is_empty());
    }

    #[test]
    fn when_one_of_two_repeated_messages_vanishes_the_other_stays_known() {
        let mut state = State::default();
        state.add("X", 0, Some(id(100, 0xa)));
        state.add("X", 0, Some(id(100, 0xb)));
        assert!(needs_probe("X", false, &state, &Policy::default(), 9));
        let probes: Probes = [(1, probe(0xb))].into_iter().collect();
        let keep = Policy {
            keep: true,
            ..Policy::default()
        };
        let plan = plan_of(&state, &probes, vec![message(1, "X", 100)], keep);
        assert_eq!(actions(&plan), [Action::Keep]);
        assert_eq!(plan.stale, [("X".to_string(), id(100, 0xa))]);
        // After a refused DELE, the one left is deleted, verified, not fetched again.
        let plan = plan_of(
            &state,
            &probes,
            vec![message(1, "X", 100)],
            Policy::default(),
        );
        assert_eq!(actions(&plan), [Action::Delete(Reason::Delivered)]);
        // Unprobed (the server refused TOP), it is fetched again rather than deleted.
        let plan = plan_of(
            &state,
            &Probes::default(),
            vec![message(1, "X", 100)],
            Policy::default(),
        );
        assert_eq!(actions(&plan), [Action::Fetch]);
        assert!(plan.stale.is_empty());
    }

    #[test]
    fn the_digest_form_of_a_repeated_unique_id_is_known_as_the_unique_id() {
        let keep = Policy {
            keep: true,
            ..Policy::default()
        };
        let legacy = probe(0xa).legacy;
        let mut state = State::default();
        state.add(&format!("X-{legacy}"), 7, None);
        assert!(needs_probe("X", false, &state, &keep, 9));
        let probes: Probes = [(1, probe(0xa))].into_iter().collect();
        let plan = plan_of(&state, &probes, vec![message(1, "X", 100)], keep);
        assert_eq!(actions(&plan), [Action::Keep]);
        let adopted = Record {
            first_seen: 7,
            id: Some(id(100, 0xa)),
        };
        assert_eq!(plan.adopt, [("X".to_string(), adopted)]);
        assert_eq!(plan.forget, [format!("X-{legacy}")]);
    }

    #[test]
    fn an_adopted_digest_form_keeps_its_message_and_is_not_forgotten() {
        // Uids starting with `L` are adopted in this test's state: an older
        // popfetch recorded `LX` repeated, under two digest forms.
        let (a, b) = (probe(0xa), probe(0xb));
        let mut state = State::default();
        state.add(&format!("LX-{}", a.legacy), 7, None);
        state.add(&format!("LX-{}", b.legacy), 8, None);
        let probes: Probes = [(1, a), (2, b)].into_iter().collect();
        let listing = vec![message(1, "LX", 100), message(2, "LX", 200)];
        for keep in [false, true] {
            let policy = Policy {
                keep,
                delete_after: parse_duration("1d"),
                ..Policy::default()
            };
            let plan = plan_of(&state, &probes, listing.clone(), policy);
            assert_eq!(actions(&plan), [Action::Keep, Action::Keep], "keep={keep}");
            assert!(
                plan.forget.is_empty() && plan.adopt.is_empty(),
                "keep={keep}"
            );
        }
        // Once the messages are gone from the server, so are their records.
        let plan = plan_of(&state, &probes, vec![message(1, "Y", 5)], Policy::default());
        assert_eq!(plan.forget.len(), 2);
    }

    #[test]
    fn keep_leaves_delivered_until_delete_after() {
        let policy = Policy {
            keep: true,
            delete_after: parse_duration("30d"),
            ..Policy::default()
        };
        let now = 100 * DAY;
        let mut state = State::default();
        state.add("a", now - 31 * DAY, Some(id(100, 1)));
        state.add("b", now - 29 * DAY, Some(id(5000, 2)));
        // Only the expired one is probed.
        assert!(needs_probe("a", false, &state, &policy, now));
        assert!(!needs_probe("b", false, &state, &policy, now));
        let probes: Probes = [(1, probe(1))].into_iter().collect();
        let plan = plan(listing(), &probes, &state, &policy, now);
        use Action::*;
        assert_eq!(
            actions(&plan),
            [
                Delete(Reason::Expired {
                    age: Duration::from_secs(31 * DAY)
                }),
                Keep,
                Fetch,
                Fetch
            ]
        );
        assert!(!plan.delete_after_delivery);
    }

    #[test]
    fn until_deleted_locally_deletes_what_is_gone_and_only_on_a_verified_record() {
        let policy = Policy {
            keep: true,
            until_deleted_locally: true,
            delete_after: parse_duration("30d"),
            ..Policy::default()
        };
        let now = 100 * DAY;
        let mut state = State::default();
        state.add("a", now - DAY, Some(id(100, 1)));
        state.add("b", now - DAY, Some(id(5000, 2)));
        state.add("c", now - 31 * DAY, Some(id(100, 3)));
        state.add("d", now - DAY, Some(id(100, 4)));
        // a's file is gone; so is d's, but the server's d is another message.
        state.gone = vec![("a".into(), id(100, 1)), ("d".into(), id(100, 4))];
        assert!(needs_probe("a", false, &state, &policy, now));
        assert!(!needs_probe("b", false, &state, &policy, now));
        // delete_after still holds: whichever comes first.
        assert!(needs_probe("c", false, &state, &policy, now));
        let probes: Probes = [(1, probe(1)), (3, probe(3)), (4, probe(9))]
            .into_iter()
            .collect();
        let planned = plan(listing(), &probes, &state, &policy, now);
        use Action::*;
        assert_eq!(
            actions(&planned),
            [
                Delete(Reason::DeletedLocally),
                Keep,
                Delete(Reason::Expired {
                    age: Duration::from_secs(31 * DAY)
                }),
                Fetch
            ]
        );
        // A server that refused TOP: nothing is deleted unverified.
        let unprobed = plan_of(&state, &Probes::default(), listing(), policy);
        assert!(unprobed.delete().is_empty(), "{unprobed:?}");
        // An adopted record never grounds a DELE, gone or not.
        let mut adopted = State::default();
        adopted.add("La", now - DAY, Some(id(100, 1)));
        adopted.gone = vec![("La".into(), id(100, 1))];
        let probes: Probes = [(1, probe(1))].into_iter().collect();
        let adopted_plan =
            super::plan(vec![message(1, "La", 100)], &probes, &adopted, &policy, now);
        assert_eq!(actions(&adopted_plan), [Keep]);
    }

    #[test]
    fn fetch_all_refetches_delivered() {
        let policy = Policy {
            keep: true,
            fetch_all: true,
            ..Policy::default()
        };
        let plan = run(&[("a", 0), ("b", 0)], policy, 1);
        assert_eq!(plan.fetch().len(), 4);
        // Only the two new unique-ids will need room in the state, and with
        // max_messages only as many as are fetched.
        let state = State::of(&[("a", 0), ("b", 0)]);
        super::plan(listing(), &Probes::default(), &state, &policy, 1);
        assert_eq!(state.expected.get(), 2);
        let one = Policy {
            max_messages: Some(1),
            ..policy
        };
        super::plan(listing(), &Probes::default(), &state, &one, 1);
        assert_eq!(state.expected.get(), 1);
    }

    #[test]
    fn max_size_skips_or_deletes() {
        let mut policy = Policy {
            max_size: parse_size("1K"),
            ..Policy::default()
        };
        let plan = run(&[], policy, 1);
        assert_eq!(
            plan.messages[1].1,
            Action::Skip(Reason::TooLarge { max: 1024 })
        );
        policy.max_size_action = SizeAction::Delete;
        let plan = run(&[], policy, 1);
        assert_eq!(plan.delete(), [2]);
    }

    #[test]
    fn max_messages_takes_the_oldest_and_refills_after_a_filter() {
        let policy = Policy {
            max_messages: Some(2),
            ..Policy::default()
        };
        let mut plan = run(&[], policy, 1);
        let nums: Vec<u32> = plan.fetch().iter().map(|m| m.num).collect();
        assert_eq!(nums, [1, 2]);
        assert_eq!(plan.skipped().len(), 2);
        plan.apply_filter(1, Action::Delete(Reason::Filter), &policy);
        let nums: Vec<u32> = plan.fetch().iter().map(|m| m.num).collect();
        assert_eq!(nums, [2, 3]);
        assert_eq!(plan.delete(), [1]);
    }

    #[test]
    fn an_adopted_record_keeps_a_message_but_never_deletes_it() {
        let mut state = State::of(&[("L1", 0)]);
        state.add("own", 0, Some(id(10, 7)));
        let delete_after = Policy {
            keep: true,
            delete_after: parse_duration("1d"),
            ..Policy::default()
        };
        let fetch_all = Policy {
            fetch_all: true,
            ..Policy::default()
        };
        for (policy, adopted, own) in [
            (
                Policy::default(),
                Action::Keep,
                Action::Delete(Reason::Delivered),
            ),
            (
                delete_after,
                Action::Keep,
                Action::Delete(Reason::Expired {
                    age: Duration::from_secs(100 * DAY),
                }),
            ),
            (fetch_all, Action::Fetch, Action::Delete(Reason::Delivered)),
        ] {
            assert_eq!(plan_of(&state, "L1", &policy), [adopted], "{policy:?}");
            assert_eq!(plan_of(&state, "own", &policy), [own], "{policy:?}");
        }
        fn plan_of(state: &State, uid: &str, policy: &Policy) -> Vec<Action> {
            let listed = ListedMessage {
                num: 1,
                size: 10,
                uid: uid.to_string(),
            };
            // TOP finds both messages as recorded: only the own record's
            // identity can prove it.
            let probes: Probes = [(1, probe(7))].into_iter().collect();
            actions(&plan(vec![listed], &probes, state, policy, 100 * DAY))
        }
    }

    #[test]
    fn durations_are_shown_in_their_largest_unit() {
        assert_eq!(format_duration(Duration::from_secs(31 * DAY + 5)), "31d");
    }
}
