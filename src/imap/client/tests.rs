//! Scripted conversations: the server's lines canned, the client's bytes checked.

use super::*;
use crate::net::mock::MockStream;

const GREETING: &str = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n";

fn session(script: &str) -> Session<MockStream> {
    let client = Client::greet(MockStream::new(script)).unwrap();
    client.login("me", "secret").unwrap()
}

fn written(session: Session<MockStream>) -> String {
    session.conn.into_stream_for_test().written().to_string()
}

#[test]
fn logs_in_with_plain_and_sasl_ir() {
    let s = session(&format!(
        "{GREETING}a1 OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] in\r\n"
    ));
    assert!(s.capabilities().has("MULTIAPPEND"));
    assert!(s.conn.literal_plus);
    // base64("\0me\0secret")
    assert_eq!(written(s), "a1 AUTHENTICATE PLAIN AG1lAHNlY3JldA==\r\n");
}

#[test]
fn logs_in_with_plain_after_the_continuation() {
    let s = session(
        "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n+ \r\na1 OK done\r\n\
         * CAPABILITY IMAP4rev1 UIDPLUS\r\na2 OK\r\n",
    );
    assert!(s.capabilities().has("UIDPLUS"));
    assert_eq!(
        written(s),
        "a1 AUTHENTICATE PLAIN\r\nAG1lAHNlY3JldA==\r\na2 CAPABILITY\r\n"
    );
}

#[test]
fn logs_in_with_login_and_a_literal_password() {
    let client = Client::greet(MockStream::new(
        "* OK hi\r\n* CAPABILITY IMAP4rev1\r\na1 OK\r\n+ go\r\na2 OK [CAPABILITY IMAP4rev1] in\r\n",
    ))
    .unwrap();
    let s = client.login("me@x.org", "p\u{e4}ss").unwrap();
    assert_eq!(
        written(s),
        "a1 CAPABILITY\r\na2 LOGIN me@x.org {5}\r\np\u{e4}ss\r\n"
    );
}

#[test]
fn a_refused_login_says_what_the_server_said() {
    let client = Client::greet(MockStream::new(
        "* OK [CAPABILITY IMAP4rev1] hi\r\na1 NO [AUTHENTICATIONFAILED] bad\x07 password\r\n",
    ))
    .unwrap();
    let err = client.login("me", "secret").err().unwrap();
    assert_eq!(
        err.to_string(),
        "LOGIN was refused: NO [AUTHENTICATIONFAILED] bad\\x07 password"
    );
    assert!(!format!("{err:?}").contains("secret"));
}

#[test]
fn logindisabled_is_respected() {
    let client = Client::greet(MockStream::new(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n",
    ))
    .unwrap();
    assert!(matches!(
        client.login("me", "pw"),
        Err(Error::LoginDisabled)
    ));
}

#[test]
fn starttls_upgrades_and_asks_again() {
    let mut client = Client::greet(MockStream::new(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\na1 OK go\r\n",
    ))
    .unwrap();
    client.starttls().unwrap();
    let client = client
        .upgrade(|mut stream| {
            stream.feed("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na2 OK\r\n");
            Ok::<_, Error>(stream)
        })
        .unwrap();
    assert!(client.capabilities().has("AUTH=PLAIN"));
    assert!(!client.capabilities().has("LOGINDISABLED"));
    assert!(!client.capabilities().has("STARTTLS"));
}

#[test]
fn starttls_not_offered_or_injected_is_an_error() {
    let mut client = Client::greet(MockStream::new("* OK [CAPABILITY IMAP4rev1] hi\r\n")).unwrap();
    assert!(matches!(client.starttls(), Err(Error::NoStarttls)));
    let mut client = Client::greet(MockStream::new(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\na1 OK go\r\n* CAPABILITY IMAP4rev1\r\n",
    ))
    .unwrap();
    assert!(matches!(client.starttls(), Err(Error::Injected)));
}

