//! The never-lose-mail order, pinned without sockets: a scripted server, a
//! target and a state that write every step into one log, so a test sees what
//! went out on the wire relative to when deliveries and records became durable.

use std::cell::RefCell;
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;

use super::session::run_session;
use super::*;
use crate::config::{Config, Paths};
use crate::deliver::{Announce, Class, DeliverError, Landed, TargetError};
use crate::pop3::{Client, Credentials, Wire};
use crate::sync::policy::Known;
use crate::sync::state::identity::Identity;
use crate::sync::state::identity::Record;
use crate::sync::state::{Ledger, StateError};

type Log = Rc<RefCell<Vec<String>>>;

/// A server that says its script and logs each line the client sends as `C: …`.
struct Scripted {
    server: Cursor<Vec<u8>>,
    line: Vec<u8>,
    log: Log,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.server.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &byte in buf {
            if byte == b'\n' {
                let line = String::from_utf8_lossy(&self.line);
                let line = line.trim_end_matches('\r');
                self.log.borrow_mut().push(format!("C: {line}"));
                self.line.clear();
            } else {
                self.line.push(byte);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for Scripted {}

/// A target in memory that logs its steps; its flush can fail, as on a full disk.
struct Shelf {
    log: Log,
    stages: bool,
    fail_flush: bool,
    /// A flush refuses the second message it commits, as an IMAP server may.
    refuse_second: bool,
    landed: Vec<Landed>,
    staged: Vec<Vec<u8>>,
    kept: Vec<Vec<u8>>,
    announced: usize,
    /// Whether it can find a delivery again; one that cannot names no place.
    recovers: bool,
    /// Its flush says where each message landed, as IMAP's APPENDUID does.
    names_places: bool,
}

impl Shelf {
    fn new(log: &Log, stages: bool) -> Shelf {
        Shelf {
            log: log.clone(),
            stages,
            fail_flush: false,
            refuse_second: false,
            landed: Vec::new(),
            staged: Vec::new(),
            kept: Vec::new(),
            announced: 0,
            recovers: true,
            names_places: false,
        }
    }
}

impl Target for Shelf {
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError> {
        self.announced += 1;
        announce(&format!("shelf-{}", self.announced)).map_err(DeliverError::State)?;
        let mut body = Vec::new();
        message
            .read_to_end(&mut body)
            .map_err(DeliverError::Source)?;
        self.log.borrow_mut().push("target.deliver".into());
        let bytes = body.len() as u64;
        if self.stages {
            self.staged.push(body);
        } else {
            self.kept.push(body);
        }
        Ok(bytes)
    }

    fn recover(&mut self, _: &str) -> Result<Recovered, DeliverError> {
        Ok(Recovered::NotDelivered)
    }

    fn stages(&self) -> bool {
        self.stages
    }

    fn recovers(&self) -> bool {
        self.recovers
    }

    fn unstage(&mut self) {
        self.staged.pop();
    }

    fn flush(&mut self) -> Result<(), DeliverError> {
        self.log.borrow_mut().push("target.flush".into());
        if self.fail_flush {
            self.staged.clear();
            return Err(Full(io::Error::other("disk full")).into());
        }
        if self.refuse_second {
            for (i, body) in self.staged.drain(..).enumerate() {
                if i == 1 {
                    self.landed.push(Err(Refused.into()));
                } else {
                    self.kept.push(body);
                    self.landed.push(Ok(None));
                }
            }
        }
        if self.names_places {
            let from = self.kept.len();
            self.landed = (from..from + self.staged.len())
                .map(|i| Ok(Some(format!("landed-{}", i + 1))))
                .collect();
        }
        self.kept.append(&mut self.staged);
        Ok(())
    }

    fn landed(&mut self) -> Vec<Landed> {
        std::mem::take(&mut self.landed)
    }
}

/// The shelf's refusal of one message.
#[derive(Debug, thiserror::Error)]
#[error("the shelf refuses this one")]
struct Refused;

impl TargetError for Refused {
    fn class(&self) -> Class {
        Class::Failed
    }

    fn is_per_message(&self) -> bool {
        true
    }
}

/// The shelf's own error: its disk filled up.
#[derive(Debug, thiserror::Error)]
#[error("the shelf is full")]
struct Full(#[source] io::Error);

impl TargetError for Full {
    fn class(&self) -> Class {
        Class::Failed
    }
}

/// The real state, logging its records and syncs. With `fail_records`, a sync
/// fails once a delivery has been recorded, as when the disk fills up then.
struct Watched {
    state: UidlState,
    log: Log,
    fail_records: bool,
    unsynced_records: bool,
    /// A sync fails while an intent waits for it, as when the disk fills up
    /// under the journal.
    fail_intents: bool,
    unsynced_intents: bool,
}

impl Known for Watched {
    fn records(&self, uid: &str) -> &[Record] {
        self.state.records(uid)
    }
    fn forms(&self, uid: &str) -> &[String] {
        self.state.forms(uid)
    }
    fn uids(&self) -> Vec<&str> {
        self.state.uids()
    }
    fn count(&self) -> usize {
        self.state.count()
    }
    fn own(&self, uid: &str) -> bool {
        self.state.own(uid)
    }
}

impl Ledger for Watched {
    fn record_intent(
        &mut self,
        uid: &str,
        location: &str,
        id: Option<Identity>,
    ) -> Result<(), StateError> {
        self.log.borrow_mut().push(format!("state.intent {uid}"));
        self.unsynced_intents = true;
        self.state.record_intent(uid, location, id)
    }
    fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError> {
        self.state.record_identity(uid, id)
    }
    fn record_delivered(
        &mut self,
        uid: &str,
        first_seen: u64,
        id: Option<Identity>,
    ) -> Result<(), StateError> {
        self.log.borrow_mut().push(format!("state.delivered {uid}"));
        self.unsynced_records = true;
        self.state.record_delivered(uid, first_seen, id)
    }
    fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError> {
        self.log.borrow_mut().push(format!("state.abandoned {uid}"));
        self.state.record_abandoned(uid)
    }
    fn forget(&mut self, uids: &[String]) -> Result<(), StateError> {
        self.state.forget(uids)
    }
    fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError> {
        self.state.forget_records(records)
    }
    fn sync(&mut self) -> Result<(), StateError> {
        let failing = (self.fail_records && self.unsynced_records)
            || (self.fail_intents && self.unsynced_intents);
        if failing {
            self.log.borrow_mut().push("state.sync failed".into());
            return Err(StateError::Io {
                action: "write",
                path: PathBuf::from("state"),
                source: io::Error::other("disk full"),
            });
        }
        self.log.borrow_mut().push("state.sync".into());
        self.unsynced_records = false;
        self.unsynced_intents = false;
        self.state.sync()
    }
    fn tidy(&mut self) {
        self.state.tidy()
    }
}

const FIRST: &str = "Subject: a\r\n\r\nfirst\r\n";
const SECOND: &str = "Subject: b\r\n\r\nsecond\r\n";

/// Greeting, USER, PASS, UIDL and LIST of two messages (no CAPA: nothing is
/// pipelined, so each reply answers one command).
fn listed() -> String {
    format!(
        "+OK hi\r\n+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n1 {}\r\n2 {}\r\n.\r\n",
        FIRST.len(),
        SECOND.len()
    )
}

/// `listed`, then both messages retrieved whole (each RETR followed by its
/// `LIST n` fence), then `after`.
fn served(after: &str) -> String {
    format!(
        "{}{}{}{after}",
        listed(),
        retrieved(1, FIRST),
        retrieved(2, SECOND)
    )
}

fn retrieved(num: u32, body: &str) -> String {
    format!("+OK\r\n{body}.\r\n+OK {num} {}\r\n", body.len())
}

struct Run {
    result: Result<Report>,
    log: Vec<String>,
    warned: Vec<String>,
    /// The unique-ids the state holds as delivered afterwards.
    recorded: Vec<String>,
    kept: usize,
}

impl Run {
    fn sent(&self, command: &str) -> Vec<usize> {
        let prefix = format!("C: {command}");
        positions(&self.log, |e| e.starts_with(&prefix))
    }
}

fn positions(log: &[String], pick: impl Fn(&str) -> bool) -> Vec<usize> {
    log.iter()
        .enumerate()
        .filter(|(_, e)| pick(e))
        .map(|(i, _)| i)
        .collect()
}

/// Which syncs of the state fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Nothing,
    /// Once a delivery has been recorded.
    Records,
    /// Once an intent has been recorded.
    Intents,
}

/// Runs a session against `server` into a `Shelf`, the real state underneath.
fn run(server: &str, stages: bool, fail_flush: bool, fail_records: bool) -> Run {
    run_with(
        server,
        |shelf| {
            shelf.stages = stages;
            shelf.fail_flush = fail_flush;
        },
        if fail_records {
            Fail::Records
        } else {
            Fail::Nothing
        },
    )
}

/// `run`, the shelf set up by `shelf`.
fn run_with(server: &str, shelf: impl FnOnce(&mut Shelf), fail_records: Fail) -> Run {
    run_account(server, "", false, shelf, fail_records)
}

/// `run_with`, `extra` added to the account's config; with `capa`, the client asks
/// CAPA before it logs in, as `connect::login` does.
fn run_account(
    server: &str,
    extra: &str,
    capa: bool,
    shelf: impl FnOnce(&mut Shelf),
    fail_records: Fail,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        format!("[accounts.a]\nhost = \"pop.example\"\nuser = \"u\"\ndeliver = \"maildir:/nowhere\"\n{extra}"),
    )
    .unwrap();
    let paths = Paths {
        home: dir.path().to_path_buf(),
        config_file: config_file.clone(),
        state_dir: dir.path().join("state"),
    };
    let config = Config::load(Some(&config_file), &paths).unwrap();
    let account = &config.accounts[0];
    std::fs::create_dir_all(&account.state_dir).unwrap();

    let log: Log = Rc::default();
    let stream = Scripted {
        server: Cursor::new(server.as_bytes().to_vec()),
        line: Vec::new(),
        log: log.clone(),
    };
    let mut client = Client::new(stream, None).unwrap();
    if capa {
        client.capabilities().unwrap();
    }
    let session = client
        .login(Credentials::User {
            user: "u",
            password: "p",
        })
        .map_err(|f| f.error)
        .unwrap();
    let mut target = Shelf::new(&log, false);
    shelf(&mut target);
    let mut state = Watched {
        state: UidlState::open(&Place::of(account)).unwrap(),
        log: log.clone(),
        fail_records: fail_records == Fail::Records,
        unsynced_records: false,
        fail_intents: fail_records == Fail::Intents,
        unsynced_intents: false,
    };
    let warned = RefCell::new(Vec::new());
    let warn = |text: &str| warned.borrow_mut().push(text.to_string());
    let rank = |err: &anyhow::Error| crate::cmd::exit::classify(err) as u8;
    let result = run_session(
        super::session::Connected {
            session,
            asked: None,
        },
        account,
        &mut target,
        &mut state,
        None,
        &warn,
        rank,
    )
    .map_err(|failed| failed.error);
    drop(state);
    let recorded = UidlState::peek(&Place::of(account))
        .unwrap()
        .delivered_uids()
        .map(String::from)
        .collect();
    let log = log.borrow().clone();
    Run {
        result,
        log,
        warned: warned.into_inner(),
        recorded,
        kept: target.kept.len(),
    }
}

#[test]
fn dele_goes_out_only_once_the_target_and_the_state_are_durable() {
    for stages in [false, true] {
        let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), stages, false, false);
        let report = run.result.as_ref().unwrap();
        assert_eq!((report.fetched, report.deleted), (2, 2), "{:?}", run.log);
        assert_eq!(run.kept, 2);
        let mut recorded = run.recorded.clone();
        recorded.sort();
        assert_eq!(recorded, ["a", "b"]);

        let deles = run.sent("DELE");
        assert_eq!(deles.len(), 2, "{:?}", run.log);
        let first_dele = deles[0];
        let last = |name: &str| *positions(&run.log, |e| e.starts_with(name)).last().unwrap();
        // After the last delivery and the last record: a flush of the target,
        // then a sync of the state, and only then a DELE.
        let flushed = last("target.flush");
        let synced = last("state.sync");
        assert!(last("target.deliver") < flushed, "{:?}", run.log);
        assert!(last("state.delivered") < synced, "{:?}", run.log);
        assert!(flushed < first_dele && synced < first_dele, "{:?}", run.log);
        // A delivery is recorded only once the target has committed it.
        for record in positions(&run.log, |e| e.starts_with("state.delivered")) {
            let before = &run.log[..record];
            let delivered = before.iter().rposition(|e| e == "target.deliver");
            let committed = before.iter().rposition(|e| e == "target.flush");
            assert!(committed > delivered, "{:?}", run.log);
        }
        assert_eq!(run.sent("QUIT"), [run.log.len() - 1], "{:?}", run.log);
    }
}

