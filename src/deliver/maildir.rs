//! Delivery into a Maildir (https://cr.yp.to/proto/maildir.html): a file with a unique
//! name is written in tmp/, fsynced, linked into new/, and new/ is fsynced.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{copy_message, DeliverError, Target};
use crate::durable::{self, TempFile};

pub struct MaildirTarget {
    root: PathBuf,
    host: String,
    pid: u32,
    sequence: u64,
}

impl MaildirTarget {
    /// Opens the Maildir at `root`, creating it and its tmp/, new/ and cur/ as needed.
    pub fn open(root: &Path) -> Result<MaildirTarget, DeliverError> {
        for sub in ["tmp", "new", "cur"] {
            let dir = root.join(sub);
            durable::create_dir_all(&dir).map_err(|source| DeliverError::Local {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(MaildirTarget {
            root: root.to_path_buf(),
            host: maildir_host(),
            pid: std::process::id(),
            sequence: 0,
        })
    }

    fn local(&self, sub: &str) -> impl Fn(io::Error) -> DeliverError {
        let path = self.root.join(sub);
        move |source| DeliverError::Local {
            path: path.clone(),
            source,
        }
    }
}

/// The host name as the Maildir spec wants it in file names: "/" and ":" escaped.
fn maildir_host() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    host.replace('/', "\\057").replace(':', "\\072")
}

impl Target for MaildirTarget {
    /// `SECONDS.MmicrosPpidQseq.HOST`, unique per the Maildir spec's modern form.
    fn reserve(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.sequence += 1;
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            self.pid,
            self.sequence,
            self.host
        )
    }

    fn deliver(&mut self, location: &str, message: &mut dyn Read) -> Result<u64, DeliverError> {
        let tmp = self.root.join("tmp").join(location);
        let mut file = TempFile::create(tmp).map_err(self.local("tmp"))?;
        let size = copy_message(message, file.file(), self.local("tmp"))?;
        file.link_into(&self.root.join("new").join(location))
            .map_err(self.local("new"))?;
        Ok(size)
    }

    fn holds(&self, location: &str) -> Result<bool, DeliverError> {
        if self.root.join("new").join(location).exists() {
            return Ok(true);
        }
        // A reader may have moved it to cur/, adding ":2,FLAGS" to the name.
        let cur = self.root.join("cur");
        for entry in fs::read_dir(&cur).map_err(self.local("cur"))? {
            let name = entry.map_err(self.local("cur"))?.file_name();
            let name = name.to_string_lossy();
            if name == location || name.starts_with(&format!("{location}:")) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn discard(&self, location: &str) -> Result<(), DeliverError> {
        match fs::remove_file(self.root.join("tmp").join(location)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.local("tmp")(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_into_new_and_finds_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = MaildirTarget::open(&dir.path().join("Mail")).unwrap();
        let loc = md.reserve();
        assert_ne!(loc, md.reserve());
        let size = md.deliver(&loc, &mut &b"Subject: x\n\nbody\n"[..]).unwrap();
        assert_eq!(size, 17);
        let file = dir.path().join("Mail/new").join(&loc);
        assert_eq!(fs::read(&file).unwrap(), b"Subject: x\n\nbody\n");
        assert!(fs::read_dir(dir.path().join("Mail/tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(md.holds(&loc).unwrap());
        fs::rename(
            &file,
            dir.path().join("Mail/cur").join(format!("{loc}:2,S")),
        )
        .unwrap();
        assert!(md.holds(&loc).unwrap());
        assert!(!md.holds("other").unwrap());
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
        let loc = md.reserve();
        assert!(matches!(
            md.deliver(&loc, &mut Broken),
            Err(DeliverError::Source(_))
        ));
        assert!(!md.holds(&loc).unwrap());
        assert!(fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }
}