#[test]
fn greetings() {
    let s = Client::greet(MockStream::new("* PREAUTH [CAPABILITY IMAP4rev1] in\r\n"))
        .unwrap()
        .login("me", "pw")
        .unwrap();
    assert_eq!(written(s), "");
    assert!(matches!(
        Client::greet(MockStream::new("* BYE go away\r\n")),
        Err(Error::Bye(text)) if text == "go away"
    ));
    assert!(matches!(
        Client::greet(MockStream::new("+OK POP3 ready\r\n")),
        Err(Error::Malformed(_))
    ));
}

const LOGGED_IN: &str = "a1 OK [CAPABILITY IMAP4rev1] in\r\n";

#[test]
fn creates_a_missing_folder() {
    let mut s = session(&format!(
        "{GREETING}{LOGGED_IN}a2 NO [NONEXISTENT] no such\r\na3 OK made\r\n\
         * STATUS Sent (UIDVALIDITY 5)\r\na4 OK\r\na5 NO [ALREADYEXISTS] have it\r\n"
    ));
    assert!(!s.exists("Bo&AO4-te").unwrap());
    s.create("Bo&AO4-te").unwrap();
    assert!(s.exists("Sent").unwrap());
    s.create("Sent").unwrap();
    let all = written(s);
    assert!(all.ends_with(
        "a2 STATUS Bo&AO4-te (UIDVALIDITY)\r\na3 CREATE Bo&AO4-te\r\n\
         a4 STATUS Sent (UIDVALIDITY)\r\na5 CREATE Sent\r\n"
    ));
}

