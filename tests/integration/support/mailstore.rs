//! A real Dovecot as a *delivery* server for one test: LMTP (a unix socket in the
//! test directory and a TCP port) and IMAP (plain with STARTTLS, and implicit TLS),
//! on loopback only, with its own config, users and Maildirs. A second instance
//! beside the POP3 [`super::Dovecot`], which it does not change. Stopped when dropped.
//!
//! Dovecot's LMTP adds `Return-Path`, `Delivered-To` and `Received` at the top of
//! each message it stores; IMAP APPEND adds nothing. It stores LF line ends.

use super::daemon::{dovecot_logs, listening};
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::dovecot::{certs, free_port, identities, stop};

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
const LMTP_MODULE: &str = "/usr/lib/dovecot/lmtp";
const IMAP_MODULE: &str = "/usr/lib/dovecot/imap";

/// The user every mail store starts with.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice's imap password";

/// The headers Dovecot's LMTP puts on top of a message it stores.
pub const LMTP_TRACE_HEADERS: &[&str] = &["Return-Path", "Delivered-To", "Received"];

pub struct MailStore {
    dir: tempfile::TempDir,
    child: Child,
    lmtp_port: u16,
    imap_port: u16,
    imaps_port: u16,
    mail_uid: u32,
    mail_gid: u32,
}

impl MailStore {
    /// Starts the mail store on fresh loopback ports, retrying when a port it was
    /// given was taken in the meantime by another test.
    pub fn start() -> MailStore {
        for (path, package) in [
            (DOVECOT, "dovecot-core"),
            (LMTP_MODULE, "dovecot-lmtpd"),
            (IMAP_MODULE, "dovecot-imapd"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: apt-get install {package} (scripts/test-deps.sh)"
            );
        }
        super::daemon::started("the Dovecot mail store (LMTP, IMAP)", MailStore::try_start)
    }

    fn try_start() -> Result<MailStore, String> {
        let certs = certs();
        let dir = tempfile::Builder::new()
            .prefix("popfetch-mailstore")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (mail_uid, mail_gid, internal_user, login_user) = identities();
        let root = dir.path().display().to_string();
        let (lmtp_port, imap_port, imaps_port) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = popfetch-mailstore-{lmtp_port}
hostname = localhost
protocols = lmtp imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_failure_delay = 0
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_internal_group = {internal_user}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_plugins = quota
quota_full_tempfail = yes
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service lmtp {{
  unix_listener {root}/lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
"#,
            cert = certs.cert.display(),
            key = certs.key.display(),
        );
        let conf = dir.path().join("dovecot.conf");
        fs::write(&conf, config).unwrap();
        let home = dir.path().join("home");
        fs::create_dir_all(&home).unwrap();
        chown(&home, Some(mail_uid), Some(mail_gid)).unwrap();
        let stderr = fs::File::create(dir.path().join("dovecot.stderr")).unwrap();
        let child = Command::new(DOVECOT)
            .args(["-F", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut server = MailStore {
            dir,
            child,
            lmtp_port,
            imap_port,
            imaps_port,
            mail_uid,
            mail_gid,
        };
        server.write_passwd(&[(USER, false)]);
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let ports = [self.lmtp_port, self.imap_port, self.imaps_port];
        let socket = self.lmtp_socket();
        let dir = self.dir.path();
        let ready = || listening(&ports) && socket.exists();
        super::daemon::wait_until(&mut self.child, ready, || dovecot_logs(dir))
    }

    /// The users and whether each is over quota, as the passwd file says.
    fn users(&self) -> Vec<(String, bool)> {
        fs::read_to_string(self.dir.path().join("passwd"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                (
                    l.split(':').next().unwrap().to_string(),
                    l.contains("storage=1B"),
                )
            })
            .collect()
    }

    /// Writes the passwd file (both passdb and userdb): every user has the same
    /// password; one over quota gets a storage limit of one byte (the others ten
    /// gigabytes), so that LMTP
    /// answers 452 (`quota_full_tempfail`) and IMAP APPEND `NO [OVERQUOTA]`. Dovecot
    /// reads the file again when it changes.
    fn write_passwd(&self, users: &[(&str, bool)]) {
        let mut text = String::new();
        for (user, over) in users {
            let home = self.dir.path().join("home").join(user);
            // Always a rule: without one, the Maildir++ quota keeps the last limit
            // it wrote in maildirsize.
            let quota = if *over {
                "userdb_quota_rule=*:storage=1B"
            } else {
                "userdb_quota_rule=*:storage=10G"
            };
            text.push_str(&format!(
                "{user}:{{PLAIN}}{PASSWORD}:{}:{}::{}::{quota}\n",
                self.mail_uid,
                self.mail_gid,
                home.display()
            ));
        }
        let path = self.dir.path().join("passwd");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }

    /// Adds a user with [`PASSWORD`], within quota.
    pub fn add_user(&self, user: &str) {
        let mut users = self.users();
        if !users.iter().any(|(u, _)| u == user) {
            users.push((user.to_string(), false));
        }
        self.rewrite(users);
    }

    /// Puts `user` over quota (every delivery fails with a temporary error), or
    /// lifts the limit again.
    pub fn set_over_quota(&self, user: &str, over: bool) {
        let mut users = self.users();
        let entry = users
            .iter_mut()
            .find(|(u, _)| u == user)
            .unwrap_or_else(|| panic!("no user {user} in the mail store"));
        entry.1 = over;
        self.rewrite(users);
    }

    fn rewrite(&self, users: Vec<(String, bool)>) {
        let borrowed: Vec<(&str, bool)> = users.iter().map(|(u, o)| (u.as_str(), *o)).collect();
        self.write_passwd(&borrowed);
        // passwd-file notices a change by its mtime, to the second: make sure a
        // rewrite within the same second as the last one is seen.
        std::thread::sleep(Duration::from_millis(1100));
    }

    /// The LMTP unix socket (for `deliver = "lmtp:/path"`).
    pub fn lmtp_socket(&self) -> PathBuf {
        self.dir.path().join("lmtp")
    }

    /// LMTP on 127.0.0.1.
    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port
    }

    /// IMAP on 127.0.0.1, STARTTLS offered (and plaintext login allowed).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// IMAP over implicit TLS on 127.0.0.1, with the [`certs`] test certificate.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    pub fn user(&self) -> &'static str {
        USER
    }

    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The Maildir of `user`'s `folder` ("" or "INBOX" for the inbox); Dovecot's
    /// default Maildir++ layout keeps a folder in `.Folder`.
    pub fn maildir_of(&self, user: &str, folder: &str) -> PathBuf {
        let root = self.dir.path().join("home").join(user).join("Maildir");
        if folder.is_empty() || folder.eq_ignore_ascii_case("INBOX") {
            root
        } else {
            root.join(format!(".{folder}"))
        }
    }

    /// The messages of `user`'s `folder`, byte for byte as stored, read straight
    /// from the Maildir files; sorted.
    pub fn maildir_messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        super::home::maildir_messages(&self.maildir_of(user, folder))
    }

