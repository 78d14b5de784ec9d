//! The target over scripted servers: staging, flushing, refusals, recovery; and
//! its `deliver` value read and shown.

use super::*;
use crate::deliver::test_context;
use crate::net::mock::MockStream;

fn spec() -> ImapSpec {
    ImapSpec {
        user: "me".into(),
        host: "mail.example.org".into(),
        port: None,
        folder: "Bo\u{ee}te".into(),
    }
}

/// A target logged in with LITERAL+ (and the given other capabilities), its
/// folder there; then `script`.
fn target(capabilities: &str, script: &str) -> ImapTarget<MockStream> {
    let server = format!(
        "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n\
         a1 OK [CAPABILITY IMAP4rev1 LITERAL+ {capabilities}] in\r\n\
         * STATUS Bo&AO4-te (UIDVALIDITY 7)\r\na2 OK\r\n{script}"
    );
    let session = Client::greet(MockStream::new(&server))
        .unwrap()
        .login("me", "pw")
        .unwrap();
    ImapTarget::start(session, spec(), "mail.example.org:993".into()).unwrap()
}

/// Where each message of the last flush landed; a refusal fails the test.
fn places(target: &mut ImapTarget<MockStream>) -> Vec<Option<String>> {
    target
        .landed()
        .into_iter()
        .map(|landed| landed.expect("delivered"))
        .collect()
}

fn written(target: &ImapTarget<MockStream>) -> String {
    target
        .session
        .as_ref()
        .unwrap()
        .stream()
        .written()
        .to_string()
}

/// Delivers each message, returning the locations announced.
fn stage(target: &mut ImapTarget<MockStream>, messages: &[&str]) -> Vec<String> {
    messages
        .iter()
        .map(|message| {
            let mut location = String::new();
            target
                .deliver(&mut message.as_bytes(), &mut |l| {
                    location = l.to_string();
                    Ok(())
                })
                .unwrap();
            location
        })
        .collect()
}

const ONE: &str = "Message-ID: <1@x>\nDate: Sun, 1 Nov 2026 09:00:00 +0000\n\nhi\n";
const TWO: &str = "Subject: no id\n\nho\n";

#[test]
fn creates_a_missing_folder() {
    let session = Client::greet(MockStream::new(
        "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\na1 OK [CAPABILITY IMAP4rev1] in\r\n\
         a2 NO [NONEXISTENT] none\r\na3 OK made\r\n",
    ))
    .unwrap()
    .login("me", "pw")
    .unwrap();
    let target = ImapTarget::start(session, spec(), "h:993".into()).unwrap();
    assert!(
        written(&target).ends_with("a2 STATUS Bo&AO4-te (UIDVALIDITY)\r\na3 CREATE Bo&AO4-te\r\n")
    );
    let session = Client::greet(MockStream::new(
        "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\na1 OK [CAPABILITY IMAP4rev1] in\r\n\
         a2 NO [NONEXISTENT] none\r\na3 NO [NOPERM] not you\r\n",
    ))
    .unwrap()
    .login("me", "pw")
    .unwrap();
    let err = ImapTarget::start(session, spec(), "h:993".into())
        .err()
        .unwrap();
    assert_eq!(err.class(), Class::Failed);
    assert_eq!(
        err.to_string(),
        "the IMAP server h:993 cannot create the folder Bo\u{ee}te: CREATE was refused: NO [NOPERM] not you"
    );
}

#[test]
fn stages_then_appends_in_one_command_and_records_where_they_landed() {
    let mut target = target("MULTIAPPEND", "a3 OK [APPENDUID 7 20:21] done\r\n");
    let locations = stage(&mut target, &[ONE, TWO]);
    assert_eq!(locations, ["imap.63.PDFAeD4", "imap.22"]);
    assert!(target.stages());
    // Nothing is sent before the flush.
    assert!(written(&target).ends_with("(UIDVALIDITY)\r\n"));
    target.flush().unwrap();
    assert_eq!(
        places(&mut target),
        [
            Some("imap.63.PDFAeD4.7.20".to_string()),
            Some("imap.22..7.21".to_string())
        ]
    );
    assert!(target.landed().is_empty());
    let one = ONE.replace('\n', "\r\n");
    let two = TWO.replace('\n', "\r\n");
    assert!(written(&target).ends_with(&format!(
        "a3 APPEND Bo&AO4-te \" 1-Nov-2026 09:00:00 +0000\" {{63+}}\r\n{one} {{22+}}\r\n{two}\r\n"
    )));
    // An empty flush sends nothing.
    target.flush().unwrap();
    assert!(target.landed().is_empty());
}