fn outgoing<'a>(bodies: &'a mut [&'static [u8]]) -> Vec<Outgoing<'a>> {
    bodies
        .iter_mut()
        .map(|body| Outgoing {
            size: body.len() as u64,
            body,
            date: Some("\" 1-Jan-2026 10:00:00 +0000\"".into()),
        })
        .collect()
}

#[test]
fn appends_waiting_for_each_continuation() {
    let mut s = session(&format!(
        "{GREETING}{LOGGED_IN}+ go\r\na2 OK [APPENDUID 7 11] done\r\n+ go\r\na3 OK done\r\n"
    ));
    let mut bodies: [&[u8]; 2] = [b"A: 1\r\n\r\nx\r\n", b"B\r\n"];
    let landed = places(s.append_each("INBOX", &mut outgoing(&mut bodies)));
    assert_eq!(landed, vec![Some((7, 11)), None]);
    let batches = s.conn.into_stream_for_test().last_batches(4).join("|");
    assert_eq!(
        batches,
        "a2 APPEND INBOX \" 1-Jan-2026 10:00:00 +0000\" {11}\r\n|A: 1\r\n\r\nx\r\n\r\n|\
         a3 APPEND INBOX \" 1-Jan-2026 10:00:00 +0000\" {3}\r\n|B\r\n\r\n"
    );
}

#[test]
fn appends_pipelined_with_literal_plus() {
    let mut s = session(&format!(
        "{GREETING}a1 OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n\
         a2 OK [APPENDUID 7 11] done\r\na3 OK [APPENDUID 7 12] done\r\n"
    ));
    let mut bodies: [&[u8]; 2] = [b"x\r\n", b"y\r\n"];
    let mut messages = outgoing(&mut bodies);
    messages[1].date = None;
    let landed = places(s.append_each("Sent Items", &mut messages));
    assert_eq!(landed, vec![Some((7, 11)), Some((7, 12))]);
    assert!(written(s).ends_with(
        "a2 APPEND \"Sent Items\" \" 1-Jan-2026 10:00:00 +0000\" {3+}\r\nx\r\n\r\n\
         a3 APPEND \"Sent Items\" {3+}\r\ny\r\n\r\n"
    ));
}

#[test]
fn appends_in_one_command_with_multiappend() {
    let mut s = session(&format!(
        "{GREETING}a1 OK [CAPABILITY IMAP4rev1 MULTIAPPEND] in\r\n\
         + go\r\n+ go\r\na2 OK [APPENDUID 9 20:21] done\r\n"
    ));
    let mut bodies: [&[u8]; 2] = [b"x\r\n", b"y\r\n"];
    let landed = s.append_all("INBOX", &mut outgoing(&mut bodies)).unwrap();
    assert_eq!(landed, vec![Some((9, 20)), Some((9, 21))]);
    assert!(written(s).ends_with(
        "a2 APPEND INBOX \" 1-Jan-2026 10:00:00 +0000\" {3}\r\nx\r\n \
         \" 1-Jan-2026 10:00:00 +0000\" {3}\r\ny\r\n\r\n"
    ));
}

/// Where each message landed; a failure fails the test.
fn places(outcomes: Vec<Result<Option<(u32, u32)>, Error>>) -> Vec<Option<(u32, u32)>> {
    outcomes.into_iter().map(|o| o.unwrap()).collect()
}

#[test]
fn each_append_has_its_own_outcome() {
    // Pipelined: the first refused, the second appended; both replies read.
    let mut s = session(&format!(
        "{GREETING}a1 OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n\
         a2 NO [OVERQUOTA] full\r\na3 OK [APPENDUID 7 5] done\r\na4 OK\r\n"
    ));
    let mut bodies: [&[u8]; 2] = [b"x\r\n", b"y\r\n"];
    let outcomes = s.append_each("INBOX", &mut outgoing(&mut bodies));
    assert!(
        matches!(&outcomes[0], Err(Error::Refused { line, .. }) if line.code.as_ref().unwrap().is("OVERQUOTA"))
    );
    assert!(matches!(outcomes[1], Ok(Some((7, 5)))));
    // In step: the next command reads its own reply.
    s.simple("NOOP", &[]).unwrap();
    // Refused at the continuation: that command ended there, the next goes on.
    let mut s = session(&format!(
        "{GREETING}{LOGGED_IN}a2 NO [TRYCREATE] no folder\r\n+ go\r\na3 OK done\r\n"
    ));
    let mut bodies: [&[u8]; 2] = [b"x\r\n", b"y\r\n"];
    let outcomes = s.append_each("Nope", &mut outgoing(&mut bodies));
    assert!(
        matches!(&outcomes[0], Err(Error::Refused { line, .. }) if line.code.as_ref().unwrap().is("TRYCREATE"))
    );
    assert!(matches!(outcomes[1], Ok(None)));
    // The connection closes after the first reply: the second is not known.
    let mut s = session(&format!(
        "{GREETING}a1 OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\na2 OK [APPENDUID 7 6] done\r\n"
    ));
    let outcomes = s.append_each("INBOX", &mut outgoing(&mut bodies));
    assert_eq!(outcomes.len(), 2);
    assert!(matches!(outcomes[0], Ok(Some((7, 6)))));
    assert!(
        matches!(outcomes[1], Err(Error::Closed | Error::Io(_))),
        "{:?}",
        outcomes[1]
    );
}

#[test]
fn examines_and_searches() {
    let mut s = session(&format!(
        "{GREETING}{LOGGED_IN}* 3 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\na2 OK [READ-ONLY] x\r\n\
         * SEARCH 17\r\na3 OK\r\n* SEARCH\r\na4 OK\r\n* BYE bye\r\na5 OK\r\n"
    ));
    assert_eq!(s.examine("INBOX").unwrap(), Some(42));
    let criteria = [Arg::Text("UID".into()), Arg::Text("17".into())];
    assert_eq!(s.uid_search(&criteria).unwrap(), vec![17]);
    assert_eq!(s.uid_search(&criteria).unwrap(), Vec::<u32>::new());
    s.logout().unwrap();
    assert!(written(s).ends_with(
        "a2 EXAMINE INBOX\r\na3 UID SEARCH UID 17\r\na4 UID SEARCH UID 17\r\na5 LOGOUT\r\n"
    ));
}
