//! popfetch as a service, against the test Dovecot: the daemon (polling, SIGUSR1,
//! SIGHUP with a broken and with a grown config, SIGTERM mid-message, back-off
//! and recovery, one daemon per user, detaching), `status --json` after successes
//! and failures, and the on_new_mail and on_error hooks.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::dovecot::{self, numbered};
use crate::support::{Dovecot, Home};

/// A running `popfetch daemon --foreground`, its stderr (JSON lines) in a file;
/// killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(home: &Home, args: &[&str]) -> Daemon {
        let log = home
            .path()
            .join(format!("daemon-{}.log", std::process::id()));
        let child = home
            .command()
            .args(["--log-format", "json", "daemon", "--foreground", "-v"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's JSON lines.
    fn events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for the daemon to exit; its exit code.
    fn exited_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `within` for `done`; whether it came.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    done()
}

fn status_json(home: &Home) -> serde_json::Value {
    let run = home.run(&["status", "--json"]);
    run.expect(0);
    serde_json::from_str(&run.stdout()).unwrap()
}

/// The status once `ready` holds for it. A Maildir file lands (and the
/// daemon logs) before the status file is rewritten, so a test that saw the
/// mail waits for the status rather than reading it once.
fn status_when(home: &Home, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut status = serde_json::Value::Null;
    let ok = eventually(Duration::from_secs(10), || {
        status = status_json(home);
        ready(&status)
    });
    assert!(ok, "the status never got there: {status}");
    status
}

#[test]
fn the_daemon_delivers_new_mail_within_an_interval_and_stops_on_sigterm() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "poll_interval = \"400ms\""));
    let mut daemon = Daemon::start(&home, &[]);
    assert!(
        eventually(Duration::from_secs(10), || daemon.count("synced") >= 1),
        "{}",
        daemon.log()
    );
    // Mail that arrives is delivered within one interval plus jitter (and the
    // sync's own time).
    server.add_messages(&numbered(2));
    let arrived = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || home.delivered().len() == 2),
        "{}",
        daemon.log()
    );
    assert!(arrived.elapsed() < Duration::from_millis(400 + 40 + 1500));
    let status = status_when(&home, |s| s["accounts"][0]["last_run"]["delivered"] == 2);
    let test = &status["accounts"][0];
    assert_eq!(test["account"], "test");
    assert_eq!(test["last_run"]["result"], "ok");
    assert!(test["next_poll"].is_string(), "{status}");
    assert_eq!(test["daemon_pid"], daemon.child.id());
    // Another daemon for the same user is refused: it would poll everything twice.
    let second = home.run(&["daemon", "--foreground"]);
    second.expect(75);
    assert!(
        second.stderr().contains("already running"),
        "{}",
        second.stderr()
    );

    daemon.signal("TERM");
    assert_eq!(daemon.exited_within(Duration::from_secs(5)), Some(0));
    assert!(daemon.count("stopped") == 1, "{}", daemon.log());
    assert!(status_json(&home)["accounts"][0]["next_poll"].is_null());
}

#[test]
fn sigusr1_polls_at_once() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "poll_interval = \"1h\""));
    let daemon = Daemon::start(&home, &[]);
    assert!(
        eventually(Duration::from_secs(10), || daemon.count("synced") >= 1),
        "{}",
        daemon.log()
    );
    server.add_messages(&numbered(1));
    std::thread::sleep(Duration::from_millis(300));
    assert!(home.delivered().is_empty(), "polled before its hour");
    daemon.signal("USR1");
    assert!(
        eventually(Duration::from_secs(5), || home.delivered().len() == 1),
        "{}",
        daemon.log()
    );
}