#[test]
fn a_message_refused_at_the_commit_stays_and_the_others_go() {
    let run = run_with(
        &served("+OK\r\n+OK bye\r\n"),
        |shelf| {
            shelf.stages = true;
            shelf.refuse_second = true;
        },
        Fail::Nothing,
    );
    let err = run.result.as_ref().unwrap_err();
    assert!(
        format!("{err:#}").contains("message 2 stays on the server: the shelf refuses this one"),
        "{err:#}"
    );
    assert_eq!(run.recorded, ["a"], "{:?}", run.log);
    assert!(
        run.log.iter().any(|e| e == "state.abandoned b"),
        "{:?}",
        run.log
    );
    assert_eq!(run.sent("DELE").len(), 1, "{:?}", run.log);
    assert!(run.log.iter().any(|e| e == "C: DELE 1"), "{:?}", run.log);
    assert_eq!(run.sent("QUIT").len(), 1, "{:?}", run.log);
}

#[test]
fn what_was_staged_on_intents_that_are_not_durable_is_never_committed() {
    let run = run_with(
        &served("+OK\r\n+OK\r\n+OK bye\r\n"),
        |shelf| shelf.stages = true,
        Fail::Intents,
    );
    let err = run.result.as_ref().unwrap_err();
    assert!(format!("{err:#}").contains("disk full"), "{err:#}");
    assert_eq!(run.kept, 0, "{:?}", run.log);
    assert!(run.recorded.is_empty(), "{:?}", run.recorded);
    assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
}

