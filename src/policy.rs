//! What a session should do with each message on the server, decided as a pure
//! function: the server's listing, what the state knows and a clock go in, a
//! [`SessionPlan`] comes out. No I/O happens here, so every rule is unit-tested.

use std::time::Duration;

use foldhash::HashSet;

use crate::pop3::ListedMessage;

/// What to do with a message that is over `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeAction {
    /// Leave it on the server, unfetched.
    #[default]
    Skip,
    /// Delete it from the server without fetching it.
    Delete,
}

/// The account's rules about what to fetch and what to leave on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Leave messages on the server after delivering them.
    pub keep: bool,
    /// With `keep`, delete messages first seen longer ago than this.
    pub delete_after: Option<Duration>,
    /// Fetch messages already delivered too (to re-archive a mailbox).
    pub fetch_all: bool,
    /// Messages larger than this (in octets, as LIST counts them) are not fetched.
    pub max_size: Option<u64>,
    pub max_size_action: SizeAction,
    /// Fetch at most this many messages per run, oldest first.
    pub max_messages: Option<usize>,
}

/// Why a message is skipped or deleted without being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
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
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Reason::Delivered => write!(f, "already delivered"),
            Reason::Expired { age } => write!(f, "first seen {} ago", format_duration(*age)),
            Reason::TooLarge { max } => write!(f, "larger than max_size ({max} bytes)"),
            Reason::Limit => write!(f, "over max_messages for this run"),
            Reason::Filter => write!(f, "by the filter"),
        }
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Fetch,
    /// Delivered earlier and left on the server.
    Keep,
    Skip(Reason),
    Delete(Reason),
}

/// What one session will do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPlan {
    /// Each message on the server with its fate, in server order.
    pub messages: Vec<(ListedMessage, Action)>,
    /// Recorded unique-ids no longer on the server.
    pub forget: Vec<String>,
    /// Whether each message delivered in this session is then deleted.
    pub delete_after_delivery: bool,
}

impl SessionPlan {
    /// Messages to fetch, oldest first.
    pub fn fetch(&self) -> Vec<ListedMessage> {
        self.with(|a| a == Action::Fetch)
    }

    /// Messages to delete without fetching.
    pub fn delete(&self) -> Vec<u32> {
        self.with(|a| matches!(a, Action::Delete(_)))
            .iter()
            .map(|m| m.num)
            .collect()
    }

    /// Messages left alone this time, with why.
    pub fn skipped(&self) -> Vec<(ListedMessage, Reason)> {
        self.messages
            .iter()
            .filter_map(|(m, a)| match a {
                Action::Skip(r) => Some((m.clone(), *r)),
                _ => None,
            })
            .collect()
    }

