//! Delivery into a Maildir (https://cr.yp.to/proto/maildir.html): a file with a unique
//! name is written in tmp/, made durable, linked into new/, and new/ is fsynced.
//!
//! Deliveries are staged and committed in batches (group commit): each message is
//! written into tmp/ as it streams in; `flush` then makes the whole batch durable
//! with one `syncfs` on Linux — one journal commit instead of one per message; an
//! fsync per file elsewhere, F_FULLFSYNC on macOS — links every
//! file into new/ and fsyncs new/ once. A file reaches new/ only after its bytes are
//! durable, and only after its intent was recorded durably by the caller.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{copy_message, Announce, Class, DeliverError, Kind, Recovered, Target, TargetError};
use crate::sys::durable::{self, TempFile};

/// `maildir:PATH`.
pub(crate) const KIND: Kind = Kind {
    name: "maildir",
    takes: "PATH",
    parse: |rest, env| env.path_spec(rest, |root, _| Ok(Box::new(MaildirTarget::open(root)?))),
};

/// The file in a Maildir's root that names the mailboxes whose messages it keeps
/// until they are deleted there (`keep = "until-deleted-locally"`).
const MARKER: &str = ".popfetch-kept";

/// A Maildir without the marker of a mailbox that delivered messages kept
/// until deleted locally into it: another directory in its place.
#[derive(Debug, thiserror::Error)]
#[error("{root} is not the Maildir that {count} message(s) kept until deleted locally went to: its {MARKER} does not name {owner}. Is its disk mounted, its path right? Nothing is fetched or deleted until it is back. If those messages are gone for good, add the line {owner} to {root}/{MARKER}: they are then deleted from the server")]
pub(crate) struct Unmarked {
    root: String,
    owner: String,
    count: usize,
}

impl TargetError for Unmarked {
    fn class(&self) -> Class {
        Class::Temporary
    }
}

/// The local side failed: disk full, permissions, I/O error.
#[derive(Debug, thiserror::Error)]
#[error("cannot deliver into {path}")]
pub(crate) struct MaildirError {
    path: PathBuf,
    source: io::Error,
}

impl TargetError for MaildirError {
    fn class(&self) -> Class {
        Class::Failed
    }
}

pub(crate) struct MaildirTarget {
    root: PathBuf,
    host: String,
    pid: u32,
    /// Names written into tmp/ and waiting for `flush` to commit them.
    staged: Vec<String>,
    /// Names were linked into new/ since it was last fsynced.
    unsynced: bool,
}

impl MaildirTarget {
    /// Opens the Maildir at `root`, creating it and its tmp/, new/ and cur/ as needed.
    pub(crate) fn open(root: &Path) -> Result<MaildirTarget, DeliverError> {
        for sub in ["tmp", "new", "cur"] {
            let dir = root.join(sub);
            durable::create_dir_all(&dir).map_err(|source| MaildirError {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(MaildirTarget {
            root: root.to_path_buf(),
            host: maildir_host(),
            pid: std::process::id(),
            staged: Vec::new(),
            unsynced: false,
        })
    }

    /// The unique part of every name in new/, then in cur/ (see [`unique_part`]).
    fn unique_names(&self) -> Result<foldhash::HashSet<String>, DeliverError> {
        let mut names = foldhash::HashSet::default();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(self.local(sub))? {
                let name = entry.map_err(self.local(sub))?.file_name();
                let name = name.to_string_lossy();
                names.insert(unique_part(&name).to_string());
            }
        }
        Ok(names)
    }

    fn local(&self, sub: &str) -> impl Fn(io::Error) -> MaildirError {
        let path = self.root.join(sub);
        move |source| MaildirError {
            path: path.clone(),
            source,
        }
    }
}

/// The unique part of a Maildir file name: up to its info (`:2,FLAGS`), which a
/// reader changes as it moves a message from new/ to cur/ and sets its flags,
/// and up to the first comma, after which Dovecot, Courier, mbsync and
/// offlineimap add fields of their own (`,S=`, `,W=`, `,U=`, `,FMD5=`).
/// popfetch's own names hold neither.
fn unique_part(name: &str) -> &str {
    name.split([':', ',']).next().unwrap_or(name)
}

/// The host name as the Maildir spec wants it in file names: "/" and ":" escaped,
/// and "," too, so that a name of ours is its own unique part.
fn maildir_host() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    host.replace('/', "\\057")
        .replace(':', "\\072")
        .replace(',', "\\054")
}

impl MaildirTarget {
    /// `SECONDS.MmicrosPpidQseq.HOST`, unique per the Maildir spec's modern form.
    /// The sequence counts for the whole process: accounts synced at once on
    /// threads may share a Maildir and a microsecond.
    fn unique_name(&mut self) -> String {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1;
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            self.pid,
            sequence,
            self.host
        )
    }

