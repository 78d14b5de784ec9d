//! Connections and TLS as the user meets them: `probe` logging in only where the
//! account's trust rules accept the server, what a timeout costs, the hints for a
//! TLS mode that does not fit the port, and the `-v` trace.

use std::time::{Duration, Instant};

use crate::support::dovecot::{self, Dovecot};
use crate::support::scripted::{greeting_and_capa, logged_in, send};
use crate::support::{Home, Scripted, Step};

/// How many logins Dovecot has logged so far.
fn logins(server: &Dovecot) -> usize {
    server.log().matches("Login: user=<").count()
}

/// The `tls_fingerprint = "…"` line `probe` prints.
fn pin_from(probe_out: &str) -> String {
    let line = probe_out
        .lines()
        .find(|l| l.trim_start().starts_with("tls_fingerprint = "))
        .expect("probe shows the pin line");
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn probe_logs_in_only_when_the_account_trusts_the_server() {
    let server = Dovecot::start();
    let home = Home::new();
    let trusted = server.config(&home, "implicit", "");
    let no_ca: String = trusted
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();

    // Trusted through tls_ca_file: logs in.
    home.write_config(&trusted);
    let run = home.run(&["probe", "test"]);
    run.expect(0);
    assert!(
        run.stdout().contains("verified:    yes"),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("mailbox:"), "{}", run.stdout());
    let pin = pin_from(&run.stdout());
    assert_eq!(logins(&server), 1, "{}", server.log());

    // Refused, each for its own reason: the certificate and the pin line are
    // shown, nothing is logged in, exit 69.
    let wrong_pin = format!("tls_fingerprint = \"sha256:{}\"", ["00"; 32].join(":"));
    let cases = [
        (
            "no tls_ca_file",
            no_ca.clone(),
            "a CA this machine does not trust",
        ),
        (
            "wrong host name",
            trusted.replace("host = \"127.0.0.1\"", "host = \"127.0.0.2\""),
            "does not name this host",
        ),
        (
            "wrong pin",
            format!("{no_ca}{wrong_pin}\n"),
            "does not match tls_fingerprint",
        ),
    ];
    for (what, config, why) in cases {
        home.write_config(&config);
        let run = home.run(&["probe", "test"]);
        assert_eq!(run.code(), 69, "{what}: {}", run.stderr());
        let (out, err) = (run.stdout(), run.stderr());
        assert!(out.contains("verified:    NO"), "{what}: {out}");
        assert!(out.contains("tls_fingerprint = \"sha256:"), "{what}: {out}");
        assert!(!out.contains("mailbox:"), "{what}: {out}");
        assert!(err.contains(why), "{what}: {err}");
        assert!(err.contains("not logging in"), "{what}: {err}");
        assert!(err.contains("account \"test\""), "{what}: {err}");
        assert_eq!(logins(&server), 1, "{what} logged in: {}", server.log());
    }

    // A pinned account without a CA that trusts it: verified by the pin, as a
    // sync would be.
    home.write_config(&format!("{no_ca}tls_fingerprint = \"{pin}\"\n"));
    let run = home.run(&["probe", "test"]);
    run.expect(0);
    assert!(
        run.stdout()
            .contains("verified:    yes, by tls_fingerprint"),
        "{}",
        run.stdout()
    );
    assert_eq!(logins(&server), 2, "{}", server.log());

    // `--host` takes a CA file too.
    let port = server.tls_port.to_string();
    let ca = dovecot::certs().ca.display().to_string();
    let run = home.run(&[
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls-ca-file",
        &ca,
    ]);
    run.expect(0);
    assert!(
        run.stdout().contains("verified:    yes"),
        "{}",
        run.stdout()
    );
}

#[test]
fn errors_name_the_account_and_probe_v_shows_the_steps() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(
        &server
            .config(&home, "implicit", "")
            .replace(dovecot::PASSWORD, "wrong password"),
    );
    let run = home.run(&["probe", "-v", "test"]);
    assert_eq!(run.code(), 77, "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("popfetch: account \"test\":"), "{err}");
    assert!(!err.contains("account \"127.0.0.1"), "{err}");
    // -v: the connect, and the protocol steps, never the password.
    assert!(
        err.contains(&format!("connected to 127.0.0.1 port {}", server.tls_port)),
        "{err}"
    );
    assert!(err.contains("> CAPA"), "{err}");
    assert!(!err.contains("wrong password"), "{err}");
}

