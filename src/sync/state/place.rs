//! Where the state of one mailbox lives: the file names in the state directory,
//! derived from the mailbox (`user@host:port`), and the older per-account file.

use std::path::{Path, PathBuf};

use crate::config::Account;

/// Where the state of one mailbox lives, and whose it is.
///
/// Why a DELE is only ever planned on the strength of records this mailbox's own
/// sessions wrote (issue 15, bug 2):
/// - The file is named after the mailbox, `user@host:port` with the host lowercased,
///   escaped so that the naming is one-to-one ([`mailbox_key`]): sessions of another
///   mailbox open another file, whatever their account is called and whichever
///   config names it; an account renamed keeps its file.
/// - Its header names the mailbox again, and a file whose header names another one
///   (copied or renamed by hand) is refused, never read, trusted or pruned.
/// - The lock beside it is per mailbox too, so two sessions of one mailbox never
///   write at once.
/// - Records that no session of this mailbox provably wrote — a format-1 file
///   adopted from `STATE_DIR/NAME.state`, which named no mailbox, and UIDs imported
///   from another tool — are `L` records: [`crate::sync::policy::Known::own`] says no for
///   them, and the policy then keeps the message on the server rather than delete
///   it unfetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub(super) dir: PathBuf,
    /// The mailbox, escaped: see [`mailbox_key`].
    mailbox: String,
    /// The file name without its extension: the mailbox, or a digest of a long one.
    stem: String,
    /// `STATE_DIR/NAME.state`, where popfetch kept an account's state in format 1.
    pub(super) legacy: Option<PathBuf>,
}

impl Place {
    /// The state of an account's mailbox: found by `user@host:port`, not by the
    /// account's name, so that two configs naming their accounts alike never share
    /// one, and a renamed account keeps its own (issue 15, bug 2).
    pub(crate) fn of(account: &Account) -> Place {
        Place::new(
            &account.state_dir,
            mailbox_key(&account.user, &account.host, account.port),
            Some(&account.name),
        )
    }

    /// The state of `mailbox` (from [`mailbox_key`]) in `dir`; `account` is the name
    /// an older popfetch filed it under.
    pub(crate) fn new(dir: &Path, mailbox: String, account: Option<&str>) -> Place {
        // NAME_MAX is 255; a longer key keeps a readable start and a digest.
        let stem = if mailbox.len() <= 200 {
            mailbox.clone()
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(mailbox.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            let mut cut = 160;
            while !mailbox.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}~{hex}", &mailbox[..cut])
        };
        Place {
            dir: dir.to_path_buf(),
            legacy: account.map(|name| dir.join(format!("{name}.state"))),
            mailbox,
            stem,
        }
    }

    /// `STATE_DIR/MAILBOX.state`: the journal.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.state", self.stem))
    }

    /// `STATE_DIR/MAILBOX.lock`: one sync of the mailbox at a time.
    pub(crate) fn lock(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }

    /// `STATE_DIR/MAILBOX.glance`: what the last session that left nothing to do
    /// saw of the mailbox (see `sync::glance`).
    pub(crate) fn glance(&self) -> PathBuf {
        self.dir.join(format!("{}.glance", self.stem))
    }

    /// `STATE_DIR/MAILBOX.synced`: the journal's length as of its last fsync.
    pub(crate) fn witness(&self) -> PathBuf {
        self.dir.join(format!("{}.synced", self.stem))
    }

    pub(crate) fn mailbox(&self) -> &str {
        &self.mailbox
    }
}

/// `user@host:port` as one safe file name and header word: the host lowercased,
/// and in the user and the host every byte but `A-Z a-z 0-9 . _ + -` written `%XX`,
/// so `@`, `:`, `/`, spaces and control characters never appear raw and no two
/// mailboxes share a key.
pub(super) fn mailbox_key(user: &str, host: &str, port: u16) -> String {
    fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    format!(
        "{}@{}:{port}",
        escape(user),
        escape(&host.to_ascii_lowercase())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_keys_are_safe_file_names_and_one_to_one() {
        assert_eq!(
            mailbox_key("me", "Pop.Example.COM", 995),
            "me@pop.example.com:995"
        );
        assert_eq!(
            mailbox_key("a@b/../c d", "::1", 110),
            "a%40b%2F..%2Fc%20d@%3A%3A1:110"
        );
        // `@` in the user cannot pass for the separator.
        assert_ne!(mailbox_key("a@b", "c", 1), mailbox_key("a", "b@c", 1));
        let long = Place::new(Path::new("/s"), mailbox_key(&"x".repeat(300), "h", 1), None);
        let name = long.path().file_name().unwrap().len();
        assert!(name < 255, "{name}");
        let other = Place::new(Path::new("/s"), mailbox_key(&"x".repeat(301), "h", 1), None);
        assert_ne!(long.path(), other.path());
    }
}
