//! What the state keeps of one delivered message: when its unique-id was first seen
//! and the identity (listed size and header digest, see [`Identity`]) that may later
//! authorize deleting it without fetching it again.

pub(crate) use crate::pop3::proto::identity::{HeadHasher, Identity};

/// What the state holds of one delivered message: when its unique-id was first
/// seen (Unix seconds) and, when it was recorded by a popfetch that knew it, its
/// identity. A record without an identity can never authorize a DELE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub first_seen: u64,
    pub id: Option<Identity>,
}
