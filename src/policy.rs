//! What a session should do, decided as a pure function: the server's listing and the
//! state go in, a [`SessionPlan`] comes out. No I/O happens here, so every rule is
//! unit-tested on its own.

use std::collections::HashSet;

use crate::pop3::ListedMessage;

/// The account's rules about what to fetch and what to leave on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Leave messages on the server after delivering them.
    pub keep: bool,
}

/// What one session will do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPlan {
    /// Messages to fetch and deliver, oldest first.
    pub fetch: Vec<ListedMessage>,
    /// Messages delivered by an earlier run and still on the server, to delete now
    /// without fetching them again.
    pub delete: Vec<u32>,
    /// Recorded unique-ids no longer on the server.
    pub forget: Vec<String>,
    /// Whether each message delivered in this session is then deleted.
    pub delete_after_delivery: bool,
}

/// Plans a session from the server's listing, the unique-ids already delivered and
/// the policy.
pub fn plan<'a>(
    listing: &[ListedMessage],
    delivered: impl IntoIterator<Item = &'a str>,
    policy: &Policy,
) -> SessionPlan {
    let delivered: HashSet<&str> = delivered.into_iter().collect();
    let on_server: HashSet<&str> = listing.iter().map(|m| m.uid.as_str()).collect();
    let mut plan = SessionPlan {
        delete_after_delivery: !policy.keep,
        ..SessionPlan::default()
    };
    for message in listing {
        if !delivered.contains(message.uid.as_str()) {
            plan.fetch.push(message.clone());
        } else if !policy.keep {
            plan.delete.push(message.num);
        }
    }
    plan.forget = delivered
        .into_iter()
        .filter(|uid| !on_server.contains(uid))
        .map(str::to_string)
        .collect();
    plan.forget.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Vec<ListedMessage> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, uid)| ListedMessage {
                num: i as u32 + 1,
                size: 100,
                uid: uid.to_string(),
            })
            .collect()
    }

    fn uids(plan: &SessionPlan) -> Vec<&str> {
        plan.fetch.iter().map(|m| m.uid.as_str()).collect()
    }

    #[test]
    fn fetches_only_new_messages() {
        let plan = plan(&listing(), ["b"], &Policy { keep: true });
        assert_eq!(uids(&plan), ["a", "c"]);
        assert!(plan.delete.is_empty());
        assert!(!plan.delete_after_delivery);
    }

    #[test]
    fn without_keep_deletes_what_was_delivered_before() {
        let plan = plan(&listing(), ["b", "gone"], &Policy { keep: false });
        assert_eq!(uids(&plan), ["a", "c"]);
        assert_eq!(plan.delete, [2]);
        assert_eq!(plan.forget, ["gone"]);
        assert!(plan.delete_after_delivery);
    }

    #[test]
    fn empty_mailbox_forgets_everything_and_fetches_nothing() {
        let plan = plan(&[], ["x", "y"], &Policy { keep: true });
        assert!(plan.fetch.is_empty());
        assert_eq!(plan.forget, ["x", "y"]);
    }
}
