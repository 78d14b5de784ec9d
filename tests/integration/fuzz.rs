//! A seeded fuzz harness over the real binary: a scripted server that lies, damaged
//! state files and mutated configs. Every case is derived from a base seed and its
//! index alone, so a failure prints the command that replays just that case.
//!
//! Environment: `POPFETCH_FUZZ_SEED` (the base seed, decimal or 0x-hex; fixed by
//! default, so CI runs the same cases every time), `POPFETCH_FUZZ_CASES` (cases per
//! family) and `POPFETCH_FUZZ_CASE` (run only this index).
//!
//! Invariants, in every case: no panic, and no exit code outside the README's
//! table or 70 ("internal error"); no run longer than its timeout allows; bounded
//! peak memory; nothing deleted on the server that is not in the Maildir byte for
//! byte; no message delivered twice while the server's unique-ids are stable and
//! unique. Each family adds its own (see there).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::home::maildir_messages;
use crate::support::scripted::{Fault, Mailbox, Message};
use crate::support::Home;

/// The base seed when none is given.
const DEFAULT_SEED: u64 = 0x1515_f022_5eed_0001;
/// Cases per family when `POPFETCH_FUZZ_CASES` is unset: the three families run in
/// parallel and took 67 s together in a debug build on 2 busy cores, most of it the
/// server family (silence costs a timeout per run).
const DEFAULT_CASES: u64 = 40;
/// The account's `timeout` in the server family: small, so silence costs little.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long past `timeout` a run may last: the README's bug 5 promise is "within
/// timeout plus a second"; half a second more absorbs a loaded CI machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// A run still going after this long is killed and reported as a hang.
const HANG: Duration = Duration::from_secs(30);
/// A config run only reads files: one still going after this long is a hang.
const CONFIG_HANG: Duration = Duration::from_secs(10);
/// Peak resident memory allowed to one run. A debug build syncing a few messages
/// peaks at about 14 MiB; a listing kept without bound passes this in seconds.
const MAX_RSS_KIB: u64 = 64 * 1024;
/// Exit codes of the README's "Exit status" table, less 70 ("a bug; please report").
const EXIT_CODES: [i32; 8] = [0, 64, 69, 74, 75, 76, 77, 78];

/// splitmix64: a few lines with a fixed output forever, so a printed seed replays
/// the same case in any later checkout (a crate's generator may change between
/// versions; this one cannot), and no dependency for the lead to merge.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below((hi_inclusive - lo + 1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seed of one case: the base seed, the family and the index, mixed.
fn case_seed(base: u64, family: &str, index: u64) -> u64 {
    let mut rng = Rng::new(base ^ crc32fast::hash(family.as_bytes()) as u64);
    rng.0 ^= index.wrapping_mul(0xd6e8_feb8_6659_fd93);
    rng.next()
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number")))
}

/// Runs every case of a family and fails once, listing each failing case with the
/// command that replays it.
fn run_family(family: &str, case: impl Fn(&mut Rng, &mut Vec<String>) -> String) {
    let base = env_number("POPFETCH_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_number("POPFETCH_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let indexes: Vec<u64> = match env_number("POPFETCH_FUZZ_CASE") {
        Some(i) => vec![i],
        None => (0..cases).collect(),
    };
    let started = Instant::now();
    let mut report = String::new();
    let mut failed = 0;
    for &index in &indexes {
        let mut rng = Rng::new(case_seed(base, family, index));
        let mut failures = Vec::new();
        let description = case(&mut rng, &mut failures);
        if std::env::var_os("POPFETCH_FUZZ_SHOW").is_some() {
            eprintln!("fuzz::{family} case {index}: {description}");
        }
        if !failures.is_empty() {
            failed += 1;
            report.push_str(&format!(
                "\n--- case {index} (base seed {base:#x}): {description}\n    replay: POPFETCH_FUZZ_SEED={base:#x} POPFETCH_FUZZ_CASE={index} cargo test --test integration fuzz::{family}\n",
            ));
            for f in failures {
                report.push_str(&format!("    FAILED: {f}\n"));
            }
        }
    }
    eprintln!(
        "fuzz::{family}: {} case(s) in {:.1?}, {failed} failed",
        indexes.len(),
        started.elapsed()
    );
    assert!(
        failed == 0,
        "fuzz::{family}: {failed} of {} case(s) failed (base seed {base:#x}):{report}",
        indexes.len()
    );
}

/// One run of the real binary, watched: its exit, its time and its peak memory.
struct Watched {
    code: Option<i32>,
    signal: Option<i32>,
    elapsed: Duration,
    max_rss_kib: u64,
    /// Killed by the watcher, and why.
    killed: Option<&'static str>,
    stderr: Vec<u8>,
}

impl Watched {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn outcome(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "no status".into(),
        }
    }

    /// The invariants every run keeps: a code from the table, no panic, within
    /// `limit`, within the memory bound.
    fn check_common(&self, what: &str, limit: Duration, failures: &mut Vec<String>) {
        let stderr = self.stderr();
        let brief: String = stderr.chars().take(600).collect();
        if let Some(why) = self.killed {
            failures.push(format!(
                "{what}: killed by the harness: {why}; stderr: {brief:?}"
            ));
        } else if self.code.is_none_or(|c| !EXIT_CODES.contains(&c)) {
            failures.push(format!(
                "{what}: {} is not an exit code of the README's table (or is 70); stderr: {brief:?}",
                self.outcome()
            ));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{what}: panicked: {brief:?}"));
        }
        if self.killed.is_none() && self.elapsed > limit {
            failures.push(format!(
                "{what}: took {:.1?}, more than {limit:?} ({}); stderr: {brief:?}",
                self.elapsed,
                self.outcome()
            ));
        }
        if self.max_rss_kib > MAX_RSS_KIB && self.killed.is_none() {
            failures.push(format!(
                "{what}: peak RSS {} KiB, over {MAX_RSS_KIB} KiB",
                self.max_rss_kib
            ));
        }
    }
}