    fn holds(&self, name: &str) -> Result<bool, DeliverError> {
        // A reader may have moved it to cur/, adding ":2,FLAGS" to the name (and
        // a sync tool its own fields): see `unique_part`.
        Ok(self.root.join("new").join(name).exists() || self.unique_names()?.contains(name))
    }

    /// The mailboxes whose messages kept until deleted locally this Maildir
    /// holds, as its marker file lists them.
    fn marked(&self) -> Result<Vec<String>, DeliverError> {
        match fs::read_to_string(self.root.join(MARKER)) {
            Ok(text) => Ok(text.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.local(MARKER)(e).into()),
        }
    }

    /// Adds `owner` to the marker file, durably.
    fn mark(&self, owner: &str) -> Result<(), DeliverError> {
        let mut owners = self.marked()?;
        owners.push(owner.to_string());
        let text = owners.join("\n") + "\n";
        durable::replace(&self.root.join(MARKER), text.as_bytes()).map_err(self.local(MARKER))?;
        Ok(())
    }
}

/// Whether `name` is one [`MaildirTarget::unique_name`] makes:
/// `SECONDS.MmicrosPpidQseq.HOST`, one path component.
fn is_own_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = name.splitn(3, '.');
    let (Some(seconds), Some(unique), Some(host)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let unique = unique
        .strip_prefix('M')
        .and_then(|rest| rest.split_once('P'))
        .and_then(|(micros, rest)| Some((micros, rest.split_once('Q')?)))
        .is_some_and(|(micros, (pid, seq))| digits(micros) && digits(pid) && digits(seq));
    digits(seconds) && unique && !host.is_empty() && !host.contains(['/', ':', ',', '\0'])
}

impl MaildirTarget {
    /// Makes every staged file durable (one syncfs on Linux), then links each into new/.
    fn commit_staged(&mut self) -> Result<(), DeliverError> {
        let tmp = self.root.join("tmp");
        durable::sync_files(&tmp, &self.staged).map_err(self.local("tmp"))?;
        let new = self.root.join("new");
        let mut placed = 0;
        let result = self.staged.iter().try_for_each(|name| {
            durable::place(&tmp.join(name), &new.join(name))?;
            placed += 1;
            Ok(())
        });
        self.unsynced |= placed > 0;
        self.staged.drain(..placed);
        result.map_err(self.local("new"))?;
        Ok(())
    }
}

impl Target for MaildirTarget {
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError> {
        let name = self.unique_name();
        announce(&name).map_err(DeliverError::State)?;
        let tmp = self.root.join("tmp").join(&name);
        let mut file = TempFile::create(tmp).map_err(self.local("tmp"))?;
        let size = copy_message(
            message,
            &mut durable::Writeback::new(file.file()),
            self.local("tmp"),
        )?;
        file.keep();
        self.staged.push(name);
        Ok(size)
    }

    fn stages(&self) -> bool {
        true
    }

    fn unstage(&mut self) {
        if let Some(name) = self.staged.pop() {
            let _ = fs::remove_file(self.root.join("tmp").join(name));
        }
    }

