//! The delivery targets that hand mail to another server: LMTP (RFC 2033, Dovecot,
//! on a unix socket and on TCP), SMTP (Exim) and IMAP APPEND (Dovecot), each the
//! real server on loopback. A message arrives byte for byte but for the trace
//! fields the receiving server puts on top; a 4xx (or `NO [OVERQUOTA]`) leaves the
//! mail on the POP3 server and exits 75, a 5xx leaves it and exits 74 with the
//! server's words; SIGKILL loses nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::crash_safety::chaos;
use crate::support::dovecot::{certs, fidelity_corpus, numbered};
use crate::support::exim;
use crate::support::home::Run;
use crate::support::mailstore::{self, strip_trace};
use crate::support::{Dovecot, Exim, Home, MailStore};

/// What Dovecot's LMTP puts on top of a message it stores.
const LMTP_TRACE: &[&str] = &["Return-Path", "Delivered-To", "Received"];
/// What Exim puts on top, as the harness configures its transport (no
/// `Return-Path`, `Envelope-to` or `Delivery-date`).
const SMTP_TRACE: &[&str] = &["Received"];
/// IMAP APPEND stores the message as given.
const IMAP_TRACE: &[&str] = &[];

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

fn stripped(messages: Vec<Vec<u8>>, trace: &[&str]) -> Vec<Vec<u8>> {
    sorted(messages.iter().map(|m| strip_trace(m, trace)).collect())
}

/// The POP3 account of `server` in delete mode, delivering with `deliver`: the
/// TOML lines of a target (`deliver = …` and its keys) in place of the Maildir.
fn account(server: &Dovecot, home: &Home, deliver: &str) -> String {
    let config = server.config(home, "implicit", "keep = false");
    let maildir = format!("deliver = \"maildir:{}\"", home.maildir().display());
    assert!(config.contains(&maildir), "{config}");
    config.replace(&maildir, deliver)
}

fn lmtp_socket(store: &MailStore, recipient: &str) -> String {
    format!(
        "deliver = \"lmtp:{}\"\nrecipient = \"{recipient}\"",
        store.lmtp_socket().display()
    )
}

fn lmtp_tcp(store: &MailStore, recipient: &str) -> String {
    format!(
        "deliver = \"lmtp:127.0.0.1:{}\"\nrecipient = \"{recipient}\"",
        store.lmtp_port()
    )
}

/// SMTP to Exim with STARTTLS, verified against the test CA.
fn smtp(mta: &Exim, recipient: &str) -> String {
    format!(
        "deliver = \"smtp:127.0.0.1:{}\"\nrecipient = \"{recipient}\"\nsmtp_tls = \"starttls\"\nsmtp_tls_ca_file = \"{}\"",
        mta.port(),
        certs().ca.display()
    )
}

/// IMAP APPEND into `folder` ("" for INBOX), over implicit TLS or STARTTLS.
fn imap(store: &MailStore, tls: &str, folder: &str, password: &str) -> String {
    let port = if tls == "implicit" {
        store.imaps_port()
    } else {
        store.imap_port()
    };
    format!(
        "deliver = \"imap://{user}@127.0.0.1:{port}/{folder}\"\nimap_tls = \"{tls}\"\nimap_tls_ca_file = \"{ca}\"\nimap_password = \"{password}\"",
        user = store.user(),
        ca = certs().ca.display()
    )
}

/// Runs one delete-mode sync of the fidelity corpus through `deliver` and returns
/// what the run left on the POP3 server.
fn sync_corpus(server: &Dovecot, deliver: &str) -> Vec<Vec<u8>> {
    server.add_messages(&fidelity_corpus());
    let home = Home::new();
    home.write_config(&account(server, &home, deliver));
    home.run(&["sync"]).expect(0);
    server.messages()
}

#[track_caller]
fn assert_same(what: &str, got: Vec<Vec<u8>>, want: Vec<Vec<u8>>) {
    assert_eq!(got.len(), want.len(), "{what}: message count");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            g == w,
            "{what}: message {i} differs\ngot  {:?}\nwant {:?}",
            String::from_utf8_lossy(&g[..g.len().min(300)]),
            String::from_utf8_lossy(&w[..w.len().min(300)])
        );
    }
}

