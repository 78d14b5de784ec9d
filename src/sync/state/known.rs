//! The delivered messages in memory: the records of each unique-id, the index of
//! the digest forms an older popfetch wrote, which records are adopted, and the
//! answers both views of the state give the policy ([`Known`]).

use std::cell::Cell;

use foldhash::{HashMap, HashSet};

use crate::sync::policy::Known;
use crate::sync::state::identity::{Identity, Record as Delivered};

/// The records of one unique-id: one, nearly always, held inline in the 40 bytes
/// of that record (a `SmallVec` of one takes 48: 800 KB more for 100,000), or
/// several in a block of their own.
#[derive(Debug, Clone, Default)]
pub(super) enum Deliveries {
    #[default]
    None,
    One(Delivered),
    Many(Box<[Delivered]>),
}

impl Deliveries {
    pub(super) fn push(&mut self, record: Delivered) {
        *self = match std::mem::take(self) {
            Deliveries::None => Deliveries::One(record),
            Deliveries::One(first) => Deliveries::Many(Box::new([first, record])),
            // Rare (a server that repeats unique-ids): a copy per record is cheap.
            Deliveries::Many(records) => {
                let mut records = records.into_vec();
                records.push(record);
                Deliveries::Many(records.into_boxed_slice())
            }
        };
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Delivered) -> bool) {
        let kept: Vec<Delivered> = self.iter().copied().filter(|r| keep(r)).collect();
        *self = match kept[..] {
            [] => Deliveries::None,
            [one] => Deliveries::One(one),
            _ => Deliveries::Many(kept.into_boxed_slice()),
        };
    }

    pub(super) fn as_slice(&self) -> &[Delivered] {
        match self {
            Deliveries::None => &[],
            Deliveries::One(record) => std::slice::from_ref(record),
            Deliveries::Many(records) => records,
        }
    }
}

impl std::ops::Deref for Deliveries {
    type Target = [Delivered];

    fn deref(&self) -> &[Delivered] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Deliveries {
    type Item = &'a Delivered;
    type IntoIter = std::slice::Iter<'a, Delivered>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

/// A unique-id as the state keys it: held inline up to 24 bytes (Dovecot's are
/// 16, most servers' shorter), so that 100,000 keys are not 100,000 heap blocks
/// (issue 22); a longer one in a block of its own. Hashed and compared as the
/// `str` it holds, so the table is searched by `&str`.
pub(super) type Uid = compact_str::CompactString;

/// The delivered messages: the records of each unique-id, and an index of the keys
/// an older popfetch wrote for repeated unique-ids (`uid-HEX`, HEX 32 hex digits of
/// a digest of the headers from TOP and the listed size), so that a message known
/// under one form is known under the other.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub(super) by_uid: HashMap<Uid, Deliveries>,
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
        self.by_uid.keys().map(Uid::as_str).collect()
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
        self.delivered.by_uid.keys().map(Uid::as_str)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A key reads back as the unique-id it was made from, inline or not, and is
    /// found by it; one of Dovecot's takes no heap block.
    #[test]
    fn keys_hold_their_unique_ids() {
        let mut map: HashMap<Uid, u32> = HashMap::default();
        let long = "x".repeat(70);
        let uids = ["", "a", "0000000169f1a2b3", "é€𝄞 12 more byte", &long];
        for (i, uid) in uids.iter().enumerate() {
            map.insert((*uid).into(), i as u32);
        }
        for (i, uid) in uids.iter().enumerate() {
            assert_eq!(map[*uid], i as u32);
            assert_eq!(Uid::from(*uid).as_str(), *uid);
        }
        assert!(!Uid::from("0000000169f1a2b3").is_heap_allocated());
        assert!(!Uid::from("x".repeat(24).as_str()).is_heap_allocated());
        assert!(Uid::from("x".repeat(25).as_str()).is_heap_allocated());
        assert_eq!(std::mem::size_of::<Uid>(), 24);
    }

    /// Records of one unique-id pushed and retained: the one inline, several in a
    /// vector, in order; and no larger than one record.
    #[test]
    fn deliveries_hold_one_or_many_records() {
        let record = |first_seen| Delivered {
            first_seen,
            id: None,
        };
        let mut d = Deliveries::default();
        assert!(d.is_empty());
        d.push(record(1));
        assert!(matches!(d, Deliveries::One(_)));
        d.push(record(2));
        d.push(record(3));
        assert_eq!(d.as_slice(), [record(1), record(2), record(3)]);
        d.retain(|r| r.first_seen != 2);
        assert_eq!(d.iter().map(|r| r.first_seen).collect::<Vec<_>>(), [1, 3]);
        d.retain(|r| r.first_seen == 3);
        assert!(matches!(d, Deliveries::One(r) if r == record(3)));
        d.retain(|_| false);
        assert!(d.is_empty() && matches!(d, Deliveries::None));
        assert_eq!(
            std::mem::size_of::<Deliveries>(),
            std::mem::size_of::<Delivered>()
        );
    }
}
