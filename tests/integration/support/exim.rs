//! A real MTA for one test: Exim as a daemon on loopback ports, with its own config,
//! spool and logs in a temporary directory, delivering every accepted recipient at
//! once into a Maildir of its own under that directory. Stopped when dropped.
//!
//! It offers STARTTLS (and SMTPS on a second port) with the [`certs`] test
//! certificate, AUTH PLAIN and LOGIN (advertised on plaintext connections too, and
//! not required unless [`Exim::set_require_auth`] says so), answers 4xx on purpose
//! ([`Exim::set_tempfail`], [`Exim::set_tempfail_data`]), 5xx for the local part
//! [`REJECTED`] and for any local part without a mailbox ([`Exim::add_mailbox`]).
//!
//! Of the trace headers Exim can add, the transport turns off `Return-Path`,
//! `Envelope-to` and `Delivery-date`: a message arrives with one `Received` field
//! added on top ([`TRACE_HEADERS`]). A message from a remote host (not in submission
//! mode) gets no `Message-ID`, `Date` or `From` fix-ups.
//!
//! Run as root (as in CI), Exim keeps root only to start and runs as Debian's
//! `Debian-exim` user, which owns the spool and the Maildirs; run as another user it
//! runs as that user.

use super::daemon::listening;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dovecot::{certs, free_port, stop};

const EXIM: &str = "/usr/sbin/exim4";

/// The credentials the AUTH PLAIN and LOGIN authenticators accept.
pub const SMTP_USER: &str = "smtpuser";
pub const SMTP_PASSWORD: &str = "smtp secret";
/// The domain Exim delivers locally; a bare local part is qualified with it.
pub const DOMAIN: &str = "test.example";
/// The local part Exim refuses at RCPT with a 550 ([`REJECT_TEXT`]).
pub const REJECTED: &str = "rejectme";
pub const REJECT_TEXT: &str = "rejectme: no such user here";
/// The text of the 451 [`Exim::set_tempfail`] and [`Exim::set_tempfail_data`] give.
pub const TEMPFAIL_TEXT: &str = "test tempfail on purpose";
/// The headers Exim puts on top of a message it delivers, as configured here.
pub const TRACE_HEADERS: &[&str] = &["Received"];

pub struct Exim {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    smtps_port: u16,
    uid: u32,
    gid: u32,
}

