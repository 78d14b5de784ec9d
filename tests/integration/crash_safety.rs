//! The never-lose, never-twice promise under faults: SIGKILL at random moments of a
//! real Dovecot session, a connection cut mid-RETR and mid-DELE, a disk that fills up
//! under the messages or under the state, and a damaged state file.

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::dovecot::numbered;
use crate::support::home::maildir_messages;
use crate::support::mbox::{self, unquote};
use crate::support::proxy::{Cut, Proxy};
use crate::support::tmpfs::Tmpfs;
use crate::support::{Dovecot, Home};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// A small seeded generator (xorshift64*), so a failing chaos run can be replayed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_env() -> (Rng, u64) {
        let seed = std::env::var("POPFETCH_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_cafe);
        (Rng(seed | 1), seed)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Distinct messages, numbered from `start`.
pub(crate) fn batch(start: usize, n: usize) -> Vec<Vec<u8>> {
    (start..start + n)
        .map(|i| format!("Subject: chaos {i}\nMessage-ID: <chaos.{i}@test>\n\nFrom the body of {i}\n.\n..\nend {i}\n").into_bytes())
        .collect()
}

/// Kills popfetch with SIGKILL at random moments of delete-mode syncs, at least
/// `kills` times, adding mail so that there is always work under way, then lets a
/// run finish. Returns everything that was put on the server.
pub(crate) fn chaos(
    server: &Dovecot,
    home: &Home,
    kills: usize,
    progress: &dyn Fn() -> u64,
) -> Vec<Vec<u8>> {
    let (mut rng, seed) = Rng::from_env();
    let mut corpus = batch(0, 600);
    server.add_messages(&corpus);
    let mut killed = 0;
    let mut killed_mid_delivery = 0;
    while killed < kills {
        let before = progress();
        if server.messages().len() < 150 {
            let more = batch(corpus.len(), 300);
            server.add_messages(&more);
            corpus.extend(more);
        }
        let mut child = home
            .command()
            .arg("sync")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Most kills wait for delivery to be under way and then strike at a random
        // moment; one in four strikes blindly and early, to hit connect, login and
        // recovery too.
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(80)));
        } else {
            let deadline = Instant::now() + Duration::from_secs(10);
            while progress() == before
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(
                    status.success(),
                    "seed {seed}: a run ended with {status}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                if progress() > before {
                    killed_mid_delivery += 1;
                }
            }
        }
    }
    assert!(
        killed_mid_delivery >= kills / 2,
        "seed {seed}: only {killed_mid_delivery} of {kills} kills landed while messages were being delivered"
    );
    let run = home.run(&["sync"]);
    assert_eq!(run.code(), 0, "seed {seed}: {}", run.stderr());
    assert!(
        server.messages().is_empty(),
        "seed {seed}: delete mode empties the server"
    );
    corpus
}

#[test]
fn sigkill_at_random_moments_into_maildir_loses_and_duplicates_nothing() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", ""));
    let maildir = home.maildir();
    let count = || fs::read_dir(maildir.join("new")).map_or(0, |d| d.count() as u64);
    let corpus = chaos(&server, &home, 25, &count);
    let delivered = home.delivered();
    assert_eq!(delivered.len(), corpus.len(), "lost or duplicated messages");
    assert_eq!(delivered, sorted(corpus));
    assert!(home.tmp_is_empty(), "leftovers in tmp/ are cleaned up");
}

#[test]
fn sigkill_at_random_moments_into_mbox_loses_and_duplicates_nothing() {
    let server = Dovecot::start();
    let home = Home::new();
    let mbox = home.path().join("inbox");
    let config = server.config(&home, "implicit", "").replace(
        &format!("maildir:{}", home.maildir().display()),
        &format!("mbox:{}", mbox.display()),
    );
    home.write_config(&config);
    let size = || fs::metadata(&mbox).map_or(0, |m| m.len());
    let corpus = chaos(&server, &home, 25, &size);
    let delivered: Vec<Vec<u8>> = server.read_mbox(&mbox).iter().map(|m| unquote(m)).collect();
    assert_eq!(delivered.len(), corpus.len(), "lost or duplicated messages");
    assert_eq!(sorted(delivered), sorted(corpus));
    assert!(!home.path().join("inbox.lock").exists());
}

