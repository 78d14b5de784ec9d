//! Mistakes in the configuration and in the helper commands it names: each gets one
//! clear line and the right exit status, never a panic, a hang or mail lost.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::dovecot::numbered;
use crate::support::home::maildir_messages;
use crate::support::{Dovecot, Home};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// An account that fails before any connection: the config alone decides.
fn offline(extra: &str) -> String {
    format!(
        "[accounts.a]\nhost = \"127.0.0.1\"\nport = 1\nuser = \"u\"\npassword = \"p\"\n{extra}\n"
    )
}

fn offline_with_deliver(extra: &str) -> String {
    offline(&format!("deliver = \"maildir:/nonexistent/m\"\n{extra}"))
}

#[test]
fn huge_timeouts_are_refused_with_the_range_not_a_panic() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    let mbox = home.path().join("inbox");
    let maildir = format!("maildir:{}", home.maildir().display());
    for key in ["timeout", "mda_timeout"] {
        let config = server
            .config(&home, "implicit", "")
            .replace(&maildir, &format!("mbox:{}", mbox.display()))
            .replace("timeout = 20", &format!("{key} = 9223372036854775807"));
        home.write_config(&config);
        let run = home.run(&["sync"]);
        run.expect(78);
        assert!(run.stderr().contains(key), "{}", run.stderr());
        assert!(run.stderr().contains("86400"), "{}", run.stderr());
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    }
    assert_eq!(server.messages(), numbered(1), "the message stays");
}

#[test]
fn failing_filters_keep_the_mail_and_exit_with_the_documented_code() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    for (filter, code, words) in [
        ("sh -c 'exit 9'", 74, "exit 9"),
        ("sh -c 'kill -9 $$'", 74, "signal 9"),
        ("/nonexistent/filter", 78, "could not be started"),
        ("sleep 30", 75, "mda_timeout"),
    ] {
        home.write_config(&server.config(
            &home,
            "implicit",
            &format!("filter = \"{filter}\"\nmda_timeout = 1"),
        ));
        let started = Instant::now();
        let run = home.run(&["sync"]);
        run.expect(code);
        assert!(run.stderr().contains(words), "{filter}: {}", run.stderr());
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(sorted(server.messages()), sorted(numbered(2)), "{filter}");
        assert!(home.delivered().is_empty(), "{filter}");
    }
}

#[test]
fn password_command_output_and_time_are_bounded() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    let base = server
        .config_without_password(&home, "implicit", "")
        .replace("timeout = 20", "timeout = 2");

    home.write_config(&format!("{base}password_command = \"yes\"\n"));
    let started = Instant::now();
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(
        run.stderr().contains("password_command"),
        "{}",
        run.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    home.write_config(&format!("{base}password_command = \"sleep 30\"\n"));
    let started = Instant::now();
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(run.stderr().contains("2 s"), "{}", run.stderr());
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.messages(), numbered(1));
}

#[test]
fn a_hung_oauth_token_command_ends_at_the_account_timeout() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    home.write_config(
        &server
            .config_without_password(
                &home,
                "implicit",
                "auth = \"xoauth2\"\noauth_token_command = \"sleep 30\"",
            )
            .replace("timeout = 20", "timeout = 2"),
    );
    let started = Instant::now();
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(
        run.stderr().contains("oauth_token_command") && run.stderr().contains("2 s"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.messages(), numbered(1));
}

#[test]
fn password_command_with_a_shell_pipe_is_refused_with_sh_c() {
    let home = Home::new();
    home.write_config(&offline_with_deliver("").replace(
        "password = \"p\"",
        "password_command = \"gpg -d ~/pw.gpg | head -1\"",
    ));
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(run.stderr().contains("without a shell"), "{}", run.stderr());
    assert!(
        run.stderr().contains("sh -c 'gpg -d ~/pw.gpg | head -1'"),
        "{}",
        run.stderr()
    );
}

