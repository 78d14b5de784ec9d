//! SCRAM-SHA-256-PLUS (RFC 5802 §6, RFC 5929 §4.1) against the scripted server,
//! which verifies the login as a server does: `auto` binds the login to the TLS
//! session, a man in the middle with a certificate the client trusts is caught by
//! the server and gets nothing, and -PLUS is never attempted without TLS.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use native_tls::{Certificate, Identity, TlsAcceptor, TlsConnector, TlsStream};

use crate::support::dovecot::{certs, good_cert, other_good_cert};
use crate::support::scripted::send;
use crate::support::{Home, Scripted, Step};

const MESSAGE: &[u8] = b"Subject: bound\n\nto the TLS session\n";

/// CAPA as a server that binds logins to TLS sends it.
const CAPA_PLUS: &str =
    "+OK\r\nUIDL\r\nTOP\r\nSASL SCRAM-SHA-256 SCRAM-SHA-256-PLUS PLAIN\r\n.\r\n";

fn tls_step((cert, key): (PathBuf, PathBuf)) -> Step {
    Step::Tls(cert, key)
}

/// The server's steps from the greeting to a served mailbox, after TLS.
fn plus_login() -> Vec<Step> {
    vec![
        Step::Expect("CAPA"),
        send(CAPA_PLUS),
        Step::ScramPlus("hunter2-secret"),
        Step::Serve(vec![("u1".into(), MESSAGE.to_vec())]),
    ]
}

/// An account on the scripted server (or the relay) at `port`.
fn config(port: u16, home: &Home, tls: &str, auth: &str) -> String {
    format!(
        "[accounts.test]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\nauth = \"{auth}\"\ntls_ca_file = \"{}\"\ntimeout = 5\nuser = \"alice\"\npassword = \"hunter2-secret\"\ndeliver = \"maildir:{}\"\n",
        certs().ca.display(),
        home.maildir().display()
    )
}

#[test]
fn auto_binds_the_login_to_tls_and_the_sync_delivers() {
    for tls in ["implicit", "starttls"] {
        let mut script = Vec::new();
        if tls == "implicit" {
            script.push(tls_step(good_cert()));
            script.push(send("+OK scripted ready\r\n"));
        } else {
            script.extend([
                send("+OK scripted ready\r\n"),
                Step::Expect("CAPA"),
                send("+OK\r\nSTLS\r\nSASL SCRAM-SHA-256\r\n.\r\n"),
                Step::Expect("STLS"),
                send("+OK begin TLS\r\n"),
                tls_step(good_cert()),
            ]);
        }
        script.extend(plus_login());
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        home.write_config(&config(server.port, &home, tls, "auto"));
        let run = home.run(&["-v", "sync"]);
        run.expect(0);
        assert!(
            run.stderr().contains("> AUTH SCRAM-SHA-256-PLUS"),
            "{tls}: {}",
            run.stderr()
        );
        assert_eq!(home.delivered(), vec![MESSAGE.to_vec()], "{tls}");
        let received = server.finish();
        assert!(
            received.iter().any(|l| l == "scram-plus: ok"),
            "{tls}: {received:?}"
        );
    }
}

/// Relays one connection: TLS with `cert` towards the client, TLS towards the
/// scripted server on `target` (trusting the test CA), bytes both ways.
fn tls_relay(target: u16, (cert, key): (PathBuf, PathBuf)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let identity =
            Identity::from_pkcs8(&std::fs::read(cert).unwrap(), &std::fs::read(key).unwrap())
                .unwrap();
        let Ok(mut client) = TlsAcceptor::new(identity).unwrap().accept(client) else {
            return;
        };
        let ca = Certificate::from_pem(&std::fs::read(&certs().ca).unwrap()).unwrap();
        let connector = TlsConnector::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", target)).unwrap();
        let Ok(mut server) = connector.connect("localhost", tcp) else {
            return;
        };
        for tcp in [client.get_ref(), server.get_ref()] {
            tcp.set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
        }
        let mut buf = vec![0u8; 64 * 1024];
        while pump(&mut client, &mut server, &mut buf) && pump(&mut server, &mut client, &mut buf) {
        }
    });
    port
}

