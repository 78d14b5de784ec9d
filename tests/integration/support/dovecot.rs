//! A real Dovecot POP3 server for one test: its own config, user, Maildir and a CA of
//! its own, listening on loopback ports only. Stopped when dropped.

use super::daemon::{dovecot_logs, listening};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";

/// The key Dovecot checks OAuth2 tokens with.
const OAUTH_KEY: &[u8] = b"popfetch-test-oauth-key-0123456789";

const DOVECOT: &str = "/usr/sbin/dovecot";

pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
    /// Plain POP3 (STLS offered).
    pub port: u16,
    /// POP3 over implicit TLS.
    pub tls_port: u16,
    /// Same listeners on 127.0.0.2, whose address the certificate does not name.
    pub wrong_name_host: &'static str,
    mail_uid: u32,
    mail_gid: u32,
    seq: AtomicU32,
}

/// The test CA and a server certificate for localhost and 127.0.0.1, made once.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("certs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ext = dir.join("ext.cnf");
        fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                &["req", "-x509"],
                &EC_KEY[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "3",
                    "-subj",
                    "/CN=popfetch test CA",
                ],
            ]
            .concat(),
        );
        issue(&dir, "server");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        for f in ["server.key", "server.pem", "ca.pem"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    })
}

/// Certificates a client must refuse, each with its key: (certificate, key).
pub struct BadCerts {
    pub self_signed: (PathBuf, PathBuf),
    pub unknown_root: (PathBuf, PathBuf),
    pub wrong_name: (PathBuf, PathBuf),
    pub expired: (PathBuf, PathBuf),
    pub not_yet_valid: (PathBuf, PathBuf),
}

