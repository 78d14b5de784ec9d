//! What to fetch and what stays on the server, against Dovecot: delete_after (with
//! time moved by libfaketime), `keep = "until-deleted-locally"` (with files renamed
//! as mutt and Dovecot rename them, and SIGKILL), fetch_all, max_size,
//! max_messages, filters, servers without UIDL, the Received: header, `list` and
//! a side-effect-free `--dry-run`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::dovecot::numbered;
use crate::support::scripted::{logged_in, send};
use crate::support::{Dovecot, Home, Scripted, Step};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Plain POP3 with USER/PASS: libfaketime would make the test certificates look
/// expired, so the time-travel tests stay off TLS.
fn plain(server: &Dovecot, home: &Home, extra: &str) -> String {
    server.config(home, "none", &format!("auth = \"user\"\n{extra}"))
}

fn libfaketime() -> PathBuf {
    let path = PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
    assert!(
        path.exists(),
        "libfaketime is missing: apt-get install faketime"
    );
    path
}

/// A sync that succeeds with the clock moved by `offset` (libfaketime's "+31d").
fn sync_at(home: &Home, offset: &str) {
    let output = home
        .command()
        .arg("sync")
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{offset}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn delete_after_counts_from_first_seen() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.write_config(&plain(
        &server,
        &home,
        "keep = true\ndelete_after = \"30d\"",
    ));
    home.run(&["sync"]).expect(0);
    assert_eq!(server.messages().len(), 3, "kept for now");

    // 29 days on: still kept. 31 days on: deleted, without being fetched again.
    for (offset, left) in [("+29d", 3), ("+31d", 0)] {
        sync_at(&home, offset);
        assert_eq!(server.messages().len(), left, "{offset}");
    }
    assert_eq!(home.delivered(), sorted(numbered(3)), "delivered once");
}

#[test]
fn fetch_all_delivers_again_and_max_messages_takes_the_oldest() {
    let server = Dovecot::start();
    server.add_messages(&numbered(5));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true\nmax_messages = 2"));
    for expected in [2, 4, 5, 5] {
        home.run(&["sync"]).expect(0);
        assert_eq!(home.delivered().len(), expected);
    }
    home.write_config(&server.config(&home, "implicit", "keep = true\nfetch_all = true"));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), 10, "every message once more");
}

#[test]
fn max_size_skips_or_deletes_without_fetching() {
    let server = Dovecot::start();
    let small = numbered(2);
    let big = vec![format!("Subject: big\n\n{}\n", "x".repeat(5000)).into_bytes()];
    server.add_messages(&small);
    server.add_messages(&big);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "max_size = \"2K\""));
    let run = home.run(&["-v", "sync"]);
    run.expect(0);
    assert!(run.stderr().contains("1 skipped"), "{}", run.stderr());
    assert_eq!(home.delivered(), sorted(small.clone()));
    assert_eq!(server.messages(), big, "the big one stays, unfetched");

    home.write_config(&server.config(
        &home,
        "implicit",
        "max_size = \"2K\"\nmax_size_action = \"delete\"",
    ));
    home.run(&["sync"]).expect(0);
    assert!(server.messages().is_empty());
    assert_eq!(
        home.delivered(),
        sorted(small),
        "deleted without being fetched"
    );
}

#[test]
fn filter_decides_by_the_headers() {
    let server = Dovecot::start();
    let messages: Vec<Vec<u8>> = ["hello", "spam offer", "later please", "world"]
        .iter()
        .map(|s| format!("Subject: {s}\n\nbody of {s}\n").into_bytes())
        .collect();
    server.add_messages(&messages);
    let home = Home::new();
    let filter = "sh -c 'h=$(cat); echo \"$h\" | grep -q \"^Subject: spam\" && exit 1; echo \"$h\" | grep -q \"^Subject: later\" && exit 2; exit 0'";
    home.write_config(&server.config(
        &home,
        "implicit",
        &format!("filter = \"{}\"", filter.replace('"', "\\\"")),
    ));
    home.run(&["sync"]).expect(0);
    assert_eq!(
        home.delivered(),
        sorted(vec![messages[0].clone(), messages[3].clone()])
    );
    assert_eq!(
        server.messages(),
        vec![messages[2].clone()],
        "spam deleted unfetched, later kept"
    );
}