#[test]
fn lmtp_on_a_socket_and_on_tcp_stores_every_byte() {
    let server = Dovecot::start();
    let store = MailStore::start();
    store.add_user("bob");
    let corpus = sorted(fidelity_corpus());

    let left = sync_corpus(&server, &lmtp_socket(&store, "alice"));
    assert!(left.is_empty(), "delete mode empties the POP3 mailbox");
    let got = stripped(store.messages("alice", ""), LMTP_TRACE);
    assert_same("lmtp socket", got, corpus.clone());

    let left = sync_corpus(&server, &lmtp_tcp(&store, "bob"));
    assert!(left.is_empty(), "delete mode empties the POP3 mailbox");
    let got = stripped(store.messages("bob", ""), LMTP_TRACE);
    assert_same("lmtp tcp", got, corpus);
}

#[test]
fn smtp_with_starttls_stores_every_byte() {
    let server = Dovecot::start();
    let mta = Exim::start();
    let left = sync_corpus(&server, &smtp(&mta, "alice@test.example"));
    assert!(left.is_empty(), "delete mode empties the POP3 mailbox");
    let got = stripped(mta.messages_of("alice"), SMTP_TRACE);
    assert_same("smtp starttls", got, sorted(fidelity_corpus()));
    assert!(
        mta.log().contains("P=esmtps"),
        "the message came over TLS:\n{}",
        mta.log()
    );
}

#[test]
fn imap_append_over_implicit_tls_and_starttls_stores_every_byte() {
    let server = Dovecot::start();
    let store = MailStore::start();
    let corpus = sorted(fidelity_corpus());
    let password = store.password();

    let left = sync_corpus(&server, &imap(&store, "implicit", "", password));
    assert!(left.is_empty(), "delete mode empties the POP3 mailbox");
    let got = stripped(store.messages("alice", "INBOX"), IMAP_TRACE);
    assert_same("imap implicit into INBOX", got, corpus.clone());

    let left = sync_corpus(&server, &imap(&store, "starttls", "Archive", password));
    assert!(left.is_empty(), "delete mode empties the POP3 mailbox");
    let got = stripped(store.messages("alice", "Archive"), IMAP_TRACE);
    assert_same("imap starttls into Archive", got, corpus);
}

/// INTERNALDATE comes from the first Received header's date, else from Date.
#[test]
fn imap_internaldate_is_the_first_received_date_else_date() {
    let server = Dovecot::start();
    let store = MailStore::start();
    server.add_messages(&[
        b"Received: from a by b; Mon, 2 Nov 2026 10:00:00 +0000\n\
          Received: from c by d; Sun, 1 Nov 2026 09:00:00 +0000\n\
          Date: Sat, 31 Oct 2026 07:00:00 +0000\nMessage-ID: <r@x>\n\nbody\n"
            .to_vec(),
        b"Date: Sat, 31 Oct 2026 09:00:00 +0100\nMessage-ID: <d@x>\n\nbody\n".to_vec(),
    ]);
    let home = Home::new();
    let password = store.password();
    home.write_config(&account(
        &server,
        &home,
        &imap(&store, "implicit", "", password),
    ));
    home.run(&["sync"]).expect(0);
    // 2026-10-31 08:00 UTC and 2026-11-02 10:00 UTC.
    assert_eq!(
        store.internal_dates("alice", "INBOX"),
        [1_793_433_600, 1_793_613_600]
    );
}

/// Checks that a failed run left every message on the POP3 server.
#[track_caller]
fn assert_stays(server: &Dovecot, run: &Run, code: i32, corpus: &[Vec<u8>]) {
    run.expect(code);
    assert_eq!(
        server.messages(),
        sorted(corpus.to_vec()),
        "the mail stays on the POP3 server"
    );
}

/// Counts how many times each message arrived.
fn tally(messages: &[Vec<u8>]) -> BTreeMap<&[u8], usize> {
    let mut count = BTreeMap::new();
    for m in messages {
        *count.entry(m.as_slice()).or_insert(0) += 1;
    }
    count
}

#[track_caller]
fn assert_each_once(what: &str, got: Vec<Vec<u8>>, corpus: &[Vec<u8>]) {
    let twice: Vec<_> = tally(&got)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(m, n)| (String::from_utf8_lossy(m).into_owned(), n))
        .collect();
    assert!(
        twice.is_empty(),
        "{what}: delivered more than once: {twice:?}"
    );
    assert_same(what, got, sorted(corpus.to_vec()));
}

