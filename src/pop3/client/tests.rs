//! The client against a scripted server: the bytes it writes, in which batches, and
//! what it makes of each reply.

use std::io::{self, Read, Write};
use std::time::Duration;

use super::connection::READ_BUFFER;
use super::login::SLOW_PATH;
use super::*;
use crate::net::mock::MockStream;
use crate::pop3::proto::capabilities::MAX_CAPA_LINES;
use crate::pop3::proto::command::Command;
use crate::pop3::proto::identity::{HeadHasher, Identity};
use crate::pop3::proto::listing::{MAX_LISTED, MAX_LISTING_BYTES, MAX_LISTING_LINE};
use crate::pop3::proto::pipeline::BYTES_IN_FLIGHT;
use crate::pop3::proto::response::MAX_LINE;
use crate::pop3::{join, ChannelBinding, Error, Flow, Listing, Mechanism, Peer, Wire};

fn client(server: &str) -> Client<MockStream> {
    Client::new(MockStream::new(server), None).unwrap()
}

/// Logged in over what looks like a slow path, so that everything that may be
/// pipelined is.
fn login(server: &str) -> Session<MockStream> {
    login_over(server, SLOW_PATH)
}

/// Logged in over a fast path: nothing pipelined that need not be.
fn login_fast(server: &str) -> Session<MockStream> {
    login_over(server, Duration::ZERO)
}

/// Logged in as if CAPA had taken `round_trip`.
fn login_over(server: &str, round_trip: Duration) -> Session<MockStream> {
    let mut c = client(server);
    c.capabilities().unwrap();
    c.round_trip = Some(round_trip);
    c.login(Credentials::User {
        user: "u",
        password: "p",
    })
    .map_err(|f| f.error)
    .unwrap()
}

const GREETING_AND_CAPA: &str = "+OK hi\r\n+OK\r\nUIDL\r\nPIPELINING\r\nSTLS\r\n.\r\n";

#[test]
fn pipelined_session_writes_batches() {
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n1 10\r\n2 20\r\n.\r\n\
         +OK\r\n..x\r\n.\r\n+OK 1 10\r\n+OK\r\ny\r\n.\r\n+OK 2 20\r\n+OK\r\n+OK\r\n+OK bye\r\n"
    );
    let mut s = login(&server);
    let Listing::WithUids(list) = s.listing().unwrap() else {
        panic!("UIDL was answered")
    };
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].uid, "b");
    assert_eq!(list[1].size, 20);
    let mut bodies = Vec::new();
    s.retrieve(&[(1, 10), (2, 20)], |_, body| {
        let mut text = String::new();
        body.unwrap().read_to_string(&mut text).unwrap();
        bodies.push(text);
        Flow::Continue
    })
    .unwrap();
    assert_eq!(bodies, [".x\n", "y\n"]);
    assert!(s.delete(&[1, 2]).unwrap().is_empty());
    assert_eq!(
        s.conn.io.get_ref().last_batches(4),
        [
            "USER u\r\nPASS p\r\n",
            "UIDL\r\nLIST\r\n",
            "RETR 1\r\nLIST 1\r\nRETR 2\r\nLIST 2\r\n",
            "DELE 1\r\nDELE 2\r\n"
        ]
    );
    s.quit().unwrap();
}

fn uids_and_sizes(listing: Listing) -> Vec<(String, u64)> {
    let Listing::WithUids(list) = listing else {
        panic!("UIDL was answered")
    };
    list.into_iter().map(|m| (m.uid, m.size)).collect()
}

#[test]
fn a_fast_path_logs_in_one_command_at_a_time() {
    let s = login_fast(&format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n"));
    assert_eq!(
        s.conn.io.get_ref().last_batches(2),
        ["USER u\r\n", "PASS p\r\n"]
    );
}

#[test]
fn nothing_new_asks_no_list() {
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n");
    let mut s = login_fast(&server);
    let list = uids_and_sizes(s.listing_sized(&|_| false).unwrap());
    assert_eq!(list, [("a".to_string(), 0), ("b".to_string(), 0)]);
    assert_eq!(s.conn.io.get_ref().last_batches(1), ["UIDL\r\n"]);
}

#[test]
fn new_messages_are_sized_one_by_one_in_one_batch() {
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n\
         +OK 2 20\r\n+OK 3 30\r\n"
    );
    let mut s = login_fast(&server);
    let list = uids_and_sizes(s.listing_sized(&|uid| uid != "a").unwrap());
    assert_eq!(
        list,
        [
            ("a".to_string(), 0),
            ("b".to_string(), 20),
            ("c".to_string(), 30)
        ]
    );
    assert_eq!(
        s.conn.io.get_ref().last_batches(2),
        ["UIDL\r\n", "LIST 2\r\nLIST 3\r\n"]
    );
}