    /// Whether `user` has a folder of that name.
    pub fn has_folder(&self, user: &str, folder: &str) -> bool {
        self.maildir_of(user, folder).is_dir()
    }

    /// The messages of `user`'s `folder` ("" for INBOX) as Dovecot hands them out,
    /// through `doveadm fetch`, byte for byte; sorted. A folder that does not exist
    /// has none.
    ///
    /// doveadm's pager format prints `size.physical: N\ntext:\n`, the message, a
    /// newline when the message does not end with one, and between records a form
    /// feed line ("\x0c\n"); the physical size says exactly where the message ends.
    pub fn messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let folder = if folder.is_empty() { "INBOX" } else { folder };
        let out = self.doveadm_fetch("pager", user, "size.physical text", folder);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("doesn't exist") {
                return Vec::new();
            }
            panic!("doveadm fetch -u {user} mailbox {folder}: {err}");
        }
        let mut messages = parse_fetch(&out.stdout);
        messages.sort();
        messages
    }

    /// The INTERNALDATE (Dovecot's received date) of each message in `user`'s
    /// `folder`, as Unix times, sorted: `doveadm fetch date.received.unixtime`.
    pub fn internal_dates(&self, user: &str, folder: &str) -> Vec<i64> {
        let out = self.doveadm_fetch("flow", user, "date.received.unixtime", folder);
        assert!(
            out.status.success(),
            "doveadm fetch date.received: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut dates: Vec<i64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once('=').map(|(_, v)| v.trim().parse().unwrap()))
            .collect();
        dates.sort();
        dates
    }

    /// `doveadm -f FORMAT fetch -u USER FIELDS mailbox FOLDER all` against this
    /// instance.
    fn doveadm_fetch(&self, format: &str, user: &str, fields: &str, folder: &str) -> Output {
        Command::new(DOVEADM)
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .args([
                "-f", format, "fetch", "-u", user, fields, "mailbox", folder, "all",
            ])
            .output()
            .expect("doveadm comes with dovecot-core: apt-get install dovecot-core")
    }
}

/// Splits doveadm's `-f pager` output of the fields `size.physical text`.
fn parse_fetch(mut out: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while !out.is_empty() {
        let rest = out
            .strip_prefix(b"size.physical: ")
            .unwrap_or_else(|| panic!("doveadm: {:?}", String::from_utf8_lossy(out)));
        let eol = rest.iter().position(|&b| b == b'\n').unwrap();
        let size: usize = std::str::from_utf8(&rest[..eol]).unwrap().parse().unwrap();
        let rest = rest[eol + 1..]
            .strip_prefix(b"text:\n")
            .expect("doveadm: a text field");
        messages.push(rest[..size].to_vec());
        let mut rest = &rest[size..];
        if !messages.last().unwrap().ends_with(b"\n") {
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        out = rest.strip_prefix(b"\x0c\n").unwrap_or(rest);
    }
    messages
}

impl Drop for MailStore {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Removes the named header fields (with their continuation lines) from the top of
/// a message's header, where a receiving server puts its trace fields; the rest is
/// left byte for byte.
pub fn strip_trace(message: &[u8], names: &[&str]) -> Vec<u8> {
    let mut rest = message;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let ours = line.contains(&b':')
            && names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name));
        if !ours {
            return rest.to_vec();
        }
        rest = &rest[end..];
        while rest.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            rest = &rest[end..];
        }
    }
}
