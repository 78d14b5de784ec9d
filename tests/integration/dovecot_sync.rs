//! `popfetch sync` against a real Dovecot: byte-exact delivery over every TLS mode,
//! nothing delivered twice, the server emptied when asked, and the failures a real
//! server can produce.

use std::fs::{self, File};

use crate::support::dovecot::{self, fidelity_corpus, numbered};
use crate::support::{Dovecot, Home};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[test]
fn implicit_tls_delivers_byte_identical_and_only_once() {
    let server = Dovecot::start();
    server.add_messages(&fidelity_corpus());
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "keep = true"));

    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), sorted(fidelity_corpus()));
    assert_eq!(
        server.messages(),
        sorted(fidelity_corpus()),
        "keep = true leaves mail"
    );
    assert!(home.tmp_is_empty());
    assert!(home.state_file().exists());

    let again = home.run(&["sync", "test"]);
    again.expect(0);
    assert_eq!(
        home.delivered().len(),
        fidelity_corpus().len(),
        "second run delivers nothing"
    );
    assert!(
        again.stderr().is_empty(),
        "a quiet run prints nothing: {}",
        again.stderr()
    );
}

#[test]
fn starttls_with_delete_empties_the_server() {
    let server = Dovecot::start();
    server.add_messages(&fidelity_corpus());
    let home = Home::new();
    let config = server.config(&home, "starttls", "").replace(
        &format!("password = \"{}\"", dovecot::PASSWORD),
        &format!("password_command = \"echo '{}'\"", dovecot::PASSWORD),
    );
    home.write_config(&config);

    let run = home.run(&["-v", "sync"]);
    run.expect(0);
    assert_eq!(home.delivered(), sorted(fidelity_corpus()));
    assert!(
        server.messages().is_empty(),
        "keep = false deletes delivered mail"
    );
    let trace = run.stderr();
    assert!(
        trace.contains("> STLS") && trace.contains("> AUTH SCRAM-SHA-256 ********"),
        "{trace}"
    );
    assert!(
        !trace.contains(dovecot::PASSWORD),
        "the password leaked into the trace"
    );

    // New mail arrives; only it is fetched.
    server.add_messages(&numbered(3));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), fidelity_corpus().len() + 3);
    assert!(server.messages().is_empty());
}

#[test]
fn every_login_method_works_against_dovecot() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    for (tls, auth, wire) in [
        ("none", "user", "> PASS ********"),
        ("none", "apop", "> APOP alice ********"),
        ("implicit", "plain", "> AUTH PLAIN ********"),
        ("implicit", "login", "> AUTH LOGIN"),
        ("none", "cram-md5", "> AUTH CRAM-MD5"),
        ("none", "scram-sha-1", "> AUTH SCRAM-SHA-1 ********"),
        ("starttls", "scram-sha-256", "> AUTH SCRAM-SHA-256 ********"),
        // auto: the strongest offered, SCRAM even in cleartext.
        ("none", "auto", "> AUTH SCRAM-SHA-256 ********"),
        ("implicit", "auto", "> AUTH SCRAM-SHA-256 ********"),
    ] {
        let home = Home::new();
        home.write_config(&server.config(&home, tls, &format!("keep = true\nauth = \"{auth}\"")));
        let run = home.run(&["-v", "sync"]);
        run.expect(0);
        let trace = run.stderr();
        assert!(trace.contains(wire), "{tls} {auth}: {trace}");
        assert!(
            !trace.contains(dovecot::PASSWORD),
            "{auth} leaked the password"
        );
        assert_eq!(home.delivered(), sorted(numbered(2)), "{tls} {auth}");
    }
}

#[test]
fn oauth2_tokens_log_in_with_xoauth2_and_oauthbearer() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    for auth in ["xoauth2", "oauthbearer"] {
        let home = Home::new();
        let token_file = home.path().join("token");
        fs::write(
            &token_file,
            format!("{}\n", server.oauth_token(dovecot::USER)),
        )
        .unwrap();
        home.write_config(&server.config_without_password(
            &home,
            "implicit",
            &format!(
                "keep = true\nauth = \"{auth}\"\noauth_token_command = \"cat {}\"",
                token_file.display()
            ),
        ));
        let run = home.run(&["-v", "sync"]);
        run.expect(0);
        assert!(
            run.stderr()
                .contains(&format!("> AUTH {}", auth.to_uppercase())),
            "{}",
            run.stderr()
        );
        assert!(
            !run.stderr()
                .contains(&server.oauth_token(dovecot::USER)[..20]),
            "the token leaked"
        );
        assert_eq!(home.delivered(), sorted(numbered(1)), "{auth}");

        // A token for someone else, or a forged one, is refused.
        fs::write(
            &token_file,
            server.oauth_token("mallory").replace('.', "x."),
        )
        .unwrap();
        let run = home.run(&["sync"]);
        run.expect(77);
    }
}

