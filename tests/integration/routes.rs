//! How popfetch reaches a server (issue 20): `source_ip`, `ip_version`,
//! `tls_host_override`, a client certificate and a SOCKS5 proxy (a real one,
//! Debian's microsocks), against the test Dovecot and the scripted TLS server,
//! and the route `probe` shows.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::support::dovecot::{bad_certs, certs, free_port, good_cert, numbered};
use crate::support::scripted::logged_in;
use crate::support::socks::{Options, Socks};
use crate::support::{Dovecot, Home, MailStore, Scripted, Step};

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

/// The account of `server` with `extra` lines, `host` in place of 127.0.0.1.
fn via(server: &Dovecot, home: &Home, host: &str, extra: &str) -> String {
    let config = server.config(home, "implicit", &format!("keep = true\n{extra}"));
    assert!(config.contains("host = \"127.0.0.1\""), "{config}");
    config.replace("host = \"127.0.0.1\"", &format!("host = \"{host}\""))
}

/// One line on stderr that says `says`.
#[track_caller]
fn one_line(run: &crate::support::home::Run, says: &str) {
    let stderr = run.stderr();
    assert!(stderr.contains(says), "wanted {says:?} in {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_sync_goes_through_a_socks5_proxy_with_and_without_a_login() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    // Without a login: the proxy's connections come from 127.0.0.3, which
    // Dovecot logs as the remote address.
    let open = Socks::start(Options {
        bind: Some("127.0.0.3"),
        ..Options::default()
    });
    let home = Home::new();
    let proxy = format!("proxy = \"{}\"", open.url("socks5", None));
    home.write_config(&via(&server, &home, "127.0.0.1", &proxy));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), 2);
    assert!(server.log().contains("rip=127.0.0.3"), "{}", server.log());
    let probe = home.run(&["probe", "test"]);
    probe.expect(0);
    let route = format!(
        "route:         through socks5://127.0.0.1:{}; IPv4",
        open.port
    );
    assert!(probe.stdout().contains(&route), "{}", probe.stdout());

    // With a login (RFC 1929): in the URL, percent-encoded, or from a command.
    let guarded = Socks::start(Options {
        login: Some(("alice", "p@ss:w/rd")),
        bind: Some("127.0.0.4"),
        ..Options::default()
    });
    for login in [
        format!(
            "proxy = \"{}\"",
            guarded.url("socks5", Some("alice:p%40ss%3Aw%2Frd"))
        ),
        format!(
            "proxy = \"{}\"\nproxy_password_command = \"printf p@ss:w/rd\"",
            guarded.url("socks5", Some("alice"))
        ),
    ] {
        let home = Home::new();
        home.write_config(&via(&server, &home, "127.0.0.1", &login));
        home.run(&["sync"]).expect(0);
        assert_eq!(home.delivered().len(), 2, "{login}");
        let probe = home.run(&["probe", "test"]);
        probe.expect(0);
        assert!(!probe.stdout().contains("p@ss"), "{}", probe.stdout());
        assert!(!probe.stdout().contains("p%40ss"), "{}", probe.stdout());
    }
    assert!(server.log().contains("rip=127.0.0.4"), "{}", server.log());

    // A wrong password, and none: 77, one line, nothing fetched, no secret shown.
    for (login, says) in [
        (
            Some("alice:wrong"),
            "refused the user name and password; check the user name in proxy",
        ),
        (
            None,
            "asks for a user name and password; give the user name in proxy",
        ),
    ] {
        let home = Home::new();
        let proxy = format!("proxy = \"{}\"", guarded.url("socks5", login));
        home.write_config(&via(&server, &home, "127.0.0.1", &proxy));
        let run = home.run(&["sync"]);
        run.expect(77);
        one_line(&run, says);
        assert!(!run.stderr().contains("wrong"), "{}", run.stderr());
        assert!(home.delivered().is_empty());
    }

    // A password in the URL is a password: the config file must be yours alone.
    let home = Home::new();
    let path = home.write_config(&via(
        &server,
        &home,
        "127.0.0.1",
        &format!(
            "proxy = \"{}\"",
            guarded.url("socks5", Some("alice:p%40ss%3Aw%2Frd"))
        ),
    ));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(!run.stderr().contains("p%40ss"), "{}", run.stderr());
    assert_eq!(server.messages().len(), 2, "keep = true left them all");
}