#[test]
fn sighup_keeps_the_old_config_when_the_new_one_is_broken_and_polls_a_new_account() {
    let server = Dovecot::start();
    server.add_user("bob");
    let home = Home::new();
    let config = server.config(&home, "implicit", "poll_interval = \"300ms\"");
    home.write_config(&config);
    let daemon = Daemon::start(&home, &[]);
    assert!(eventually(Duration::from_secs(10), || daemon
        .count("synced")
        >= 1));

    home.write_config("[accounts.test\nhost = ");
    daemon.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || daemon.count("reload_failed")
            == 1),
        "{}",
        daemon.log()
    );
    server.add_messages(&numbered(1));
    assert!(
        eventually(Duration::from_secs(5), || home.delivered().len() == 1),
        "the old config stopped: {}",
        daemon.log()
    );

    // A new account: bob's mailbox into a second Maildir.
    let bob_maildir = home.path().join("bob-mail");
    let bob = config
        .replace("[accounts.test]", "[accounts.bob]")
        .replace("user = \"alice\"", "user = \"bob\"")
        .replace(
            &format!("maildir:{}", home.maildir().display()),
            &format!("maildir:{}", bob_maildir.display()),
        );
    home.write_config(&format!("{config}\n{bob}"));
    server.add_messages_to("bob", &numbered(2));
    daemon.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || {
            crate::support::home::maildir_messages(&bob_maildir).len() == 2
        }),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.count("reloaded"), 1);
}

#[test]
fn sigterm_during_a_100_mb_message_exits_at_once_and_loses_nothing() {
    let server = Dovecot::start();
    let mut big = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    let line = [b'x'; 998];
    while big.len() < 100 << 20 {
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    server.add_messages(&[big.clone(), numbered(1)[0].clone()]);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "poll_interval = \"1h\""));
    let mut daemon = Daemon::start(&home, &[]);
    // Stop it while the big message streams in.
    let tmp = home.maildir().join("tmp");
    assert!(
        eventually(Duration::from_secs(20), || {
            fs::read_dir(&tmp).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
            })
        }),
        "the transfer never started: {}",
        daemon.log()
    );
    let asked = Instant::now();
    daemon.signal("TERM");
    assert_eq!(daemon.exited_within(Duration::from_secs(5)), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(home.delivered().len() < 2, "it was not in flight");
    // A sync after the restart: each message once, byte for byte.
    home.run(&["sync"]).expect(0);
    let delivered = home.delivered();
    assert_eq!(delivered.len(), 2);
    let big_unix: Vec<u8> = String::from_utf8(big)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    assert!(
        delivered.contains(&big_unix),
        "the big message is not whole"
    );
    assert!(server.messages().is_empty());
}

/// Forwards connections from `port` to Dovecot's, once started.
fn forward(port: u16, target: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn a_server_that_goes_away_gets_a_back_off_then_recovers() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    let port = dovecot::free_port();
    let config = server
        .config(&home, "implicit", "poll_interval = \"200ms\"")
        .replace(
            &format!("port = {}", server.tls_port),
            &format!("port = {port}"),
        );
    home.write_config(&config);
    let daemon = Daemon::start(&home, &[]);
    assert!(
        eventually(Duration::from_secs(10), || daemon.count("sync_failed") >= 3),
        "{}",
        daemon.log()
    );
    let failures: Vec<u64> = daemon
        .events()
        .iter()
        .filter(|e| e["event"] == "sync_failed")
        .map(|e| e["fields"]["failures"].as_u64().unwrap())
        .collect();
    assert_eq!(&failures[..3], &[1, 2, 3], "{}", daemon.log());
    let status = status_json(&home);
    assert_eq!(status["accounts"][0]["last_run"]["result"], "failed");
    assert_eq!(status["accounts"][0]["last_run"]["exit_code"], 69);
    // The server comes back: within the back-off's cap (16 intervals) it is polled.
    forward(port, server.tls_port);
    assert!(
        eventually(Duration::from_secs(8), || home.delivered().len() == 2),
        "{}",
        daemon.log()
    );
    status_when(&home, |s| s["accounts"][0]["last_run"]["result"] == "ok");
}

