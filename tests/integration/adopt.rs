//! `popfetch adopt` against Dovecot: the messages on the server recorded as
//! delivered without being downloaded, all of them or those dated before a day
//! (read with TOP n 0), shown first, asked at a terminal, and never deleted.

use crate::support::{Dovecot, Home};

/// Three messages from 2019 and two from 2026.
fn mailbox() -> Vec<Vec<u8>> {
    (0..5)
        .map(|i| {
            let year = if i < 3 { 2019 } else { 2026 };
            format!(
                "Date: Mon, 7 Jan {year} 10:00:0{i} +0000\nSubject: message {i}\nMessage-ID: <{i}@adopt.test>\n\nbody {i}\n"
            )
            .into_bytes()
        })
        .collect()
}

#[test]
fn adopt_before_a_day_shows_asks_records_and_the_sync_fetches_only_newer_mail() {
    let server = Dovecot::start();
    let messages = mailbox();
    server.add_messages(&messages);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = false"));
    // --dry-run shows what it would record, and records nothing.
    let dry = home.run(&["adopt", "test", "--before", "2025-01-01", "--dry-run"]);
    dry.expect(0);
    let shown = dry.stdout();
    assert!(shown.contains("test: 3 message(s)"), "{shown}");
    assert!(
        shown.contains("dated before 2025-01-01 00:00 UTC"),
        "{shown}"
    );
    assert!(shown.contains("2 newer stay new"), "{shown}");
    assert!(shown.contains("dry run, nothing recorded"), "{shown}");
    // No terminal to ask at, no --yes: one line, exit 64, nothing recorded.
    let refused = home.run(&["adopt", "test", "--before", "2025-01-01"]);
    refused.expect(64);
    assert!(
        refused.stderr().contains("add --yes"),
        "{}",
        refused.stderr()
    );
    assert_eq!(refused.stderr().trim_end().lines().count(), 1);
    // Asked at a terminal, "n" records nothing; "y" records the three.
    for (answer, recorded) in [("n", false), ("y", true)] {
        let (screen, status) = home.answer_on_pty("adopt test --before 2025-01-01", answer);
        assert!(status.success(), "{screen}");
        assert!(screen.contains("Record them? [y/N]"), "{screen}");
        assert_eq!(
            screen.contains("recorded 3 message(s)"),
            recorded,
            "{screen}"
        );
    }
    // The sync fetches the two newer ones only; the adopted three are never
    // deleted, even in delete mode: popfetch did not deliver them.
    home.run(&["sync"]).expect(0);
    let mut want = messages[3..].to_vec();
    want.sort();
    assert_eq!(home.delivered(), want);
    assert_eq!(server.messages().len(), 3);
    // Adopting again finds them known.
    let again = home.run(&["adopt", "test", "--all", "--yes"]);
    again.expect(0);
    assert!(
        again.stdout().contains("test: 0 message(s)"),
        "{}",
        again.stdout()
    );
    assert!(
        again.stdout().contains("3 already known"),
        "{}",
        again.stdout()
    );
}

#[test]
fn adopt_all_records_everything_now_on_the_server() {
    let server = Dovecot::start();
    server.add_messages(&mailbox());
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true"));
    let run = home.run(&["adopt", "test", "--all", "--yes"]);
    run.expect(0);
    assert!(
        run.stdout().contains("recorded 5 message(s)"),
        "{}",
        run.stdout()
    );
    // Mail that arrives later is fetched; nothing adopted is.
    let later = b"Subject: later\nMessage-ID: <later@adopt.test>\n\nlater\n".to_vec();
    server.add_messages(std::slice::from_ref(&later));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), vec![later]);
    // --all and --before together, or neither, is a usage error.
    home.run(&["adopt", "test"]).expect(64);
    home.run(&["adopt", "test", "--all", "--before", "2020-01-01"])
        .expect(64);
    home.run(&["adopt", "test", "--before", "last week"])
        .expect(64);
}
