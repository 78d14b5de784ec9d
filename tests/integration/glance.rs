//! The glance (issue 22): a keep-on-server mailbox as the last session left it
//! is checked with STAT, `UIDL 1` and `UIDL n` instead of listed in full, and
//! every change that could hide a new message brings the full listing back.
//! Against the scripted mailbox server, which changes between sessions as the
//! test says.

use std::time::Duration;

use crate::support::scripted::{Mailbox, Message};
use crate::support::Home;

fn message(serial: usize, uid: &str, fill: usize) -> Message {
    Message {
        serial,
        uid: uid.to_string(),
        content: format!(
            "Subject: glance {serial}\nMessage-ID: <{serial}@glance.test>\n\n{}\n",
            "x".repeat(fill)
        )
        .into_bytes(),
    }
}

/// What the next sync sent: whether it listed in full (a bare UIDL), and
/// whether it glanced (STAT with UIDL 1).
fn sync(server: &Mailbox, home: &Home) -> (bool, bool) {
    server.model.lock().unwrap().commands.clear();
    home.run(&["sync"]).expect(0);
    let commands = server.model.lock().unwrap().commands.clone();
    let listed = commands.iter().any(|c| c == "UIDL");
    let glanced = commands.iter().any(|c| c == "UIDL 1");
    (listed, glanced)
}

fn start(extra: &str) -> (Mailbox, Home) {
    let server = Mailbox::start((0..4).map(|i| message(i, &format!("u{i}"), 10)).collect());
    let home = Home::new();
    home.write_config(&server.config(&home.maildir(), &format!("keep = true\n{extra}")));
    // The first sync lists everything and leaves the glance behind.
    assert_eq!(sync(&server, &home), (true, false));
    assert_eq!(home.delivered().len(), 4);
    (server, home)
}

#[test]
fn an_unchanged_mailbox_is_glanced_at_not_listed() {
    let (server, home) = start("");
    let commands = |server: &Mailbox| server.model.lock().unwrap().commands.clone();
    assert_eq!(sync(&server, &home), (false, true));
    let sent = commands(&server);
    assert!(
        sent.contains(&"STAT".to_string()) && sent.contains(&"UIDL 4".to_string()),
        "{sent:?}"
    );
    assert!(
        !sent
            .iter()
            .any(|c| c.starts_with("LIST") || c.starts_with("RETR")),
        "{sent:?}"
    );
    // And again: the glance stays good.
    assert_eq!(sync(&server, &home), (false, true));
    assert_eq!(home.delivered().len(), 4);
}

#[test]
fn a_deletion_and_an_arrival_of_the_same_size_are_seen() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        // Same count, same octets: only the last unique-id tells.
        m.messages.remove(1);
        m.messages.push(message(9, "u9", 10));
    }
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 5, "the new message was fetched");
}

#[test]
fn a_message_replaced_by_one_of_the_same_size_is_seen() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        let last = m.messages.pop().unwrap();
        m.messages.push(message(8, "u8", 10));
        assert_eq!(last.content.len(), m.messages[3].content.len());
    }
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 5);
}

#[test]
fn a_reordering_and_renumbered_unique_ids_bring_the_full_listing_back() {
    let (server, home) = start("");
    server.model.lock().unwrap().messages.swap(0, 3);
    assert!(sync(&server, &home).0, "first and last swapped");
    assert_eq!(home.delivered().len(), 4, "nothing new in a reordering");
    assert_eq!(sync(&server, &home), (false, true), "glanced at again");
    for m in server.model.lock().unwrap().messages.iter_mut() {
        m.uid = format!("renumbered-{}", m.serial);
    }
    assert!(sync(&server, &home).0, "unique-ids renumbered");
}

/// A server that files new mail in the middle, while one of a different size
/// went: the count and both ends are as before, only the octets tell. This is
/// the test that fails when the octets are dropped from the check.
#[test]
fn an_arrival_filed_in_the_middle_is_seen_by_the_octets() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        m.messages.remove(1);
        m.messages.insert(2, message(7, "u7", 25));
    }
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 5);
}

#[test]
fn what_a_policy_needs_and_the_interval_bring_the_full_listing_back() {
    // max_messages may have left work for this run.
    let (server, home) = start("max_messages = 10");
    assert_eq!(sync(&server, &home), (true, false));
    // At least every full_listing_interval.
    let (server, home) = start("full_listing_interval = \"1s\"");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(sync(&server, &home).0);
    // A state that lost records (a backup restored, a file moved aside) is
    // listed in full: the glance names how many records it was taken over.
    let (server, home) = start("");
    for entry in std::fs::read_dir(home.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "state" || e == "synced")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(sync(&server, &home), (true, false));
}