/// A config that reaches Dovecot's plain port through a proxy.
fn through(server: &Dovecot, home: &Home, proxy: &Proxy) -> String {
    server.config(home, "none", "auth = \"user\"").replace(
        &format!("port = {}", server.port),
        &format!("port = {}", proxy.port),
    )
}

/// The server's own config, for the run after one through a proxy. A state belongs
/// to user@host:port, and the proxy's port is another, so the state is made over to
/// the server's port: its name, its witness's name and the mailbox in its header.
fn past(server: &Dovecot, home: &Home, proxy: &Proxy) -> String {
    let (from, to) = (format!(":{}", proxy.port), format!(":{}", server.port));
    let state = home.state_file();
    let text = fs::read_to_string(&state).unwrap();
    let (header, records) = text.split_once('\n').unwrap();
    let header = header.split('\t').next().unwrap().replace(&from, &to);
    let header = format!("{header}\t{:08x}\n", crc32fast::hash(header.as_bytes()));
    fs::write(&state, header + records).unwrap();
    for path in [state.clone(), state.with_extension("synced")] {
        let name = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(&from, &to);
        fs::rename(&path, path.with_file_name(name)).unwrap();
    }
    server.config(home, "none", "auth = \"user\"")
}

fn count(trace: &str, command: &str) -> usize {
    trace
        .lines()
        .filter(|l| l.contains(&format!("> {command} ")))
        .count()
}

#[test]
fn connection_cut_mid_retr_keeps_what_was_delivered_and_fetches_the_rest_once() {
    let server = Dovecot::start();
    let corpus: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("Subject: {i}\n\n{}\n", format!("line {i}\n").repeat(1500)).into_bytes())
        .collect();
    server.add_messages(&corpus);
    let home = Home::new();
    let proxy = Proxy::start(server.port, Cut::AfterServerBytes(100_000));
    home.write_config(&through(&server, &home, &proxy));
    let run = home.run(&["sync"]);
    run.expect(75);
    let first = home.delivered();
    assert!(
        !first.is_empty() && first.len() < corpus.len(),
        "cut mid-way: {} delivered",
        first.len()
    );
    assert!(
        first.iter().all(|m| corpus.contains(m)),
        "only whole messages are delivered"
    );
    assert!(home.tmp_is_empty());
    assert_eq!(
        server.messages().len(),
        corpus.len(),
        "nothing deleted without QUIT"
    );

    home.write_config(&past(&server, &home, &proxy));
    let run = home.run(&["-v", "sync"]);
    run.expect(0);
    let trace = run.stderr();
    assert_eq!(
        count(&trace, "RETR"),
        corpus.len() - first.len(),
        "delivered messages are not fetched again"
    );
    assert_eq!(count(&trace, "DELE"), corpus.len());
    assert_eq!(home.delivered(), sorted(corpus));
    assert!(server.messages().is_empty());
}

#[test]
fn connection_cut_mid_dele_deletes_next_time_without_fetching() {
    let server = Dovecot::start();
    server.add_messages(&numbered(10));
    let home = Home::new();
    let proxy = Proxy::start(server.port, Cut::AtClientCommand("DELE", 4));
    home.write_config(&through(&server, &home, &proxy));
    home.run(&["sync"]).expect(75);
    assert_eq!(home.delivered(), sorted(numbered(10)));
    assert_eq!(
        server.messages().len(),
        10,
        "DELE takes effect only at QUIT"
    );

    home.write_config(&past(&server, &home, &proxy));
    let run = home.run(&["-v", "sync"]);
    run.expect(0);
    assert_eq!(count(&run.stderr(), "RETR"), 0, "{}", run.stderr());
    assert_eq!(count(&run.stderr(), "DELE"), 10);
    assert!(server.messages().is_empty());
    assert_eq!(home.delivered(), sorted(numbered(10)));
}

/// Reads back what a target holds.
type Reader = Box<dyn Fn() -> Vec<Vec<u8>>>;

fn large_messages(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = format!("Subject: large {i}\n\n").into_bytes();
            while m.len() < size {
                m.extend_from_slice(format!("{i:04} filler text for a full disk\n").as_bytes());
            }
            m
        })
        .collect()
}