#[test]
fn a_failed_flush_sends_neither_dele_nor_quit() {
    for stages in [false, true] {
        let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), stages, true, false);
        let err = run.result.as_ref().unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
        assert!(run.sent("QUIT").is_empty(), "{:?}", run.log);
        assert!(run.recorded.is_empty(), "{:?}", run.recorded);
    }
}

#[test]
fn a_state_that_cannot_be_made_durable_sends_neither_dele_nor_quit() {
    for stages in [false, true] {
        let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), stages, false, true);
        let err = run.result.as_ref().unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert!(run.log.iter().any(|e| e == "state.sync failed"));
        assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
        assert!(run.sent("QUIT").is_empty(), "{:?}", run.log);
    }
}

#[test]
fn a_body_cut_mid_retr_is_neither_recorded_nor_deleted() {
    for stages in [false, true] {
        let cut = format!(
            "{}{}+OK\r\nSubject: b\r\n\r\nsec",
            listed(),
            retrieved(1, FIRST)
        );
        let run = run(&cut, stages, false, false);
        assert!(run.result.is_err(), "{:?}", run.log);
        // The whole first message is delivered and recorded; the second is not.
        assert_eq!(run.recorded, ["a"], "{:?}", run.log);
        assert_eq!(run.kept, 1);
        assert!(run.sent("DELE").is_empty(), "{:?}", run.log);
        assert!(run.sent("QUIT").is_empty(), "{:?}", run.log);
    }
}