#[test]
fn unstage_drops_the_last() {
    let mut target = target("", "a3 OK done\r\n");
    stage(&mut target, &[ONE, TWO]);
    target.unstage();
    target.flush().unwrap();
    assert_eq!(places(&mut target), [None]);
    assert!(written(&target).ends_with(&format!("{{63+}}\r\n{}\r\n", ONE.replace('\n', "\r\n"))));
}

#[test]
fn a_full_quota_is_temporary_and_nothing_lands() {
    // One APPEND each: each message has its own refusal, temporary.
    let mut target = target(
        "",
        "a3 NO [OVERQUOTA] Quota exceeded\r\na4 NO [OVERQUOTA] Quota exceeded\r\n",
    );
    stage(&mut target, &[ONE, TWO]);
    target.flush().unwrap();
    let landed = target.landed();
    assert_eq!(landed.len(), 2);
    for outcome in &landed {
        let Err(err) = outcome else {
            panic!("{landed:?}")
        };
        assert_eq!(err.class(), Class::Temporary);
        assert!(err.is_per_message());
        assert_eq!(
            err.to_string(),
            "the IMAP server mail.example.org:993 refused to append to Bo\u{ee}te: \
             APPEND was refused: NO [OVERQUOTA] Quota exceeded"
        );
    }
    // One MULTIAPPEND: the batch, all or none, stays for the next run.
    let mut target = self::target("MULTIAPPEND", "a3 NO [OVERQUOTA] Quota exceeded\r\n");
    stage(&mut target, &[ONE, TWO]);
    let err = target.flush().unwrap_err();
    assert_eq!(err.class(), Class::Temporary);
    assert!(target.landed().is_empty());
    // The batch is gone: a later flush sends nothing more.
    target.flush().unwrap();
    let mut target = target_with_refusal("a3 NO [CANNOT] no NUL please\r\n");
    target.flush().unwrap();
    let landed = target.landed();
    let [Err(err)] = &landed[..] else {
        panic!("{landed:?}")
    };
    assert_eq!(err.class(), Class::Failed);
    assert!(err.is_per_message());
}

#[test]
fn without_multiappend_a_refusal_keeps_out_only_its_message() {
    // The first lands, the second is refused: the first is not sent again.
    let mut target = target(
        "",
        "a3 OK [APPENDUID 7 30] done\r\na4 NO [LIMIT] too big\r\n",
    );
    stage(&mut target, &[ONE, TWO]);
    target.flush().unwrap();
    let landed = target.landed();
    assert!(
        matches!(&landed[0], Ok(Some(l)) if l == "imap.63.PDFAeD4.7.30"),
        "{landed:?}"
    );
    assert!(
        matches!(&landed[1], Err(e) if e.is_per_message()),
        "{landed:?}"
    );
    assert_eq!(written(&target).matches("APPEND").count(), 2);
}

fn target_with_refusal(reply: &str) -> ImapTarget<MockStream> {
    let mut target = target("", reply);
    stage(&mut target, &[ONE]);
    target
}

#[test]
fn a_folder_gone_is_made_again_and_the_batch_sent_again() {
    let mut target = target(
        "",
        "a3 NO [TRYCREATE] no such folder\r\na4 OK made\r\na5 OK [APPENDUID 8 1] done\r\n",
    );
    stage(&mut target, &[ONE]);
    target.flush().unwrap();
    assert_eq!(
        places(&mut target),
        [Some("imap.63.PDFAeD4.8.1".to_string())]
    );
    let one = ONE.replace('\n', "\r\n");
    assert!(written(&target).ends_with(&format!(
        "{one}\r\na4 CREATE Bo&AO4-te\r\na5 APPEND Bo&AO4-te \" 1-Nov-2026 09:00:00 +0000\" {{63+}}\r\n{one}\r\n"
    )));
}

#[test]
fn a_broken_connection_is_temporary_and_stays_broken() {
    let mut target = target("", "* BYE shutting down\r\n");
    stage(&mut target, &[ONE]);
    target.flush().unwrap();
    let landed = target.landed();
    let [Err(err)] = &landed[..] else {
        panic!("{landed:?}")
    };
    // Not known to be refused: the intent stays for recovery to ask about.
    assert_eq!(err.class(), Class::Temporary);
    assert!(!err.is_per_message());
    assert!(target.session.is_none());
    stage(&mut target, &[ONE]);
    target.flush().unwrap();
    let landed = target.landed();
    let [Err(err)] = &landed[..] else {
        panic!("{landed:?}")
    };
    assert_eq!(err.class(), Class::Temporary);
    assert!(err.to_string().contains("lost"), "{err}");
}