/// Peak resident memory of a running process since its exec, from /proc. (wait4's
/// ru_maxrss is no use here: Linux carries into it the forked test binary's size.)
/// Until the exec, the child shares or copies the test binary's memory: its
/// samples are skipped, by name.
fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status.lines().next()? != "Name:\tpopfetch" {
        return None;
    }
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs popfetch in `home` and watches it: it is killed past `hang` or past the
/// memory bound (so a leak cannot take the machine down); its peak RSS is sampled
/// every few milliseconds.
fn watch(home: &Home, args: &[&str], hang: Duration) -> Watched {
    let mut stderr_file = tempfile::tempfile().unwrap();
    let mut cmd = home.command();
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(stderr_file.try_clone().unwrap());
    let started = Instant::now();
    let child = cmd.spawn().expect("start popfetch");
    let pid = child.id() as i32;
    let mut killed = None;
    let mut status = 0;
    // The child is ours and reaped once, here, by waitpid (std's Child is dropped
    // without waiting), so its pid cannot be reused while we poll or kill it.
    let mut watched_peak = 0;
    loop {
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            break;
        }
        assert!(reaped == 0, "wait4: {}", std::io::Error::last_os_error());
        if killed.is_none() {
            let rss = rss_kib(pid).unwrap_or(0);
            watched_peak = watched_peak.max(rss);
            let why = if rss > MAX_RSS_KIB {
                Some("resident memory over the bound")
            } else if started.elapsed() > hang {
                Some("still running: a hang")
            } else {
                None
            };
            if let Some(why) = why {
                killed = Some(why);
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    drop(child);
    let mut stderr = Vec::new();
    stderr_file.rewind().unwrap();
    stderr_file.read_to_end(&mut stderr).unwrap();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    if std::env::var_os("POPFETCH_FUZZ_SHOW").is_some() {
        eprintln!(
            "  popfetch {args:?}: {elapsed:.1?}, peak {watched_peak} KiB, killed: {killed:?}"
        );
    }
    Watched {
        code,
        signal,
        elapsed,
        max_rss_kib: watched_peak,
        killed,
        stderr,
    }
}

/// A message whose content is unique to `serial` but whose length (and so its
/// listed size) is shared with every message of the same `length`.
fn message(rng: &mut Rng, serial: usize, uid: String, length: usize) -> Message {
    let mut content = format!(
        "From: sender{serial:04}@example.org\nSubject: fuzz message {serial:04}\nMessage-ID: <{serial:04}@fuzz.example>\n\n"
    )
    .into_bytes();
    let mut line = 0;
    while content.len() + 81 < length {
        // Lines that need dot-stuffing, and some that look like a terminator.
        let text = match line % 5 {
            0 => ".leading dot".to_string(),
            1 => "..".to_string(),
            2 => "From the start of a line".to_string(),
            _ => format!("body line {line:04}"),
        };
        content.extend_from_slice(format!("{text:<70}\n").as_bytes());
        line += 1;
    }
    let fill = length.saturating_sub(content.len() + 1);
    for _ in 0..fill {
        content.push(b'a' + rng.below(26) as u8);
    }
    content.push(b'\n');
    Message {
        serial,
        uid,
        content,
    }
}

/// Contents of the Maildir's messages.
fn delivered(home: &Home) -> Vec<Vec<u8>> {
    maildir_messages(&home.maildir())
}

/// Every message the server removed at QUIT must be in the Maildir as the server
/// sent it (or as it holds it): a deleted message that is not there is lost.
fn check_nothing_lost(
    model: &crate::support::scripted::MailboxModel,
    files: &[Vec<u8>],
    failures: &mut Vec<String>,
) {
    for gone in &model.deleted {
        let in_maildir = files.iter().any(|f| {
            *f == gone.content
                || model
                    .sent
                    .iter()
                    .any(|(serial, sent)| *serial == gone.serial && sent == f)
        });
        if !in_maildir {
            failures.push(format!(
                "LOST: message {} (uid {:?}) was deleted on the server and is not in the Maildir",
                gone.serial, gone.uid
            ));
        }
    }
}

/// How many Maildir files hold each message (by serial); messages delivered more
/// than once are duplicates.
fn duplicates(
    model: &crate::support::scripted::MailboxModel,
    all: &[Message],
    files: &[Vec<u8>],
) -> Vec<(usize, usize)> {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for f in files {
        let serial = all
            .iter()
            .find(|m| m.content == *f)
            .map(|m| m.serial)
            .or_else(|| {
                model
                    .sent
                    .iter()
                    .find(|(_, sent)| sent == f)
                    .map(|(s, _)| *s)
            });
        if let Some(s) = serial {
            *counts.entry(s).or_default() += 1;
        }
    }
    let mut dups: Vec<(usize, usize)> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
    dups.sort_unstable();
    dups
}

const LENGTHS: [usize; 4] = [400, 400, 900, 2500];
/// The listings an endless reply may be to.
const LISTINGS: [&str; 3] = ["CAPA", "UIDL", "LIST"];

/// Family 1: a server that mutates its replies, over one to three syncs.
#[test]
fn server_mutations() {
    run_family("server_mutations", |rng, failures| {
        let mut serial = 0;
        let mut all: Vec<Message> = Vec::new();
        let mut new_message = |rng: &mut Rng, uid: Option<String>, all: &mut Vec<Message>| {
            serial += 1;
            let uid = uid.unwrap_or_else(|| format!("uid-{serial:04}"));
            let length = *rng.pick(&LENGTHS);
            let m = message(rng, serial, uid, length);
            all.push(m.clone());
            m
        };
        let mut stable = true;
        let mut initial: Vec<Message> = Vec::new();
        for _ in 0..rng.range(1, 6) {
            let repeat = !initial.is_empty() && rng.chance(12);
            let uid = repeat.then(|| {
                stable = false;
                rng.pick(&initial).uid.clone()
            });
            let m: Message = new_message(rng, uid, &mut all);
            initial.push(m);
        }
        let server = Mailbox::start(initial);
        let home = Home::new();
        let mut description = String::new();
        let runs = rng.range(1, 3);
        let mut uidl_refused = 0;
        for run in 0..runs {
            if run > 0 {
                let mut model = server.model.lock().unwrap();
                // Another client may have removed a message meanwhile.
                if !model.messages.is_empty() && rng.chance(15) {
                    let i = rng.below(model.messages.len() as u64) as usize;
                    let gone = model.messages.remove(i);
                    description.push_str(&format!(" | elsewhere deleted {}", gone.serial));
                }
                for _ in 0..rng.range(0, 2) {
                    // A new message, maybe under an id a removed one had.
                    let removed: Vec<String> = all
                        .iter()
                        .filter(|m| !model.messages.iter().any(|x| x.serial == m.serial))
                        .map(|m| m.uid.clone())
                        .collect();
                    let uid = (!removed.is_empty() && rng.chance(30)).then(|| {
                        stable = false;
                        rng.pick(&removed).clone()
                    });
                    let m = new_message(rng, uid, &mut all);
                    description.push_str(&format!(" | new {} {:?}", m.serial, m.uid));
                    model.messages.push(m);
                }
            }
            let (faults, pipelining) = {
                let model = server.model.lock().unwrap();
                server_faults(rng, &model.messages)
            };
            if faults.iter().any(|f| matches!(f, Fault::Refuse("UIDL", _))) {
                uidl_refused += 1;
            }
            // A body served with other headers than TOP shows is, to any client,
            // another message under the same unique-id: popfetch fetches it again
            // rather than delete it unverified, so it is not a stable id.
            {
                let model = server.model.lock().unwrap();
                let reheaded = |i: usize, served: &[u8]| {
                    model
                        .messages
                        .get(i)
                        .is_some_and(|m| header_section(&m.content) != header_section(served))
                };
                if faults
                    .iter()
                    .any(|f| matches!(f, Fault::Body(i, c) if reheaded(*i, c)))
                {
                    stable = false;
                }
            }
            let keep = rng.chance(40);
            {
                let mut model = server.model.lock().unwrap();
                model.faults = faults.clone();
                model.pipelining = pipelining;
            }
            description.push_str(&format!(
                " | run {run}: keep={keep} pipelining={pipelining} faults={}",
                describe_faults(&faults)
            ));
            let config = server
                .config(&home.maildir(), &format!("keep = {keep}"))
                .replace("timeout = 5", &format!("timeout = {}", TIMEOUT.as_secs()));
            home.write_config(&config);
            let watched = watch(&home, &["sync"], HANG);
            description.push_str(&format!(" -> {}", watched.outcome()));
            watched.check_common(&format!("run {run}"), TIMEOUT + MARGIN, failures);
        }
        // A server that answers UIDL in some sessions and not in others names the
        // same message two ways (unique-id, then header digest): not stable.
        if uidl_refused > 0 && uidl_refused < runs {
            stable = false;
        }
        drop_server_and_check(server, &home, &all, stable, failures);
        let ids = if stable { "stable ids" } else { "unstable ids" };
        format!("{} message(s), {ids}{description}", all.len())
    });
}

fn drop_server_and_check(
    server: Mailbox,
    home: &Home,
    all: &[Message],
    stable: bool,
    failures: &mut Vec<String>,
) {
    let files = delivered(home);
    let model = server.model.lock().unwrap();
    check_nothing_lost(&model, &files, failures);
    if stable {
        for (serial, n) in duplicates(&model, all, &files) {
            failures.push(format!(
                "DUPLICATE: message {serial} is in the Maildir {n} times, with stable unique-ids"
            ));
        }
    }
}

fn describe_faults(faults: &[Fault]) -> String {
    let parts: Vec<String> = faults
        .iter()
        .map(|f| match f {
            Fault::Body(i, c) => format!("Body({i}, {} bytes)", c.len()),
            Fault::Garbage(n, g) => format!("Garbage(cmd {n}, {} bytes)", g.len()),
            Fault::LongLine(n, len) => format!("LongLine(cmd {n}, {len})"),
            other => format!("{other:?}"),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The faults of one session, and whether it pipelines. A third of the sessions are
/// clean, so that mail also moves.
fn server_faults(rng: &mut Rng, messages: &[Message]) -> (Vec<Fault>, bool) {
    let pipelining = rng.chance(80);
    let mut faults = Vec::new();
    if rng.chance(33) {
        return (faults, pipelining);
    }
    let n = messages.len();
    // CAPA, USER, PASS, UIDL, LIST, then per message some of LIST/TOP/RETR/DELE, QUIT.
    let commands = 5 + 3 * n as u64;
    for _ in 0..rng.range(1, 2) {
        let message = |rng: &mut Rng| rng.below(n.max(1) as u64) as usize;
        let fault = match rng.below(13) {
            0 => Fault::UidlGhost,
            1 if n > 0 => Fault::UidlMissing(message(rng)),
            2 if n > 0 => {
                let delta = *rng.pick(&[-1000, -50, -1, 1, 7, 100_000, 1 << 40]);
                Fault::ListSize(message(rng), delta)
            }
            3 if n > 0 => {
                let i = message(rng);
                Fault::Body(i, mutate_body(rng, &messages[i].content))
            }
            // A reply nobody asked for is only told apart from the real one by its
            // size; a session that also lies about sizes could not be caught.
            4 if n > 0 && !faults.iter().any(|f| matches!(f, Fault::ListSize(..))) => {
                Fault::ExtraReply(message(rng))
            }
            5 if n > 0 => Fault::CloseInBody(message(rng)),
            6 => {
                let mut g = vec![*rng.pick(&[b'x', 0, 0xff, b'.', b' ', 0x1b])];
                for _ in 0..rng.range(1, 300) {
                    g.push(rng.below(256) as u8);
                }
                if rng.chance(50) {
                    g.extend_from_slice(b"\r\n");
                }
                Fault::Garbage(rng.below(commands) as usize, g)
            }
            7 => Fault::LongLine(rng.below(commands) as usize, rng.range(1000, 300_000)),
            8 => Fault::Endless(LISTINGS[rng.below(LISTINGS.len() as u64) as usize]),
            9 => Fault::CloseAt(rng.below(commands) as usize),
            10 => Fault::SilentAt(rng.below(commands) as usize),
            11 if n > 0 => {
                let command = *rng.pick(&["RETR", "DELE", "TOP"]);
                Fault::Refuse(command, message(rng))
            }
            12 => Fault::Refuse("UIDL", 0),
            _ => continue,
        };
        if matches!(fault, Fault::ListSize(..))
            && faults.iter().any(|f| matches!(f, Fault::ExtraReply(_)))
        {
            continue;
        }
        faults.push(fault);
    }
    (faults, pipelining)
}

/// A body changed as a hostile or broken server might: a line added or dropped,
/// garbage bytes, an overlong line. Never a bare CR or LF, so that what a correct
/// client decodes is exactly this content.
/// A message's header section: up to its first empty line (RFC 5322 §2.1).
fn header_section(content: &[u8]) -> &[u8] {
    let crlf = content.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = content.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => &content[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &content[..a],
        (None, None) => content,
    }
}

fn mutate_body(rng: &mut Rng, content: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = content
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let at = rng.below(lines.len() as u64 + 1) as usize;
    match rng.below(4) {
        0 => lines.insert(at, b"X-Extra: inserted by the fuzzer\n".to_vec()),
        1 if lines.len() > 1 => {
            lines.remove(at.min(lines.len() - 1));
        }
        2 => {
            let mut g: Vec<u8> = (0..rng.range(1, 64))
                .map(|_| rng.below(256) as u8)
                .filter(|b| *b != b'\r' && *b != b'\n')
                .collect();
            g.push(b'\n');
            lines.insert(at, g);
        }
        _ => {
            let mut long = vec![b'x'; rng.range(1000, 200_000)];
            long.push(b'\n');
            lines.insert(at, long);
        }
    }
    lines.concat()
}

/// Family 2: a state file written by a good sync, then damaged.
#[test]
fn damaged_state() {
    run_family("damaged_state", |rng, failures| {
        let mut all = Vec::new();
        let mut serial = 0;
        let mut make = |rng: &mut Rng, all: &mut Vec<Message>| {
            serial += 1;
            let length = *rng.pick(&LENGTHS);
            let m = message(rng, serial, format!("uid-{serial:04}"), length);
            all.push(m.clone());
            m
        };
        let first: Vec<Message> = (0..rng.range(2, 8)).map(|_| make(rng, &mut all)).collect();
        let server = Mailbox::start(first);
        let home = Home::new();
        let config = |keep: bool| {
            server
                .config(&home.maildir(), &format!("keep = {keep}"))
                .replace("timeout = 5", &format!("timeout = {}", TIMEOUT.as_secs()))
        };
        home.write_config(&config(true));
        let mut description = String::new();
        let good = watch(&home, &["sync"], HANG);
        if good.code != Some(0) {
            failures.push(format!(
                "setup: the good sync gave {}: {}",
                good.outcome(),
                good.stderr()
            ));
            return "setup failed".into();
        }
        if rng.chance(50) {
            // A second good sync, so the journal holds appended records too.
            let mut model = server.model.lock().unwrap();
            for _ in 0..rng.range(1, 3) {
                model.messages.push(make(rng, &mut all));
            }
            drop(model);
            let again = watch(&home, &["sync"], HANG);
            if again.code != Some(0) {
                failures.push(format!(
                    "setup: the second good sync gave {}: {}",
                    again.outcome(),
                    again.stderr()
                ));
                return "setup failed".into();
            }
            description.push_str("two good syncs");
        } else {
            description.push_str("one good sync");
        }
        let before = delivered(&home).len();
        let Some(state) = state_file(&home) else {
            failures.push("setup: no state file after a good sync".into());
            return description;
        };
        let original = fs::read(&state).unwrap();

        // Files that no location read back from the state may reach: one named by an
        // absolute path, one beside the Maildir's subdirectories, one beside the
        // Maildir.
        let canaries = [
            home.path().join("canary-abs"),
            home.maildir().join("canary-rel"),
            home.path().join("canary-home"),
        ];
        for c in &canaries {
            fs::write(c, b"canary: must survive\n").unwrap();
        }
        let known: Vec<String> = all.iter().map(|m| m.uid.clone()).collect();
        let (damaged, refetch_bound, what) = damage(rng, &original, &canaries[0], &known);
        fs::write(&state, &damaged).unwrap();
        description.push_str(&format!(
            "; state {} -> {} bytes: {what}",
            original.len(),
            damaged.len()
        ));

        let mut model = server.model.lock().unwrap();
        for _ in 0..rng.range(0, 2) {
            model.messages.push(make(rng, &mut all));
        }
        drop(model);
        let keep = rng.chance(50);
        home.write_config(&config(keep));
        let watched = watch(&home, &["sync"], HANG);
        description.push_str(&format!("; sync keep={keep} -> {}", watched.outcome()));
        watched.check_common("sync after damage", TIMEOUT + MARGIN, failures);
        if !matches!(watched.code, Some(0 | 74)) {
            failures.push(format!(
                "exit {} after damage: want 74 (state damaged) or 0; stderr: {:?}",
                watched.outcome(),
                watched.stderr()
            ));
        }
        for c in &canaries {
            if fs::read(c).ok().as_deref() != Some(&b"canary: must survive\n"[..]) {
                failures.push(format!("TOUCHED: {} was removed or changed", c.display()));
            }
        }
        let files = delivered(&home);
        let model = server.model.lock().unwrap();
        check_nothing_lost(&model, &files, failures);
        if watched.code == Some(0) {
            let dups = duplicates(&model, &all, &files);
            let again: usize = dups.iter().map(|(_, n)| n - 1).sum();
            // A torn last append may cost the one message it recorded; a file cut
            // short inside a line before its last must be noticed (exit 74), never
            // answered by fetching again what it listed (issue 15, bug 7).
            if let Some(allowed) = refetch_bound {
                if again > allowed {
                    failures.push(format!(
                        "REFETCHED: exit 0 and {again} message(s) delivered again (of {before} delivered before){}",
                        if allowed == 0 { " from a state file cut short inside a line before its last" } else { "" }
                    ));
                }
            }
        }
        description
    });
}

/// The state file of the one account: the largest file in the state directory that
/// is not a lock (its name is the state owner's business).
fn state_file(home: &Home) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![home.state_dir()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().ends_with(".lock")
                && best.as_ref().is_none_or(|(len, _)| meta.len() > *len)
            {
                best = Some((meta.len(), path));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Damages a state file by seed. Returns the damaged bytes, how many messages a
/// sync that succeeds on it may fetch again (none when it was cut inside a line
/// before its last, one otherwise, no bound when whole lines were cut off at a
/// line boundary), and what was done.
fn damage(
    rng: &mut Rng,
    original: &[u8],
    absolute: &Path,
    uids: &[String],
) -> (Vec<u8>, Option<usize>, String) {
    let mut bytes = original.to_vec();
    let mut cut_mid = false;
    let mut boundary_cut = false;
    let mut what = Vec::new();
    for _ in 0..rng.range(1, 2) {
        let mut lines: Vec<Vec<u8>> = bytes
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let n = lines.len().max(1) as u64;
        match rng.below(6) {
            0 => {
                let (at, line) = position(rng, &lines);
                let start: usize = lines[..line].iter().map(Vec::len).sum();
                if at == start {
                    // Whole records lost at a line boundary leave a file that looks
                    // complete: no file format can tell, so no re-fetch bound is
                    // asserted for it (the other invariants still hold).
                    boundary_cut = true;
                } else {
                    cut_mid |= line + 1 < lines.len();
                }
                bytes.truncate(at);
                what.push(format!(
                    "cut at {at}, in line {} of {}",
                    line + 1,
                    lines.len()
                ));
                continue;
            }
            1 if !bytes.is_empty() => {
                let (at, line) = position(rng, &lines);
                let flip = 1 + rng.below(255) as u8;
                let last = bytes.len() - 1;
                bytes[at.min(last)] ^= flip;
                what.push(format!("byte {at} (line {}) ^= {flip:#04x}", line + 1));
                continue;
            }
            2 => {
                let i = rng.below(n) as usize;
                if let Some(l) = lines.get(i).cloned() {
                    lines.insert(i, l);
                }
                what.push(format!("line {} doubled", i + 1));
            }
            3 => {
                let i = rng.below(n) as usize;
                if i < lines.len() {
                    lines.remove(i);
                }
                what.push(format!("line {} removed", i + 1));
            }
            4 if lines.len() > 2 => {
                let (a, b) = (1 + rng.below(n - 1) as usize, 1 + rng.below(n - 1) as usize);
                lines.swap(a, b);
                what.push(format!("lines {} and {} swapped", a + 1, b + 1));
            }
            _ => {
                // An intent record, checksummed as today's format seals them, whose
                // location leaves the Maildir.
                let absolute = absolute.display().to_string();
                let location =
                    *rng.pick(&[absolute.as_str(), "../canary-rel", "../../canary-home"]);
                let uid = if rng.chance(70) {
                    rng.pick(uids).clone()
                } else {
                    "uid-forged".to_string()
                };
                let record = format!("I {uid} {location}");
                let sealed = format!("{record}\t{:08x}\n", crc32fast::hash(record.as_bytes()));
                let at = 1 + rng.below(n) as usize;
                lines.insert(at.min(lines.len()), sealed.into_bytes());
                what.push(format!("inserted line {}: {record}", at + 1));
            }
        }
        bytes = lines.concat();
    }
    let bound = if boundary_cut {
        None
    } else if cut_mid {
        Some(0)
    } else {
        Some(1)
    };
    (bytes, bound, what.join(", "))
}

/// At most a line's worth of `text`, for descriptions.
fn short(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// A byte offset chosen by line and by its fraction of that line, so that a replay
/// hits the same record although file names and times differ in length from run to
/// run. Returns the offset and the line index.
fn position(rng: &mut Rng, lines: &[Vec<u8>]) -> (usize, usize) {
    if lines.is_empty() {
        return (0, 0);
    }
    let line = rng.below(lines.len() as u64) as usize;
    let start: usize = lines[..line].iter().map(Vec::len).sum();
    let within = lines[line].len() * rng.below(1000) as usize / 1000;
    (start + within, line)
}

/// TOML text of a string with every control character escaped (TOML allows any
/// code point written as \uXXXX, NUL and ESC included).
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text a hostile config may carry into a message: escape sequences, NUL, bells.
fn nasty(rng: &mut Rng) -> String {
    let base = *rng.pick(&[
        "\u{1b}[31mred\u{1b}[0m",
        "\u{1b}]0;title\u{7}",
        "\u{1b}[2J\u{1b}[H",
        "nul\u{0}byte",
        "bell\u{7}\u{8}\u{8}",
        "\u{9b}31m",
        "",
        " ",
        "ünïcödé",
    ]);
    let mut s = base.to_string();
    if rng.chance(30) {
        s.push_str(&"x".repeat(rng.range(1, 5000)));
    }
    s
}

/// Family 3: configs that are wrong in one to three ways.
#[test]
fn mutated_configs() {
    run_family("mutated_configs", |rng, failures| {
        let home = Home::new();
        // A listener that no run may reach: every config here is invalid.
        let tripwire = TcpListener::bind("127.0.0.1:0").unwrap();
        tripwire.set_nonblocking(true).unwrap();
        let port = tripwire.local_addr().unwrap().port();
        let maildir = home.maildir().display().to_string();
        let mut name = "test".to_string();
        let mut keys: Vec<(String, String)> = vec![
            ("host".into(), toml_str("127.0.0.1")),
            ("port".into(), port.to_string()),
            ("tls".into(), toml_str("none")),
            ("auth".into(), toml_str("user")),
            ("timeout".into(), "2".into()),
            ("user".into(), toml_str("alice")),
            ("password".into(), toml_str("hunter2-secret")),
            ("deliver".into(), toml_str(&format!("maildir:{maildir}"))),
        ];
        let set = |keys: &mut Vec<(String, String)>, key: &str, value: String| match keys
            .iter_mut()
            .find(|(k, _)| k == key)
        {
            Some(slot) => slot.1 = value,
            None => keys.push((key.to_string(), value)),
        };
        let mut mutations = Vec::new();
        for _ in 0..rng.range(1, 3) {
            let (key, value) = match rng.below(12) {
                0 => {
                    let key = format!(
                        "{}{}",
                        rng.pick(&["colour", "kep", "timeout_s", "x"]),
                        nasty(rng)
                    );
                    (
                        key,
                        rng.pick(&["1", "true", "\"v\"", "[1, 2]", "{ a = 1 }"])
                            .to_string(),
                    )
                }
                1 => {
                    let key = *rng.pick(&[
                        "timeout",
                        "mda_timeout",
                        "keep",
                        "port",
                        "host",
                        "max_messages",
                        "fetch_all",
                        "state_dir",
                    ]);
                    let value = match key {
                        "host" | "state_dir" => {
                            rng.pick(&["5", "true", "[\"a\"]", "{ x = 1 }"]).to_string()
                        }
                        "port" => rng
                            .pick(&["-1", "65536", "99999999999", "\"110\"", "1.5"])
                            .to_string(),
                        "max_messages" => rng.pick(&["-3", "\"ten\"", "1e3", "0"]).to_string(),
                        _ => rng
                            .pick(&["\"yes\"", "-1", "1.5", "[]", "2026-01-01"])
                            .to_string(),
                    };
                    (key.to_string(), value)
                }
                2 => {
                    // Durations no clock can add: bounded at config time or refused.
                    let key = *rng.pick(&["timeout", "mda_timeout"]);
                    let secs = (1u64 << rng.range(40, 62)) + rng.below(1 << 30);
                    (key.to_string(), secs.to_string())
                }
                3 => {
                    // Each overflows u64 bytes: 2^34 G is 2^64.
                    let number = *rng.pick(&[
                        "18446744073709551615",
                        "99999999999999999999",
                        "17179869184",
                    ]);
                    let unit = *rng.pick(&["G", "GB"]);
                    ("max_size".to_string(), toml_str(&format!("{number}{unit}")))
                }
                4 => {
                    set(&mut keys, "keep", "true".into());
                    let number =
                        *rng.pick(&["99999999999999999999", "184467440737095516150", "-5", ""]);
                    (
                        "delete_after".to_string(),
                        toml_str(&format!("{number}{}", rng.pick(&["d", "w", "s"]))),
                    )
                }
                5 => {
                    let key = *rng.pick(&[
                        "tls",
                        "auth",
                        "tls_min_version",
                        "max_size_action",
                        "delete_after",
                        "tls_fingerprint",
                    ]);
                    if key == "delete_after" {
                        set(&mut keys, "keep", "true".into());
                    }
                    (key.to_string(), toml_str(&nasty(rng)))
                }
                6 => {
                    // Ends in a slash, which no account name may hold (it would
                    // leave the state directory), whatever else it carries.
                    name = format!("{}{}/", rng.pick(&["a", "", ".", "../"]), nasty(rng));
                    mutations.push(short(&format!("account name {name:?}")));
                    continue;
                }
                7 => {
                    let key = *rng.pick(&["host", "user", "deliver", "state_dir"]);
                    let blank = key != "state_dir" && rng.chance(50);
                    (key.to_string(), toml_str(if blank { "   " } else { "" }))
                }
                8 => {
                    let dir = format!("{}/a\u{0}b", home.path().display());
                    if rng.chance(50) {
                        ("state_dir".to_string(), toml_str(&dir))
                    } else {
                        ("deliver".to_string(), toml_str(&format!("maildir:{dir}")))
                    }
                }
                9 => {
                    let path = *rng.pick(&["relative/inbox", "Mail", "./x", "../up"]);
                    let kind = *rng.pick(&["maildir", "mbox"]);
                    ("deliver".to_string(), toml_str(&format!("{kind}:{path}")))
                }
                10 => match rng.below(4) {
                    0 => ("password_command".to_string(), toml_str("echo x")),
                    1 => ("timeout".to_string(), "0".to_string()),
                    2 => ("max_messages".to_string(), "0".to_string()),
                    _ => {
                        set(&mut keys, "keep", "false".into());
                        ("delete_after".to_string(), toml_str("30d"))
                    }
                },
                _ => {
                    let key = *rng.pick(&["deliver", "filter", "password_command"]);
                    let value = match key {
                        // An MDA named by any other text is a valid command.
                        "deliver" if rng.chance(25) => rng
                            .pick(&["mda:", "mda:   ", "mda:nul\u{0}byte"])
                            .to_string(),
                        "deliver" => format!(
                            "{}{}",
                            rng.pick(&["imap:x", "maildir", "nothing:"]),
                            nasty(rng)
                        ),
                        // A trailing backslash is a literal one to shell_words (and
                        // to sh at the end of input): a shell operator is refused.
                        _ => rng.pick(&["\"unclosed", "", "'", "a | b"]).to_string(),
                    };
                    if key == "password_command" {
                        keys.retain(|(k, _)| k != "password");
                    }
                    (key.to_string(), toml_str(&value))
                }
            };
            mutations.push(short(&format!("{key:?} = {value}")));
            set(&mut keys, &key, value);
        }
        let mut text = format!("[accounts.{}]\n", toml_str(&name));
        for (k, v) in &keys {
            text.push_str(&format!("{} = {v}\n", toml_str(k)));
        }
        home.write_config(&text);
        let args: &[&str] = match rng.below(3) {
            0 => &["sync"],
            1 => &["sync", "--dry-run"],
            _ => &["list"],
        };
        let description = format!("popfetch {} with {}", args.join(" "), mutations.join("; "));
        let watched = watch(&home, args, CONFIG_HANG);
        watched.check_common("run", Duration::from_secs(10), failures);
        let stderr = watched.stderr();
        if !matches!(watched.code, Some(64 | 78)) {
            failures.push(format!(
                "{}: want 78 (or 64); stderr: {stderr:?}",
                watched.outcome()
            ));
        }
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        if lines != 1 {
            failures.push(format!(
                "{lines} stderr lines, want exactly one: {stderr:?}"
            ));
        }
        if watched.stderr.contains(&0x1b) {
            failures.push(format!("a raw ESC byte in stderr: {stderr:?}"));
        }
        if tripwire.accept().is_ok() {
            failures.push("CONTACTED: the server was connected to with an invalid config".into());
        }
        if home.maildir().exists() {
            failures.push("the Maildir was created with an invalid config".into());
        }
        description
    });
}

#[test]
fn the_generator_is_fixed() {
    // Seeds printed by an earlier checkout must replay the same case.
    let mut rng = Rng::new(case_seed(DEFAULT_SEED, "server_mutations", 0));
    let first: Vec<u64> = (0..3).map(|_| rng.below(1000)).collect();
    let mut again = Rng::new(case_seed(DEFAULT_SEED, "server_mutations", 0));
    assert_eq!(first, (0..3).map(|_| again.below(1000)).collect::<Vec<_>>());
    assert_eq!(Rng::new(0).next(), 0xe220_a839_7b1d_cdaf, "splitmix64 of 0");
}
