//! Faults and hostile servers that Dovecot cannot be made to produce, served by the
//! scripted server: injected bytes, cut connections, duplicate unique-ids, silence.

use std::time::{Duration, Instant};

use crate::support::scripted::{greeting_and_capa, logged_in, send};
use crate::support::{Home, Scripted, Step};

fn messages(n: usize) -> Vec<(String, Vec<u8>)> {
    (1..=n)
        .map(|i| {
            (
                format!("uid-{i}"),
                format!("Subject: {i}\n\n.dot {i}\n").into_bytes(),
            )
        })
        .collect()
}

fn sent_passwords(received: &[String]) -> bool {
    received
        .iter()
        .any(|l| l.starts_with("PASS") || l.starts_with("USER") || l.starts_with("APOP"))
}

#[test]
fn stls_response_injection_is_refused_before_credentials() {
    let server = Scripted::start(vec![vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
        Step::Expect("STLS"),
        // The injected line rides in the same packet as the STLS reply.
        send("+OK begin TLS\r\n+OK injected\r\n"),
        Step::Sleep(Duration::from_secs(1)),
    ]]);
    let home = Home::new();
    home.write_config(
        &server
            .config(&home, "")
            .replace("tls = \"none\"", "tls = \"starttls\""),
    );
    let run = home.run(&["sync"]);
    run.expect(76);
    assert!(run.stderr().contains("injection"), "{}", run.stderr());
    assert!(!sent_passwords(&server.finish()));
}

#[test]
fn starttls_without_stls_never_falls_back() {
    let server = Scripted::start(vec![greeting_and_capa()]);
    let home = Home::new();
    home.write_config(
        &server
            .config(&home, "")
            .replace("tls = \"none\"", "tls = \"starttls\""),
    );
    let run = home.run(&["sync"]);
    run.expect(69);
    assert!(run.stderr().contains("STLS"), "{}", run.stderr());
    assert!(!sent_passwords(&server.finish()));
}

#[test]
fn server_that_never_starts_tls_times_out() {
    let server = Scripted::start(vec![vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSTLS\r\n.\r\n"),
        Step::Expect("STLS"),
        send("+OK go ahead\r\n"),
        Step::Sleep(Duration::from_secs(8)),
    ]]);
    let home = Home::new();
    let config = server
        .config(&home, "")
        .replace("tls = \"none\"", "tls = \"starttls\"")
        .replace("timeout = 5", "timeout = 2");
    home.write_config(&config);
    let start = Instant::now();
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "took {:?}",
        start.elapsed()
    );
    assert!(run.stderr().contains("timed out"), "{}", run.stderr());
}