#[test]
fn no_secret_service_names_password_command() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&server.config_without_password(&home, "implicit", ""));
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(run.stderr().contains("Secret Service"), "{}", run.stderr());
    assert!(
        run.stderr().contains("password_command"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
}

#[test]
fn config_text_is_escaped_and_bad_paths_are_config_errors() {
    let home = Home::new();
    home.write_config(&format!(
        "[accounts.\"evil\\u001b[31m\"]\n{}",
        &offline_with_deliver("")["[accounts.a]\n".len()..]
    ));
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(!run.stderr().contains('\x1b'), "{:?}", run.stderr());
    assert!(run.stderr().contains("\\x1b[31m"), "{:?}", run.stderr());

    for state_dir in ["\"\"", "\"/tmp/a\\u0000b\"", "\"/tmp/\\u001b[2J\""] {
        home.write_config(&offline_with_deliver(&format!("state_dir = {state_dir}")));
        let run = home.run(&["sync"]);
        run.expect(78);
        assert!(run.stderr().contains("state_dir"), "{:?}", run.stderr());
        assert!(!run.stderr().contains('\0'), "{:?}", run.stderr());
        assert!(!run.stderr().contains('\x1b'), "{:?}", run.stderr());
    }
}

#[test]
fn procmail_reads_a_tilde_rc_file() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    let pm = home.path().join("pm");
    fs::write(
        home.path().join(".procmailrc"),
        format!(":0\n{}/\n", pm.display()),
    )
    .unwrap();
    let maildir = format!("\"maildir:{}\"", home.maildir().display());
    home.write_config(
        &server
            .config(&home, "implicit", "")
            .replace(&maildir, "\"mda:procmail -m ~/.procmailrc\""),
    );
    home.run(&["sync"]).expect(0);
    assert_eq!(maildir_messages(&pm), sorted(numbered(3)));
    assert!(server.messages().is_empty());
}

#[test]
fn relative_and_variable_paths() {
    let home = Home::new();
    for deliver in [
        "maildir:relative/inbox",
        "maildir:$NO_SUCH_VARIABLE/x",
        "maildir:~no-such-user-here/x",
        "mbox:inbox",
    ] {
        home.write_config(&offline(&format!("deliver = \"{deliver}\"")));
        let run = home.run(&["sync"]);
        run.expect(78);
        assert!(run.stderr().contains("deliver"), "{}", run.stderr());
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    }
    assert!(!home.path().join("relative").exists());
    assert!(!home.path().join("$NO_SUCH_VARIABLE").exists());
    assert!(!home.path().join("~no-such-user-here").exists());
    for key in ["state_dir", "tls_ca_file"] {
        home.write_config(&offline_with_deliver(&format!("{key} = \"rel/x\"")));
        let run = home.run(&["sync"]);
        run.expect(78);
        assert!(run.stderr().contains(key), "{}", run.stderr());
    }
}

#[test]
fn home_variable_expands_in_a_maildir_path() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    let maildir = format!("maildir:{}", home.maildir().display());
    home.write_config(
        &server
            .config(&home, "implicit", "")
            .replace(&maildir, "maildir:$HOME/Mail/x"),
    );
    home.run(&["sync"]).expect(0);
    assert_eq!(
        maildir_messages(&home.path().join("Mail/x")),
        sorted(numbered(2))
    );
}

#[test]
fn units_and_sizes() {
    let home = Home::new();
    home.write_config(&offline_with_deliver("keep = true\ndelete_after = \"30\""));
    let run = home.run(&["accounts"]);
    run.expect(78);
    assert!(run.stderr().contains("30d"), "{}", run.stderr());
    assert!(run.stderr().contains("a unit"), "{}", run.stderr());

    home.write_config(&offline_with_deliver("max_size = 1000"));
    home.run(&["accounts"]).expect(0);
}

#[test]
fn unknown_account_lists_the_accounts_and_missing_config_names_init() {
    let home = Home::new();
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(run.stderr().contains("popfetch init"), "{}", run.stderr());

    home.write_config(&offline_with_deliver(""));
    let run = home.run(&["sync", "x"]);
    run.expect(64);
    assert!(run.stderr().contains("\"x\""), "{}", run.stderr());
    assert!(run.stderr().contains("accounts: a"), "{}", run.stderr());
}