#[test]
fn a_list_answer_for_another_message_is_refused() {
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK 1 10\r\n");
    let mut s = login_fast(&server);
    assert!(matches!(
        s.listing_sized(&|uid| uid == "b"),
        Err(Error::Protocol(_))
    ));
}

#[test]
fn repeated_unique_ids_are_sized_anyway() {
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 x\r\n3 x\r\n.\r\n\
         +OK 2 20\r\n+OK 3 30\r\n"
    );
    let mut s = login_fast(&server);
    let list = uids_and_sizes(s.listing_sized(&|_| false).unwrap());
    assert_eq!(list[1..], [("x".to_string(), 20), ("x".to_string(), 30)]);
}

#[test]
fn a_slow_path_lists_uids_and_sizes_together() {
    let server =
        format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n1 10\r\n.\r\n");
    let mut s = login(&server);
    let list = uids_and_sizes(s.listing_sized(&|_| false).unwrap());
    assert_eq!(list, [("a".to_string(), 10)]);
    assert_eq!(s.conn.io.get_ref().last_batches(1), ["UIDL\r\nLIST\r\n"]);
}

#[test]
fn without_pipelining_new_messages_are_sized_by_one_list() {
    let mut s = login_fast(
        "+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n\
         +OK\r\n1 5\r\n2 7\r\n.\r\n",
    );
    let list = uids_and_sizes(s.listing_sized(&|uid| uid == "b").unwrap());
    assert_eq!(list, [("a".to_string(), 0), ("b".to_string(), 7)]);
    assert!(s.conn.io.get_ref().written().ends_with("UIDL\r\nLIST\r\n"));
}

#[test]
fn a_repeated_message_number_is_refused() {
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n2 a\r\n1 b\r\n2 c\r\n.\r\n");
    let mut s = login_fast(&server);
    assert!(matches!(
        s.listing_sized(&|_| false),
        Err(Error::Protocol(_))
    ));
}

#[test]
fn pipelined_login_reads_both_replies_and_reports_the_first_refusal() {
    let server = format!("{GREETING_AND_CAPA}-ERR no such user\r\n-ERR no\r\n+OK\r\n");
    let mut c = client(&server);
    c.capabilities().unwrap();
    c.round_trip = Some(SLOW_PATH);
    let Err(failed) = c.login(Credentials::User {
        user: "u",
        password: "p",
    }) else {
        panic!("login must fail")
    };
    assert!(
        failed.error.to_string().contains("no such user"),
        "{}",
        failed.error
    );
    assert_eq!(
        failed.client.conn.io.get_ref().batches().last(),
        Some(&"USER u\r\nPASS p\r\n")
    );
    // Both replies were consumed: the client is in step for QUIT.
    failed.client.quit().unwrap();
}

#[test]
fn retr_window_is_bounded_by_listed_bytes() {
    let big = BYTES_IN_FLIGHT / 2 + 1;
    // Bodies of the listed size, or they would not fit it.
    let body = |c: &str| c.repeat(big as usize - 2);
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n{}\r\n.\r\n+OK 1 {big}\r\n\
         +OK\r\n{}\r\n.\r\n+OK 2 {big}\r\n+OK\r\nc\r\n.\r\n+OK 3 1\r\n",
        body("a"),
        body("b")
    );
    let mut s = login(&server);
    s.retrieve(&[(1, big), (2, big), (3, 1)], |_, body| {
        let _ = io::copy(&mut body.unwrap(), &mut io::sink());
        Flow::Continue
    })
    .unwrap();
    // Messages 1 and 2 do not fit in one window together; 3 goes out with 2.
    assert_eq!(
        s.conn.io.get_ref().last_batches(2),
        [
            "RETR 1\r\nLIST 1\r\n",
            "RETR 2\r\nLIST 2\r\nRETR 3\r\nLIST 3\r\n"
        ]
    );
}