#[test]
fn received_header_is_added_only_when_asked() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true\nreceived_header = true"));
    home.run(&["sync"]).expect(0);
    let delivered = home.delivered().pop().unwrap();
    let text = String::from_utf8(delivered).unwrap();
    assert!(text.starts_with("Received: from 127.0.0.1 by "), "{text}");
    assert!(text.contains("with POP3 (popfetch"), "{text}");
    assert!(
        text.ends_with(std::str::from_utf8(&numbered(1)[0]).unwrap()),
        "{text}"
    );
}

#[test]
fn server_without_uidl_uses_a_header_digest() {
    let body = b"Subject: no uidl\nMessage-ID: <x@y>\n\nhello\n".to_vec();
    let script = |deliver: bool| {
        let mut s = logged_in();
        s.extend([
            // With keep, STAT goes with the listing (for the glance, which a
            // server without UIDL never gets).
            Step::Expect("STAT"),
            send("+OK 1 50\r\n"),
            Step::Expect("UIDL"),
            send("-ERR no UIDL here\r\n"),
            Step::Expect("LIST"),
            send("+OK\r\n1 50\r\n.\r\n"),
            Step::Expect("TOP 1 0"),
            Step::Expect("LIST 1"),
            send("+OK\r\nSubject: no uidl\r\nMessage-ID: <x@y>\r\n\r\n.\r\n+OK 1 50\r\n"),
        ]);
        if deliver {
            s.extend([
                Step::Expect("RETR 1"),
                Step::Expect("LIST 1"),
                send("+OK\r\nSubject: no uidl\r\nMessage-ID: <x@y>\r\n\r\nhello\r\n.\r\n+OK 1 50\r\n"),
            ]);
        }
        s.extend([Step::Expect("QUIT"), send("+OK\r\n")]);
        s
    };
    let server = Scripted::start(vec![script(true), script(false)]);
    let home = Home::new();
    home.write_config(&server.config(&home, "keep = true"));
    let run = home.run(&["sync"]);
    run.expect(0);
    assert_eq!(
        run.stderr().matches("no UIDL").count(),
        1,
        "said once: {}",
        run.stderr()
    );
    assert_eq!(home.delivered(), vec![body]);
    home.run(&["sync"]).expect(0);
    let received = server.finish();
    assert_eq!(
        received.iter().filter(|l| l.starts_with("RETR")).count(),
        1,
        "{received:?}"
    );
    assert_eq!(home.delivered().len(), 1);
}