#[test]
fn disk_filling_up_under_the_messages_loses_nothing() {
    for target in ["maildir", "mbox"] {
        let server = Dovecot::start();
        let corpus = large_messages(12, 150_000);
        server.add_messages(&corpus);
        let home = Home::new();
        let disk = home.path().join("disk");
        let fs = Tmpfs::mount(&disk, "1m");
        let (deliver, read): (String, Reader) = if target == "maildir" {
            let dir = disk.join("Mail");
            (
                format!("maildir:{}", dir.display()),
                Box::new(move || maildir_messages(&dir)),
            )
        } else {
            let file = disk.join("inbox");
            let reader = move || {
                if file.exists() {
                    mbox::messages(&file)
                } else {
                    Vec::new()
                }
            };
            (
                format!("mbox:{}", disk.join("inbox").display()),
                Box::new(reader),
            )
        };
        let config = server
            .config(&home, "implicit", "")
            .replace(&format!("maildir:{}", home.maildir().display()), &deliver);
        home.write_config(&config);

        let run = home.run(&["sync"]);
        run.expect(74);
        assert!(
            run.stderr().contains("No space left"),
            "{target}: {}",
            run.stderr()
        );
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
        let delivered = read();
        assert!(
            delivered.len() < corpus.len(),
            "{target}: the disk was too small for all"
        );
        let mut everything = delivered.clone();
        everything.extend(server.messages());
        assert_eq!(
            sorted(everything),
            sorted(corpus.clone()),
            "{target}: lost or duplicated"
        );
        if target == "maildir" {
            assert!(
                fs::read_dir(disk.join("Mail/tmp"))
                    .unwrap()
                    .next()
                    .is_none(),
                "no partial file"
            );
        }

        fs.resize("8m");
        home.run(&["sync"]).expect(0);
        assert_eq!(sorted(read()), sorted(corpus), "{target}");
        assert!(server.messages().is_empty());
    }
}

#[test]
fn disk_filling_up_under_the_state_loses_nothing() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    let state = home.path().join("state");
    let fs = Tmpfs::mount(&state, "64k");
    let config = server.config(
        &home,
        "implicit",
        &format!("state_dir = \"{}\"", state.display()),
    );
    home.write_config(&config);
    home.run(&["sync"]).expect(0);

    // Fill the state's disk to the last byte.
    let mut filler = fs::File::create(state.join("filler")).unwrap();
    while filler.write_all(&[0u8; 512]).is_ok() {}
    let _ = filler.sync_all();
    let corpus = batch(0, 200);
    server.add_messages(&corpus);
    let run = home.run(&["sync"]);
    run.expect(74);
    assert!(run.stderr().contains("state file"), "{}", run.stderr());
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert!(home.tmp_is_empty());
    // Whatever is missing from the Maildir is still on the server. A message may be
    // in both (its record could not be written, so it was not deleted); the next
    // run must recognise it rather than deliver it again.
    let mut expected = numbered(3);
    expected.extend(corpus.clone());
    let delivered = home.delivered();
    assert!(
        delivered.len() < expected.len(),
        "the full disk stopped the run"
    );
    for message in &expected {
        assert!(
            delivered.contains(message) || server.messages().contains(message),
            "lost"
        );
    }

    drop(filler);
    fs::remove_file(state.join("filler")).unwrap();
    fs.resize("1m");
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), sorted(expected), "lost or duplicated");
    assert!(server.messages().is_empty());
}

#[test]
fn damaged_state_stops_before_touching_the_server() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true"));
    home.run(&["sync"]).expect(0);
    let path = home.state_file();
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<_> = text.lines().map(str::to_string).collect();
    // As a hand edit would: the record changes, its checksum does not.
    lines[1].replace_range(0..1, "Q");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    server.add_messages(&numbered(1));
    let run = home.run(&["sync"]);
    run.expect(74);
    assert!(
        run.stderr().contains("damaged at line 2"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.stderr().lines().count(), 1);
    assert_eq!(home.delivered().len(), 3, "nothing fetched");
    assert_eq!(server.messages().len(), 4, "nothing deleted");
}