#[test]
fn retrieve_says_what_is_due_and_clears_it_on_a_refusal_and_at_the_end() {
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\na\r\n.\r\n+OK 1 3\r\n-ERR gone\r\n+OK 2 4\r\n\
         +OK\r\nc\r\n.\r\n+OK 3 5\r\n"
    );
    let mut s = login(&server);
    s.retrieve(&[(1, 3), (2, 4), (3, 5)], |_, body| {
        if let Ok(body) = body {
            let _ = io::copy(body, &mut io::sink());
        }
        Flow::Continue
    })
    .unwrap();
    // Each RETR's listed size as it goes out. The refusal of message 2 clears
    // what was said, so that later reads do not wait for its body; so does the
    // end of the window, and the end of `retrieve`.
    assert_eq!(
        s.conn.io.get_ref().due,
        [Some(3), Some(4), Some(5), None, None, None]
    );
}

#[test]
fn stop_drains_outstanding_replies() {
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nfirst\r\n.\r\n+OK 1 1\r\n\
         +OK\r\nsecond\r\n.\r\n+OK 2 1\r\n-ERR gone\r\n+OK 3 1\r\n+OK 3 30\r\n"
    );
    let mut s = login(&server);
    let mut calls = 0;
    s.retrieve(&[(1, 1), (2, 1), (3, 1)], |_, _| {
        calls += 1;
        Flow::Stop
    })
    .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(s.stat().unwrap(), (3, 30));
}

/// A body as read, with its identity.
type Body = (String, Option<Identity>);

/// Reads every body of a retrieve to its end; returns them with their
/// identities, and what `retrieve` returned.
fn read_all(
    s: &mut Session<MockStream>,
    messages: &[(u32, u64)],
) -> (Vec<Body>, Result<(), Error>) {
    let mut bodies = Vec::new();
    let result = s.retrieve(messages, |_, body| {
        let body = body.unwrap();
        let mut text = String::new();
        match body.read_to_string(&mut text) {
            Ok(_) => bodies.push((text, body.identity())),
            Err(_) => bodies.push(("(refused)".into(), body.identity())),
        }
        Flow::Continue
    });
    (bodies, result)
}

#[test]
fn an_extra_reply_in_a_window_stops_at_the_message_it_displaced() {
    // One reply too many after message 1's: it would pass for message 2's, and
    // message 2's for message 3's.
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\none\r\n.\r\n+OK 1 16\r\n\
         +OK\r\nA: 1\r\n\r\none\r\n.\r\n\
         +OK\r\nA: 2\r\n\r\ntwo\r\n.\r\n+OK 2 16\r\n+OK\r\nA: 3\r\n\r\nsix\r\n.\r\n+OK 3 16\r\n"
    );
    let mut s = login(&server);
    let (bodies, result) = read_all(&mut s, &[(1, 16), (2, 16), (3, 16)]);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("out of step"), "{err}");
    // Message 1 is whole and checked; message 2's body never reached its end.
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].1.is_some());
    assert_eq!(bodies[1], ("(refused)".to_string(), None));
}

#[test]
fn an_extra_reply_among_tops_stops_before_any_header_is_shifted() {
    // An extra TOP reply after message 1's would pass message 1's headers off
    // as message 2's: the LIST fence after TOP 2 catches it.
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\n.\r\n+OK 1 16\r\n\
         +OK\r\nA: 1\r\n\r\n.\r\n+OK\r\nA: 2\r\n\r\n.\r\n+OK 2 16\r\n"
    );
    let mut s = login(&server);
    let mut heads = Vec::new();
    let read = |head: &mut dyn Read| {
        let mut text = String::new();
        head.read_to_string(&mut text).unwrap();
        text
    };
    let result = s.tops(&[(1, 16), (2, 16)], read, |&(num, _), head| {
        heads.push((num, head.unwrap()));
        Flow::Continue
    });
    let err = result.unwrap_err();
    assert!(err.to_string().contains("out of step"), "{err}");
    // The shifted block is never handed on as message 2's: its fence failed first.
    assert_eq!(heads, [(1, "A: 1\n\n".to_string())]);
    assert_eq!(
        s.conn.io.get_ref().last_batches(1),
        ["TOP 1 0\r\nLIST 1\r\nTOP 2 0\r\nLIST 2\r\n"]
    );
}