#[test]
fn in_use_is_temporary_and_auth_is_permanent() {
    let mut in_use = greeting_and_capa();
    in_use.extend([
        Step::Expect("USER"),
        send("+OK\r\n"),
        Step::Expect("PASS"),
        send("-ERR [IN-USE] mailbox locked\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
    ]);
    let mut auth = greeting_and_capa();
    auth.extend([
        Step::Expect("USER"),
        send("+OK\r\n"),
        Step::Expect("PASS"),
        send("-ERR [AUTH] no\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
    ]);
    let server = Scripted::start(vec![in_use, auth]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    home.run(&["sync"]).expect(75);
    let run = home.run(&["sync"]);
    run.expect(77);
    assert!(!run.stderr().contains("hunter2-secret"), "{}", run.stderr());
}

#[test]
fn duplicate_unique_ids_with_the_same_headers_stop_before_anything_is_fetched() {
    let mut script = logged_in();
    script.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 same\r\n2 same\r\n.\r\n"),
        Step::Expect("LIST 1"),
        Step::Expect("LIST 2"),
        send("+OK 1 10\r\n+OK 2 10\r\n"),
        // Each TOP has its LIST fence, as each RETR has.
        Step::Expect("TOP 1 0"),
        send("+OK\r\nSubject: twin\r\n\r\n.\r\n"),
        Step::Expect("LIST 1"),
        send("+OK 1 10\r\n"),
        Step::Expect("TOP 2 0"),
        send("+OK\r\nSubject: twin\r\n\r\n.\r\n"),
        Step::Expect("LIST 2"),
        send("+OK 2 10\r\n"),
        Step::Sleep(Duration::from_millis(500)),
    ]);
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    let run = home.run(&["sync"]);
    run.expect(76);
    assert!(run.stderr().contains("same unique-id"), "{}", run.stderr());
    let received = server.finish();
    assert!(
        !received
            .iter()
            .any(|l| l.starts_with("RETR") || l.starts_with("DELE")),
        "{received:?}"
    );
}

#[test]
fn hostile_server_text_is_escaped() {
    let server = Scripted::start(vec![vec![send("-ERR \x1b[2J\x1b]0;pwned\x07 go away\r\n")]]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    let run = home.run(&["sync"]);
    assert_ne!(run.code(), 0);
    let err = run.stderr();
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\x1b[2J"), "{err}");
}

/// The connection dies in the middle of the second message. The first stays
/// delivered and recorded; the partial second leaves nothing. The next run deletes the
/// first without fetching it again and fetches the second once.
#[test]
fn connection_cut_mid_retr_loses_nothing_and_duplicates_nothing() {
    let msgs = messages(2);
    let mut first = logged_in();
    first.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 uid-1\r\n2 uid-2\r\n.\r\n"),
        Step::Expect("LIST 1"),
        Step::Expect("LIST 2"),
        // The sizes the second session lists: an identity includes the size.
        send("+OK 1 23\r\n+OK 2 23\r\n"),
        Step::Expect("RETR 1"),
        Step::Expect("LIST 1"),
        Step::Expect("RETR 2"),
        Step::Expect("LIST 2"),
        send("+OK\r\nSubject: 1\r\n\r\n..dot 1\r\n.\r\n+OK 1 23\r\n+OK\r\nSubject: 2\r\n\r\nhalf of it"),
        Step::Close,
    ]);
    let mut second = logged_in();
    second.push(Step::Serve(msgs.clone()));
    let server = Scripted::start(vec![first, second]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));

    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(run.stderr().contains("lost"), "{}", run.stderr());
    assert_eq!(home.delivered(), vec![msgs[0].1.clone()]);
    assert!(home.tmp_is_empty());

    home.run(&["sync"]).expect(0);
    let received = server.finish();
    let second_session: Vec<_> = received
        .iter()
        .skip_while(|l| !l.starts_with("QUIT") && !l.starts_with("RETR 2"))
        .collect();
    let retrs: Vec<_> = received.iter().filter(|l| l.starts_with("RETR")).collect();
    assert_eq!(retrs, ["RETR 1", "RETR 2", "RETR 2"], "{received:?}");
    assert!(
        received.iter().any(|l| l == "DELE 1") && received.iter().any(|l| l == "DELE 2"),
        "{received:?} {second_session:?}"
    );
    let mut expected: Vec<_> = msgs.into_iter().map(|(_, m)| m).collect();
    expected.sort();
    assert_eq!(home.delivered(), expected);
}

#[test]
fn retr_refused_for_one_message_keeps_it_and_reports() {
    let mut script = logged_in();
    script.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 a\r\n2 b\r\n.\r\n"),
        Step::Expect("LIST 1"),
        Step::Expect("LIST 2"),
        send("+OK 1 20\r\n+OK 2 20\r\n"),
        Step::Expect("RETR 1"),
        Step::Expect("LIST 1"),
        Step::Expect("RETR 2"),
        Step::Expect("LIST 2"),
        send("-ERR [SYS/PERM] message corrupt\r\n+OK 1 20\r\n+OK\r\nSubject: b\r\n\r\nok\r\n.\r\n+OK 2 20\r\n"),
        Step::Expect("DELE 2"),
        send("+OK\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
    ]);
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    let run = home.run(&["sync"]);
    run.expect(76);
    assert!(
        run.stderr().contains("refused to send 1 message"),
        "{}",
        run.stderr()
    );
    assert_eq!(home.delivered(), vec![b"Subject: b\n\nok\n".to_vec()]);
    let received = server.finish();
    assert!(!received.iter().any(|l| l == "DELE 1"), "{received:?}");
}