#[test]
fn lmtp_and_imap_over_quota_keep_the_mail_and_deliver_it_once_when_lifted() {
    let server = Dovecot::start();
    let store = MailStore::start();
    let corpus = numbered(5);

    for (what, deliver, folder, trace) in [
        ("lmtp", lmtp_socket(&store, "alice"), "", LMTP_TRACE),
        (
            "imap",
            imap(&store, "implicit", "Quota", store.password()),
            "Quota",
            IMAP_TRACE,
        ),
    ] {
        server.add_messages(&corpus);
        let home = Home::new();
        home.write_config(&account(&server, &home, &deliver));
        store.set_over_quota("alice", true);
        let run = home.run(&["sync"]);
        assert_stays(&server, &run, 75, &corpus);
        assert!(
            store.maildir_messages("alice", folder).is_empty(),
            "{what}: nothing stored over quota"
        );

        store.set_over_quota("alice", false);
        home.run(&["sync"]).expect(0);
        assert!(
            server.messages().is_empty(),
            "{what}: delivered, then deleted"
        );
        home.run(&["sync"]).expect(0);
        let got = stripped(store.messages("alice", folder), trace);
        assert_each_once(what, got, &corpus);
    }
}

#[test]
fn smtp_deferral_at_rcpt_and_at_data_keeps_the_mail_and_delivers_it_once_later() {
    let server = Dovecot::start();
    let mta = Exim::start();
    let mut all = Vec::new();
    for (n, set) in [
        (0, Exim::set_tempfail as fn(&Exim, bool)),
        (1, Exim::set_tempfail_data),
    ] {
        let corpus: Vec<Vec<u8>> = numbered(10).into_iter().skip(5 * n).take(5).collect();
        server.add_messages(&corpus);
        let home = Home::new();
        home.write_config(&account(&server, &home, &smtp(&mta, "alice")));
        set(&mta, true);
        let run = home.run(&["sync"]);
        assert_stays(&server, &run, 75, &corpus);
        assert!(
            run.stderr().contains(exim::TEMPFAIL_TEXT),
            "the server's words: {}",
            run.stderr()
        );
        assert_eq!(
            mta.messages_of("alice").len(),
            all.len(),
            "nothing delivered"
        );

        set(&mta, false);
        home.run(&["sync"]).expect(0);
        assert!(server.messages().is_empty(), "delivered, then deleted");
        home.run(&["sync"]).expect(0);
        all.extend(corpus);
        let got = stripped(mta.messages_of("alice"), SMTP_TRACE);
        assert_each_once("smtp after a deferral", got, &all);
    }
}

#[test]
fn smtp_rejection_keeps_the_mail_and_says_what_the_server_said() {
    let server = Dovecot::start();
    let mta = Exim::start();
    let corpus = numbered(3);
    server.add_messages(&corpus);
    let home = Home::new();
    home.write_config(&account(&server, &home, &smtp(&mta, exim::REJECTED)));
    let run = home.run(&["sync"]);
    assert_stays(&server, &run, 74, &corpus);
    assert!(
        run.stderr().contains(exim::REJECT_TEXT),
        "the server's words: {}",
        run.stderr()
    );
    // Again: the rejection is not recorded as a delivery.
    let run = home.run(&["sync"]);
    assert_stays(&server, &run, 74, &corpus);
}