    fn flush(&mut self) -> Result<(), DeliverError> {
        if !self.staged.is_empty() {
            let committed = self.commit_staged();
            // Whatever was not placed goes: recovery would remove it anyway.
            for name in self.staged.drain(..) {
                let _ = fs::remove_file(self.root.join("tmp").join(name));
            }
            committed?;
        }
        // new/ is fsynced once for the whole batch, before any DELE. Until then a
        // power cut may take a name back; the durable intent makes the next run look
        // for it, find it missing, and fetch the message again.
        if self.unsynced {
            File::open(self.root.join("new"))
                .and_then(|dir| dir.sync_all())
                .map_err(self.local("new"))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// A delivered file counts as gone only when neither new/ nor cur/ holds its
    /// unique name, whatever its info says, in two listings one after the other,
    /// each new/ first: a reader moves a message from new/ to cur/, so it cannot
    /// slip between them, and a file renamed while a directory is read (which
    /// readdir may then show under neither name, POSIX leaves it open) is seen by
    /// the second. The Maildir must carry the marker of `owner`, written when it
    /// first took such a message: another directory in its place (a disk not
    /// mounted, a path changed) is refused, before anything is delivered into
    /// it or deleted on the strength of its emptiness.
    fn gone(&mut self, locations: &[&str], owner: &str) -> Result<Vec<String>, DeliverError> {
        if !self.marked()?.iter().any(|o| o == owner) {
            if !locations.is_empty() {
                return Err(Unmarked {
                    root: self.root.display().to_string(),
                    owner: owner.to_string(),
                    count: locations.len(),
                }
                .into());
            }
            self.mark(owner)?;
        }
        if locations.is_empty() {
            return Ok(Vec::new());
        }
        let mut missing: Vec<&str> = locations.to_vec();
        for _ in 0..2 {
            let present = self.unique_names()?;
            missing.retain(|name| !present.contains(*name));
            if missing.is_empty() {
                break;
            }
        }
        Ok(missing.into_iter().map(str::to_string).collect())
    }

    fn recover(&mut self, name: &str) -> Result<Recovered, DeliverError> {
        // Joined onto new/ and tmp/ below: anything but a name of our own making
        // could reach outside the Maildir.
        if !is_own_name(name) {
            return Err(DeliverError::BadLocation {
                target: self.root.clone(),
                location: name.to_string(),
            });
        }
        let delivered = self.holds(name)?;
        // Either the run died before the link (a partial file) or between the link
        // and the unlink (a second name for the delivered file): tmp/ goes either way.
        match fs::remove_file(self.root.join("tmp").join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(self.local("tmp")(e).into())
            }
            _ => {}
        }
        Ok(if delivered {
            Recovered::Delivered
        } else {
            Recovered::NotDelivered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(
        md: &mut MaildirTarget,
        message: &mut dyn Read,
    ) -> (Result<u64, DeliverError>, String) {
        let mut location = String::new();
        let result = md.deliver(message, &mut |l| {
            location = l.to_string();
            Ok(())
        });
        // Staged until the batch is committed.
        assert!(!md.root.join("new").join(&location).exists());
        let result = result.and_then(|size| md.flush().map(|()| size));
        (result, location)
    }

    /// A message a reader moved to cur/ or flagged (renamed as mutt and Dovecot
    /// do), or that a sync tool renamed with fields of its own (mbsync's
    /// `,U=`), is not gone; one unlinked is; a Maildir without the mailbox's
    /// marker is refused once messages are kept in it.
    #[test]
    fn only_a_file_gone_from_new_and_cur_counts_as_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Mail");
        let mut md = MaildirTarget::open(&root).unwrap();
        // The first use marks the Maildir as this mailbox's.
        assert!(md.gone(&[], "me@h:110").unwrap().is_empty());
        let names: Vec<String> = (0..5)
            .map(|_| deliver(&mut md, &mut &b"Subject: x\n\nbody\n"[..]).1)
            .collect();
        let (new, cur) = (root.join("new"), root.join("cur"));
        // mutt reads one: new/ to cur/ with its info.
        fs::rename(new.join(&names[0]), cur.join(format!("{}:2,S", names[0]))).unwrap();
        // Dovecot flags one in cur/, then flags it again.
        fs::rename(new.join(&names[1]), cur.join(format!("{}:2,", names[1]))).unwrap();
        fs::rename(
            cur.join(format!("{}:2,", names[1])),
            cur.join(format!("{}:2,FRS", names[1])),
        )
        .unwrap();
        // mbsync gives one its UID.
        fs::rename(
            new.join(&names[4]),
            cur.join(format!("{},U=12:2,S", names[4])),
        )
        .unwrap();
        // One deleted from new/, one expunged from cur/ after its T flag.
        fs::remove_file(new.join(&names[2])).unwrap();
        fs::rename(new.join(&names[3]), cur.join(format!("{}:2,ST", names[3]))).unwrap();
        fs::remove_file(cur.join(format!("{}:2,ST", names[3]))).unwrap();
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut gone = md.gone(&asked, "me@h:110").unwrap();
        gone.sort();
        let mut want = vec![names[2].clone(), names[3].clone()];
        want.sort();
        assert_eq!(gone, want);
        // Another directory in its place (a disk not mounted): refused.
        let mut stand_in = MaildirTarget::open(&dir.path().join("Other")).unwrap();
        let err = stand_in.gone(&asked, "me@h:110").unwrap_err();
        assert!(err.to_string().contains("is not the Maildir"), "{err}");
        // Nor does another mailbox's marker do.
        assert!(md.gone(&asked, "you@h:110").is_err());
    }

    #[test]
    fn delivers_into_new_and_finds_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = MaildirTarget::open(&dir.path().join("Mail")).unwrap();
        let (size, loc) = deliver(&mut md, &mut &b"Subject: x\n\nbody\n"[..]);
        assert_eq!(size.unwrap(), 17);
        let file = dir.path().join("Mail/new").join(&loc);
        assert_eq!(fs::read(&file).unwrap(), b"Subject: x\n\nbody\n");
        assert!(fs::read_dir(dir.path().join("Mail/tmp"))
            .unwrap()
            .next()
            .is_none());
        // Killed between the link and the unlink: the tmp/ name goes too.
        fs::hard_link(&file, dir.path().join("Mail/tmp").join(&loc)).unwrap();
        assert_eq!(md.recover(&loc).unwrap(), Recovered::Delivered);
        assert!(!dir.path().join("Mail/tmp").join(&loc).exists());
        let read = dir.path().join("Mail/cur").join(format!("{loc}:2,S"));
        fs::rename(&file, read).unwrap();
        assert_eq!(md.recover(&loc).unwrap(), Recovered::Delivered);
        let (_, second) = deliver(&mut md, &mut &b"x\n"[..]);
        assert_ne!(loc, second);
    }

    #[test]
    fn recovery_removes_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = MaildirTarget::open(dir.path()).unwrap();
        let name = "1795333438.M142162P31366Q1.host";
        fs::write(dir.path().join("tmp").join(name), b"half").unwrap();
        assert_eq!(md.recover(name).unwrap(), Recovered::NotDelivered);
        assert!(!dir.path().join("tmp").join(name).exists());
    }

    /// Issue 15, bug 8: recovery touches only names of its own making.
    #[test]
    fn recovery_refuses_a_name_it_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = MaildirTarget::open(&dir.path().join("Mail")).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        for name in [
            victim.to_str().unwrap(),
            "../../victim",
            "../victim",
            "..",
            ".",
            "",
            "partial",
            "1.M1P1Q1.",
            "1.M1P1Q1.h/../../victim",
            "1.M1P1Q1.h\0",
            "x.M1P1Q1.host",
        ] {
            assert!(
                matches!(md.recover(name), Err(DeliverError::BadLocation { .. })),
                "{name:?}"
            );
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(is_own_name(&md.unique_name()));
        assert!(is_own_name("1.M1P1Q1.host\\057with.dots"));
    }

    /// Accounts synced at once on threads may deliver into one Maildir: two
    /// targets in one process never make the same name (bench scenario 8 once
    /// failed with EEXIST in tmp/).
    #[test]
    fn two_targets_in_one_process_never_share_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = MaildirTarget::open(dir.path()).unwrap();
        let mut two = MaildirTarget::open(dir.path()).unwrap();
        let sequence = |name: &str| {
            name.split_once('Q')
                .unwrap()
                .1
                .split_once('.')
                .unwrap()
                .0
                .to_string()
        };
        let names = [one.unique_name(), two.unique_name(), one.unique_name()];
        let sequences: std::collections::HashSet<_> = names.iter().map(|n| sequence(n)).collect();
        assert_eq!(sequences.len(), 3, "{names:?}");
    }

    #[test]
    fn failed_read_leaves_nothing() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut md = MaildirTarget::open(dir.path()).unwrap();
        let (result, loc) = deliver(&mut md, &mut Broken);
        assert!(matches!(result, Err(DeliverError::Source(_))));
        assert!(!md.holds(&loc).unwrap());
        assert!(fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }
}