#[test]
fn a_body_far_from_its_listed_size_is_refused_before_its_end() {
    let server =
        format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\none\r\n.\r\n+OK 1 90000\r\n");
    let mut s = login(&server);
    let (bodies, result) = read_all(&mut s, &[(1, 90_000)]);
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    assert_eq!(bodies, [("(refused)".to_string(), None)]);
}

#[test]
fn the_identity_is_the_listed_size_and_the_header_digest() {
    let server = format!(
        "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\none\r\n..two\r\n.\r\n+OK 1 21\r\n"
    );
    let mut s = login(&server);
    let (bodies, result) = read_all(&mut s, &[(1, 21)]);
    result.unwrap();
    let mut head = HeadHasher::default();
    head.update(b"A: 1\n\n");
    let expected = Identity {
        size: 21,
        digest: head.finish(),
    };
    assert_eq!(
        bodies,
        [("A: 1\n\none\n.two\n".to_string(), Some(expected))]
    );
}

#[test]
fn without_pipelining_the_list_fence_follows_each_body() {
    let mut c = client(
        "+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK\r\n+OK\r\nx\r\n.\r\n+OK 1 3\r\n+OK\r\ny\r\n.\r\n+OK 2 3\r\n",
    );
    c.capabilities().unwrap();
    let mut s = c
        .login(Credentials::User {
            user: "u",
            password: "p",
        })
        .map_err(|f| f.error)
        .unwrap();
    let (bodies, result) = read_all(&mut s, &[(1, 3), (2, 3)]);
    result.unwrap();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        s.conn.io.get_ref().last_batches(4),
        ["RETR 1\r\n", "LIST 1\r\n", "RETR 2\r\n", "LIST 2\r\n"]
    );
}

#[test]
fn truncated_body_is_a_lost_connection() {
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\npartial\r\n");
    let mut s = login(&server);
    let err = s
        .retrieve(&[(1, 1)], |_, body| {
            let _ = io::copy(&mut body.unwrap(), &mut io::sink());
            Flow::Continue
        })
        .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
}

#[test]
fn without_pipelining_one_command_at_a_time() {
    let mut c =
        client("+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n1 5\r\n.\r\n");
    assert!(!c.capabilities().unwrap().known);
    let mut s = c
        .login(Credentials::User {
            user: "u",
            password: "p",
        })
        .map_err(|f| f.error)
        .unwrap();
    s.listing().unwrap();
    assert!(s.conn.io.get_ref().written().ends_with("UIDL\r\nLIST\r\n"));
}

#[test]
fn listings_in_different_orders_are_joined_by_number() {
    let uids = vec![(2, "b".to_string()), (1, "a".to_string())];
    let joined = join(uids, &[(1, 10), (2, 20)]).unwrap();
    assert_eq!(joined[0].uid, "a");
    assert_eq!(joined[0].size, 10);
    assert_eq!(joined[1].uid, "b");
    assert_eq!(joined[1].size, 20);
    let err = join(vec![(1, "a".to_string())], &[(1, 10), (2, 20)]).unwrap_err();
    assert!(err.to_string().contains("LIST names message 2"), "{err}");
}

#[test]
fn login_failure_keeps_the_client_and_its_code() {
    let mut c = client("+OK hi\r\n-ERR\r\n+OK\r\n-ERR [IN-USE] locked\r\n");
    c.capabilities().unwrap();
    let Err(failed) = c.login(Credentials::User {
        user: "u",
        password: "secret",
    }) else {
        panic!("login should fail");
    };
    assert_eq!(failed.error.kind(), super::super::ErrorKind::Temporary);
    assert!(!failed.error.to_string().contains("secret"));
}

