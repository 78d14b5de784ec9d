//! Where each delivered message landed, for `keep = "until-deleted-locally"`:
//! the location its intent (`I uid location`) announced, kept beside the
//! record once the delivery is recorded, and which of those locations the
//! target says are gone.
//!
//! No record of its own: the intent that preceded a delivery is already durable
//! before the delivery is, so a replay pairs each `D` with the `I` before it; a
//! compaction writes that pair again for every location it keeps. A journal of
//! such pairs reads the same to a popfetch that does not keep locations.

use foldhash::{HashMap, HashSet};
use smallvec::SmallVec;

use crate::sync::state::identity::Identity;

/// The locations of one unique-id's records: one, nearly always.
type Placed = SmallVec<[(Identity, Box<str>); 1]>;

/// The locations of delivered messages, by unique-id and identity.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    by_uid: HashMap<String, Placed>,
    /// Locations the target no longer holds (see [`super::UidlState::mark_gone`]).
    gone: HashSet<Box<str>>,
}

impl Locations {
    /// Records that the message `id` of `uid` landed at `location`. Only a record
    /// with an identity is kept: only such a record can ground a DELE.
    pub(super) fn insert(&mut self, uid: &str, id: Identity, location: &str) {
        let placed = self.by_uid.entry(uid.to_string()).or_default();
        placed.retain(|(i, _)| *i != id);
        placed.push((id, location.into()));
    }

    /// Forgets the locations of `uid`, or of its record `id` only.
    pub(super) fn forget(&mut self, uid: &str, id: Option<Identity>) {
        match (id, self.by_uid.get_mut(uid)) {
            (Some(id), Some(placed)) => {
                placed.retain(|(i, _)| *i != id);
                if placed.is_empty() {
                    self.by_uid.remove(uid);
                }
            }
            _ => {
                self.by_uid.remove(uid);
            }
        }
    }

    /// Where the record `id` of `uid` landed.
    pub(super) fn of(&self, uid: &str, id: Identity) -> Option<&str> {
        self.by_uid
            .get(uid)?
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, l)| &**l)
    }

    /// How many locations are kept.
    pub(super) fn count(&self) -> usize {
        self.by_uid.values().map(SmallVec::len).sum()
    }

    /// Every location kept.
    pub(super) fn all(&self) -> Vec<&str> {
        self.by_uid
            .values()
            .flat_map(|placed| placed.iter().map(|(_, l)| &**l))
            .collect()
    }

    pub(super) fn set_gone(&mut self, gone: impl IntoIterator<Item = String>) {
        self.gone = gone.into_iter().map(String::into_boxed_str).collect();
    }

    /// Whether the target said any location is gone.
    pub(super) fn any_gone(&self) -> bool {
        !self.gone.is_empty()
    }

    /// Whether the record `id` of `uid` has a location, and the target said it
    /// is gone.
    pub(super) fn is_gone(&self, uid: &str, id: Identity) -> bool {
        !self.gone.is_empty() && self.of(uid, id).is_some_and(|l| self.gone.contains(l))
    }
}