#[test]
fn sync_v_traces_the_connect_tls_and_certificate() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&server.config(&home, "starttls", ""));
    let run = home.run(&["-v", "sync"]);
    run.expect(0);
    let err = run.stderr();
    for expected in [
        format!("connected to 127.0.0.1 port {}", server.port),
        "TLS: TLSv1.".to_string(),
        "cipher ".to_string(),
        "certificate subject: CN=localhost".to_string(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn a_timeout_closes_without_quit_within_the_timeout() {
    let silence = Step::Sleep(Duration::from_secs(6));
    let mut after_pass = greeting_and_capa();
    after_pass.extend([
        Step::Expect("USER"),
        send("+OK\r\n"),
        Step::Expect("PASS"),
        silence.clone(),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
    ]);
    let mut after_uidl = logged_in();
    after_uidl.extend([
        Step::Expect("UIDL"),
        silence.clone(),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
    ]);
    for (what, script) in [("after PASS", after_pass), ("after UIDL", after_uidl)] {
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        home.write_config(
            &server
                .config(&home, "")
                .replace("timeout = 5", "timeout = 2"),
        );
        let start = Instant::now();
        let run = home.run(&["sync"]);
        let took = start.elapsed();
        assert_eq!(run.code(), 75, "{what}: {}", run.stderr());
        assert!(
            run.stderr().contains("timed out"),
            "{what}: {}",
            run.stderr()
        );
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
        let received = server.finish();
        assert!(
            !received.iter().any(|l| l.starts_with("QUIT")),
            "{what}: {received:?}"
        );
    }
}

#[test]
fn a_tls_mode_that_does_not_fit_the_port_says_which_fits() {
    let server = Dovecot::start();
    let home = Home::new();
    // Implicit TLS against the plain port.
    let config = server.config(&home, "implicit", "").replace(
        &format!("port = {}", server.tls_port),
        &format!("port = {}", server.port),
    );
    home.write_config(&config);
    let run = home.run(&["sync"]);
    assert_eq!(run.code(), 69, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("is this a plain POP3 port? try tls = \"starttls\""),
        "{err}"
    );
    assert!(
        !err.contains("wrong version number") && !err.contains("error:0"),
        "{err}"
    );

    // STARTTLS against the implicit-TLS port: it waits for our handshake as we
    // wait for its greeting. One timeout, then a short look, then 69.
    let config = server
        .config(&home, "starttls", "timeout = 2")
        .replace("timeout = 20\n", "");
    home.write_config(&config.replace(
        &format!("port = {}", server.port),
        &format!("port = {}", server.tls_port),
    ));
    let start = Instant::now();
    let run = home.run(&["sync"]);
    assert_eq!(run.code(), 69, "{}", run.stderr());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(
        run.stderr().contains("speaks TLS") && run.stderr().contains("tls = \"implicit\""),
        "{}",
        run.stderr()
    );

    // A server that starts TLS where the greeting should be.
    let tls_first = Scripted::start(vec![vec![
        Step::Send(b"\x16\x03\x03\x00\x40\x02\x00\x00\x3c\x03\x03".to_vec()),
        Step::Sleep(Duration::from_secs(6)),
    ]]);
    let home = Home::new();
    home.write_config(
        &tls_first
            .config(&home, "")
            .replace("tls = \"none\"", "tls = \"starttls\""),
    );
    let start = Instant::now();
    let run = home.run(&["sync"]);
    assert_eq!(run.code(), 69, "{}", run.stderr());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        run.stderr().contains("tls = \"implicit\""),
        "{}",
        run.stderr()
    );
}
