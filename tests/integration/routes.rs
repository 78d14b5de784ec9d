//! How popfetch reaches a server (issue 20, in part): `source_ip`, `ip_version`,
//! `tls_host_override` and a client certificate, against the test Dovecot and
//! the scripted TLS server, and the route `probe` shows.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::support::dovecot::{bad_certs, certs, good_cert, numbered};
use crate::support::scripted::logged_in;
use crate::support::{Dovecot, Home, Scripted, Step};

#[test]
fn source_ip_binds_the_local_end_and_probe_shows_it() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", "source_ip = \"127.0.0.2\""));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), 1);
    // Dovecot saw the connection come from 127.0.0.2.
    let log = server.log();
    assert!(log.contains("rip=127.0.0.2"), "{log}");
    let probe = home.run(&["probe", "test"]);
    probe.expect(0);
    assert!(
        probe
            .stdout()
            .contains("route:         direct, from 127.0.0.2; IPv4, 127.0.0.2:"),
        "{}",
        probe.stdout()
    );
}

#[test]
fn a_route_that_cannot_be_taken_is_one_clear_line() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let home = Home::new();
    for (extra, code, says) in [
        (
            "ip_version = \"6\"",
            69,
            "no address for the route asked (direct, IPv6 only)",
        ),
        (
            "source_ip = \"192.0.2.1\"",
            69,
            "source_ip 192.0.2.1 is not an address of this machine",
        ),
        (
            "source_ip = \"here\"",
            78,
            "source_ip = \"here\" is not an IPv4 or IPv6 address",
        ),
        (
            "ip_version = \"5\"",
            78,
            "ip_version = \"5\" is not \"4\", \"6\" or \"any\"",
        ),
        (
            "source_ip = \"::1\"\nip_version = \"4\"",
            78,
            "source_ip = \"::1\" is not of ip_version = \"4\"",
        ),
    ] {
        home.write_config(&server.config(&home, "implicit", extra));
        let run = home.run(&["sync"]);
        run.expect(code);
        assert_eq!(run.stderr().lines().count(), 1, "{extra}: {}", run.stderr());
        assert!(run.stderr().contains(says), "{extra}: {}", run.stderr());
    }
    assert_eq!(server.messages().len(), 1, "nothing was fetched");
    // ip_version = "4" to 127.0.0.1 works.
    home.write_config(&server.config(&home, "implicit", "ip_version = \"4\""));
    home.run(&["sync"]).expect(0);
}

#[test]
fn tls_host_override_checks_the_certificate_against_another_name() {
    let bad = bad_certs();
    let scripted = |extra: &str| {
        let mut script = vec![Step::Tls(
            bad.wrong_name.0.clone(),
            bad.wrong_name.1.clone(),
        )];
        script.extend(logged_in());
        script.push(Step::Serve(vec![(
            "u1".into(),
            b"Subject: hi\n\nok\n".to_vec(),
        )]));
        let server = Scripted::start(vec![script]);
        let home = Home::new();
        home.write_config(&server.tls_config(&home, extra));
        (server, home)
    };
    // Connected to 127.0.0.1, the certificate names wrong.example: refused.
    let (_server, home) = scripted("");
    let run = home.run(&["sync"]);
    run.expect(69);
    assert!(run.stderr().contains("does not name"), "{}", run.stderr());
    // With the name it carries, accepted.
    let (_server, home) = scripted("tls_host_override = \"wrong.example\"");
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), vec![b"Subject: hi\n\nok\n".to_vec()]);
    // Another name still fails.
    let (_server, home) = scripted("tls_host_override = \"other.example\"");
    home.run(&["sync"]).expect(69);
}

/// A Dovecot that wants a client certificate signed by the test CA.
fn wants_client_cert() -> Dovecot {
    Dovecot::start_with(&format!(
        "ssl_ca = <{}\nssl_verify_client_cert = yes\nssl_require_crl = no\nauth_ssl_require_client_cert = yes\n",
        certs().ca.display()
    ))
}

/// A certificate and key copied into the home, the key at `mode`.
fn client_pair(home: &Home, (cert, key): &(PathBuf, PathBuf), mode: u32) -> String {
    let (c, k) = (
        home.path().join("client.pem"),
        home.path().join("client.key"),
    );
    fs::copy(cert, &c).unwrap();
    fs::copy(key, &k).unwrap();
    fs::set_permissions(&k, fs::Permissions::from_mode(mode)).unwrap();
    format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        c.display(),
        k.display()
    )
}

#[test]
fn a_client_certificate_logs_in_where_the_server_requires_one() {
    let server = wants_client_cert();
    server.add_messages(&numbered(1));
    let home = Home::new();
    // The right certificate: signed by the CA the server trusts.
    let keys = client_pair(&home, &good_cert(), 0o600);
    home.write_config(&server.config(&home, "implicit", &keys));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), 1);

    // No certificate, or one the server does not trust: refused, one line.
    server.add_messages(&numbered(2)[1..]);
    for extra in [
        String::new(),
        client_pair(&home, &bad_certs().unknown_root, 0o600),
    ] {
        home.write_config(&server.config(&home, "implicit", &extra));
        let run = home.run(&["sync"]);
        assert_ne!(run.code(), 0, "{extra}: {}", run.stderr());
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
        assert!(
            run.stderr().contains("account \"test\""),
            "{}",
            run.stderr()
        );
    }
    assert_eq!(server.messages().len(), 1, "the second message stays");

    // A key others can read is refused before anything is sent.
    let keys = client_pair(&home, &good_cert(), 0o644);
    home.write_config(&server.config(&home, "implicit", &keys));
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(
        run.stderr().contains("can be read by group or others"),
        "{}",
        run.stderr()
    );
}
