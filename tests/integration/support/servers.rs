//! The other POP3 servers Debian ships, for the interoperability matrix: popa3d and
//! solid-pop3d (run per connection, inetd style, as their packages intend) and
//! Cyrus (its master process with a config of its own). `.ci/interop-setup` unpacks
//! them into $POPFETCH_INTEROP_DIR and makes the system user they log in.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The system user popa3d and solid-pop3d authenticate through PAM.
pub const SYSTEM_USER: &str = "popfetch-t";
pub const SYSTEM_PASSWORD: &str = "Pf-Test-Passw0rd";

/// Where `.ci/interop-setup` unpacked the servers.
pub fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("POPFETCH_INTEROP_DIR").unwrap_or_else(|_| "/opt/popfetch-interop".into()),
    );
    assert!(
        dir.join("popa3d").exists()
            && dir.join("solid-pop3d").exists()
            && dir.join("cyrus-pop3d").exists(),
        "the interop servers are missing from {}: run `sudo bash .ci/interop-setup`",
        dir.display()
    );
    dir
}

/// The system user's mailbox is shared by every test that uses it.
pub fn system_user() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("id")
        .args(["-u", SYSTEM_USER])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the user {SYSTEM_USER} is missing: run `sudo bash .ci/interop-setup`"
    );
    guard
}

