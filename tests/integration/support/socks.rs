//! A real SOCKS5 server for the proxy tests: Debian's microsocks on loopback,
//! with or without a user name and password (RFC 1929), its outgoing
//! connections bound to an address of the test's choosing (so the server's log
//! shows that mail came through it), and, for `socks5h`, a hosts file of its
//! own in a mount namespace of its own: names that only the proxy can resolve.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dovecot::free_port;

const MICROSOCKS: &str = "/usr/bin/microsocks";

pub struct Socks {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// How to start the proxy.
#[derive(Default)]
pub struct Options<'a> {
    /// The login the proxy requires.
    pub login: Option<(&'a str, &'a str)>,
    /// The local address its connections to servers come from.
    pub bind: Option<&'a str>,
    /// Lines for the proxy's own /etc/hosts.
    pub hosts: Option<&'a str>,
}

impl Socks {
    pub fn start(options: Options) -> Socks {
        assert!(
            Path::new(MICROSOCKS).exists(),
            "{MICROSOCKS} is missing: apt-get install microsocks (scripts/test-deps.sh)"
        );
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            MICROSOCKS.to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if let Some((user, password)) = options.login {
            args.extend(["-u".into(), user.into(), "-P".into(), password.into()]);
        }
        if let Some(bind) = options.bind {
            args.extend(["-b".into(), bind.into()]);
        }
        let mut command = match options.hosts {
            None => {
                let mut c = Command::new(&args[0]);
                c.args(&args[1..]);
                c
            }
            Some(lines) => {
                // A mount namespace where /etc/hosts is the test's file; as
                // root (CI), or as a user through a user namespace.
                let hosts = dir.path().join("hosts");
                std::fs::write(&hosts, format!("127.0.0.1 localhost\n{lines}\n")).unwrap();
                let mut c = Command::new("unshare");
                // SAFETY: getuid has no preconditions.
                if unsafe { libc::getuid() } != 0 {
                    c.arg("--map-root-user");
                }
                c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                    .arg(&hosts)
                    .args(&args);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare(1) runs the proxy: apt-get install util-linux");
        let socks = Socks {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "microsocks did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        socks
    }

    /// The proxy URL, with `login` before the host if given.
    pub fn url(&self, scheme: &str, login: Option<&str>) -> String {
        let login = login.map(|l| format!("{l}@")).unwrap_or_default();
        format!("{scheme}://{login}127.0.0.1:{}", self.port)
    }
}

impl Drop for Socks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