/// Everything the last sync sent.
fn sent(server: &Mailbox) -> Vec<String> {
    server.model.lock().unwrap().commands.clone()
}

fn forget_glance(home: &Home) {
    for entry in std::fs::read_dir(home.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "glance") {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[test]
fn new_mail_on_an_unchanged_mailbox_is_listed_alone() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        m.messages.push(message(4, "u4", 10));
        m.messages.push(message(5, "u5", 12));
    }
    assert_eq!(sync(&server, &home), (false, true));
    let sent = sent(&server);
    for command in [
        "UIDL 4", "UIDL 5", "UIDL 6", "LIST 5", "LIST 6", "RETR 5", "RETR 6",
    ] {
        assert!(sent.iter().any(|c| c == command), "{command} in {sent:?}");
    }
    assert!(
        !sent
            .iter()
            .any(|c| c == "LIST" || c == "RETR 1" || c == "RETR 4"),
        "{sent:?}"
    );
    assert_eq!(home.delivered().len(), 6);
    // The glance moved on to the new last message.
    assert_eq!(sync(&server, &home), (false, true));
    assert!(!sent_retr(&server));
    // The state still knows the messages that were not listed: a full listing
    // fetches nothing again and forgets nothing.
    forget_glance(&home);
    assert_eq!(sync(&server, &home), (true, false));
    assert!(!sent_retr(&server));
    assert_eq!(home.delivered().len(), 6);
}

fn sent_retr(server: &Mailbox) -> bool {
    sent(server).iter().any(|c| c.starts_with("RETR"))
}

/// A deletion under new mail moves a new message into the glance's last
/// place: the count grew, yet the mailbox is listed in full.
#[test]
fn a_deletion_under_new_mail_is_seen() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        m.messages.remove(1);
        m.messages.push(message(8, "u8", 10));
        m.messages.push(message(9, "u9", 10));
    }
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 6);
}

/// New mail at the end while a message in the middle was replaced by one of
/// another size: both ends are where the glance saw them and the count grew;
/// only the octets before the new message tell. Fails when the octets are
/// dropped from `tail_fits`.
#[test]
fn new_mail_and_a_message_replaced_in_the_middle_are_seen_by_the_octets() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        m.messages[1] = message(7, "u7", 25);
        m.messages.push(message(8, "u8", 10));
    }
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 6, "u7 and u8 fetched");
}

/// A server that repeats unique-ids (a digest of the message) lists a second
/// message under a known one at the end: only the full listing tells them
/// apart. Fails when known unique-ids are let into the tail.
#[test]
fn a_known_unique_id_among_new_mail_brings_the_full_listing_back() {
    let (server, home) = start("");
    server
        .model
        .lock()
        .unwrap()
        .messages
        .push(message(9, "u1", 10));
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 5);
}

#[test]
fn more_new_mail_than_a_window_is_listed_in_full() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        for i in 10..310 {
            m.messages.push(message(i, &format!("u{i}"), 10));
        }
    }
    assert!(sync(&server, &home).0);
    assert_eq!(home.delivered().len(), 304);
    assert_eq!(sync(&server, &home), (false, true));
}

/// A glance is trusted before the state is read only while the journal is the
/// very one it was taken over: records added since (by import-state here) bring
/// the full listing back. Fails when `glance::trusted` ignores the journal.
#[test]
fn records_added_since_the_glance_bring_the_full_listing_back() {
    let (server, home) = start("");
    assert_eq!(sync(&server, &home), (false, true));
    let ids = home.path().join("fetchids");
    std::fs::write(&ids, "alice@127.0.0.1 imported-1\n").unwrap();
    home.run(&[
        "import-state",
        "test",
        "--from",
        "fetchmail",
        ids.to_str().unwrap(),
    ])
    .expect(0);
    assert_eq!(sync(&server, &home), (true, false));
    assert_eq!(home.delivered().len(), 4);
}

/// Without PIPELINING the new messages are asked for one command at a time.
#[test]
fn new_mail_without_pipelining_is_listed_alone() {
    let (server, home) = start("");
    {
        let mut m = server.model.lock().unwrap();
        m.pipelining = false;
        m.messages.push(message(4, "u4", 10));
        m.messages.push(message(5, "u5", 12));
    }
    assert_eq!(sync(&server, &home), (false, true));
    let sent = sent(&server);
    assert!(sent.iter().any(|c| c == "LIST 6"), "{sent:?}");
    assert_eq!(home.delivered().len(), 6);
}