#[test]
fn status_json_reads_back_after_a_success_and_a_failure() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.run(&["status"]).expect(78);
    home.write_config(&server.config(&home, "implicit", "keep = true"));
    assert!(home
        .run(&["status"])
        .stdout()
        .contains("test: never synced"));
    home.run(&["sync"]).expect(0);
    let ok = status_json(&home);
    let test = &ok["accounts"][0];
    assert_eq!(test["last_run"]["result"], "ok");
    assert_eq!(test["last_run"]["exit_code"], 0);
    assert_eq!(test["last_run"]["delivered"], 3);
    assert_eq!(test["delivered_total"], 3);
    assert_eq!(test["known"], 3);
    assert_eq!(test["on_server"], 3);
    assert!(test["last_success"].is_string());
    assert!(test["next_poll"].is_null());

    server.add_messages(&numbered(4)[3..]);
    home.run(&["sync"]).expect(0);
    let ok = status_json(&home);
    assert_eq!(ok["accounts"][0]["delivered_total"], 4);

    let broken = server
        .config(&home, "implicit", "keep = true")
        .replace(dovecot::PASSWORD, "wrong");
    home.write_config(&broken);
    home.run(&["sync"]).expect(77);
    let failed = status_json(&home);
    let test = &failed["accounts"][0];
    assert_eq!(test["last_run"]["result"], "failed");
    assert_eq!(test["last_run"]["exit_code"], 77);
    assert!(
        test["last_run"]["error"]
            .as_str()
            .unwrap()
            .contains("uthentication"),
        "{failed}"
    );
    assert_eq!(test["last_success"], ok["accounts"][0]["last_success"]);
    assert_eq!(test["known"], 4, "kept from the last success");
    let line = home.run(&["status"]).stdout();
    assert!(
        line.starts_with("test: FAILED at ") && line.contains("(exit 77)"),
        "{line}"
    );
}

fn hook_script(home: &Home, name: &str, body: &str) -> PathBuf {
    let path = home.path().join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Hooks that keep what they read: on_new_mail's stdin in the first file,
/// on_error's in the second; and the config lines that set them.
fn recording_hooks(home: &Home) -> (PathBuf, PathBuf, String) {
    let seen = home.path().join("seen.json");
    let failed = home.path().join("failed.json");
    let on_new = hook_script(home, "on-new", &format!("cat > {}", seen.display()));
    let on_err = hook_script(home, "on-err", &format!("cat > {}", failed.display()));
    let lines = format!(
        "on_new_mail = \"{}\"\non_error = \"{}\"",
        on_new.display(),
        on_err.display()
    );
    (seen, failed, lines)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn hooks_get_the_right_json_and_a_hanging_one_is_killed() {
    let server = Dovecot::start();
    let message = b"From: =?UTF-8?Q?Ren=C3=A9?= <rene@example.org>\r\nSubject: hello hooks\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n".to_vec();
    server.add_messages(&[message]);
    let home = Home::new();
    let (seen, failed, hooks) = recording_hooks(&home);
    home.write_config(&server.config(&home, "implicit", &hooks));
    home.run(&["sync"]).expect(0);
    let new = read_json(&seen);
    let first = &new[0];
    assert_eq!(new.as_array().unwrap().len(), 1, "{new}");
    assert_eq!(first["account"], "test");
    assert!(first["unique_id"].is_string());
    assert!(first["size"].as_u64().unwrap() > 0);
    assert_eq!(first["from"], "René <rene@example.org>");
    assert_eq!(first["subject"], "hello hooks");
    assert!(first["date"].as_str().unwrap().contains("2026"), "{new}");
    assert!(first["location"].is_string());
    // Nothing new: no call.
    fs::remove_file(&seen).unwrap();
    home.run(&["sync"]).expect(0);
    assert!(!seen.exists());

    // A failure: on_error hears of it, the exit is the sync's.
    home.write_config(
        &server
            .config(
                &home,
                "implicit",
                &format!("on_error = \"{}\"", home.path().join("on-err").display()),
            )
            .replace(dovecot::PASSWORD, "wrong"),
    );
    home.run(&["sync"]).expect(77);
    let error = read_json(&failed);
    assert_eq!(error["account"], "test");
    assert_eq!(error["exit_code"], 77);
    assert!(error["error"].as_str().unwrap().len() > 10);

    // A hook that hangs is killed at the timeout; the mail is delivered all the same.
    server.add_messages(&numbered(1));
    let hang = hook_script(&home, "hang", "sleep 30");
    home.write_config(
        &server
            .config(
                &home,
                "implicit",
                &format!("on_new_mail = \"{}\"", hang.display()),
            )
            .replace("timeout = 20", "timeout = 5"),
    );
    let started = Instant::now();
    let run = home.run(&["sync"]);
    run.expect(0);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(run.stderr().contains("on_new_mail"), "{}", run.stderr());
    assert!(
        run.stderr().contains("killed at its timeout"),
        "{}",
        run.stderr()
    );
    assert_eq!(home.delivered().len(), 2);
}

#[test]
fn the_daemon_detaches_without_foreground() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "poll_interval = \"1h\""));
    let started = Instant::now();
    let run = home.run(&["daemon"]);
    run.expect(0);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(run.stderr().contains("daemon.log"), "{}", run.stderr());
    assert!(eventually(Duration::from_secs(10), || home
        .delivered()
        .len()
        == 1));
    let pid = status_when(&home, |s| s["accounts"][0]["daemon_pid"].is_u64())["accounts"][0]
        ["daemon_pid"]
        .as_u64()
        .unwrap();
    let log = home.state_dir().join("daemon.log");
    assert!(fs::read_to_string(&log).unwrap().contains("daemon started"));
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    }));
}

