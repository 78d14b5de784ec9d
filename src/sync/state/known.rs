//! The delivered messages in memory: the records of each unique-id, the index of
//! the digest forms an older popfetch wrote, which records are adopted, and the
//! answers both views of the state give the policy ([`Known`]).

use std::cell::Cell;

use foldhash::{HashMap, HashSet};

use crate::sync::policy::Known;
use crate::sync::state::identity::{Identity, Record as Delivered};

/// The records of one unique-id: one, nearly always.
pub(super) type Deliveries = smallvec::SmallVec<[Delivered; 1]>;

/// The delivered messages: the records of each unique-id, and an index of the keys
/// an older popfetch wrote for repeated unique-ids (`uid-HEX`, HEX 32 hex digits of
/// a digest of the headers from TOP and the listed size), so that a message known
/// under one form is known under the other.
#[derive(Debug, Default)]
pub(super) struct Records {
    /// Keyed by `Box<str>`: 8 bytes a message less than `String`, whose capacity
    /// a key never uses.
    pub(super) by_uid: HashMap<Box<str>, Deliveries>,
    forms: HashMap<String, Vec<String>>,
}

impl Records {
    /// Adds a record; one with the same identity keeps its first sighting.
    pub(super) fn insert(&mut self, uid: &str, record: Delivered) {
        let records = match self.by_uid.get_mut(uid) {
            Some(records) => records,
            None => {
                self.index_form(uid);
                self.by_uid.entry(uid.into()).or_default()
            }
        };
        if !records.iter().any(|r| r.id == record.id) {
            records.push(record);
        }
    }

    /// Sets the records of `uid`, which has none yet (a replay's last step).
    pub(super) fn put(&mut self, uid: &str, records: Deliveries) {
        self.index_form(uid);
        self.by_uid.insert(uid.into(), records);
    }

    /// Indexes a new key of the digest form `uid-HEX` under its unique-id.
    fn index_form(&mut self, uid: &str) {
        if let Some(base) = digest_form(uid) {
            self.forms
                .entry(base.to_string())
                .or_default()
                .push(uid.to_string());
        }
    }

    /// Forgets every record of `uid`, or only the one with identity `id`.
    pub(super) fn forget(&mut self, uid: &str, id: Option<Identity>) {
        if let (Some(id), Some(records)) = (id, self.by_uid.get_mut(uid)) {
            records.retain(|r| r.id != Some(id));
            if !records.is_empty() {
                return;
            }
        }
        if self.by_uid.remove(uid).is_some() {
            if let Some(base) = digest_form(uid) {
                if let Some(keys) = self.forms.get_mut(base) {
                    keys.retain(|k| k != uid);
                    if keys.is_empty() {
                        self.forms.remove(base);
                    }
                }
            }
        }
    }
}

/// The unique-id in a key of the form `uid-HEX` an older popfetch gave messages
/// whose unique-id repeated.
fn digest_form(key: &str) -> Option<&str> {
    let (base, hex) = key.rsplit_once('-')?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !base.is_empty())
        .then_some(base)
}

/// The same questions as [`crate::sync::policy::Known`], less ownership, which the
/// state keeps beside the records.
impl Records {
    fn records(&self, uid: &str) -> &[Delivered] {
        self.by_uid
            .get(uid)
            .map_or(&[], |records| records.as_slice())
    }

    fn forms(&self, uid: &str) -> &[String] {
        // Digest forms come only from an older popfetch's state: usually none,
        // and then no lookup for each listed message.
        if self.forms.is_empty() {
            return &[];
        }
        self.forms.get(uid).map_or(&[], Vec::as_slice)
    }

    fn uids(&self) -> Vec<&str> {
        self.by_uid.keys().map(|uid| &**uid).collect()
    }

    pub(super) fn count(&self) -> usize {
        self.by_uid.len()
    }
}

/// What the state has recorded of delivered messages: what [`UidlState`] holds
/// open, and by itself a read-only view, for previews.
///
/// [`UidlState`]: super::UidlState
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(super) delivered: Records,
    /// Unique-ids whose records are adopted (`L`): never grounds for a DELE.
    pub(super) adopted: HashSet<String>,
    /// Where delivered messages landed, when the account keeps them until they
    /// are deleted there.
    pub(super) located: Option<super::Locations>,
    /// How many records the plan expects this run to add (see
    /// [`Known::expect_records`]): the table is grown for them at the first, once.
    pub(super) expected: Cell<usize>,
}

impl Snapshot {
    /// Every delivered unique-id.
    #[cfg(test)]
    pub(crate) fn delivered_uids(&self) -> impl Iterator<Item = &str> {
        self.delivered.by_uid.keys().map(|uid| &**uid)
    }
}

/// A view of the state that holds a [`Snapshot`]. Public in a private module, so
/// that the [`Known`] impl over it is written once and no one else can use it.
pub(crate) trait Holds {
    fn snapshot(&self) -> &Snapshot;
}

impl Holds for Snapshot {
    fn snapshot(&self) -> &Snapshot {
        self
    }
}

impl<T: Holds> Known for T {
    fn records(&self, uid: &str) -> &[Delivered] {
        self.snapshot().delivered.records(uid)
    }

    fn forms(&self, uid: &str) -> &[String] {
        self.snapshot().delivered.forms(uid)
    }

    fn uids(&self) -> Vec<&str> {
        self.snapshot().delivered.uids()
    }

    fn count(&self) -> usize {
        self.snapshot().delivered.count()
    }

    fn expect_records(&self, new: usize) {
        self.snapshot().expected.set(new);
    }

    fn own(&self, uid: &str) -> bool {
        !self.snapshot().adopted.contains(uid)
    }

    fn any_deleted_locally(&self) -> bool {
        self.snapshot()
            .located
            .as_ref()
            .is_some_and(super::Locations::any_gone)
    }

    fn deleted_locally(&self, uid: &str, id: Identity) -> bool {
        self.snapshot()
            .located
            .as_ref()
            .is_some_and(|located| located.is_gone(uid, id))
    }
}