#[test]
fn apop_digest_matches_rfc_example() {
    // RFC 1939 §7's worked example.
    let mut c = client("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n+OK\r\n");
    c.authenticate(Credentials::Apop {
        user: "mrose",
        password: "tanstaaf",
    })
    .unwrap();
    assert!(c
        .conn
        .io
        .get_ref()
        .written()
        .ends_with("APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"));
}

#[test]
fn apop_without_valid_timestamp_is_refused_before_sending() {
    let mut c = client("+OK ready <bad>\r\n");
    let err = c
        .authenticate(Credentials::Apop {
            user: "u",
            password: "p",
        })
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)));
    assert!(c.conn.io.get_ref().written().is_empty());
}

#[test]
fn sasl_plain_with_initial_response() {
    let mut c = client("+OK hi\r\n+OK Logged in.\r\n");
    c.authenticate(Credentials::Sasl {
        mechanism: Mechanism::Plain,
        user: "tim",
        secret: "tanstaaf",
        peer: Peer {
            host: "h".into(),
            port: 110,
        },
        binding: ChannelBinding::None,
    })
    .unwrap();
    assert!(c
        .conn
        .io
        .get_ref()
        .written()
        .ends_with("AUTH PLAIN AHRpbQB0YW5zdGFhZg==\r\n"));
}

#[test]
fn sasl_login_answers_challenges_and_cancels_on_garbage() {
    let mut c = client("+OK hi\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n-ERR [AUTH] no\r\n");
    let creds = Credentials::Sasl {
        mechanism: Mechanism::Login,
        user: "u",
        secret: "p",
        peer: Peer {
            host: "h".into(),
            port: 110,
        },
        binding: ChannelBinding::None,
    };
    let err = c.authenticate(creds.clone()).unwrap_err();
    assert_eq!(err.kind(), super::super::ErrorKind::Auth);
    assert!(c
        .conn
        .io
        .get_ref()
        .written()
        .ends_with("AUTH LOGIN\r\ndQ==\r\ncA==\r\n"));
    let mut c = client("+OK hi\r\n+ !!!\r\n");
    assert!(c.authenticate(creds).is_err());
    assert!(c.conn.io.get_ref().written().ends_with("*\r\n"));
}

#[test]
fn stls_refuses_injected_bytes() {
    let c = client("+OK hi\r\n+OK\r\nSTLS\r\n.\r\n+OK begin\r\n+OK injected\r\n");
    let err = c.starttls(Ok).map(drop).unwrap_err();
    assert!(matches!(err, Error::StlsInjection), "{err:?}");
}

#[test]
fn stls_missing_from_capa_sends_nothing_more() {
    let c = client("+OK hi\r\n+OK\r\nUSER\r\n.\r\n");
    let err = c.starttls(Ok).map(drop).unwrap_err();
    assert!(matches!(err, Error::StlsUnavailable));
}

#[test]
fn stls_forgets_capabilities() {
    let c = client("+OK hi\r\n+OK\r\nSTLS\r\n.\r\n+OK go\r\n");
    let mut c = c
        .starttls(|mut s| {
            s.feed("+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
            Ok(s)
        })
        .unwrap();
    let caps = c.capabilities().unwrap();
    assert!(!caps.stls);
    assert_eq!(caps.sasl, ["PLAIN"]);
    assert!(c
        .conn
        .io
        .get_ref()
        .written()
        .ends_with("CAPA\r\nSTLS\r\nCAPA\r\n"));
}

#[test]
fn overlong_line_is_refused() {
    let long = "x".repeat(MAX_LINE + 10);
    let err = Client::new(MockStream::new(&format!("+OK {long}\r\n")), None)
        .map(drop)
        .unwrap_err();
    assert!(matches!(err, Error::Protocol(_)));
}

/// A server that says `head`, then sends well-formed listing lines for ever,
/// counting the bytes it sent; whatever the client writes is kept.
struct Endless {
    head: io::Cursor<Vec<u8>>,
    next: u64,
    line: Vec<u8>,
    at: usize,
    sent: u64,
    written: Vec<u8>,
}

impl Endless {
    fn new(head: &str) -> Endless {
        Endless {
            head: io::Cursor::new(head.as_bytes().to_vec()),
            next: 1,
            line: Vec::new(),
            at: 0,
            sent: 0,
            written: Vec::new(),
        }
    }
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        let mut n = 0;
        while n < buf.len() {
            if self.at == self.line.len() {
                self.line = format!("{} {}00\r\n", self.next, self.next).into_bytes();
                self.next += 1;
                self.at = 0;
            }
            let take = (self.line.len() - self.at).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.line[self.at..self.at + take]);
            self.at += take;
            n += take;
        }
        self.sent += n as u64;
        Ok(n)
    }
}