#[test]
fn wrong_password_fails_with_every_method() {
    let server = Dovecot::start();
    for auth in ["user", "apop", "plain", "cram-md5", "scram-sha-256"] {
        let home = Home::new();
        let config = server
            .config(&home, "none", &format!("auth = \"{auth}\""))
            .replace(dovecot::PASSWORD, "wrong-Secret-123");
        home.write_config(&config);
        let run = home.run(&["sync"]);
        run.expect(77);
        assert!(
            !run.stderr().contains("wrong-Secret-123"),
            "{}",
            run.stderr()
        );
    }
}

#[test]
fn wrong_password_is_an_auth_failure_and_keeps_the_secret() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    let config = server
        .config(&home, "implicit", "")
        .replace(dovecot::PASSWORD, "wrong-Secret-123");
    home.write_config(&config);
    let run = home.run(&["sync"]);
    run.expect(77);
    assert!(
        !run.stderr().contains("wrong-Secret-123"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn untrusted_certificate_is_refused_before_login() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    // Without the test CA the certificate chain is not trusted.
    let config = server.config(&home, "implicit", "");
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    home.write_config(&config);
    let run = home.run(&["sync"]);
    run.expect(69);
    assert!(
        run.stderr().contains("a CA this machine does not trust")
            && run.stderr().contains("tls_ca_file"),
        "{}",
        run.stderr()
    );
    assert!(
        !server.log().contains("Login: user=<alice>"),
        "no login may happen"
    );

    // STLS with an untrusted certificate: no cleartext fallback either.
    let config = server.config(&home, "starttls", "");
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    home.write_config(&config);
    home.run(&["sync"]).expect(69);
    assert!(
        !server.log().contains("Login: user=<alice>"),
        "no login may happen"
    );
    assert!(home.delivered().is_empty());
}

#[test]
fn certificate_for_another_host_name_is_refused() {
    let server = Dovecot::start();
    let home = Home::new();
    let config = server.config(&home, "implicit", "").replace(
        "host = \"127.0.0.1\"",
        &format!("host = \"{}\"", server.wrong_name_host),
    );
    home.write_config(&config);
    let run = home.run(&["sync"]);
    run.expect(69);
    assert!(run.stderr().contains("certificate"), "{}", run.stderr());
}

#[test]
fn a_second_sync_of_the_same_account_waits_for_nothing() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", ""));
    fs::create_dir_all(home.state_dir()).unwrap();
    // The lock is named after the mailbox, user@host:port.
    let lock = File::create(
        home.state_dir()
            .join(format!("alice@127.0.0.1:{}.lock", server.tls_port)),
    )
    .unwrap();
    lock.lock().unwrap();
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(
        run.stderr().contains("another popfetch"),
        "{}",
        run.stderr()
    );
    assert_eq!(server.messages().len(), 2);
    drop(lock);
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), sorted(numbered(2)));
}

#[test]
fn write_failure_mid_session_keeps_mail_and_loses_nothing() {
    let server = Dovecot::start();
    let mut corpus = numbered(3);
    let mut large = b"Subject: too large for the limit\n\n".to_vec();
    large.extend(std::iter::repeat_n(b"0123456789abcdef\n", 20_000).flatten());
    corpus.push(large);
    server.add_messages(&corpus);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", ""));
    // A file-size limit makes the large message's write fail with EFBIG, as a full
    // disk would, while the small ones and the state fit. SIGXFSZ is ignored so the
    // write fails instead of killing the process.
    let output = std::process::Command::new("bash")
        .args(["-c", "ulimit -f 100; trap '' XFSZ; exec \"$0\" sync"])
        .arg(env!("CARGO_BIN_EXE_popfetch"))
        .envs(home.command().get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("cannot deliver"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(home.tmp_is_empty(), "no partial file may stay in tmp/");
    // Whatever was delivered was deleted; whatever was not is still on the server.
    let mut everything = home.delivered();
    everything.extend(server.messages());
    assert_eq!(sorted(everything), sorted(corpus.clone()));
    assert!(server.messages().iter().any(|m| m.len() > 100_000));

    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), sorted(corpus));
    assert!(server.messages().is_empty());
}
