//! Whose a state file is and whether it can be trusted: one state per mailbox
//! (user@host:port), whatever the account is called and whichever config names it;
//! a state of an older popfetch adopted without ever authorizing a DELE; a file cut
//! short refused; a location read back from the state checked before it is touched.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::dovecot::{numbered, USER};
use crate::support::{Dovecot, Home};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// A state line as popfetch writes it: the record, a tab, its CRC-32.
fn sealed(record: &str) -> String {
    format!("{record}\t{:08x}\n", crc32fast::hash(record.as_bytes()))
}

/// Writes a config file beside the default one, owner-only.
fn write_config(home: &Home, name: &str, text: &str) -> PathBuf {
    let path = home.path().join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The Dovecot config of `user`, as account `main`, delivering into `maildir`.
fn config_of(server: &Dovecot, home: &Home, user: &str, maildir: &Path, extra: &str) -> String {
    server
        .config(home, "implicit", extra)
        .replace("[accounts.test]", "[accounts.main]")
        .replace(&format!("user = \"{USER}\""), &format!("user = \"{user}\""))
        .replace(
            &format!("maildir:{}", home.maildir().display()),
            &format!("maildir:{}", maildir.display()),
        )
}

/// Two configs that both name their account `main`: alice's (keep = true) and
/// bob's, each into its own Maildir.
struct AliceAndBob {
    alice: PathBuf,
    bob: PathBuf,
    alice_mail: PathBuf,
    bob_mail: PathBuf,
}

fn alice_and_bob(server: &Dovecot, home: &Home) -> AliceAndBob {
    let (alice_mail, bob_mail) = (home.path().join("alice"), home.path().join("bob"));
    let alice = write_config(
        home,
        "alice.toml",
        &config_of(server, home, USER, &alice_mail, "keep = true"),
    );
    let bob = write_config(
        home,
        "bob.toml",
        &config_of(server, home, "bob", &bob_mail, ""),
    );
    AliceAndBob {
        alice,
        bob,
        alice_mail,
        bob_mail,
    }
}

/// The unique-id Dovecot lists for message `uid` of a mailbox with this
/// UIDVALIDITY, with the test server's `pop3_uidl_format = %08Xu%08Xv` (which
/// Dovecot writes in lowercase hex).
fn dovecot_uidl(uid: u32, uidvalidity: u32) -> String {
    format!("{uid:08x}{uidvalidity:08x}")
}

fn bobs_mail() -> Vec<Vec<u8>> {
    (0..4)
        .map(|i| {
            format!("Subject: for bob {i}\nMessage-ID: <bob{i}@test>\n\nbob's {i}\n").into_bytes()
        })
        .collect()
}

/// Issue 15, bug 2: two configs that both call their account `main`, for two
/// mailboxes whose unique-ids coincide. Each keeps its own state: bob's mail is all
/// delivered and only what was delivered is deleted, and alice fetches nothing twice.
#[test]
fn two_mailboxes_named_alike_with_the_same_unique_ids_keep_apart() {
    let server = Dovecot::start();
    server.add_user("bob");
    server.set_uidvalidity(USER, 1000);
    server.set_uidvalidity("bob", 1000);
    server.add_messages(&numbered(3));
    server.add_messages_to("bob", &bobs_mail());
    let home = Home::new();
    let AliceAndBob {
        alice,
        bob,
        alice_mail,
        bob_mail,
    } = alice_and_bob(&server, &home);
    let alice = alice.to_str().unwrap();
    let bob = bob.to_str().unwrap();

    home.run(&["-c", alice, "sync"]).expect(0);
    assert_eq!(crate::support::home::maildir_messages(&alice_mail).len(), 3);
    let run = home.run(&["-c", bob, "sync"]);
    run.expect(0);
    assert_eq!(
        crate::support::home::maildir_messages(&bob_mail),
        sorted(bobs_mail()),
        "every message of bob's is delivered"
    );
    assert!(server.messages_of("bob").is_empty(), "and then deleted");
    assert_eq!(server.messages().len(), 3, "alice's stay: keep = true");

    // bob's mailbox is empty now, so his state forgets everything; alice's must not.
    home.run(&["-c", bob, "sync"]).expect(0);
    home.run(&["-c", alice, "sync"]).expect(0);
    assert_eq!(
        crate::support::home::maildir_messages(&alice_mail),
        sorted(numbered(3)),
        "alice fetched nothing twice"
    );
}

/// Issue 15, bug 2: the state belongs to the mailbox, not to the account's name.
#[test]
fn renaming_an_account_fetches_nothing_again() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    let config = server.config(&home, "implicit", "keep = true");
    home.write_config(&config);
    home.run(&["sync"]).expect(0);
    home.write_config(&config.replace("[accounts.test]", "[accounts.work]"));
    let mut more = numbered(4);
    server.add_messages(&more.split_off(3));
    home.run(&["sync", "work"]).expect(0);
    assert_eq!(home.delivered(), sorted(numbered(4)), "only the new one");
}

