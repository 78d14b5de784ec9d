//! At home in a terminal, in cron and in scripts: output modes (with and without a
//! pseudo-terminal), JSON, parallel accounts, accounts, init, probe, and generated
//! completions and man page kept current.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::dovecot::{self, numbered};
use crate::support::{Dovecot, Home};

/// Several accounts on one Dovecot mailbox, each into its own Maildir. Each reaches
/// it by another host:port, so each is a mailbox of its own with its own state.
fn three_accounts(server: &Dovecot, home: &Home) -> String {
    let implicit = server.config(home, "implicit", "keep = true");
    let starttls = server.config(home, "starttls", "keep = true");
    let mut config = String::new();
    for (name, one) in [
        ("a", implicit.clone()),
        ("b", starttls),
        (
            "c",
            implicit.replace("host = \"127.0.0.1\"", "host = \"localhost\""),
        ),
    ] {
        config.push_str(
            &one.replace("[accounts.test]", &format!("[accounts.{name}]"))
                .replace(
                    &home.maildir().display().to_string(),
                    &home.path().join(name).display().to_string(),
                ),
        );
    }
    config
}

#[test]
fn cron_is_silent_verbose_summarises_and_json_parses() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.write_config(&three_accounts(&server, &home));

    let run = home.run(&["sync"]);
    run.expect(0);
    assert_eq!(run.stderr(), "", "no terminal, no -v: nothing at all");
    assert_eq!(run.stdout(), "");

    server.add_messages(&numbered(1));
    let run = home.run(&["-v", "sync", "--jobs", "3"]);
    run.expect(0);
    let err = run.stderr();
    for name in ["a", "b", "c"] {
        assert!(
            err.contains(&format!("{name}: 1 message(s) fetched")),
            "{err}"
        );
        // One account's lines are printed together, never interleaved.
        let lines: Vec<usize> = err
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(&format!("{name}: ")))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            lines.last().unwrap() - lines[0] + 1,
            lines.len(),
            "{name} interleaved:\n{err}"
        );
    }
    assert!(!err.contains(dovecot::PASSWORD));

    server.add_messages(&numbered(2));
    let run = home.run(&["sync", "--json"]);
    run.expect(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(json["exit_code"], 0);
    let accounts = json["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    for account in accounts {
        assert_eq!(account["fetched"], 2, "{json}");
        assert_eq!(account["exit_code"], 0);
        assert!(account["bytes"].as_u64().unwrap() > 0);
    }

    let run = home.run(&["-q", "sync", "--json", "nope"]);
    run.expect(64);
}