impl Write for Endless {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for Endless {}

fn endless_session(head: &str) -> Session<Endless> {
    let mut c = Client::new(Endless::new(head), None).unwrap();
    c.capabilities().unwrap();
    c.round_trip = Some(Duration::ZERO);
    c.login(Credentials::User {
        user: "u",
        password: "p",
    })
    .map_err(|f| f.error)
    .unwrap()
}

#[test]
fn an_endless_uidl_listing_is_refused_early_and_closes_without_quit() {
    let mut s = endless_session(&format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n"));
    let err = s.listing_sized(&|_| true).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    assert_eq!(err.kind(), super::super::ErrorKind::Protocol);
    // Refused at the cap, not after whatever the server could send.
    let sent = s.conn.io.get_ref().sent;
    let lines = s.conn.io.get_ref().next - 1;
    assert!(lines <= MAX_LISTED as u64 + (READ_BUFFER as u64), "{lines}");
    assert!(
        sent < (MAX_LISTING_BYTES + 2 * READ_BUFFER) as u64,
        "{sent}"
    );
    let written = s.conn.io.get_ref().written.len();
    assert!(matches!(s.quit(), Err(Error::Unusable { .. })));
    assert_eq!(written, "CAPA\r\nUSER u\r\nPASS p\r\nUIDL\r\n".len());
}

#[test]
fn an_endless_list_is_refused_past_the_uidl_count() {
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n");
    let mut s = endless_session(&server);
    let err = s.listing().unwrap_err();
    assert!(err.to_string().contains("past 2 lines"), "{err}");
    assert!(s.conn.io.get_ref().sent < 2 * READ_BUFFER as u64);
}

#[test]
fn an_endless_capa_is_refused() {
    let mut c = Client::new(Endless::new("+OK hi\r\n+OK\r\n"), None).unwrap();
    let err = c.capabilities().unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("past {MAX_CAPA_LINES} lines")),
        "{err}"
    );
    assert!(c.conn.io.get_ref().sent < 2 * READ_BUFFER as u64);
}

#[test]
fn an_overlong_listing_line_is_refused() {
    let long = "x".repeat(MAX_LISTING_LINE);
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 {long}\r\n.\r\n");
    let mut s = login_fast(&server);
    let err = s.listing_sized(&|_| false).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
}

#[test]
fn after_a_lost_connection_quit_sends_nothing() {
    // The server goes away after PASS: the login fails, and the polite QUIT
    // that follows must not be sent (a timed-out server would make it wait a
    // second timeout).
    let mut c = client(GREETING_AND_CAPA);
    c.capabilities().unwrap();
    let failed = c
        .login(Credentials::User {
            user: "u",
            password: "p",
        })
        .map(drop)
        .unwrap_err();
    assert!(matches!(failed.error, Error::Lost { .. }));
    let before = failed.client.conn.io.get_ref().written().to_string();
    assert!(before.ends_with("USER u\r\n"), "{before}");
    let mut client = failed.client;
    assert!(matches!(
        client.conn.send(Command::Stat),
        Err(Error::Unusable { .. })
    ));
    assert_eq!(client.conn.io.get_ref().written(), before);
    assert!(matches!(client.quit(), Err(Error::Unusable { .. })));
}

#[test]
fn after_a_garbled_reply_the_session_quits_without_a_word() {
    let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\nnonsense\r\n+OK bye\r\n");
    let mut s = login_fast(&server);
    assert!(matches!(s.stat(), Err(Error::Protocol(_))));
    assert!(matches!(s.quit(), Err(Error::Unusable { .. })));
}