#[test]
fn socks5h_has_the_proxy_resolve_a_name_only_it_knows() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let socks = Socks::start(Options {
        hosts: Some("127.0.0.1 pop.popfetch.test"),
        ..Options::default()
    });
    let home = Home::new();
    // The certificate names localhost; the override says so.
    let extra = |scheme| {
        format!(
            "tls_host_override = \"localhost\"\nproxy = \"{}\"",
            socks.url(scheme, None)
        )
    };
    home.write_config(&via(&server, &home, "pop.popfetch.test", &extra("socks5h")));
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered().len(), 1);
    // socks5 resolves here, where the name is unknown.
    let home = Home::new();
    home.write_config(&via(&server, &home, "pop.popfetch.test", &extra("socks5")));
    let run = home.run(&["sync"]);
    run.expect(69);
    one_line(&run, "cannot resolve pop.popfetch.test");
    // An address family cannot be asked of a name the proxy resolves.
    let home = Home::new();
    home.write_config(&via(
        &server,
        &home,
        "pop.popfetch.test",
        &format!("{}\nip_version = \"4\"", extra("socks5h")),
    ));
    let run = home.run(&["sync"]);
    run.expect(78);
    one_line(&run, "cannot hold with a socks5h proxy");
}

#[test]
fn a_proxy_that_refuses_is_gone_or_is_silent_keeps_the_mail_with_one_clear_line() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let socks = Socks::start(Options::default());
    let closed = free_port();
    // The proxy cannot reach the server: 69, in the proxy's words.
    let home = Home::new();
    let config = via(
        &server,
        &home,
        "127.0.0.1",
        &format!("proxy = \"{}\"", socks.url("socks5", None)),
    );
    let tls_port = format!("port = {}", server.tls_port);
    home.write_config(&config.replace(&tls_port, &format!("port = {closed}")));
    let run = home.run(&["sync"]);
    run.expect(69);
    one_line(
        &run,
        &format!("could not connect to 127.0.0.1:{closed}: connection refused"),
    );
    // No proxy there: 69.
    let home = Home::new();
    let proxy = format!("proxy = \"socks5://127.0.0.1:{closed}\"");
    home.write_config(&via(&server, &home, "127.0.0.1", &proxy));
    let run = home.run(&["sync"]);
    run.expect(69);
    one_line(
        &run,
        "cannot connect to the SOCKS5 proxy socks5://127.0.0.1:",
    );
    // A proxy that never answers: the account's timeout, then 75.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let home = Home::new();
    let proxy = format!("proxy = \"socks5://127.0.0.1:{port}\"");
    let config = via(&server, &home, "127.0.0.1", &proxy).replace("timeout = 20", "timeout = 1");
    home.write_config(&config);
    let started = std::time::Instant::now();
    let run = home.run(&["sync"]);
    run.expect(75);
    one_line(&run, "the SOCKS5 handshake");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn proxy_targets_sends_a_tcp_target_through_the_proxy_too() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let store = MailStore::start();
    let socks = Socks::start(Options {
        hosts: Some("127.0.0.1 lmtp.popfetch.test"),
        ..Options::default()
    });
    let config = |home: &Home, targets: bool| {
        let maildir = format!("deliver = \"maildir:{}\"", home.maildir().display());
        via(
            &server,
            home,
            "127.0.0.1",
            &format!(
                "proxy = \"{}\"\nproxy_targets = {targets}\nrecipient = \"alice\"",
                socks.url("socks5h", None)
            ),
        )
        .replace(
            &maildir,
            &format!(
                "deliver = \"lmtp:lmtp.popfetch.test:{}\"",
                store.lmtp_port()
            ),
        )
    };
    // By default a target connects directly, where the name is unknown: the
    // mail stays on the server.
    let home = Home::new();
    home.write_config(&config(&home, false));
    let run = home.run(&["sync"]);
    run.expect(69);
    assert!(
        run.stderr().contains("lmtp.popfetch.test"),
        "{}",
        run.stderr()
    );
    assert!(store.messages("alice", "").is_empty());
    // With proxy_targets, the proxy resolves it and LMTP goes through.
    home.write_config(&config(&home, true));
    home.run(&["sync"]).expect(0);
    assert_eq!(store.messages("alice", "").len(), 2);
    assert_eq!(server.messages().len(), 2, "keep = true");
}