#[test]
fn json_reports_errors_per_account() {
    let home = Home::new();
    home.write_config(
        "[defaults]\nhost = \"127.0.0.1\"\nport = 1\ntls = \"none\"\nauth = \"user\"\nuser = \"u\"\npassword_command = \"echo pw\"\ndeliver = \"maildir:~/M\"\n[accounts.x]\n",
    );
    let run = home.run(&["sync", "--json"]);
    run.expect(69);
    let json: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(json["exit_code"], 69);
    assert_eq!(json["accounts"][0]["exit_code"], 69);
    assert!(json["accounts"][0]["errors"][0]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
}

#[test]
fn a_terminal_gets_a_summary_line_per_account() {
    let server = Dovecot::start();
    server.add_messages(&numbered(4));
    let home = Home::new();
    home.write_config(&three_accounts(&server, &home));
    // script(1) runs popfetch on a pseudo-terminal.
    let output = home
        .sync_on_pty()
        .output()
        .expect("script(1) is needed for the pseudo-terminal: apt-get install bsdutils");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for name in ["a", "b", "c"] {
        assert!(
            text.contains(&format!("{name}: 4 message(s) fetched")),
            "{text}"
        );
    }
}

#[test]
fn accounts_and_init() {
    let home = Home::new();
    let run = home.run(&["init"]);
    run.expect(0);
    let path = home.config_path();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("[accounts.main]") && text.contains("# password_command"),
        "{text}"
    );
    let run = home.run(&["accounts"]);
    run.expect(0);
    assert!(run.stdout().starts_with("main"), "{}", run.stdout());
    assert!(
        run.stdout()
            .contains("me@example.com@pop.example.com:995 (tls)"),
        "{}",
        run.stdout()
    );

    let run = home.run(&["init"]);
    run.expect(78);
    assert!(
        run.stderr().contains("never overwrites"),
        "{}",
        run.stderr()
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn probe_shows_tls_certificate_and_mailbox() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", ""));
    let run = home.run(&["probe", "test"]);
    run.expect(0);
    let out = run.stdout();
    for expected in [
        "greeting:      +OK Dovecot",
        "tls:           TLSv1.",
        "subject:     CN=localhost",
        "issuer:      CN=popfetch test CA",
        "verified:    yes",
        "tls_fingerprint = \"sha256:",
        "SCRAM-SHA-256",
        "mailbox:       2 message(s)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains(dovecot::PASSWORD));

    // Without an account, over STLS, an untrusted certificate is shown, not refused.
    let port = server.port.to_string();
    let run = home.run(&[
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "starttls",
    ]);
    run.expect(0);
    let out = run.stdout();
    assert!(
        out.contains("capabilities (before STLS):") && out.contains("STLS"),
        "{out}"
    );
    assert!(out.contains("verified:    NO"), "{out}");
    assert!(!out.contains("mailbox:"), "{out}");
}

#[test]
fn completions_man_page_and_readme_keys_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = popfetch::render_docs(root).unwrap();
    assert!(generated
        .iter()
        .any(|(path, _)| path.ends_with("README.md")));
    for (path, contents) in generated {
        let committed = fs::read(root.join(&path)).unwrap_or_default();
        assert!(
            committed == contents,
            "{} is out of date: run `cargo run --example gen-docs` and commit the result",
            path.display()
        );
    }
    let man = fs::read_to_string(root.join("man/popfetch.1")).unwrap();
    for section in [
        "CONFIGURATION",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SECURITY",
    ] {
        assert!(man.contains(&format!(".SH {section}")), "{section}");
    }
}

/// fetchmail, mpop and getmail from Debian fetch from the test Dovecot and write
/// their UID lists; popfetch imports each and then fetches only what is new.
#[test]
fn import_state_from_real_fetchmail_mpop_and_getmail() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let port = server.port.to_string();
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .current_dir(dir)
            .env("HOME", dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("{what} is needed: apt-get install fetchmail mpop getmail6 ({e})")
            });
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    fs::create_dir_all(dir.join("md/new")).unwrap();
    fs::create_dir_all(dir.join("md/cur")).unwrap();
    fs::create_dir_all(dir.join("md/tmp")).unwrap();
    run(
        Command::new("mpop").args([
            "--host=127.0.0.1",
            &format!("--port={port}"),
            "--tls=off",
            "--auth=user",
            "--user=alice",
            &format!("--passwordeval=echo '{}'", dovecot::PASSWORD),
            "--keep=on",
            &format!("--delivery=maildir,{}", dir.join("md").display()),
            &format!("--uidls-file={}", dir.join("mpop-uidls").display()),
        ]),
        "mpop",
    );
    let rc = dir.join("fetchmailrc");
    fs::write(&rc, format!("poll 127.0.0.1 port {port} protocol pop3 uidl user \"alice\" password \"{}\" keep sslproto \"\" mda \"/bin/cat\"\n", dovecot::PASSWORD)).unwrap();
    fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
    run(
        Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .arg("-i")
            .arg(dir.join("fetchids"))
            .arg("--nosyslog"),
        "fetchmail",
    );
    fs::create_dir_all(dir.join("gm")).unwrap();
    fs::write(dir.join("gm/getmailrc"), format!("[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\nusername = alice\npassword = {}\n[destination]\ntype = MDA_external\npath = /bin/true\nallow_root_commands = true\n[options]\nread_all = false\ndelete = false\n", dovecot::PASSWORD)).unwrap();
    run(
        Command::new("getmail")
            .arg(format!("--getmaildir={}", dir.join("gm").display()))
            .arg("--rcfile=getmailrc"),
        "getmail",
    );
    let oldmail = fs::read_dir(dir.join("gm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("oldmail-")
        })
        .expect("getmail wrote its oldmail file");

    for (tool, file) in [
        ("fetchmail", dir.join("fetchids")),
        ("mpop", dir.join("mpop-uidls")),
        ("getmail", oldmail),
    ] {
        let home = Home::new();
        home.write_config(&server.config(&home, "none", "keep = true\nauth = \"user\""));
        let run = home.run(&[
            "import-state",
            "test",
            "--from",
            tool,
            file.to_str().unwrap(),
        ]);
        run.expect(0);
        assert!(
            run.stderr().contains("recorded 3 message(s)"),
            "{tool}: {}",
            run.stderr()
        );
        home.run(&["sync"]).expect(0);
        assert!(
            home.delivered().is_empty(),
            "{tool}: nothing is fetched again"
        );
    }

    // A file for another account is refused, and nothing is recorded.
    let home = Home::new();
    home.write_config(
        &server
            .config(&home, "none", "keep = true\nauth = \"user\"")
            .replace("user = \"alice\"", "user = \"bob\""),
    );
    let run = home.run(&[
        "import-state",
        "test",
        "--from",
        "fetchmail",
        dir.join("fetchids").to_str().unwrap(),
    ]);
    run.expect(74);
    assert!(
        run.stderr().contains("no UIDs for this account"),
        "{}",
        run.stderr()
    );
    // It names the mailboxes the file holds and the tool, and --key takes one.
    assert!(
        run.stderr().contains("only for alice@127.0.0.1")
            && run.stderr().contains("--key USER@HOST")
            && run.stderr().contains("a fetchmail UID list"),
        "{}",
        run.stderr()
    );
    let run = home.run(&[
        "import-state",
        "test",
        "--from",
        "fetchmail",
        "--key",
        "alice@127.0.0.1",
        dir.join("fetchids").to_str().unwrap(),
    ]);
    run.expect(0);
    assert!(
        run.stderr()
            .contains("recorded 3 message(s) from fetchmail"),
        "{}",
        run.stderr()
    );
}

/// README's quick start: the demo starts its own Dovecot and fetches 300 messages.
#[test]
fn the_demo_script_runs_end_to_end() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .env("POPFETCH", env!("CARGO_BIN_EXE_popfetch"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("300 messages delivered"), "{text}");
    assert!(text.contains("0 message(s) fetched"), "{text}");
}
