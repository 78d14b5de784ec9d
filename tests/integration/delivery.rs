//! Delivery into mbox files and through real MDAs (procmail, maildrop), fetched from
//! a real Dovecot and read back by real readers (Python's mailbox, Dovecot).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::dovecot::{fidelity_corpus, numbered};
use crate::support::home::maildir_messages;
use crate::support::mbox::{mutt_count, python_mbox, unquote};
use crate::support::{Dovecot, Home};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[test]
fn mbox_reads_back_identical_in_python_mutt_and_dovecot() {
    let server = Dovecot::start();
    let mut corpus = fidelity_corpus();
    corpus.push(b"Return-Path: <bounce@example.org>\nFrom: x@example.com\n\nFrom the start\n>From quoted\n>>From twice\n".to_vec());
    server.add_messages(&corpus);
    let home = Home::new();
    let mbox = home.path().join("mail/inbox");
    let config = server.config(&home, "implicit", "keep = true").replace(
        &format!("maildir:{}", home.maildir().display()),
        &format!("mbox:{}", mbox.display()),
    );
    home.write_config(&config);
    home.run(&["sync"]).expect(0);
    home.run(&["sync"]).expect(0);

    let read = python_mbox(&mbox);
    assert_eq!(read.len(), corpus.len(), "second run must add nothing");
    let senders: Vec<_> = read.iter().map(|(s, _)| s.as_str()).collect();
    assert!(senders.contains(&"bounce@example.org"), "{senders:?}");
    assert!(senders.contains(&"a@example.com"), "{senders:?}");
    assert!(senders.contains(&"MAILER-DAEMON"), "{senders:?}");
    let python: Vec<_> = read.into_iter().map(|(_, m)| unquote(&m)).collect();
    assert_eq!(sorted(python), sorted(corpus.clone()));

    assert_eq!(mutt_count(&mbox), corpus.len(), "mutt reads every message");
    let dovecot: Vec<_> = server.read_mbox(&mbox).iter().map(|m| unquote(m)).collect();
    assert_eq!(sorted(dovecot), sorted(corpus));
    assert!(!home.path().join("mail/inbox.lock").exists());
}

#[test]
fn procmail_and_maildrop_deliver_identically() {
    let server = Dovecot::start();
    server.add_messages(&fidelity_corpus());
    let home = Home::new();
    let rc = home.path().join("procmailrc");
    let pm = home.path().join("pm");
    fs::write(&rc, format!(":0\n{}/\n", pm.display())).unwrap();
    let md = home.path().join("md");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    let mrc = home.path().join("mailfilter");
    fs::write(&mrc, format!("to \"{}/\"\n", md.display())).unwrap();
    fs::set_permissions(&mrc, fs::Permissions::from_mode(0o600)).unwrap();

    let maildir = format!("\"maildir:{}\"", home.maildir().display());
    let with = |mda: String| {
        server
            .config(&home, "implicit", "keep = true")
            .replace(&maildir, &format!("'mda:{mda}'"))
    };
    home.write_config(&with(format!("procmail -m {}", rc.display())));
    home.run(&["sync"]).expect(0);
    assert_eq!(maildir_messages(&pm), sorted(fidelity_corpus()));

    fs::remove_file(home.state_file()).unwrap();
    home.write_config(&with(format!("maildrop {}", mrc.display())));
    home.run(&["sync"]).expect(0);
    assert_eq!(maildir_messages(&md), sorted(fidelity_corpus()));
}

#[test]
fn deferring_mda_keeps_everything_then_each_message_arrives_once() {
    let server = Dovecot::start();
    server.add_messages(&numbered(4));
    let home = Home::new();
    let maildir = format!("\"maildir:{}\"", home.maildir().display());
    let deferring = server
        .config(&home, "implicit", "")
        .replace(&maildir, "'mda:sh -c \"cat >/dev/null; exit 75\"'");
    home.write_config(&deferring);
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(run.stderr().contains("deferred"), "{}", run.stderr());
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert_eq!(
        server.messages(),
        sorted(numbered(4)),
        "everything stays on the server"
    );
    let state = fs::read_to_string(home.state_file()).unwrap();
    assert!(
        !state
            .lines()
            .any(|l| l.starts_with("D ") || l.starts_with("d ")),
        "nothing recorded as delivered:\n{state}"
    );

    let out = home.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let working = server.config(&home, "implicit", "").replace(
        &maildir,
        &format!("'mda:sh -c \"cat > {}/$$\"'", out.display()),
    );
    home.write_config(&working);
    home.run(&["sync"]).expect(0);
    home.run(&["sync"]).expect(0);
    assert_eq!(maildir_messages_flat(&out), sorted(numbered(4)));
    assert!(server.messages().is_empty());
}

fn maildir_messages_flat(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn mda_dying_or_closing_early_keeps_the_message_on_the_server() {
    let server = Dovecot::start();
    let mut corpus = numbered(2);
    let large = fidelity_corpus().pop().unwrap();
    assert!(large.len() > 1 << 20, "larger than any pipe buffer");
    corpus.push(large);
    server.add_messages(&corpus);
    let home = Home::new();
    let maildir = format!("\"maildir:{}\"", home.maildir().display());
    let with = |mda: &str| {
        server
            .config(&home, "implicit", "")
            .replace(&maildir, &format!("'mda:{mda}'"))
    };

    // Reads a little of each message, then dies by a signal.
    home.write_config(&with("sh -c \"head -c 20 >/dev/null; kill -9 $$\""));
    let run = home.run(&["sync"]);
    run.expect(74);
    assert!(run.stderr().contains("signal 9"), "{}", run.stderr());
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert_eq!(server.messages(), sorted(corpus.clone()));

    // Exits successfully after reading only the start: the large message cannot
    // have been read whole, so it is not taken as delivered.
    home.write_config(&with("sh -c \"head -c 10 >/dev/null\""));
    let run = home.run(&["sync"]);
    run.expect(74);
    assert!(run.stderr().contains("stopped reading"), "{}", run.stderr());
    assert!(
        server.messages().contains(&corpus[2]),
        "the large message stays"
    );

    let out = home.path().join("out");
    fs::create_dir_all(&out).unwrap();
    home.write_config(&with(&format!("sh -c \"cat > {}/$$\"", out.display())));
    home.run(&["sync"]).expect(0);
    home.run(&["sync"]).expect(0);
    assert_eq!(
        maildir_messages_flat(&out),
        vec![corpus[2].clone()],
        "delivered exactly once"
    );
    assert!(server.messages().is_empty());
}

/// popfetch points OpenSSL at the hashed CA directory for itself (see
/// `net::roots`); an MDA must still see the TLS environment popfetch was
/// given: none when none was set, the user's own values when they were.
#[test]
fn an_mda_sees_the_tls_environment_popfetch_was_given() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    let seen = home.path().join("seen");
    let maildir = format!("maildir:{}", home.maildir().display());
    let mda = format!(
        "'mda:sh -c \"cat >/dev/null; env | grep ^SSL_CERT_ | sort > {}\"'",
        seen.display()
    );
    home.write_config(
        &server
            .config(&home, "implicit", "keep = true\nfetch_all = true")
            .replace(&format!("\"{maildir}\""), &mda),
    );
    home.run(&["sync"]).expect(0);
    assert_eq!(fs::read_to_string(&seen).unwrap(), "", "none was set");

    // The layout update-ca-certificates makes, which popfetch tunes for itself.
    let output = home
        .command()
        .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .env("SSL_CERT_DIR", "/etc/ssl/certs")
        .arg("sync")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        "SSL_CERT_DIR=/etc/ssl/certs\nSSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n"
    );
}