    fn with(&self, keep: impl Fn(Action) -> bool) -> Vec<ListedMessage> {
        self.messages
            .iter()
            .filter(|(_, a)| keep(*a))
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Records a filter's verdict on a message planned for fetching, and applies
    /// `max_messages` again to what is left.
    pub fn apply_filter(&mut self, num: u32, verdict: Action, policy: &Policy) {
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

/// What the state knows: the delivered unique-ids and when each was first seen.
pub trait Known {
    /// `Some(first_seen)` if `uid` was delivered.
    fn first_seen(&self, uid: &str) -> Option<u64>;
    /// Every delivered unique-id.
    fn uids(&self) -> Vec<&str>;
    /// How many unique-ids are delivered.
    fn count(&self) -> usize;
    /// Whether the record of `uid` was written by this mailbox's own sessions. One
    /// that was not (adopted from an older popfetch's state, or imported) keeps the
    /// message from being fetched again, but is never grounds for a DELE: see
    /// [`crate::state::Place`].
    fn own(&self, uid: &str) -> bool;
}

/// Plans a session. `now` is in Unix seconds. The listing's unique-ids are
/// distinct (`connect::listing` makes sure of it).
pub fn plan(
    listing: Vec<ListedMessage>,
    known: &dyn Known,
    policy: &Policy,
    now: u64,
) -> SessionPlan {
    let mut plan = SessionPlan {
        delete_after_delivery: !policy.keep,
        ..SessionPlan::default()
    };
    plan.messages.reserve_exact(listing.len());
    let mut listed_known = 0;
    for message in listing {
        let first_seen = known.first_seen(&message.uid);
        listed_known += usize::from(first_seen.is_some());
        let first_seen = first_seen.map(|seen| (seen, known.own(&message.uid)));
        let action = decide(&message, first_seen, policy, now);
        plan.messages.push((message, action));
    }
    plan.limit(policy);
    // Listed unique-ids are distinct, so when as many are known as the state holds,
    // none of the state's is gone: the usual run, spared a set of the whole listing.
    if listed_known < known.count() {
        let on_server: HashSet<&str> = plan.messages.iter().map(|(m, _)| m.uid.as_str()).collect();
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

/// `first_seen` is when a delivered message was first seen, and whether its record
/// is the mailbox's own.
fn decide(
    message: &ListedMessage,
    first_seen: Option<(u64, bool)>,
    policy: &Policy,
    now: u64,
) -> Action {
    match first_seen {
        // Never deleted unfetched on the word of a record this mailbox did not write.
        Some((_, false)) if !policy.fetch_all => return Action::Keep,
        Some((_, false)) | None => {}
        Some((seen, true)) => {
            if !policy.keep {
                return Action::Delete(Reason::Delivered);
            }
            let age = Duration::from_secs(now.saturating_sub(seen));
            if policy.delete_after.is_some_and(|limit| age > limit) {
                return Action::Delete(Reason::Expired { age });
            }
            if !policy.fetch_all {
                return Action::Keep;
            }
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

/// Splits "30 d" or "30d" into the number and its unit (trimmed, maybe empty).
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses "30d", "12h", "90m", "45s", "2w". The unit is required: getmail's
/// `delete_after` counts days, so a bare "30" would mean different things to
/// different readers.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = number_and_unit(text)?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

/// Parses "10M", "512K", "1G", "2000" (bytes; K, M, G are powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = number_and_unit(text)?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A duration in the largest whole unit that fits, for messages.
pub fn format_duration(d: Duration) -> String {
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
    use std::collections::HashMap;

    const DAY: u64 = 86_400;

    struct State(HashMap<&'static str, u64>);

    impl Known for State {
        fn first_seen(&self, uid: &str) -> Option<u64> {
            self.0.get(uid).copied()
        }

        fn uids(&self) -> Vec<&str> {
            self.0.keys().copied().collect()
        }

        fn count(&self) -> usize {
            self.0.len()
        }

        /// Uids starting with `L` stand for adopted records.
        fn own(&self, uid: &str) -> bool {
            !uid.starts_with('L')
        }
    }

    fn listing() -> Vec<ListedMessage> {
        [("a", 100), ("b", 5000), ("c", 100), ("d", 100)]
            .iter()
            .enumerate()
            .map(|(i, (uid, size))| ListedMessage {
                num: i as u32 + 1,
                size: *size,
                uid: uid.to_string(),
            })
            .collect()
    }

    fn run(state: &[(&'static str, u64)], policy: Policy, now: u64) -> SessionPlan {
        let state = State(state.iter().copied().collect());
        plan(listing(), &state, &policy, now)
    }

    fn actions(plan: &SessionPlan) -> Vec<Action> {
        plan.messages.iter().map(|(_, a)| *a).collect()
    }

    #[test]
    fn fetches_only_new_and_deletes_delivered_without_keep() {
        let plan = run(&[("b", 0), ("gone", 0)], Policy::default(), 10);
        use Action::*;
        assert_eq!(
            actions(&plan),
            [Fetch, Delete(Reason::Delivered), Fetch, Fetch]
        );
        assert_eq!(plan.forget, ["gone"]);
        assert!(plan.delete_after_delivery);
    }

    #[test]
    fn keep_leaves_delivered_until_delete_after() {
        let policy = Policy {
            keep: true,
            delete_after: parse_duration("30d"),
            ..Policy::default()
        };
        let now = 100 * DAY;
        let plan = run(&[("a", now - 31 * DAY), ("b", now - 29 * DAY)], policy, now);
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
    fn fetch_all_refetches_delivered() {
        let policy = Policy {
            keep: true,
            fetch_all: true,
            ..Policy::default()
        };
        let plan = run(&[("a", 0), ("b", 0)], policy, 1);
        assert_eq!(plan.fetch().len(), 4);
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
        let state = State([("L1", 0), ("own", 0)].into_iter().collect());
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
            actions(&plan(vec![listed], state, policy, 100 * DAY))
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * DAY)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * DAY)));
        assert_eq!(parse_duration("90"), None, "a bare number has no unit");
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("big"), None);
        assert_eq!(format_duration(Duration::from_secs(31 * DAY + 5)), "31d");
    }
}