#[test]
fn list_decodes_headers_and_speaks_json() {
    let server = Dovecot::start();
    server.add_messages(&[
        b"From: =?UTF-8?Q?J=C3=B6rg?= <j@example.org>\nSubject: =?UTF-8?B?w6l0w6k=?=\nDate: Tue, 1 Jul 2003 10:52:37 +0200\n\nbody\n".to_vec(),
        b"Subject: =?x-bogus?Q?=FF=FE?= \xff\xfe broken\nFrom: \x1b[31mevil\n\n".to_vec(),
        b"\nno headers at all\n".to_vec(),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true"));
    let run = home.run(&["list"]);
    run.expect(0);
    let out = run.stdout();
    assert!(out.contains("3 message(s)"), "{out}");
    assert!(
        out.contains("été") && out.contains("Jörg <j@example.org>") && out.contains("2003-07-01"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "{out:?}");
    assert_eq!(
        out.matches(" new ").count() + out.matches(" new (").count(),
        3,
        "{out}"
    );

    home.run(&["sync"]).expect(0);
    let run = home.run(&["list", "--json"]);
    run.expect(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let entries = json["test"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e["state"] == "delivered"), "{json}");
    assert!(entries.iter().any(|e| e["subject"] == "été"), "{json}");
}

/// Every file under `root`, with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                stack.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn dry_run_changes_nothing_anywhere() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "max_size = \"60\""));

    // On a fresh home nothing is created: no Maildir, no state, no lock.
    let before = (tree(home.path()), server.messages());
    let run = home.run(&["sync", "--dry-run"]);
    run.expect(0);
    assert!(run.stdout().contains("would fetch"), "{}", run.stdout());
    assert_eq!((tree(home.path()), server.messages()), before);

    // With state and mail already there, nothing changes either.
    home.run(&["sync"]).expect(0);
    server.add_messages(&numbered(2));
    let before = (tree(home.path()), server.messages());
    let run = home.run(&["sync", "--dry-run"]);
    run.expect(0);
    assert!(run.stdout().contains("would fetch"), "{}", run.stdout());
    assert_eq!((tree(home.path()), server.messages()), before);
}

/// The Maildir's files (new/ and cur/) with their contents.
fn local_files(maildir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let body = fs::read(&path).unwrap();
            files.push((path, body));
        }
    }
    files.sort();
    files
}

/// Moves a file from new/ to cur/ with `info` after its name, or renames it
/// within cur/ to that info, as a mail reader does.
fn flag(path: &Path, info: &str) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let unique = name.split(':').next().unwrap();
    let cur = path.parent().unwrap().parent().unwrap().join("cur");
    fs::rename(path, cur.join(format!("{unique}:2,{info}"))).unwrap();
}

#[test]
fn until_deleted_locally_deletes_only_what_was_deleted_here() {
    let server = Dovecot::start();
    let corpus = numbered(5);
    server.add_messages(&corpus);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = \"until-deleted-locally\""));
    home.run(&["sync"]).expect(0);
    assert_eq!(server.messages().len(), 5, "kept for now");
    let files = local_files(&home.maildir());
    assert_eq!(files.len(), 5);
    // mutt reads one (new/ to cur/ with :2,S), Dovecot flags one twice, one is
    // flagged and then expunged, one deleted from new/, one left alone.
    flag(&files[0].0, "S");
    flag(&files[1].0, "");
    let renamed = local_files(&home.maildir())
        .into_iter()
        .find(|(_, body)| *body == files[1].1)
        .unwrap();
    flag(&renamed.0, "FRS");
    flag(&files[2].0, "ST");
    let trashed = local_files(&home.maildir())
        .into_iter()
        .find(|(_, body)| *body == files[2].1)
        .unwrap();
    fs::remove_file(&trashed.0).unwrap();
    fs::remove_file(&files[3].0).unwrap();
    home.run(&["sync"]).expect(0);
    let deleted = [&files[2].1, &files[3].1];
    let left = server.messages();
    assert_eq!(left.len(), 3, "only the two deleted here go");
    assert!(left.iter().all(|m| !deleted.contains(&m)));
    // Nothing was fetched again, and a further run changes nothing.
    home.run(&["sync"]).expect(0);
    assert_eq!(server.messages().len(), 3);
    assert_eq!(local_files(&home.maildir()).len(), 3);
    // A Maildir that is not there (a disk not mounted) deletes nothing and
    // takes nothing: the run stops with one line, twice, and goes on once the
    // Maildir is back.
    fs::rename(home.maildir(), home.path().join("Mail.away")).unwrap();
    server.add_messages(&numbered(6)[5..]);
    for _ in 0..2 {
        let run = home.run(&["sync"]);
        run.expect(75);
        assert!(
            run.stderr().contains("is not the Maildir"),
            "{}",
            run.stderr()
        );
        assert_eq!(run.stderr().trim_end().lines().count(), 1);
        assert_eq!(server.messages().len(), 4);
        assert!(local_files(&home.maildir()).is_empty());
    }
    fs::remove_dir_all(home.maildir()).unwrap();
    fs::rename(home.path().join("Mail.away"), home.maildir()).unwrap();
    home.run(&["sync"]).expect(0);
    assert_eq!(server.messages().len(), 4);
    assert_eq!(local_files(&home.maildir()).len(), 4);
}