#[test]
fn recovery_asks_the_server() {
    let mut target = target(
        "",
        "* OK [UIDVALIDITY 7] x\r\na3 OK [READ-ONLY] examined\r\n\
         * SEARCH 20\r\na4 OK\r\n\
         * SEARCH\r\na5 OK\r\n\
         * SEARCH\r\na6 OK\r\n* SEARCH 4\r\na7 OK\r\n\
         * 1 FETCH (UID 4 RFC822.SIZE 54 BODY[HEADER.FIELDS (MESSAGE-ID)] {21}\r\n\
         Message-ID: <1@x>\r\n\r\n)\r\na8 OK\r\n\
         * SEARCH 5\r\na9 OK\r\n\
         * 2 FETCH (UID 5 RFC822.SIZE 54 BODY[HEADER.FIELDS (MESSAGE-ID)] {27}\r\n\
         Message-ID: <1@x.other>\r\n\r\n)\r\na10 OK\r\n",
    );
    // Its UID, in the same folder.
    assert_eq!(
        target.recover("imap.54.PDFAeD4.7.20").unwrap(),
        Recovered::Delivered
    );
    // By Message-ID and size: not there.
    assert_eq!(
        target.recover("imap.54.PDFAeD4").unwrap(),
        Recovered::NotDelivered
    );
    // Another UIDVALIDITY: the UID means nothing, the SEARCH decides.
    assert_eq!(
        target.recover("imap.54.PDFAeD4.6.20").unwrap(),
        Recovered::NotDelivered
    );
    // Found, and fetched to compare: the same Message-ID and size.
    assert_eq!(
        target.recover("imap.54.PDFAeD4").unwrap(),
        Recovered::Delivered
    );
    // Found by a looser search, but another Message-ID: not delivered.
    assert_eq!(
        target.recover("imap.54.PDFAeD4").unwrap(),
        Recovered::NotDelivered
    );
    // No Message-ID: not found without asking.
    assert_eq!(target.recover("imap.21").unwrap(), Recovered::NotDelivered);
    assert!(written(&target).ends_with(
        "a3 EXAMINE Bo&AO4-te\r\na4 UID SEARCH UID 20\r\n\
         a5 UID SEARCH HEADER Message-ID <1@x> LARGER 53 SMALLER 55\r\n\
         a6 UID SEARCH HEADER Message-ID <1@x> LARGER 53 SMALLER 55\r\n\
         a7 UID SEARCH HEADER Message-ID <1@x> LARGER 53 SMALLER 55\r\n\
         a8 UID FETCH 4 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n\
         a9 UID SEARCH HEADER Message-ID <1@x> LARGER 53 SMALLER 55\r\n\
         a10 UID FETCH 5 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n"
    ));
    for bad in ["1.M1P1Q1.host", "imap.", "../x", "imap.12.!"] {
        assert!(
            matches!(target.recover(bad), Err(DeliverError::BadLocation { .. })),
            "{bad}"
        );
    }
}

fn parse_spec(text: &str) -> Result<ImapSpec, String> {
    let rest = text.strip_prefix("imap:").unwrap();
    parse(
        rest,
        &Env {
            home: std::path::Path::new("/home/u"),
            kind: "imap",
            written: text,
        },
    )
}