/// A run that delivered mail and then failed (the server refused a DELE): the
/// mail it delivered is announced to on_new_mail and counted, and on_error
/// hears of the failure.
#[test]
fn a_run_that_fails_after_delivering_still_announces_and_counts_the_mail() {
    use crate::support::scripted::{logged_in, Faults};
    use crate::support::{Scripted, Step};
    let mail = |n: &str| format!("From: x@example.org\nSubject: {n}\n\nbody {n}\n").into_bytes();
    let mut script = logged_in();
    script.push(Step::ServeWith(
        vec![("a".into(), mail("one")), ("b".into(), mail("two"))],
        Faults {
            refuse_dele: vec![2],
            dele_reply: "-ERR [SYS/TEMP] later",
            close_at: None,
        },
    ));
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    let (seen, failed, hooks) = recording_hooks(&home);
    home.write_config(&server.config(&home, &hooks));
    home.run(&["sync"]).expect(75);
    let new = read_json(&seen);
    let subjects: Vec<_> = new
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects, ["one", "two"], "{new}");
    assert_eq!(read_json(&failed)["exit_code"], 75);
    let status = status_json(&home);
    assert_eq!(
        status["accounts"][0]["last_run"]["delivered"], 2,
        "{status}"
    );
    assert_eq!(status["accounts"][0]["delivered_total"], 2);
    assert_eq!(status["accounts"][0]["last_run"]["result"], "failed");
}

/// One account failing (its server is not there) does not hold up another.
#[test]
fn the_daemon_keeps_polling_the_other_accounts_while_one_fails() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    let good = server.config(&home, "implicit", "poll_interval = \"300ms\"");
    let dead = good
        .replace("[accounts.test]", "[accounts.dead]")
        .replace(
            &format!("port = {}", server.tls_port),
            &format!("port = {}", dovecot::free_port()),
        )
        .replace(
            &format!("maildir:{}", home.maildir().display()),
            &format!("maildir:{}/dead", home.path().display()),
        );
    home.write_config(&format!("{dead}\n{good}"));
    let daemon = Daemon::start(&home, &[]);
    assert!(
        eventually(Duration::from_secs(10), || home.delivered().len() == 1),
        "{}",
        daemon.log()
    );
    server.add_messages(&numbered(2)[1..]);
    assert!(
        eventually(Duration::from_secs(10), || home.delivered().len() == 2),
        "{}",
        daemon.log()
    );
    let failed = daemon
        .events()
        .iter()
        .filter(|e| e["event"] == "sync_failed" && e["account"] == "dead")
        .count();
    assert!(failed >= 1, "{}", daemon.log());
}