/// A state file of an older popfetch (format 1, at STATE_DIR/NAME.state) says nothing
/// of its mailbox. It is adopted once, so upgrading fetches nothing again, but its
/// records never lead to a DELE: only records this mailbox's own sessions wrote do.
#[test]
fn an_older_state_is_adopted_once_and_never_deletes() {
    let server = Dovecot::start();
    server.set_uidvalidity(USER, 1000);
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", ""));
    fs::create_dir_all(home.state_dir()).unwrap();
    let mut old = sealed("popfetch-state 1");
    for uid in [1, 2] {
        old.push_str(&sealed(&format!(
            "D {} 1700000000",
            dovecot_uidl(uid, 1000)
        )));
    }
    let legacy = home.state_dir().join("test.state");
    fs::write(&legacy, old).unwrap();

    let run = home.run(&["sync"]);
    run.expect(0);
    assert_eq!(
        server.messages(),
        sorted(numbered(3)[..2].to_vec()),
        "the adopted two stay on the server; the fetched one is deleted"
    );
    assert_eq!(home.delivered(), sorted(numbered(3)[2..].to_vec()));
    assert!(run.stderr().contains("adopted"), "{}", run.stderr());
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert!(legacy.exists(), "left for any other mailbox that used it");

    let again = home.run(&["sync"]);
    again.expect(0);
    assert!(again.stderr().is_empty(), "{}", again.stderr());
    assert_eq!(home.delivered().len(), 1);
    assert_eq!(server.messages().len(), 2);
}

/// A state file whose header names another mailbox is never used.
#[test]
fn a_state_of_another_mailbox_is_refused() {
    let server = Dovecot::start();
    server.add_user("bob");
    server.add_messages(&numbered(2));
    server.add_messages_to("bob", &bobs_mail());
    let home = Home::new();
    let AliceAndBob {
        alice,
        bob,
        bob_mail,
        ..
    } = alice_and_bob(&server, &home);
    home.run(&["-c", alice.to_str().unwrap(), "sync"]).expect(0);
    let alices = home.state_file();
    home.run(&["-c", bob.to_str().unwrap(), "sync"]).expect(0);
    let bobs = fs::read_dir(home.state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "state") && *p != alices)
        .unwrap();
    fs::copy(&alices, &bobs).unwrap();
    server.add_messages_to("bob", &numbered(1));

    let run = home.run(&["-c", bob.to_str().unwrap(), "sync"]);
    run.expect(78);
    assert!(run.stderr().contains("belongs to"), "{}", run.stderr());
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert_eq!(crate::support::home::maildir_messages(&bob_mail).len(), 4);
    assert_eq!(server.messages_of("bob").len(), 1, "nothing deleted");
}

/// Issue 15, bug 7: a state file cut short is refused (exit 74) wherever the cut
/// falls, at a line boundary too; a torn final append, which a crash leaves past
/// what was made durable, is still taken in stride.
#[test]
fn a_state_file_cut_short_is_refused_and_a_torn_tail_is_not() {
    let server = Dovecot::start();
    server.add_messages(&numbered(10));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true"));
    home.run(&["sync"]).expect(0);
    let path = home.state_file();
    let whole = fs::read(&path).unwrap();
    let boundaries: Vec<usize> = whole
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    server.add_messages(&numbered(11)[10..]);

    // At a line boundary (no partial line at all), and in the middle of a line.
    for cut in [boundaries[3], boundaries[3] + 5] {
        fs::write(&path, &whole[..cut]).unwrap();
        let run = home.run(&["sync"]);
        run.expect(74);
        assert!(run.stderr().contains("cut short"), "{}", run.stderr());
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
        assert_eq!(home.delivered().len(), 10, "nothing fetched again");
        assert_eq!(fs::read(&path).unwrap(), &whole[..cut], "left as it was");
    }

    // A torn record past the end: what a crash in the middle of an append leaves.
    let mut torn = whole.clone();
    torn.extend_from_slice(b"D 0000000b 17000");
    fs::write(&path, &torn).unwrap();
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), sorted(numbered(11)), "only the new one");
}

/// Issue 15, bug 8: an intent record naming a path outside the Maildir is damage,
/// found before anything is unlinked, whether or not the server can be reached.
#[test]
fn recovery_never_touches_a_file_outside_the_maildir() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true"));
    home.run(&["sync"]).expect(0);
    let path = home.state_file();
    let whole = fs::read(&path).unwrap();
    let victim = home.path().join("victim");
    fs::write(&victim, b"precious").unwrap();

    for location in [
        victim.display().to_string(),
        "../../victim".to_string(),
        "..".to_string(),
    ] {
        fs::write(&path, &whole).unwrap();
        let mut journal = fs::OpenOptions::new().append(true).open(&path).unwrap();
        journal
            .write_all(sealed(&format!("I 0000000x {location}")).as_bytes())
            .unwrap();
        let run = home.run(&["sync"]);
        run.expect(74);
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{location}");
        assert_eq!(home.delivered().len(), 2);
    }

    drop(server);
    let run = home.run(&["sync"]);
    run.expect(74);
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious",
        "server unreachable"
    );
}