#[test]
fn until_deleted_locally_with_delete_after_whichever_comes_first() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    home.write_config(&plain(
        &server,
        &home,
        "keep = \"until-deleted-locally\"\ndelete_after = \"30d\"",
    ));
    home.run(&["sync"]).expect(0);
    assert_eq!(server.messages().len(), 2);
    // Both files stay here, but 31 days on delete_after deletes them there.
    sync_at(&home, "+31d");
    assert!(server.messages().is_empty());
    assert_eq!(local_files(&home.maildir()).len(), 2);
    // Any other target is refused: only a Maildir shows what was deleted.
    let home = Home::new();
    let config = plain(&server, &home, "keep = \"until-deleted-locally\"").replace(
        &format!("maildir:{}", home.maildir().display()),
        &format!("mbox:{}", home.path().join("mbox").display()),
    );
    home.write_config(&config);
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(
        run.stderr().contains("needs a Maildir target"),
        "{}",
        run.stderr()
    );
}

/// SIGKILL at random moments of syncs with `keep = "until-deleted-locally"`,
/// while files are deleted and flagged between runs: no message whose file is
/// still here is ever deleted from the server, none deleted here is fetched
/// again, and in the end the server holds exactly what the Maildir holds.
#[test]
fn sigkill_with_until_deleted_locally_never_deletes_a_message_still_here() {
    use crate::crash_safety::{batch, Rng};
    use std::process::Stdio;
    use std::time::Duration;
    let server = Dovecot::start();
    let (mut rng, seed) = Rng::from_env();
    let mut corpus = batch(0, 150);
    server.add_messages(&corpus);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = \"until-deleted-locally\""));
    let mut deleted_here: Vec<Vec<u8>> = Vec::new();
    let mut whole = 200;
    for round in 0..14 {
        // Between runs: delete some files, read and flag others.
        for (path, body) in local_files(&home.maildir()) {
            match rng.below(8) {
                0 => {
                    fs::remove_file(&path).unwrap();
                    deleted_here.push(body);
                }
                1 | 2 => flag(&path, ["S", "RS", "FS"][rng.below(3) as usize]),
                _ => {}
            }
        }
        if round % 4 == 3 {
            let more = batch(corpus.len(), 60);
            server.add_messages(&more);
            corpus.extend(more);
        }
        // Every other run ends by itself; the others are killed at a random
        // moment of a run as long as the last whole one took.
        let started = std::time::Instant::now();
        let mut child = home
            .command()
            .arg("sync")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if round % 2 == 0 {
            assert!(
                child.wait().unwrap().success(),
                "seed {seed}, round {round}"
            );
            whole = started.elapsed().as_millis() as u64;
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(whole + 20)));
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the moment: a message still here is still there.
        let on_server = server.messages();
        for (_, body) in local_files(&home.maildir()) {
            assert!(
                on_server.contains(&body),
                "seed {seed}, round {round}: a message still in the Maildir was deleted from the server"
            );
        }
    }
    home.run(&["sync"]).expect(0);
    home.run(&["sync"]).expect(0);
    let mut here: Vec<Vec<u8>> = local_files(&home.maildir())
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    here.sort();
    let mut deduped = here.clone();
    deduped.dedup();
    assert_eq!(here, deduped, "seed {seed}: a message was delivered twice");
    for body in &deleted_here {
        assert!(
            !here.contains(body),
            "seed {seed}: a message deleted here came back"
        );
    }
    assert_eq!(
        server.messages(),
        here,
        "seed {seed}: the server holds what the Maildir holds"
    );
    assert_eq!(here.len() + deleted_here.len(), corpus.len(), "seed {seed}");
}