/// Moves what `from` has to `to`; false once either side is gone.
fn pump(from: &mut TlsStream<TcpStream>, to: &mut TlsStream<TcpStream>, buf: &mut [u8]) -> bool {
    match from.read(buf) {
        Ok(0) => false,
        Ok(n) => to.write_all(&buf[..n]).and_then(|()| to.flush()).is_ok(),
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// A man in the middle holds a certificate the client trusts (signed by the CA
/// of tls_ca_file) and relays the login to the real server over his own TLS: the
/// server sees his certificate's hash in c=, refuses, and nothing is fetched.
#[test]
fn a_man_in_the_middle_with_a_trusted_certificate_gets_nothing() {
    let mut script = vec![tls_step(good_cert()), send("+OK scripted ready\r\n")];
    script.extend(plus_login());
    let server = Scripted::start(vec![script]);
    let relay = tls_relay(server.port, other_good_cert());
    let home = Home::new();
    home.write_config(&config(relay, &home, "implicit", "auto"));
    let run = home.run(&["sync"]);
    run.expect(77);
    let stderr = run.stderr();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("man in the middle"), "{stderr}");
    assert!(home.delivered().is_empty());
    let received = server.finish();
    assert!(
        received
            .iter()
            .any(|l| l == "scram-plus: channel bindings don't match"),
        "{received:?}"
    );
    assert!(
        !received.iter().any(|l| l.starts_with("RETR")),
        "{received:?}"
    );
    // Refused after the proof: never retried without the binding.
    let auths = received.iter().filter(|l| l.starts_with("AUTH")).count();
    assert_eq!(auths, 1, "{received:?}");
}

/// A server that refuses the -PLUS exchange on its first message, before any
/// proof, takes another binding type: auto logs in with the same SCRAM unbound,
/// saying "n" on the same connection; a -PLUS auth named in the config does not.
#[test]
fn a_binding_type_refused_before_the_proof_makes_auto_log_in_unbound() {
    for auth in ["auto", "scram-sha-256-plus"] {
        let server = Scripted::start(vec![vec![
            tls_step(good_cert()),
            send("+OK scripted ready\r\n"),
            Step::Expect("CAPA"),
            send(CAPA_PLUS),
            Step::Expect("AUTH SCRAM-SHA-256-PLUS "),
            send("-ERR [AUTH] unsupported channel binding type\r\n"),
            Step::Expect("AUTH SCRAM-SHA-256 "),
            send("-ERR [AUTH] no\r\n"),
            Step::Expect("QUIT"),
            send("+OK\r\n"),
        ]]);
        let home = Home::new();
        home.write_config(&config(server.port, &home, "implicit", auth));
        let run = home.run(&["sync"]);
        run.expect(77);
        let received = server.finish();
        let retry = received
            .iter()
            .find_map(|l| l.strip_prefix("AUTH SCRAM-SHA-256 "));
        if auth == "auto" {
            let first = base64::engine::general_purpose::STANDARD
                .decode(retry.unwrap_or_else(|| panic!("{received:?}")))
                .unwrap();
            assert!(
                first.starts_with(b"n,,"),
                "{}",
                String::from_utf8_lossy(&first)
            );
        } else {
            assert_eq!(retry, None, "{received:?}");
            assert!(run.stderr().contains("without -PLUS"), "{}", run.stderr());
        }
    }
}

#[test]
fn plus_without_tls_is_a_config_error() {
    let home = Home::new();
    let server = Scripted::start(vec![vec![send("+OK scripted ready\r\n")]]);
    home.write_config(&config(server.port, &home, "none", "scram-sha-256-plus"));
    let run = home.run(&["sync"]);
    run.expect(78);
    let stderr = run.stderr();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("-PLUS") && stderr.contains("tls = "),
        "{stderr}"
    );
    assert!(server.received().is_empty(), "nothing was sent");
}

/// RFC 5802 §6 on the wire: "y" inside TLS when the server offers no -PLUS, "n"
/// without TLS and when SCRAM is named without -PLUS where -PLUS is offered.
#[test]
fn the_gs2_flag_says_what_the_client_knows() {
    for (tls, capa, auth, flag) in [
        ("implicit", "SASL SCRAM-SHA-256", "auto", "y,,"),
        ("none", "SASL SCRAM-SHA-256", "auto", "n,,"),
        (
            "implicit",
            "SASL SCRAM-SHA-256 SCRAM-SHA-256-PLUS",
            "scram-sha-256",
            "n,,",
        ),
    ] {
        let mut script = Vec::new();
        if tls == "implicit" {
            script.push(tls_step(good_cert()));
        }
        script.extend([
            send("+OK scripted ready\r\n"),
            Step::Expect("CAPA"),
            send(&format!("+OK\r\n{capa}\r\n.\r\n")),
            Step::Expect("AUTH SCRAM-SHA-256 "),
            Step::Close,
        ]);
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        home.write_config(&config(server.port, &home, tls, auth));
        home.run(&["sync"]);
        let received = server.finish();
        let auth_line = received
            .iter()
            .find_map(|l| l.strip_prefix("AUTH SCRAM-SHA-256 "))
            .unwrap_or_else(|| panic!("{tls} {auth}: {received:?}"));
        let first = base64::engine::general_purpose::STANDARD
            .decode(auth_line)
            .unwrap();
        assert!(
            first.starts_with(flag.as_bytes()),
            "{tls} {auth}: {}",
            String::from_utf8_lossy(&first)
        );
    }
}
