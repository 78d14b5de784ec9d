//! Attacks a mail client must survive, from a scripted hostile server: bad
//! certificates, pin mismatches, STLS stripping, hangs at every phase, overlong and
//! endless lines. For each, no credential may be sent, and the exit code must say
//! what happened.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::dovecot::{bad_certs, good_cert};
use crate::support::scripted::{greeting_and_capa, logged_in, send};
use crate::support::{Home, Scripted, Step};

fn credentials_sent(received: &[String]) -> bool {
    received.iter().any(|l| {
        ["USER", "PASS", "APOP", "AUTH"]
            .iter()
            .any(|c| l.to_ascii_uppercase().starts_with(c))
    })
}

fn tls_step((cert, key): &(std::path::PathBuf, std::path::PathBuf)) -> Step {
    Step::Tls(cert.clone(), key.clone())
}

fn sha256_pin(cert: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.trim().split('=').nth(1).unwrap())
}

#[test]
fn bad_certificates_are_refused_before_any_credential() {
    let bad = bad_certs();
    for (what, pair, says) in [
        ("self-signed", &bad.self_signed, "is self-signed"),
        (
            "unknown root",
            &bad.unknown_root,
            "a CA this machine does not trust",
        ),
        ("wrong name", &bad.wrong_name, "does not name this host"),
        ("expired", &bad.expired, "has expired"),
        ("not yet valid", &bad.not_yet_valid, "is not valid yet"),
    ] {
        let mut script = vec![tls_step(pair)];
        script.extend(logged_in());
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        home.write_config(&server.tls_config(&home, ""));
        let run = home.run(&["sync"]);
        assert_eq!(run.code(), 69, "{what}: {}", run.stderr());
        let stderr = run.stderr();
        assert!(stderr.contains(says), "{what}: {stderr}");
        assert!(stderr.contains("account \"test\""), "{what}: {stderr}");
        // One short line: no OpenSSL error stack, and "set tls_ca_file" only
        // where an unknown CA is the cause.
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        assert!(!stderr.contains("error:0"), "{what}: {stderr}");
        assert_eq!(
            stderr.contains("tls_ca_file"),
            what == "unknown root",
            "{what}: {stderr}"
        );
        assert!(!credentials_sent(&server.finish()), "{what}");
    }
}

#[test]
fn the_good_certificate_is_accepted() {
    let mut script = vec![tls_step(&good_cert())];
    script.extend(logged_in());
    script.push(Step::Serve(vec![(
        "u1".into(),
        b"Subject: hi\n\nok\n".to_vec(),
    )]));
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    home.write_config(&server.tls_config(&home, ""));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), vec![b"Subject: hi\n\nok\n".to_vec()]);
}

#[test]
fn pinned_fingerprint_is_the_trust() {
    let bad = bad_certs();
    // A self-signed certificate that matches the pin is accepted...
    let mut script = vec![tls_step(&bad.self_signed)];
    script.extend(logged_in());
    script.push(Step::Serve(vec![(
        "u1".into(),
        b"Subject: pinned\n\n".to_vec(),
    )]));
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    let pin = sha256_pin(&bad.self_signed.0);
    home.write_config(&server.tls_config(&home, &format!("tls_fingerprint = \"{pin}\"")));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), 1);

    // ...and a CA-signed certificate that does not is refused before anything.
    let mut script = vec![tls_step(&good_cert())];
    script.extend(logged_in());
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    home.write_config(&server.tls_config(&home, &format!("tls_fingerprint = \"{pin}\"")));
    let run = home.run(&["sync"]);
    run.expect(69);
    assert!(
        run.stderr().contains("does not match tls_fingerprint"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains(&sha256_pin(&good_cert().0)),
        "the actual pin is shown: {}",
        run.stderr()
    );
    assert!(!credentials_sent(&server.finish()));
}

#[test]
fn skipping_verification_warns_on_every_run_even_quiet() {
    let mut script = vec![tls_step(&bad_certs().self_signed)];
    script.extend(logged_in());
    script.push(Step::Serve(Vec::new()));
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    home.write_config(&server.tls_config(&home, "tls_insecure_skip_verify = true"));
    let run = home.run(&["-q", "sync"]);
    run.expect(0);
    assert!(
        run.stderr().contains("warning") && run.stderr().contains("tls_insecure_skip_verify"),
        "{}",
        run.stderr()
    );
}

fn starttls_config(server: &Scripted, home: &Home) -> String {
    server
        .tls_config(home, "")
        .replace("tls = \"implicit\"", "tls = \"starttls\"")
}

#[test]
fn stls_stripping_never_falls_back_to_cleartext() {
    let refused = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
        Step::Expect("STLS"),
        send("-ERR not today\r\n"),
        Step::Sleep(Duration::from_millis(300)),
    ];
    let hidden = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("-ERR what is CAPA\r\n"),
        Step::Expect("STLS"),
        send("-ERR unknown command\r\n"),
        Step::Sleep(Duration::from_millis(300)),
    ];
    for (what, script) in [("STLS -ERR", refused), ("CAPA hidden", hidden)] {
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        home.write_config(&starttls_config(&server, &home));
        let run = home.run(&["sync"]);
        assert_eq!(run.code(), 69, "{what}: {}", run.stderr());
        assert!(!credentials_sent(&server.finish()), "{what}");
    }
}