#[test]
fn a_refused_dele_is_reported_and_the_others_still_go() {
    let run = run(
        &served("-ERR [IN-USE] busy\r\n+OK\r\n+OK bye\r\n"),
        true,
        false,
        false,
    );
    let err = run.result.as_ref().unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("refused to delete 1 message(s); they stay on the server"),
        "{text}"
    );
    assert_eq!(
        crate::cmd::exit::classify(err),
        crate::cmd::exit::Exit::TempFail
    );
    assert_eq!(run.warned, [text]);
    // The other deletion takes effect: QUIT still goes out.
    assert_eq!(run.sent("DELE").len(), 2);
    assert_eq!(run.sent("QUIT").len(), 1);
}

/// Headers encoded as RFC 2047 allows, and a message without a Subject.
const ENCODED: &str = "From: =?utf-8?q?J=C3=B6rg?= <j@x>\r\nSubject: =?UTF-8?B?w6l0w6k=?=\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nfirst\r\n";
const UNTITLED: &str = "From: b@y\r\nDate: Wed, 2 Jul 2003 10:00:00 +0000\r\n\r\nsecond\r\n";

/// `served`, with `ENCODED` and `UNTITLED` for the two messages, and CAPA
/// answered first with `capa` when given.
fn served_headers(capa: Option<&str>, after: &str) -> String {
    let capa = capa.map_or(String::new(), |lines| {
        format!("+OK\r\nUSER\r\n{lines}.\r\n")
    });
    format!(
        "+OK hi\r\n{capa}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n1 {}\r\n2 {}\r\n.\r\n{}{}{after}",
        ENCODED.len(),
        UNTITLED.len(),
        retrieved(1, ENCODED),
        retrieved(2, UNTITLED)
    )
}

fn delivered(uid: &str, body: &str, location: &str) -> Delivered {
    let fields = super::preview::Fields::of(body.as_bytes());
    Delivered {
        uid: uid.into(),
        size: body.len() as u64,
        from: fields.from,
        subject: fields.subject,
        date: fields.date,
        location: location.into(),
    }
}