/// An untrusted certificate delivers nothing, with a hint for an MTA on this
/// machine; one that offers no STARTTLS is used in plain only because it is on
/// this machine (a server elsewhere is refused: see `deliver::relay`'s tests,
/// since every server here is on loopback).
#[test]
fn smtp_starttls_untrusted_delivers_nothing_and_missing_is_plain_only_locally() {
    let server = Dovecot::start();
    let mta = Exim::start();
    let corpus = numbered(3);
    server.add_messages(&corpus);

    // Offered, but the certificate's CA is not one this machine trusts.
    let untrusted: String = smtp(&mta, "alice")
        .lines()
        .filter(|l| !l.starts_with("smtp_tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let home = Home::new();
    home.write_config(&account(&server, &home, &untrusted));
    let run = home.run(&["sync"]);
    assert_stays(&server, &run, 69, &corpus);
    assert!(
        run.stderr().contains("smtp_tls = \"none\""),
        "{}",
        run.stderr()
    );
    assert!(mta.messages_of("alice").is_empty(), "nothing delivered");

    // Not offered by an MTA on loopback: asked for in so many words, nothing is
    // delivered; left to the default, it goes without TLS.
    mta.set_starttls(false);
    let home = Home::new();
    home.write_config(&account(&server, &home, &smtp(&mta, "alice")));
    let run = home.run(&["sync"]);
    assert_stays(&server, &run, 69, &corpus);
    assert!(
        run.stderr().contains("offers no STARTTLS"),
        "{}",
        run.stderr()
    );
    let default_tls: String = smtp(&mta, "alice")
        .lines()
        .filter(|l| !l.starts_with("smtp_tls"))
        .map(|l| format!("{l}\n"))
        .collect();
    let home = Home::new();
    home.write_config(&account(&server, &home, &default_tls));
    home.run(&["sync"]).expect(0);
    let got = stripped(mta.messages_of("alice"), SMTP_TRACE);
    assert_each_once("smtp without STARTTLS", got, &corpus);
}

/// SMTP to Exim with AUTH as `smtp_user`, over `tls` ("starttls" or "implicit").
fn smtp_auth(mta: &Exim, tls: &str, password_line: &str) -> String {
    let port = if tls == "implicit" {
        mta.smtps_port()
    } else {
        mta.port()
    };
    format!(
        "deliver = \"smtp:127.0.0.1:{port}\"\nrecipient = \"bob\"\nsmtp_tls = \"{tls}\"\nsmtp_tls_ca_file = \"{}\"\nsmtp_user = \"{}\"\n{password_line}",
        certs().ca.display(),
        exim::SMTP_USER
    )
}

#[test]
fn smtp_auth_delivers_with_the_right_password_and_not_with_a_wrong_one() {
    let server = Dovecot::start();
    let mta = Exim::start();
    mta.set_require_auth(true);
    let corpus = numbered(3);
    server.add_messages(&corpus);

    let home = Home::new();
    let wrong = smtp_auth(&mta, "starttls", "smtp_password = \"not the password\"");
    home.write_config(&account(&server, &home, &wrong));
    let run = home.run(&["sync"]);
    // Exit 77, as for a refused POP3 login, naming what to check.
    assert_stays(&server, &run, 77, &corpus);
    assert!(run.stderr().contains("smtp_user"), "{}", run.stderr());
    assert!(mta.messages_of("bob").is_empty());

    // The right password, given inline over STARTTLS.
    let home = Home::new();
    let right = smtp_auth(
        &mta,
        "starttls",
        &format!("smtp_password = \"{}\"", exim::SMTP_PASSWORD),
    );
    home.write_config(&account(&server, &home, &right));
    home.run(&["sync"]).expect(0);
    assert!(server.messages().is_empty(), "delivered, then deleted");
    let got = stripped(mta.messages_of("bob"), SMTP_TRACE);
    assert_each_once("smtp auth", got, &corpus);

    // And given by a command, over implicit TLS (SMTPS).
    let more = numbered(6).split_off(3);
    server.add_messages(&more);
    let home = Home::new();
    let secret = home.path().join("secret.sh");
    fs::write(
        &secret,
        format!("#!/bin/sh\nprintf '%s\\n' '{}'\n", exim::SMTP_PASSWORD),
    )
    .unwrap();
    make_executable(&secret);
    let command = smtp_auth(
        &mta,
        "implicit",
        &format!("smtp_password_command = \"{}\"", secret.display()),
    );
    home.write_config(&account(&server, &home, &command));
    home.run(&["sync"]).expect(0);
    assert!(server.messages().is_empty(), "delivered, then deleted");
    let all: Vec<Vec<u8>> = corpus.iter().chain(&more).cloned().collect();
    let got = stripped(mta.messages_of("bob"), SMTP_TRACE);
    assert_each_once("smtp auth by command over smtps", got, &all);
    let log = mta.log();
    assert!(log.contains("A=plain") || log.contains("A=login"), "{log}");
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn imap_creates_a_missing_folder_and_a_wrong_password_keeps_the_mail() {
    let server = Dovecot::start();
    let store = MailStore::start();
    let corpus = numbered(3);
    server.add_messages(&corpus);

    let home = Home::new();
    home.write_config(&account(
        &server,
        &home,
        &imap(&store, "implicit", "Lists", "not the password"),
    ));
    let run = home.run(&["sync"]);
    assert_stays(&server, &run, 77, &corpus);
    assert!(!store.has_folder("alice", "Lists"), "no such folder yet");
    let home = Home::new();
    home.write_config(&account(
        &server,
        &home,
        &imap(&store, "implicit", "Lists", store.password()),
    ));
    home.run(&["sync"]).expect(0);
    assert!(server.messages().is_empty(), "delivered, then deleted");
    assert!(store.has_folder("alice", "Lists"), "the folder was created");
    assert_each_once(
        "imap into a new folder",
        stripped(store.messages("alice", "Lists"), IMAP_TRACE),
        &corpus,
    );
    assert!(store.messages("alice", "").is_empty(), "nothing in INBOX");

    // A "/" in the folder is the server's own delimiter: "." on this layout.
    let more = numbered(5).split_off(3);
    server.add_messages(&more);
    let home = Home::new();
    home.write_config(&account(
        &server,
        &home,
        &imap(&store, "implicit", "Lists/Rust", store.password()),
    ));
    home.run(&["sync"]).expect(0);
    assert!(store.has_folder("alice", "Lists.Rust"), "the nested folder");
    assert_each_once(
        "imap into a nested folder",
        stripped(store.messages("alice", "Lists.Rust"), IMAP_TRACE),
        &more,
    );
}

/// Everything in a Maildir (new/ and cur/), counted as a chaos run's progress.
fn files_in(maildir: &Path) -> u64 {
    ["new", "cur"]
        .iter()
        .map(|sub| fs::read_dir(maildir.join(sub)).map_or(0, |d| d.count() as u64))
        .sum()
}

/// Lost and duplicated messages of a chaos run: (lost, duplicates).
fn losses(corpus: &[Vec<u8>], delivered: &[Vec<u8>]) -> (usize, usize) {
    let got = tally(delivered);
    let lost = corpus
        .iter()
        .filter(|m| !got.contains_key(m.as_slice()))
        .count();
    let duplicates = got.values().map(|n| n - 1).sum();
    (lost, duplicates)
}

const KILLS: usize = 20;

#[test]
fn sigkill_at_random_moments_into_lmtp_loses_nothing() {
    let server = Dovecot::start();
    let store = MailStore::start();
    let home = Home::new();
    home.write_config(&account(&server, &home, &lmtp_socket(&store, "alice")));
    let maildir = store.maildir_of("alice", "");
    let progress = || files_in(&maildir);
    let corpus = chaos(&server, &home, KILLS, &progress);
    let delivered = stripped(store.messages("alice", ""), LMTP_TRACE);
    let (lost, duplicates) = losses(&corpus, &delivered);
    eprintln!(
        "lmtp chaos: {KILLS} kills, {} messages, {lost} lost, {duplicates} duplicates",
        corpus.len()
    );
    assert_eq!(lost, 0, "lost messages");
    // LMTP has no way to ask whether a message arrived: a kill between the
    // server's 250 and the journal's record may deliver that message again.
    assert!(
        duplicates <= KILLS,
        "at most one duplicate per kill: {duplicates}"
    );
    assert!(
        delivered.iter().all(|m| corpus.contains(m)),
        "nothing delivered that was not sent"
    );
}

#[test]
fn sigkill_at_random_moments_into_imap_loses_and_duplicates_nothing() {
    let server = Dovecot::start();
    let store = MailStore::start();
    let home = Home::new();
    home.write_config(&account(
        &server,
        &home,
        &imap(&store, "implicit", "Chaos", store.password()),
    ));
    let maildir = store.maildir_of("alice", "Chaos");
    let progress = || files_in(&maildir);
    let corpus = chaos(&server, &home, KILLS, &progress);
    let delivered = stripped(store.messages("alice", "Chaos"), IMAP_TRACE);
    let (lost, duplicates) = losses(&corpus, &delivered);
    eprintln!(
        "imap chaos: {KILLS} kills, {} messages, {lost} lost, {duplicates} duplicates",
        corpus.len()
    );
    assert_eq!(lost, 0, "lost messages");
    assert_eq!(duplicates, 0, "duplicated messages (each has a Message-ID)");
    assert_eq!(delivered, sorted(corpus));
}

#[test]
fn the_harness_consts_name_the_same_trace_headers() {
    assert_eq!(LMTP_TRACE, mailstore::LMTP_TRACE_HEADERS);
    assert_eq!(SMTP_TRACE, exim::TRACE_HEADERS);
}