fn id(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Accepts connections on a loopback port and runs `argv` for each, with the socket
/// as its stdin and stdout.
pub struct Inetd {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Inetd {
    pub fn start(argv: Vec<String>) -> Inetd {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut children: Vec<Child> = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let input = OwnedFd::from(stream.try_clone().unwrap());
                        let output = OwnedFd::from(stream);
                        children.push(
                            Command::new(&argv[0])
                                .args(&argv[1..])
                                .stdin(Stdio::from(input))
                                .stdout(Stdio::from(output))
                                .stderr(Stdio::null())
                                .spawn()
                                .unwrap(),
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
                children.retain_mut(|c| c.try_wait().ok().flatten().is_none());
            }
            for mut child in children {
                let _ = child.kill();
                let _ = child.wait();
            }
        });
        Inetd {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `messages` as the system user's mbox, /var/mail/USER (popa3d's spool),
/// quoting "From " lines as mbox requires.
pub fn write_system_mbox(messages: &[Vec<u8>]) {
    let mut mbox = Vec::new();
    for message in messages {
        mbox.extend_from_slice(b"From sender@example.org Mon Jan  1 10:00:00 2024\n");
        mbox.extend_from_slice(&quote_from(message));
        mbox.push(b'\n');
    }
    let path = Path::new("/var/mail").join(SYSTEM_USER);
    fs::write(&path, mbox).unwrap();
    chown(&path, Some(id("-u", SYSTEM_USER)), Some(id("-g", "mail"))).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// What an mbox-based server holds for a message: "From " lines quoted.
pub fn quote_from(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    out
}

/// How many messages the system user's mbox holds.
pub fn system_mbox_count() -> usize {
    let text = fs::read(Path::new("/var/mail").join(SYSTEM_USER)).unwrap_or_default();
    text.split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .count()
}

/// The system user's Maildir (solid-pop3d's spool in Maildir mode), refilled.
pub fn write_system_maildir(messages: &[Vec<u8>]) -> PathBuf {
    let home = PathBuf::from("/home").join(SYSTEM_USER);
    let root = home.join("Maildir");
    let _ = fs::remove_dir_all(&root);
    let (uid, gid) = (id("-u", SYSTEM_USER), id("-g", SYSTEM_USER));
    for sub in ["", "new", "cur", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
        chown(root.join(sub), Some(uid), Some(gid)).unwrap();
        fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o700)).unwrap();
    }
    for (i, message) in messages.iter().enumerate() {
        let path = root
            .join("new")
            .join(format!("17000000{i:02}.M{i}.interop"));
        fs::write(&path, message).unwrap();
        chown(&path, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    root
}

/// popa3d for the system user's mbox.
pub fn popa3d() -> Inetd {
    let dir = interop_dir();
    Inetd::start(vec![dir
        .join("popa3d/usr/sbin/popa3d")
        .display()
        .to_string()])
}

/// solid-pop3d serving the system user's Maildir, with APOP.
pub fn solid_pop3d(config_dir: &Path) -> Inetd {
    let dir = interop_dir();
    let conf = config_dir.join("spop3d.conf");
    fs::write(
        &conf,
        "<Global>\n\tMailDropName\t\"Maildir\"\n\tMailDropType\tmaildir\n\tLogStatistics\tno\n\tAllowAPOP\tyes\n\tAPOPServerName\t\"localhost\"\n\tAddBulletins\tno\n\tWrongCommandsLimit\t0\n</Global>\n",
    )
    .unwrap();
    fs::set_permissions(config_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    // The APOP secret, as pop_auth writes it: "ApopSecret9" in its weak encoding.
    let secret = PathBuf::from("/home").join(SYSTEM_USER).join(".spop3d");
    fs::write(&secret, "APOPSecret be8f908fac9a9c8d9a8bc6\n").unwrap();
    chown(
        &secret,
        Some(id("-u", SYSTEM_USER)),
        Some(id("-g", SYSTEM_USER)),
    )
    .unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    Inetd::start(vec![
        dir.join("solid-pop3d/usr/sbin/solid-pop3d")
            .display()
            .to_string(),
        "-f".into(),
        conf.display().to_string(),
    ])
}

pub const SOLID_APOP_SECRET: &str = "ApopSecret9";

/// Cyrus IMAP's POP3 server, with a user of its own in a sasldb.
pub struct Cyrus {
    dir: tempfile::TempDir,
    master: Child,
    pub port: u16,
    pub tls_port: u16,
}

pub const CYRUS_USER: &str = "pfuser";
pub const CYRUS_PASSWORD: &str = "Cyrus-Passw0rd";

impl Cyrus {
    pub fn start() -> Cyrus {
        let x = interop_dir();
        let certs = super::dovecot::certs();
        let dir = tempfile::Builder::new()
            .prefix("popfetch-cyrus")
            .tempdir()
            .unwrap();
        let c = dir.path().to_path_buf();
        for sub in [
            "conf/db",
            "conf/socket",
            "conf/log",
            "conf/proc",
            "conf/lock",
            "spool",
            "run/socket",
            "run/proc",
            "run/lock",
            "tls",
        ] {
            fs::create_dir_all(c.join(sub)).unwrap();
        }
        for (from, to) in [
            (&certs.cert, "server.pem"),
            (&certs.key, "server.key"),
            (&certs.ca, "ca.pem"),
        ] {
            fs::copy(from, c.join("tls").join(to)).unwrap();
        }
        let (port, tls_port) = (free_port(), free_port());
        let cd = c.display();
        fs::write(
            c.join("imapd.conf"),
            format!(
                "configdirectory: {cd}/conf\ndefaultpartition: default\npartition-default: {cd}/spool\nproc_path: {cd}/run/proc\nmboxname_lockpath: {cd}/run/lock\nlmtpsocket: {cd}/run/socket/lmtp\nidlesocket: {cd}/run/socket/idle\nnotifysocket: {cd}/run/socket/notify\nservername: localhost\nallowplaintext: yes\nallowapop: yes\npopminpoll: 0\nautocreate_quota: 0\nautocreate_post: yes\nduplicatesuppression: no\nhashimapspool: false\nsasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\nsasl_sasldb_path: {cd}/conf/sasldb2\ntls_server_cert: {cd}/tls/server.pem\ntls_server_key: {cd}/tls/server.key\ntls_client_ca_file: {cd}/tls/ca.pem\n"
            ),
        )
        .unwrap();
        let cf = format!("-C {cd}/imapd.conf");
        let pop3d = x.join("cyrus-pop3d/usr/lib/cyrus/bin/pop3d");
        fs::write(
            c.join("cyrus.conf"),
            format!(
                "START {{\n  recover cmd=\"/usr/lib/cyrus/bin/ctl_cyrusdb {cf} -r\"\n}}\nSERVICES {{\n  pop3 cmd=\"{p} {cf}\" listen=\"127.0.0.1:{port}\" prefork=0\n  pop3s cmd=\"{p} -s {cf}\" listen=\"127.0.0.1:{tls_port}\" prefork=0\n  lmtpunix cmd=\"/usr/lib/cyrus/bin/lmtpd {cf}\" listen=\"{cd}/run/socket/lmtp\" prefork=0\n}}\nEVENTS {{\n}}\nDAEMON {{\n}}\n",
                p = pop3d.display()
            ),
        )
        .unwrap();
        let mut saslpasswd = Command::new("saslpasswd2")
            .args(["-p", "-c", "-f"])
            .arg(c.join("conf/sasldb2"))
            .args(["-u", "localhost", CYRUS_USER])
            .stdin(Stdio::piped())
            .spawn()
            .expect("saslpasswd2 is needed: apt-get install sasl2-bin");
        use std::io::Write;
        saslpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(CYRUS_PASSWORD.as_bytes())
            .unwrap();
        assert!(saslpasswd.wait().unwrap().success());
        fs::set_permissions(&c, fs::Permissions::from_mode(0o755)).unwrap();
        let chowned = Command::new("chown")
            .args(["-R", "cyrus:mail"])
            .arg(&c)
            .status()
            .unwrap();
        assert!(
            chowned.success(),
            "the cyrus user is missing: apt-get install cyrus-common"
        );
        let master = Command::new("setpriv")
            .args([
                "--reuid=cyrus",
                "--regid=mail",
                "--init-groups",
                "/usr/lib/cyrus/bin/master",
                "-C",
            ])
            .arg(c.join("imapd.conf"))
            .arg("-M")
            .arg(c.join("cyrus.conf"))
            .arg("-p")
            .arg(c.join("run/master.pid"))
            .arg("-D")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a master stopping signals its whole group,
            // which would otherwise take the children of another test's Cyrus.
            .process_group(0)
            .spawn()
            .expect("Cyrus' master is needed: apt-get install cyrus-common");
        let server = Cyrus {
            dir,
            master,
            port,
            tls_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || !c.join("run/socket/lmtp").exists()
        {
            assert!(Instant::now() < deadline, "Cyrus did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Delivers messages into the user's INBOX through Cyrus' own deliver.
    pub fn add_messages(&self, messages: &[Vec<u8>]) {
        for message in messages {
            let mut deliver = Command::new("/usr/lib/cyrus/bin/deliver")
                .arg("-C")
                .arg(self.dir.path().join("imapd.conf"))
                .args(["-a", CYRUS_USER, CYRUS_USER])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            deliver.stdin.take().unwrap().write_all(message).unwrap();
            assert!(deliver.wait().unwrap().success(), "cyrus deliver failed");
        }
    }

    /// The messages as Cyrus stores them (it adds trace headers), with LF endings:
    /// the "N." files of the user's mailbox, which Cyrus 3 keeps under spool/uuid/.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let mut stack = vec![self.dir.path().join("spool/uuid")];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_message = name.ends_with('.')
                    && name[..name.len() - 1].bytes().all(|b| b.is_ascii_digit());
                if entry.path().is_dir() {
                    stack.push(entry.path());
                } else if is_message && name.len() > 1 {
                    messages.push(crlf_to_lf(&fs::read(entry.path()).unwrap()));
                }
            }
        }
        messages.sort();
        messages
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        super::dovecot::stop(&mut self.master);
    }
}

fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Courier's POP3 server with a virtual user in its own userdb. Courier reads its
/// authdaemon settings from /etc/courier and talks through /run/courier/authdaemon,
/// so it runs in a mount namespace of its own where both are bind-mounted from a
/// temporary directory: the machine's own Courier setup is never touched.
pub struct Courier {
    dir: tempfile::TempDir,
    group: Child,
    pub port: u16,
    pub tls_port: u16,
}

pub const COURIER_USER: &str = "vpop";
pub const COURIER_PASSWORD: &str = "Courier-Passw0rd";

impl Courier {
    pub fn start(messages: &[Vec<u8>]) -> Courier {
        use std::os::unix::process::CommandExt;
        let x = interop_dir();
        assert!(
            x.join("courier-pop").exists() && Path::new("/etc/courier/dhparams.pem").exists(),
            "Courier is missing: run `sudo bash .ci/interop-setup`"
        );
        let certs = super::dovecot::certs();
        let dir = tempfile::Builder::new()
            .prefix("popfetch-courier")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "authrun", "home"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::copy("/etc/courier/dhparams.pem", d.join("etc/dhparams.pem")).unwrap();
        fs::write(
            d.join("etc/authdaemonrc"),
            "authmodulelist=\"authuserdb\"\ndaemons=2\nauthdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\nDEFAULTOPTIONS=\"\"\nLOGGEROPTS=\"\"\n",
        )
        .unwrap();
        let mut pem = fs::read(&certs.cert).unwrap();
        pem.extend(fs::read(&certs.key).unwrap());
        fs::write(d.join("pop3d.pem"), pem).unwrap();
        // Mail belongs to an unprivileged uid; the virtual user maps to it.
        let (uid, gid) = (id("-u", "nobody"), id("-g", "nobody"));
        let maildir = d.join("home/vpop/Maildir");
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        for (i, message) in messages.iter().enumerate() {
            fs::write(
                maildir
                    .join("new")
                    .join(format!("17000000{i:02}.M{i}.interop")),
                message,
            )
            .unwrap();
        }
        let chown_all = |owner: &str, path: &Path| {
            assert!(Command::new("chown")
                .args(["-R", owner])
                .arg(path)
                .status()
                .unwrap()
                .success());
        };
        chown_all(&format!("{uid}:{gid}"), &d.join("home/vpop"));
        chown_all("courier:courier", &d.join("authrun"));
        chown_all("root:courier", &d.join("pop3d.pem"));
        fs::set_permissions(d.join("authrun"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(d.join("pop3d.pem"), fs::Permissions::from_mode(0o640)).unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let dd = d.display();
        fs::write(
            d.join("pop3d.env"),
            format!(
                "MAXDAEMONS=40\nMAXPERIP=40\nPOP3AUTH=\"PLAIN LOGIN CRAM-MD5 CRAM-SHA1 CRAM-SHA256\"\nPOP3AUTH_TLS=\"PLAIN LOGIN CRAM-MD5 CRAM-SHA1 CRAM-SHA256\"\nPOP3_PROXY=0\nMAILDIRPATH=Maildir\nPOP3_STARTTLS=YES\nPOP3_TLS_REQUIRED=0\nCOURIERTLS=/usr/bin/couriertls\nTLS_CERTFILE={dd}/pop3d.pem\nTLS_DHPARAMS={dd}/etc/dhparams.pem\nTLS_VERIFYPEER=NONE\nTLS_CACHEFILE=\n"
            ),
        )
        .unwrap();
        let l = x.join("courier-pop/usr/lib/courier/courier");
        let l = l.display();
        let tcpd = "/usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=40 -maxperip=40 -nodnslookup -noidentlookup";
        let path = "PATH=/usr/sbin:/usr/bin:/bin";
        let script = format!(
            r#"set -e
mount --bind {dd}/etc /etc/courier
mount --bind {dd}/authrun /run/courier/authdaemon
touch /etc/courier/userdb; chmod 600 /etc/courier/userdb
userdb {COURIER_USER} set uid={uid} gid={gid} home={dd}/home/vpop mail={dd}/home/vpop/Maildir
echo '{COURIER_PASSWORD}' | userdbpw -md5 | userdb {COURIER_USER} set systempw
echo '{COURIER_PASSWORD}' | userdbpw -hmac-md5 | userdb {COURIER_USER} set hmac-md5pw
echo '{COURIER_PASSWORD}' | userdbpw -hmac-sha1 | userdb {COURIER_USER} set hmac-sha1pw
echo '{COURIER_PASSWORD}' | userdbpw -hmac-sha256 | userdb {COURIER_USER} set hmac-sha256pw
makeuserdb
env -i {path} sh -c 'set -a; . /etc/courier/authdaemonrc; exec /usr/lib/courier/courier-authlib/authdaemond' &
env -i {path} sh -c 'set -a; . {dd}/pop3d.env; exec {tcpd} -stderr={dd}/pop3d.log {port} {l}/courierpop3login {l}/courierpop3d Maildir' &
env -i {path} sh -c 'set -a; . {dd}/pop3d.env; POP3_TLS=1; POP3_STARTTLS=NO; exec {tcpd} -stderr={dd}/pop3ds.log {tls_port} /usr/bin/couriertls -server -tcpd -user=courier {l}/courierpop3login {l}/courierpop3d Maildir' &
wait
"#
        );
        fs::write(d.join("run.sh"), script).unwrap();
        let group = Command::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh"])
            .arg(d.join("run.sh"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("unshare is needed: apt-get install util-linux");
        let server = Courier {
            dir,
            group,
            port,
            tls_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in [port, tls_port] {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(Instant::now() < deadline, "Courier did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        server
    }

    /// The messages left in the user's Maildir.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        super::home::maildir_messages(&self.dir.path().join("home/vpop/Maildir"))
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        // The namespace's shell and authdaemond share its process group; the two
        // listeners make groups of their own and shrug off SIGTERM, but name our
        // directory in their arguments.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.group.id())])
            .status();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(format!("stderr={}/", self.dir.path().display()))
            .status();
        let _ = self.group.wait();
    }
}