#[test]
fn values_are_read_and_shown() {
    let spec = parse_spec("imap://me%40gmail.com@imap.gmail.com/INBOX").unwrap();
    assert_eq!(
        (spec.user.as_str(), spec.host.as_str()),
        ("me@gmail.com", "imap.gmail.com")
    );
    assert_eq!((spec.port, spec.folder.as_str()), (None, "INBOX"));
    assert_eq!(spec.entry(), "me@gmail.com@imap.gmail.com");
    // The last '@' ends the user.
    assert_eq!(
        parse_spec("imap://me@gmail.com@imap.gmail.com").unwrap(),
        spec
    );
    assert_eq!(
        spec.to_string(),
        "imap://me%40gmail.com@imap.gmail.com/INBOX"
    );
    let spec = parse_spec("imap://u@[::1]:1143/Archive/2026 Q1").unwrap();
    assert_eq!((spec.host.as_str(), spec.port), ("::1", Some(1143)));
    assert_eq!(spec.folder, "Archive/2026 Q1");
    assert_eq!(parse_spec("imap://u@h/").unwrap().folder, "INBOX");
    assert_eq!(parse_spec("imap://a%25b@h:143/x").unwrap().user, "a%b");
    for bad in [
        "imap:u@h/INBOX",
        "imap://h/INBOX",
        "imap://@h/INBOX",
        "imap://u@/INBOX",
        "imap://u@h:0/INBOX",
        "imap://u@h:99999/INBOX",
        "imap://u@h:x/INBOX",
        "imap://u@::1/INBOX",
        "imap://u@[::1/INBOX",
        "imap://u%zz@h/INBOX",
        "imap://u%ff@h/INBOX",
        "imap://u@h/a\nb",
    ] {
        let err = parse_spec(bad).unwrap_err();
        assert!(
            err.contains("imap://USER@HOST[:PORT]/FOLDER"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn cleartext_only_to_this_machine() {
    assert!(
        crate::net::names_loopback("localhost")
            && crate::net::names_loopback("127.0.0.2")
            && crate::net::names_loopback("::1")
    );
    assert!(
        !crate::net::names_loopback("mail.example.org") && !crate::net::names_loopback("10.0.0.1")
    );
    let mut context = test_context();
    context.imap.security = Security::Plain;
    let err = spec().open(&context).err().unwrap();
    assert_eq!(err.class(), Class::Config);
    assert!(err.to_string().contains("imap_tls"), "{err}");
    assert_eq!(
        spec().keyring_entry(&context).as_deref(),
        Some("me@mail.example.org")
    );
}

#[test]
fn a_refused_login_is_refused_unless_the_server_says_later() {
    let refused = |line: &str| {
        let e = Client::greet(MockStream::new(&format!(
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n{line}\r\n"
        )))
        .unwrap()
        .login("me", "pw")
        .err()
        .unwrap();
        Setup::Login(e).into_error("h:993", "me")
    };
    let wrong = refused("a1 NO [AUTHENTICATIONFAILED] no");
    assert_eq!(wrong.class(), Class::Auth);
    assert_eq!(
        wrong.to_string(),
        "the IMAP server h:993 refused the login of me: AUTHENTICATE was refused: \
         NO [AUTHENTICATIONFAILED] no; check imap_password or imap_password_command"
    );
    assert_eq!(
        refused("a1 NO [UNAVAILABLE] later").class(),
        Class::Temporary
    );
}

/// A scripted server whose transcript outlives the target.
struct Shared {
    input: std::io::Cursor<Vec<u8>>,
    written: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
}

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn says_goodbye_when_dropped_unless_the_connection_broke() {
    let run = |script: &str| {
        let written = std::rc::Rc::default();
        let stream = Shared {
            input: std::io::Cursor::new(script.as_bytes().to_vec()),
            written: std::rc::Rc::clone(&written),
        };
        let session = Client::greet(stream).unwrap().login("me", "pw").unwrap();
        if let Ok(mut target) = ImapTarget::start(session, spec(), "h:993".into()) {
            let _ = target.recover("imap.5.PDFAeD4");
        }
        let written = String::from_utf8(written.borrow().clone()).unwrap();
        written
    };
    let greeting = "* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n";
    let polite = run(&format!(
        "{greeting}a1 OK\r\n* OK [UIDVALIDITY 3] x\r\na2 OK\r\n* SEARCH\r\na3 OK\r\n* BYE\r\na4 OK\r\n"
    ));
    assert!(
        polite
            .ends_with("a3 UID SEARCH HEADER Message-ID <1@x> LARGER 4 SMALLER 6\r\na4 LOGOUT\r\n"),
        "{polite}"
    );
    // Cut off in the middle of a reply: nothing more is said.
    let broken = run(&format!("{greeting}a1 OK\r\n* OK [UIDVAL"));
    assert!(broken.ends_with("a2 EXAMINE Bo&AO4-te\r\n"), "{broken}");
}

#[test]
fn a_slash_in_the_folder_is_the_servers_own_delimiter() {
    let login = |script: &str| {
        Client::greet(MockStream::new(&format!(
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\na1 OK [CAPABILITY IMAP4rev1] in\r\n{script}"
        )))
        .unwrap()
        .login("me", "pw")
        .unwrap()
    };
    let nested = ImapSpec {
        folder: "Archive/2026".into(),
        ..spec()
    };
    let session = login("* LIST (\\Noselect) \".\" \"\"\r\na2 OK\r\na3 OK [UIDVALIDITY 1]\r\n");
    let target = ImapTarget::start(session, nested.clone(), "h:993".into()).unwrap();
    assert!(
        written(&target).ends_with("a2 LIST \"\" \"\"\r\na3 STATUS Archive.2026 (UIDVALIDITY)\r\n")
    );
    assert_eq!(
        nested.to_string(),
        "imap://me@mail.example.org/Archive/2026"
    );
    // A server whose delimiter is "/" (Gmail's) takes the name as written.
    let session = login("* LIST (\\Noselect) \"/\" \"\"\r\na2 OK\r\na3 OK\r\n");
    let target = ImapTarget::start(session, nested, "h:993".into()).unwrap();
    assert!(written(&target).ends_with("a3 STATUS Archive/2026 (UIDVALIDITY)\r\n"));
}