/// The uid and gid (and name) Exim runs and delivers as.
fn identity() -> (u32, u32, String) {
    let id = |args: &[&str]| {
        let out = Command::new("id").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if id(&["-u"]) == "0" {
        let uid = id(&["-u", "Debian-exim"])
            .parse()
            .expect("the Debian-exim system user is missing: apt-get install exim4-daemon-light");
        let gid = id(&["-g", "Debian-exim"]).parse().unwrap();
        (uid, gid, "Debian-exim".into())
    } else {
        (
            id(&["-u"]).parse().unwrap(),
            id(&["-g"]).parse().unwrap(),
            id(&["-un"]),
        )
    }
}

/// An Exim condition true when the two variables hold the test's credentials.
fn credentials_condition(user: &str, password: &str) -> String {
    "${if and{{eq{@U}{@SMTP_USER}}{eq{@P}{@SMTP_PASSWORD}}}}"
        .replace("@SMTP_USER", SMTP_USER)
        .replace("@SMTP_PASSWORD", SMTP_PASSWORD)
        .replace("@U", user)
        .replace("@P", password)
}

impl Exim {
    /// Starts Exim on fresh loopback ports with the mailboxes `alice` and `bob`,
    /// retrying when a port it was given was taken in the meantime.
    pub fn start() -> Exim {
        assert!(
            Path::new(EXIM).exists(),
            "Exim is not installed: apt-get install exim4-daemon-light (scripts/test-deps.sh)"
        );
        super::daemon::started("Exim", Exim::try_start)
    }

    fn try_start() -> Result<Exim, String> {
        let certs = certs();
        let dir = tempfile::Builder::new()
            .prefix("popfetch-exim")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid, user) = identity();
        for sub in ["spool", "log", "mail"] {
            let path = dir.path().join(sub);
            fs::create_dir_all(&path).unwrap();
            chown(&path, Some(uid), Some(gid)).unwrap();
        }
        let root = dir.path().display().to_string();
        let (port, smtps_port) = (free_port(), free_port());
        // `$` is Exim's, `{{ }}` are format!'s braces.
        let config = format!(
            r#"
primary_hostname = localhost
qualify_domain = {DOMAIN}
domainlist local_domains = {DOMAIN} : localhost
spool_directory = {root}/spool
split_spool_directory = false
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
exim_user = {user}
exim_group = {gid}
never_users = root
trusted_users = {user}
keep_environment =
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
recipient_unqualified_hosts = *
sender_unqualified_hosts = *
queue_only = false
smtp_accept_queue_per_connection = 0
received_headers_max = 1000
message_size_limit = 0
check_spool_space = 0
check_log_space = 0
smtp_receive_timeout = 30s
timeout_frozen_after = 0s
ignore_bounce_errors_after = 0s
daemon_smtp_ports = {port} : {smtps_port}
local_interfaces = <; 127.0.0.1.{port} ; 127.0.0.1.{smtps_port}
tls_on_connect_ports = {smtps_port}
tls_advertise_hosts = ${{if exists{{{root}/no-starttls}}{{}}{{*}}}}
tls_certificate = {cert}
tls_privatekey = {key}
auth_advertise_hosts = *
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl

acl_rcpt:
  deny    condition = ${{if exists{{{root}/require-auth}}}}
          !authenticated = *
          message = 530 5.7.0 authentication required
  defer   condition = ${{if exists{{{root}/tempfail}}}}
          message = 451 4.3.0 {TEMPFAIL_TEXT}
  deny    local_parts = {REJECTED}
          message = 550 5.1.1 {REJECT_TEXT}
  require verify = recipient
  accept

acl_data:
  defer   condition = ${{if exists{{{root}/tempfail-data}}}}
          message = 451 4.3.0 {TEMPFAIL_TEXT}
  accept

begin routers

local:
  driver = accept
  domains = +local_domains
  local_parts = dsearch;{root}/mail
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = {root}/mail/$local_part_data
  maildir_format
  create_directory
  delivery_date_add = false
  envelope_to_add = false
  return_path_add = false
  user = {user}
  group = {gid}
  mode = 0644

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_condition = {plain_condition}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = {login_condition}
  server_set_id = $auth1
"#,
            cert = certs.cert.display(),
            key = certs.key.display(),
            plain_condition = credentials_condition("$auth2", "$auth3"),
            login_condition = credentials_condition("$auth1", "$auth2"),
        );
        let conf = dir.path().join("exim.conf");
        fs::write(&conf, config).unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
        let stderr = fs::File::create(dir.path().join("exim.stderr")).unwrap();
        // -bdf: the listening daemon, in the foreground (so it is our child);
        // -odi: each message delivered before the reply to its data.
        let child = Command::new(EXIM)
            .arg("-C")
            .arg(&conf)
            .args(["-bdf", "-odi"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut server = Exim {
            dir,
            child,
            port,
            smtps_port,
            uid,
            gid,
        };
        server.add_mailbox("alice");
        server.add_mailbox("bob");
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let ports = [self.port, self.smtps_port];
        let dir = self.dir.path();
        super::daemon::wait_until(&mut self.child, || listening(&ports), || log_in(dir))
    }

    /// SMTP on 127.0.0.1, STARTTLS offered (unless [`Exim::set_starttls`] is off).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SMTP over implicit TLS (SMTPS) on 127.0.0.1.
    pub fn smtps_port(&self) -> u16 {
        self.smtps_port
    }

    /// Exim's main, reject and panic logs, and its stderr (where a daemon started
    /// by a user other than root writes its log lines).
    pub fn log(&self) -> String {
        log_in(self.dir.path())
    }

    /// Gives the local part a Maildir, so that Exim accepts mail for it (a local
    /// part without one is refused at RCPT with a 550).
    pub fn add_mailbox(&self, local_part: &str) {
        let path = self.dir.path().join("mail").join(local_part);
        fs::create_dir_all(&path).unwrap();
        chown(&path, Some(self.uid), Some(self.gid)).unwrap();
    }

    /// The Maildir of a recipient (`alice` or `alice@test.example`).
    pub fn maildir_of(&self, recipient: &str) -> PathBuf {
        let local = recipient.split('@').next().unwrap().to_ascii_lowercase();
        self.dir.path().join("mail").join(local)
    }

    /// The messages delivered to a recipient, byte for byte as stored (LF line
    /// ends, the [`TRACE_HEADERS`] on top); sorted.
    pub fn messages_of(&self, recipient: &str) -> Vec<Vec<u8>> {
        self.settle();
        super::home::maildir_messages(&self.maildir_of(recipient))
    }

    /// Waits (up to ten seconds) until no accepted message is still on its way:
    /// Exim may answer 250 to the data before the delivery process is done, and a
    /// message is in the spool's input directory until then.
    pub fn settle(&self) {
        let input = self.dir.path().join("spool/input");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_dir(&input).is_ok_and(|mut d| d.next().is_some()) {
            if Instant::now() > deadline {
                panic!("Exim still has messages in its spool:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn flag(&self, name: &str, on: bool) {
        let path = self.dir.path().join(name);
        if on {
            fs::write(&path, "").unwrap();
        } else {
            let _ = fs::remove_file(&path);
        }
    }

    /// While on, every RCPT gets `451 4.3.0 test tempfail on purpose`.
    pub fn set_tempfail(&self, on: bool) {
        self.flag("tempfail", on);
    }

    /// While on, the end of every DATA gets `451 4.3.0 test tempfail on purpose`.
    pub fn set_tempfail_data(&self, on: bool) {
        self.flag("tempfail-data", on);
    }

    /// While on, RCPT without AUTH gets a 530.
    pub fn set_require_auth(&self, on: bool) {
        self.flag("require-auth", on);
    }

    /// Whether EHLO offers STARTTLS (on by default).
    pub fn set_starttls(&self, on: bool) {
        self.flag("no-starttls", !on);
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Exim's logs under `dir`, and its stderr.
fn log_in(dir: &Path) -> String {
    let log = dir.join("log");
    ["mainlog", "rejectlog", "paniclog"]
        .iter()
        .map(|f| log.join(f))
        .chain([dir.join("exim.stderr")])
        .map(|f| fs::read_to_string(f).unwrap_or_default())
        .collect()
}
