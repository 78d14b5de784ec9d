//! Repeated and reused unique-ids (issue 15, bug 3), RETR replies out of step
//! (bug 6) and refused DELEs (bug 12), against the scripted server: a message is
//! deleted unfetched only when its record provably describes it, and nothing from a
//! reply that does not fit is kept.

use crate::support::scripted::{logged_in, send, Faults};
use crate::support::{Home, Scripted, Step};

/// Messages without Message-ID or Date, as popa3d gives one unique-id.
fn mail(name: &str) -> Vec<u8> {
    format!("From: same@example.org\nSubject: {name}\n\nbody of {name}\n").into_bytes()
}

fn served(messages: &[(&str, &[u8])]) -> Vec<Step> {
    let mut script = logged_in();
    script.push(Step::Serve(
        messages
            .iter()
            .map(|(uid, m)| (uid.to_string(), m.to_vec()))
            .collect(),
    ));
    script
}

fn served_with(messages: &[(&str, &[u8])], faults: Faults) -> Vec<Step> {
    let mut script = logged_in();
    script.push(Step::ServeWith(
        messages
            .iter()
            .map(|(uid, m)| (uid.to_string(), m.to_vec()))
            .collect(),
        faults,
    ));
    script
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// The commands of each session, split at the greeting's CAPA.
fn sessions(received: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for line in received {
        if line == "CAPA" {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.push(line.clone());
        }
    }
    out
}

fn has(session: &[String], prefix: &str) -> bool {
    session.iter().any(|l| l.starts_with(prefix))
}

#[test]
fn a_reused_unique_id_is_fetched_not_deleted() {
    let (a, b) = (mail("A"), mail("B, which is longer"));
    let server = Scripted::start(vec![served(&[("X", &a)]), served(&[("X", &b)])]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    home.run(&["sync"]).expect(0);
    home.run(&["sync"]).expect(0);
    let received = server.finish();
    let s = sessions(&received);
    assert!(has(&s[1], "RETR 1"), "B is fetched: {:?}", s[1]);
    assert_eq!(home.delivered(), sorted(vec![a, b]));
}

#[test]
fn a_reused_unique_id_after_a_drop_at_dele_is_fetched_not_deleted() {
    let (a, b) = (mail("A"), mail("B"));
    let drop_at_dele = Faults {
        close_at: Some("DELE"),
        ..Faults::default()
    };
    // Another client deletes A between the sessions; B arrives under A's id.
    let server = Scripted::start(vec![
        served_with(&[("X", &a)], drop_at_dele),
        served(&[("X", &b)]),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    home.run(&["sync"]).expect(75);
    home.run(&["sync"]).expect(0);
    let s = sessions(&server.finish());
    // The leftover is checked (TOP) and, being another message, fetched.
    assert!(has(&s[1], "TOP 1 0") && has(&s[1], "RETR 1"), "{:?}", s[1]);
    assert_eq!(home.delivered(), sorted(vec![a, b]));
}

#[test]
fn a_leftover_after_a_drop_at_dele_is_deleted_once_verified() {
    let a = mail("A");
    let drop_at_dele = Faults {
        close_at: Some("DELE"),
        ..Faults::default()
    };
    let server = Scripted::start(vec![
        served_with(&[("X", &a)], drop_at_dele),
        served(&[("X", &a)]),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    home.run(&["sync"]).expect(75);
    home.run(&["sync"]).expect(0);
    let s = sessions(&server.finish());
    assert!(has(&s[1], "TOP 1 0") && has(&s[1], "DELE 1"), "{:?}", s[1]);
    assert!(!has(&s[1], "RETR"), "{:?}", s[1]);
    assert_eq!(home.delivered(), vec![a]);
}

#[test]
fn a_message_arriving_under_a_known_unique_id_does_not_bring_the_first_again() {
    let (a, b) = (mail("A"), mail("B"));
    let server = Scripted::start(vec![
        served(&[("X", &a)]),
        served(&[("X", &a), ("X", &b)]),
        served(&[("X", &a), ("X", &b)]),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, "keep = true"));
    for _ in 0..3 {
        home.run(&["sync"]).expect(0);
    }
    let s = sessions(&server.finish());
    let retrs: Vec<_> = s[1].iter().filter(|l| l.starts_with("RETR")).collect();
    assert_eq!(retrs, ["RETR 2"], "{:?}", s[1]);
    assert!(!has(&s[2], "RETR"), "{:?}", s[2]);
    assert_eq!(home.delivered(), sorted(vec![a, b]));
}

#[test]
fn when_one_of_two_repeated_unique_ids_vanishes_the_other_is_not_fetched_again() {
    let (a, b) = (mail("A"), mail("B"));
    let server = Scripted::start(vec![
        served(&[("X", &a), ("X", &b)]),
        served(&[("X", &b)]),
        served(&[("X", &b)]),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, "keep = true"));
    for _ in 0..3 {
        home.run(&["sync"]).expect(0);
    }
    let s = sessions(&server.finish());
    assert!(!has(&s[1], "RETR") && !has(&s[2], "RETR"), "{s:?}");
    // Once alone under its id, B is kept without a TOP.
    assert!(!has(&s[2], "TOP"), "{:?}", s[2]);
    assert_eq!(home.delivered(), sorted(vec![a, b]));
}

#[test]
fn a_refused_dele_of_a_repeated_unique_id_is_retried_verified_without_a_duplicate() {
    let (a, b) = (mail("A"), mail("B"));
    let refuse_a = Faults {
        refuse_dele: vec![1],
        dele_reply: "-ERR [SYS/TEMP] try later",
        close_at: None,
    };
    let server = Scripted::start(vec![
        served_with(&[("X", &a), ("X", &b)], refuse_a),
        served(&[("X", &a)]),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(
        run.stderr().contains("refused to delete 1 message"),
        "{}",
        run.stderr()
    );
    home.run(&["sync"]).expect(0);
    let s = sessions(&server.finish());
    assert!(has(&s[1], "TOP 1 0") && has(&s[1], "DELE 1"), "{:?}", s[1]);
    assert!(!has(&s[1], "RETR"), "{:?}", s[1]);
    assert_eq!(home.delivered(), sorted(vec![a, b]));
}

#[test]
fn a_refused_dele_warns_and_exits_by_its_response_code() {
    for (reply, code) in [
        ("-ERR [IN-USE] locked", 75),
        ("-ERR [SYS/TEMP] later", 75),
        ("-ERR no", 76),
        ("-ERR [SYS/PERM] never", 76),
    ] {
        let refuse = Faults {
            refuse_dele: vec![2],
            dele_reply: reply,
            close_at: None,
        };
        let (a, b) = (mail("A"), mail("B"));
        let server = Scripted::start(vec![served_with(&[("a", &a), ("b", &b)], refuse)]);
        let home = Home::new();
        home.write_config(&server.config(&home, ""));
        let run = home.run(&["sync"]);
        run.expect(code);
        assert!(
            run.stderr()
                .contains("refused to delete 1 message(s); they stay on the server"),
            "{reply}: {}",
            run.stderr()
        );
        assert_eq!(home.delivered(), sorted(vec![a, b]));
        server.finish();
    }
}

/// One reply too many inside a pipelined RETR window: the session stops at the
/// message it displaced, keeps nothing from it, and the next run fetches every
/// message not delivered and deletes only what was.
#[test]
fn an_extra_reply_in_a_retr_window_keeps_nothing_suspect_and_deletes_nothing_undelivered() {
    let msgs: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|i| {
            (
                format!("u{i}"),
                format!("Subject: {i}\n\nsame size {i}\n").into_bytes(),
            )
        })
        .collect();
    let size = crate::support::scripted::wire(&msgs[0].1).len();
    let reply = |i: usize| {
        let mut r = b"+OK\r\n".to_vec();
        r.extend(crate::support::scripted::wire(&msgs[i].1));
        r.extend(b".\r\n");
        r
    };
    let mut first = logged_in();
    first.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 u1\r\n2 u2\r\n3 u3\r\n.\r\n"),
        Step::Expect("LIST 1"),
        Step::Expect("LIST 2"),
        Step::Expect("LIST 3"),
        send(&format!("+OK 1 {size}\r\n+OK 2 {size}\r\n+OK 3 {size}\r\n")),
        Step::Expect("RETR 1"),
        Step::Expect("LIST 1"),
        Step::Expect("RETR 2"),
        Step::Expect("LIST 2"),
        Step::Expect("RETR 3"),
        Step::Expect("LIST 3"),
    ]);
    let mut replies = reply(0);
    replies.extend(format!("+OK 1 {size}\r\n").bytes());
    // The extra reply: message 1 once more.
    replies.extend(reply(0));
    for i in 1..3 {
        replies.extend(reply(i));
        replies.extend(format!("+OK {} {size}\r\n", i + 1).bytes());
    }
    first.extend([Step::Send(replies), Step::Expect("QUIT"), send("+OK\r\n")]);
    let mut second = logged_in();
    second.push(Step::Serve(msgs.clone()));
    let server = Scripted::start(vec![first, second]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));

    let run = home.run(&["sync"]);
    run.expect(76);
    assert!(run.stderr().contains("out of step"), "{}", run.stderr());
    assert_eq!(home.delivered(), vec![msgs[0].1.clone()]);

    home.run(&["sync"]).expect(0);
    let s = sessions(&server.finish());
    assert!(!has(&s[0], "DELE"), "{:?}", s[0]);
    // Message 1, delivered and checked, is deleted unfetched; 2 and 3 are fetched.
    let retrs: Vec<_> = s[1].iter().filter(|l| l.starts_with("RETR")).collect();
    assert_eq!(retrs, ["RETR 2", "RETR 3"], "{:?}", s[1]);
    assert!(has(&s[1], "DELE 1"), "{:?}", s[1]);
    assert_eq!(
        home.delivered(),
        sorted(msgs.into_iter().map(|(_, m)| m).collect())
    );
}