#[test]
fn each_delivered_message_is_reported_with_its_headers_and_where_it_went() {
    for stages in [false, true] {
        let run = run_with(
            &served_headers(None, "+OK\r\n+OK\r\n+OK bye\r\n"),
            |shelf| shelf.stages = stages,
            Fail::Nothing,
        );
        let report = run.result.as_ref().unwrap();
        assert_eq!(
            report.delivered,
            [
                Delivered {
                    uid: "a".into(),
                    size: ENCODED.len() as u64,
                    from: Some("Jörg <j@x>".into()),
                    subject: Some("été".into()),
                    date: Some("Tue, 1 Jul 2003 10:52:37 +0200".into()),
                    location: "maildir:/nowhere".into(),
                },
                Delivered {
                    uid: "b".into(),
                    size: UNTITLED.len() as u64,
                    from: Some("b@y".into()),
                    subject: None,
                    date: Some("Wed, 2 Jul 2003 10:00:00 +0000".into()),
                    location: "maildir:/nowhere".into(),
                },
            ],
            "{:?}",
            run.log
        );
        assert_eq!(report.login_delay, None);
    }
}

#[test]
fn the_location_is_the_target_as_configured_never_the_states_own_code() {
    let run = run_with(
        &served_headers(None, "+OK\r\n+OK\r\n+OK bye\r\n"),
        |shelf| {
            shelf.stages = true;
            shelf.names_places = true;
        },
        Fail::Nothing,
    );
    let report = run.result.as_ref().unwrap();
    assert_eq!(
        report.delivered,
        [
            delivered("a", ENCODED, "maildir:/nowhere"),
            delivered("b", UNTITLED, "maildir:/nowhere")
        ]
    );
    // Nor for a target that cannot look for a delivery again (an MDA).
    let run = run_with(
        &served_headers(None, "+OK\r\n+OK\r\n+OK bye\r\n"),
        |shelf| shelf.recovers = false,
        Fail::Nothing,
    );
    let report = run.result.as_ref().unwrap();
    assert_eq!(
        report.delivered,
        [
            delivered("a", ENCODED, "maildir:/nowhere"),
            delivered("b", UNTITLED, "maildir:/nowhere")
        ]
    );
}

#[test]
fn what_stays_on_the_server_and_what_the_state_knows_are_reported() {
    // Both delivered and deleted.
    let run = run(&served("+OK\r\n+OK\r\n+OK bye\r\n"), true, false, false);
    let report = run.result.as_ref().unwrap();
    assert_eq!((report.on_server, report.known), (0, 2), "{:?}", run.log);
    // Kept: both stay. A keep-on-server session asks STAT with its listing,
    // for the glance of the next (see `glance`).
    let stat = format!("+OK 2 {}\r\n+OK\r\n1 a\r\n", FIRST.len() + SECOND.len());
    let run = run_account(
        &served("+OK bye\r\n").replacen("+OK\r\n1 a\r\n", &stat, 1),
        "keep = true\n",
        false,
        |_| {},
        Fail::Nothing,
    );
    let report = run.result.as_ref().unwrap();
    assert_eq!(run.sent("DELE").len(), 0, "{:?}", run.log);
    assert_eq!((report.deleted, report.on_server, report.known), (0, 2, 2));
}

#[test]
fn the_login_delay_capa_announced_is_reported() {
    let run = run_account(
        &served_headers(
            Some("LOGIN-DELAY 900 USER\r\n"),
            "+OK\r\n+OK\r\n+OK bye\r\n",
        ),
        "",
        true,
        |_| {},
        Fail::Nothing,
    );
    let report = run.result.as_ref().unwrap();
    assert_eq!(report.login_delay, Some(900), "{:?}", run.log);
    assert_eq!(report.delivered.len(), 2);
}

#[test]
fn a_header_block_is_kept_whole_across_reads_and_bounded() {
    let mut head = super::fetch::Head::default();
    for chunk in [&b"Subject: x\r"[..], b"\n", b"\r", b"\nbody", b"more"] {
        head.see(chunk);
    }
    assert!(head.done);
    assert!(head.bytes.ends_with(b"\r\nbody"), "{:?}", head.bytes);
    let mut head = super::fetch::Head::default();
    for _ in 0..100 {
        head.see(&[b'x'; 4096]);
    }
    assert!(head.done && head.bytes.len() == super::fetch::MAX_HEAD);
}