#[test]
fn hangs_at_every_phase_end_in_a_timeout() {
    let silence = Step::Sleep(Duration::from_secs(8));
    let mut at_retr = logged_in();
    at_retr.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 a\r\n.\r\n"),
        Step::Expect("LIST 1"),
        send("+OK 1 100\r\n"),
        Step::Expect("RETR 1"),
        send("+OK\r\nSubject: half\r\n"),
        silence.clone(),
    ]);
    let mut at_login = greeting_and_capa();
    at_login.extend([Step::Expect("USER"), silence.clone()]);
    let phases: Vec<(&str, Vec<Step>, bool)> = vec![
        ("greeting", vec![silence.clone()], false),
        ("TLS handshake", vec![silence.clone()], true),
        (
            "CAPA",
            vec![send("+OK hi\r\n"), Step::Expect("CAPA"), silence.clone()],
            false,
        ),
        ("login", at_login, false),
        ("RETR", at_retr, false),
    ];
    for (phase, script, implicit) in phases {
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        let config = if implicit {
            server.tls_config(&home, "")
        } else {
            server.config(&home, "")
        };
        home.write_config(&config.replace("timeout = 5", "timeout = 1"));
        let start = Instant::now();
        let run = home.run(&["sync"]);
        assert_eq!(run.code(), 75, "{phase}: {}", run.stderr());
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{phase} took {:?}",
            start.elapsed()
        );
        assert!(
            run.stderr().contains("timed out"),
            "{phase}: {}",
            run.stderr()
        );
        assert!(home.delivered().is_empty(), "{phase}");
    }
}

#[test]
fn overlong_and_endless_lines_are_cut_off() {
    let long_greeting = format!("+OK {}\r\n", "x".repeat(10_000));
    let endless = vec![b'A'; 1 << 20];
    for (what, greeting) in [
        ("overlong line", long_greeting.into_bytes()),
        ("1 MB without CRLF", endless),
    ] {
        let server = Scripted::start(vec![vec![
            Step::Send(greeting),
            Step::Sleep(Duration::from_secs(2)),
        ]]);
        let home = Home::new();
        home.write_config(&server.config(&home, ""));
        let start = Instant::now();
        let run = home.run(&["sync"]);
        assert_eq!(run.code(), 76, "{what}: {}", run.stderr());
        assert!(
            run.stderr().contains("longer than"),
            "{what}: {}",
            run.stderr()
        );
        assert!(run.stderr().len() < 500, "{what}: the error stays short");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: refused without waiting"
        );
        assert!(!credentials_sent(&server.finish()), "{what}");
    }
}

#[test]
fn escape_sequences_never_reach_the_terminal() {
    let mut script = vec![
        send("+OK \x1b]0;owned\x07 ready \x1b[31mred\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\n.\r\n"),
        Step::Expect("USER"),
        send("+OK\r\n"),
        Step::Expect("PASS"),
        Step::Send(b"-ERR [AUTH] \x1b[2J\x9b cleared\r\n".to_vec()),
    ];
    script.push(Step::Expect("QUIT"));
    let server = Scripted::start(vec![script]);
    let home = Home::new();
    home.write_config(&server.config(&home, ""));
    let run = home.run(&["-v", "sync"]);
    run.expect(77);
    let err = run.stderr();
    assert!(
        !err.contains('\x1b') && !err.contains('\x07') && !err.contains('\u{9b}'),
        "{err:?}"
    );
    assert!(
        err.contains("\\x1b]0;owned\\x07") && err.contains("\\x1b[2J"),
        "{err}"
    );
}

/// The password lives in a real Secret Service (gnome-keyring in its own D-Bus
/// session): `popfetch password set` stores it, `sync` uses it, `delete` removes it.
#[test]
fn password_from_the_system_keyring() {
    use crate::support::dovecot::{self, numbered};
    use crate::support::Dovecot;
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    home.write_config(&server.config_without_password(&home, "implicit", ""));

    // Without a session bus (as under cron) it says so and names the alternatives.
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(
        run.stderr().contains("no Secret Service"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("password_command"),
        "{}",
        run.stderr()
    );

    let script = r#"
        printf '%s\n' "$PW" | "$POPFETCH" password set test || exit 101
        "$POPFETCH" -v sync || exit $?
        "$POPFETCH" password delete test || exit 102
        "$POPFETCH" sync </dev/null
    "#;
    let output = home.in_keyring_session(script, &[("PW", dovecot::PASSWORD)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The last step runs after the entry was deleted: no password, no terminal.
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("stored the password for alice@127.0.0.1"),
        "{stderr}"
    );
    assert!(stderr.contains("removed the password"), "{stderr}");
    assert!(stderr.contains("the keyring holds none"), "{stderr}");
    assert!(
        !stderr.contains(dovecot::PASSWORD),
        "the password leaked: {stderr}"
    );
    assert_eq!(home.delivered().len(), 2, "{stderr}");
}

/// At a terminal, with nothing configured and no keyring, popfetch asks.
#[test]
fn password_prompt_at_a_terminal() {
    use crate::support::dovecot::{self, numbered};
    use crate::support::Dovecot;
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    home.write_config(&server.config_without_password(&home, "implicit", ""));
    // Typed at the prompt, once it is there.
    let (screen, status) = home.answer_on_pty("sync", dovecot::PASSWORD);
    assert!(status.success(), "{screen}");
    assert!(screen.contains("Password for alice@127.0.0.1:"), "{screen}");
    assert!(
        !screen.contains(dovecot::PASSWORD),
        "the password was echoed: {screen}"
    );
    assert_eq!(home.delivered().len(), 2);
}