pub fn bad_certs() -> &'static BadCerts {
    static BAD: OnceLock<BadCerts> = OnceLock::new();
    BAD.get_or_init(|| {
        let good = certs();
        let dir = good.ca.parent().unwrap().join("bad");
        fs::create_dir_all(dir.join("newcerts")).unwrap();
        let ec = EC_KEY;
        let pair = |name: &str| (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        // Self-signed, for the right name.
        openssl(&dir, &[&["req", "-x509"], &ec[..], &["-keyout", "self.key", "-out", "self.pem", "-days", "3", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]].concat());
        // Signed by a CA the client does not trust.
        openssl(&dir, &[&["req", "-x509"], &ec[..], &["-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "3", "-subj", "/CN=unknown CA"]].concat());
        openssl(&dir, &[&["req"], &ec[..], &["-keyout", "unknown.key", "-out", "unknown.csr", "-subj", "/CN=localhost"]].concat());
        fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        fs::write(dir.join("wrong.cnf"), "subjectAltName=DNS:wrong.example\n").unwrap();
        openssl(&dir, &["x509", "-req", "-in", "unknown.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key", "-CAcreateserial", "-out", "unknown.pem", "-days", "3", "-extfile", "ext.cnf"]);
        // Signed by the trusted CA, but for another name, or outside its dates.
        let ca_dir = good.ca.parent().unwrap();
        let ca = |csr: &str, out: &str, ext: &str, start: &str, end: &str| {
            fs::write(dir.join("index.txt"), "").unwrap();
            fs::write(dir.join("serial"), format!("{:08X}\n", rand_serial())).unwrap();
            fs::write(
                dir.join("ca.cnf"),
                format!(
                    "[ca]\ndefault_ca = test\n[test]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}/newcerts\nserial = {d}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n[any]\ncommonName = supplied\n",
                    d = dir.display()
                ),
            )
            .unwrap();
            openssl(&dir, &["ca", "-batch", "-config", "ca.cnf", "-cert", &ca_dir.join("ca.pem").display().to_string(), "-keyfile", &ca_dir.join("ca.key").display().to_string(), "-in", csr, "-out", out, "-startdate", start, "-enddate", end, "-extfile", ext, "-notext"]);
        };
        for name in ["wrong", "expired", "future"] {
            openssl(&dir, &[&["req"], &ec[..], &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", "/CN=localhost"]].concat());
        }
        ca("wrong.csr", "wrong.pem", "wrong.cnf", "20240101000000Z", "20990101000000Z");
        ca("expired.csr", "expired.pem", "ext.cnf", "20200101000000Z", "20200201000000Z");
        ca("future.csr", "future.pem", "ext.cnf", "20900101000000Z", "20990101000000Z");
        BadCerts {
            self_signed: pair("self"),
            unknown_root: pair("unknown"),
            wrong_name: pair("wrong"),
            expired: pair("expired"),
            not_yet_valid: pair("future"),
        }
    })
}

fn rand_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 0x1000
}

/// The server certificate and key of the good test CA, for scripted TLS servers.
pub fn good_cert() -> (PathBuf, PathBuf) {
    (certs().cert.clone(), certs().key.clone())
}

/// A second certificate for localhost and 127.0.0.1 from the test CA, and its key:
/// one the client trusts as much as the server's, for a man in the middle.
pub fn other_good_cert() -> (PathBuf, PathBuf) {
    static OTHER: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    OTHER
        .get_or_init(|| {
            let dir = certs().ca.parent().unwrap().to_path_buf();
            issue(&dir, "other");
            (dir.join("other.pem"), dir.join("other.key"))
        })
        .clone()
}

/// The elliptic-curve key every test certificate has.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// `NAME.pem` and `NAME.key` in `dir`: a certificate for localhost and
/// 127.0.0.1 (`ext.cnf`) that the test CA there signs.
fn issue(dir: &Path, name: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subject = ["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"];
    openssl(dir, &[&["req"], &EC_KEY[..], &subject[..]].concat());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "3",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed to make test certificates: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The uid, gid and user names Dovecot's processes run as. Dovecot refuses to run
/// its login processes as root and to give mail to uid 0, so as root we use the
/// system users that Debian's package creates; otherwise everything is us.
pub fn identities() -> (u32, u32, String, String) {
    let uid = euid();
    if uid == 0 {
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, "dovecot"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .expect("the dovecot system user is missing: apt-get install dovecot-pop3d")
        };
        (id("-u"), id("-g"), "dovecot".into(), "dovenull".into())
    } else {
        let name = String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout)
            .trim()
            .to_string();
        let gid = String::from_utf8_lossy(&Command::new("id").arg("-g").output().unwrap().stdout)
            .trim()
            .parse()
            .unwrap();
        (uid, gid, name.clone(), name)
    }
}

fn euid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl Dovecot {
    /// Starts Dovecot on fresh loopback ports, retrying when a port it was given
    /// was taken in the meantime by another test.
    pub fn start() -> Dovecot {
        Dovecot::start_with("")
    }

    /// A Dovecot with `extra` added to its configuration.
    pub fn start_with(extra: &str) -> Dovecot {
        super::daemon::started("Dovecot", || Dovecot::try_start(extra))
    }

    fn try_start(extra: &str) -> Result<Dovecot, String> {
        assert!(
            Path::new(DOVECOT).exists(),
            "Dovecot is not installed: apt-get install dovecot-pop3d (see .ci/run)"
        );
        let certs = certs();
        let dir = tempfile::Builder::new()
            .prefix("popfetch-dovecot")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (mail_uid, mail_gid, internal_user, login_user) = identities();
        let root = dir.path().display().to_string();
        let (port, tls_port) = (free_port(), free_port());
        fs::write(
            dir.path().join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}\n"),
        )
        .unwrap();
        let config = format!(
            r#"
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = popfetch-test-{port}
hostname = localhost
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_failure_delay = 0
auth_mechanisms = plain login apop cram-md5 scram-sha-1 scram-sha-256 xoauth2 oauthbearer
default_internal_user = {internal_user}
default_internal_group = {internal_user}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/home/%u
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1 127.0.0.2
    port = {port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1 127.0.0.2
    port = {tls_port}
    ssl = yes
  }}
}}
service imap-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
{extra}
"#,
            cert = certs.cert.display(),
            key = certs.key.display(),
        );
        // OAuth2 bearer tokens are JWTs checked locally against an HS256 key
        // (Dovecot's local validation), so no token server is needed.
        let keys = dir.path().join("keys/default/HS256");
        fs::create_dir_all(&keys).unwrap();
        fs::write(keys.join("default"), BASE64.encode(OAUTH_KEY)).unwrap();
        fs::write(
            dir.path().join("oauth2.conf.ext"),
            format!(
                "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={root}/keys/\nusername_attribute = sub\n"
            ),
        )
        .unwrap();
        let conf = dir.path().join("dovecot.conf");
        fs::write(&conf, config).unwrap();
        let stderr = fs::File::create(dir.path().join("dovecot.stderr")).unwrap();
        let child = Command::new(DOVECOT)
            .args(["-F", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut server = Dovecot {
            dir,
            child,
            port,
            tls_port,
            wrong_name_host: "127.0.0.2",
            mail_uid,
            mail_gid,
            seq: AtomicU32::new(0),
        };
        server.make_maildir();
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let ports = [self.port, self.tls_port];
        let dir = self.dir.path();
        super::daemon::wait_until(&mut self.child, || listening(&ports), || dovecot_logs(dir))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// A signed OAuth2 access token (JWT) for `subject`, valid for an hour.
    pub fn oauth_token(&self, subject: &str) -> String {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = url.encode(r#"{"alg":"HS256","typ":"JWT","kid":"default"}"#);
        let claims = url.encode(format!(
            r#"{{"sub":"{subject}","iat":{now},"nbf":{},"exp":{}}}"#,
            now - 60,
            now + 3600
        ));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(OAUTH_KEY).unwrap();
        mac.update(format!("{header}.{claims}").as_bytes());
        let signature = url.encode(mac.finalize().into_bytes());
        format!("{header}.{claims}.{signature}")
    }

    /// The user's Maildir on the server.
    pub fn maildir(&self) -> PathBuf {
        self.maildir_of(USER)
    }

    /// The Maildir on the server of `user`, added by [`Dovecot::add_user`].
    pub fn maildir_of(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user).join("Maildir")
    }

    /// Adds a second mailbox, `user` with the same password as alice's.
    pub fn add_user(&self, user: &str) {
        let passwd = self.dir.path().join("passwd");
        let mut text = fs::read_to_string(&passwd).unwrap();
        text.push_str(&format!("{user}:{{PLAIN}}{PASSWORD}\n"));
        fs::write(&passwd, text).unwrap();
        self.make_maildir_of(user);
    }

    /// Gives `user`'s empty mailbox a UIDVALIDITY of our choosing, as a new
    /// dovecot-uidlist would. With the test's `pop3_uidl_format = %08Xu%08Xv`,
    /// two mailboxes with the same UIDVALIDITY list the same unique-ids.
    pub fn set_uidvalidity(&self, user: &str, uidvalidity: u32) {
        let list = self.maildir_of(user).join("dovecot-uidlist");
        fs::write(&list, format!("3 V{uidvalidity} N1\n")).unwrap();
        self.own(&list);
    }

    fn own(&self, path: &Path) {
        chown(path, Some(self.mail_uid), Some(self.mail_gid)).unwrap();
    }

    fn make_maildir(&self) {
        self.make_maildir_of(USER);
    }

    fn make_maildir_of(&self, user: &str) {
        let home = self.dir.path().join("home");
        for dir in [home.clone(), home.join(user), self.maildir_of(user)] {
            fs::create_dir_all(&dir).unwrap();
            self.own(&dir);
        }
        for sub in ["new", "cur", "tmp"] {
            let dir = self.maildir_of(user).join(sub);
            fs::create_dir_all(&dir).unwrap();
            self.own(&dir);
        }
    }

    /// Puts messages in the user's mailbox, as a local delivery would.
    pub fn add_messages(&self, messages: &[Vec<u8>]) {
        self.add_messages_to(USER, messages);
    }

    /// Puts messages in `user`'s mailbox, as a local delivery would.
    pub fn add_messages_to(&self, user: &str, messages: &[Vec<u8>]) {
        let maildir = self.maildir_of(user);
        for message in messages {
            let n = self.seq.fetch_add(1, Ordering::SeqCst);
            let tmp = maildir.join("tmp").join(format!("{n}.test"));
            fs::write(&tmp, message).unwrap();
            self.own(&tmp);
            fs::rename(&tmp, maildir.join("new").join(format!("{:06}.{n}.test", n))).unwrap();
        }
    }

    /// The messages in the mailbox as Dovecot stores them, sorted.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.messages_of(USER)
    }

    /// The messages in `user`'s mailbox as Dovecot stores them, sorted.
    pub fn messages_of(&self, user: &str) -> Vec<Vec<u8>> {
        super::home::maildir_messages(&self.maildir_of(user))
    }

    /// The messages of an mbox file as Dovecot reads them (through doveadm, on a copy,
    /// since Dovecot may add its own headers to an mbox it opens).
    pub fn read_mbox(&self, mbox: &Path) -> Vec<Vec<u8>> {
        let dir = self.dir.path().join("mbox-copy");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        self.own(&dir);
        let copy = dir.join("inbox");
        fs::copy(mbox, &copy).unwrap();
        self.own(&copy);
        let location = format!(
            "mail_location=mbox:{0}:INBOX={0}/inbox:INDEX=MEMORY",
            dir.display()
        );
        let out = Command::new("/usr/bin/doveadm")
            .args(["-c"])
            .arg(self.dir.path().join("dovecot.conf"))
            .args([
                "-o", &location, "-f", "pager", "fetch", "-u", USER, "uid text", "mailbox",
                "INBOX", "all",
            ])
            .output()
            .expect("doveadm comes with dovecot-core: apt-get install dovecot-pop3d");
        assert!(
            out.status.success(),
            "doveadm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // With two fields, doveadm's pager format ends each record with a form feed.
        let mut messages: Vec<Vec<u8>> = out
            .stdout
            .split(|&b| b == b'\x0c')
            .map(|record| record.strip_prefix(b"\n").unwrap_or(record))
            .filter(|record| !record.is_empty())
            .map(|record| {
                let text = memchr_find(record, b"\ntext:\n").expect("a text field");
                record[text + 7..].to_vec()
            })
            .collect();
        messages.sort();
        messages
    }

    /// A config for this server; `extra` adds or overrides keys.
    pub fn config(&self, home: &super::Home, tls: &str, extra: &str) -> String {
        let port = if tls == "implicit" {
            self.tls_port
        } else {
            self.port
        };
        format!(
            r#"[accounts.test]
host = "127.0.0.1"
port = {port}
tls = "{tls}"
tls_ca_file = "{ca}"
timeout = 20
user = "{USER}"
password = "{PASSWORD}"
deliver = "maildir:{maildir}"
{extra}
"#,
            ca = certs().ca.display(),
            maildir = home.maildir().display(),
        )
    }

    /// The same account with no password line, for the keyring, the prompt and
    /// OAuth, which must find the secret elsewhere.
    pub fn config_without_password(&self, home: &super::Home, tls: &str, extra: &str) -> String {
        self.config(home, tls, extra)
            .lines()
            .filter(|l| !l.starts_with("password"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a server's master process: SIGTERM, so it takes its children down, then
/// SIGKILL if it has not gone within ten seconds.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Messages that trip up careless fetchers: dot lines, "From " lines, 8-bit bytes,
/// long lines, an empty body and a large message.
pub fn fidelity_corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = vec![
        b"From: a@example.com\nTo: b@example.com\nSubject: plain\n\nHello.\n".to_vec(),
        b"Subject: dots\n\n.leading dot\n..two dots\n.\n...\nend\n".to_vec(),
        b"Subject: from lines\n\nFrom here on\n>From quoted\nFrom: not a header\n".to_vec(),
        b"Subject: 8bit \xe9t\xe9\nContent-Type: text/plain; charset=latin1\n\ncaf\xe9 \xc3\xa9 \x80\xff\n".to_vec(),
        b"Subject: empty body\n\n".to_vec(),
        b"Subject: trailing blank lines\n\nbody\n\n\n".to_vec(),
    ];
    let mut long = b"Subject: long line\n\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 20_000));
    long.push(b'\n');
    corpus.push(long);
    let mut large = b"Subject: large\n\n".to_vec();
    for i in 0..60_000 {
        large.extend_from_slice(
            format!("{i:08} the quick brown fox jumps over the lazy dog\n").as_bytes(),
        );
        if i % 1000 == 0 {
            large.extend_from_slice(b".\n");
        }
    }
    corpus.push(large);
    corpus
}

/// `n` small distinct messages.
pub fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("Subject: message {i}\nMessage-ID: <{i}@test>\n\nbody {i}\n").into_bytes())
        .collect()
}
