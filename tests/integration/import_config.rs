//! `popfetch import-config`: fetchmail's, mpop's and getmail's configurations
//! (tests/fixtures/import-config/, written from each tool's manual and common
//! set-ups) converted as recorded and accepted by popfetch; converted accounts
//! that sync against the test Dovecot; and, after the real fetchmail and mpop
//! fetched the mailbox, `--import-state` so that popfetch fetches nothing again.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::dovecot::{self, certs, numbered};
use crate::support::home::Run;
use crate::support::{Dovecot, Home};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import-config")
}

/// Every fixture: (tool, path of the rc file), its golden file beside it with
/// `.toml` added.
fn fixture_files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for tool in ["fetchmail", "mpop", "getmail"] {
        let mut files: Vec<PathBuf> = fs::read_dir(fixtures().join(tool))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|e| e != "toml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "fixtures for {tool}");
        out.extend(files.into_iter().map(|f| (tool.to_string(), f)));
    }
    out
}

/// popfetch in `home`, as user "joe", run in the fixtures directory.
fn popfetch(home: &Home, args: &[&str]) -> std::process::Output {
    home.command()
        .env("USER", "joe")
        .current_dir(fixtures())
        .args(args)
        .output()
        .unwrap()
}

/// The passwords the fixtures hold: never on stdout.
const SECRETS: &[&str] = &[
    "secret1",
    "nothing",
    "alpha",
    "app-password",
    "with \\\"quotes",
    "bobs",
    "s3cret",
    "mailpassword",
    "jeffs-password",
];

/// `import-config --from TOOL RC --write --import-state`, which must succeed.
fn write_and_import(home: &Home, tool: &str, rc: &Path) -> Run {
    let run = home.run(&[
        "import-config",
        "--from",
        tool,
        rc.to_str().unwrap(),
        "--write",
        "--import-state",
    ]);
    run.expect(0);
    run
}

#[test]
fn fixtures_convert_as_recorded_and_without_passwords() {
    let bless = std::env::var_os("POPFETCH_BLESS").is_some();
    let mut stale = Vec::new();
    for (tool, file) in fixture_files() {
        let home = Home::new();
        let relative = file.strip_prefix(fixtures()).unwrap().to_str().unwrap();
        let out = popfetch(&home, &["import-config", "--from", &tool, relative]);
        assert!(
            out.status.success(),
            "{relative}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for secret in SECRETS {
            // As a TOML string would hold it ("nothing" is also a word).
            assert!(
                !text.contains(&format!("\"{secret}")),
                "{relative} shows a password:\n{text}"
            );
        }
        let golden = file.with_file_name(format!(
            "{}.toml",
            file.file_name().unwrap().to_str().unwrap()
        ));
        if bless {
            fs::write(&golden, &text).unwrap();
        } else if fs::read_to_string(&golden).ok().as_deref() != Some(&text) {
            stale.push(format!("{}:\n{text}", golden.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "output differs from the golden file (POPFETCH_BLESS=1 rewrites them):\n{}",
        stale.join("\n")
    );
}

#[test]
fn what_it_writes_and_prints_popfetch_accepts() {
    for (tool, file) in fixture_files() {
        let home = Home::new();
        let relative = file.strip_prefix(fixtures()).unwrap().to_str().unwrap();
        // --write: a new file of mode 0600, with the passwords.
        let out = popfetch(
            &home,
            &["import-config", "--from", &tool, relative, "--write"],
        );
        assert!(
            out.status.success(),
            "{relative}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = home.config_path();
        let mode = fs::metadata(&written).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{relative}");
        let text = fs::read_to_string(&written).unwrap();
        let accounts = home.run(&["accounts"]);
        accounts.expect(0);
        let names = accounts.stdout().lines().count();
        assert_eq!(
            names,
            text.matches("\n[accounts.").count(),
            "{relative}: every account is accepted\n{}",
            accounts.stdout()
        );
        // Never over an existing file.
        let again = popfetch(
            &home,
            &["import-config", "--from", &tool, relative, "--write"],
        );
        assert_eq!(again.status.code(), Some(78), "{relative}");
        assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
        assert_eq!(fs::read_to_string(&written).unwrap(), text);

        // The printed form too, saved by hand.
        let printed = popfetch(&home, &["import-config", "--from", &tool, relative]);
        let path = home.path().join("printed.toml");
        fs::write(&path, &printed.stdout).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        home.run(&["-c", path.to_str().unwrap(), "accounts"])
            .expect(0);
    }
}

#[test]
fn a_file_it_cannot_read_says_where() {
    let home = Home::new();
    let rc = home.path().join("rc");
    fs::write(&rc, "poll a.example\n user b frobnicate\n").unwrap();
    let run = home.run(&["import-config", "--from", "fetchmail", rc.to_str().unwrap()]);
    run.expect(78);
    assert!(
        run.stderr()
            .contains("line 2: `frobnicate` is not a fetchmail option"),
        "{}",
        run.stderr()
    );
    let run = home.run(&["import-config", "--from", "mpop", "/nonexistent/mpoprc"]);
    run.expect(74);
    fs::write(&rc, "[retriever]\ntype = SimpleIMAPSSLRetriever\n").unwrap();
    let run = home.run(&["import-config", "--from", "getmail", rc.to_str().unwrap()]);
    run.expect(78);
    assert!(run.stderr().contains("POP3 only"), "{}", run.stderr());
}

/// A Maildir under `home` for procmail: its rc file.
fn procmailrc(home: &Home) -> PathBuf {
    let rc = home.path().join("procmailrc");
    fs::write(&rc, format!("DEFAULT={}/\n", home.maildir().display())).unwrap();
    rc
}

fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// `popfetch sync --json`: how many messages it fetched.
fn fetched(home: &Home) -> u64 {
    let run = home.run(&["sync", "--json"]);
    run.expect(0);
    let json: serde_json::Value = serde_json::from_str(run.stdout().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {}", run.stdout()));
    json["accounts"][0]["fetched"]
        .as_u64()
        .unwrap_or_else(|| panic!("{json}"))
}

#[test]
fn a_converted_fetchmailrc_syncs_against_dovecot() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    let rc = home.path().join("fetchmailrc");
    write_private(
        &rc,
        &format!(
            "# implicit TLS, the test CA, procmail into a Maildir\npoll 127.0.0.1 with proto pop3 port {port}\n  user '{user}' there with password '{password}' is joe here\n  options ssl sslcertfile '{ca}' sslproto 'TLS1.2+' keep\n  mda '/usr/bin/procmail -m {procmailrc}'\n",
            port = server.tls_port,
            user = dovecot::USER,
            password = dovecot::PASSWORD,
            ca = certs().ca.display(),
            procmailrc = procmailrc(&home).display(),
        ),
    );
    home.run(&[
        "import-config",
        "--from",
        "fetchmail",
        rc.to_str().unwrap(),
        "--write",
    ])
    .expect(0);
    let config = fs::read_to_string(home.config_path()).unwrap();
    assert!(config.contains("tls = \"implicit\""), "{config}");
    assert!(config.contains(&format!("password = \"{}\"", dovecot::PASSWORD)));
    assert_eq!(fetched(&home), 3);
    assert_eq!(home.delivered().len(), 3);
    assert_eq!(fetched(&home), 0, "kept, and not fetched twice");
}

#[test]
fn a_converted_mpoprc_syncs_against_dovecot() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    fs::create_dir_all(home.maildir()).unwrap();
    let rc = home.path().join("mpoprc");
    write_private(
        &rc,
        &format!(
            "defaults\ntls on\ntls_starttls off\ntls_trust_file {ca}\n\naccount dovecot\nhost 127.0.0.1\nport {port}\nuser {user}\npasswordeval echo '{password}'\ndelivery maildir {maildir}\nkeep on\n",
            port = server.tls_port,
            user = dovecot::USER,
            password = dovecot::PASSWORD,
            ca = certs().ca.display(),
            maildir = home.maildir().display(),
        ),
    );
    home.run(&[
        "import-config",
        "--from",
        "mpop",
        rc.to_str().unwrap(),
        "--write",
    ])
    .expect(0);
    let config = fs::read_to_string(home.config_path()).unwrap();
    assert!(config.contains("[accounts.dovecot]"), "{config}");
    assert_eq!(fetched(&home), 3);
    assert_eq!(home.delivered().len(), 3);
}

/// Runs a real tool in `home` (HOME set to it), which must succeed.
fn run_tool(home: &Home, cmd: &mut Command, what: &str) {
    let out = cmd
        .current_dir(home.path())
        .env("HOME", home.path())
        .output()
        .unwrap_or_else(|e| panic!("{what} is needed: apt-get install fetchmail mpop ({e})"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn after_the_real_fetchmail_import_state_fetches_nothing_again() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    // fetchmail keeps its seen list in ~/.fetchids, found by import-config.
    let rc = home.path().join(".fetchmailrc");
    write_private(
        &rc,
        &format!(
            "poll 127.0.0.1 port {port} proto pop3 auth password uidl\n  user \"{user}\" there with password \"{password}\" is joe here\n  options keep sslproto \"\"\n  mda \"/usr/bin/procmail -m {procmailrc}\"\n",
            port = server.port,
            user = dovecot::USER,
            password = dovecot::PASSWORD,
            procmailrc = procmailrc(&home).display(),
        ),
    );
    run_tool(
        &home,
        Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .arg("--nosyslog"),
        "fetchmail",
    );
    assert_eq!(home.delivered().len(), 3, "fetchmail delivered them");
    assert!(home.path().join(".fetchids").exists());

    let run = write_and_import(&home, "fetchmail", &rc);
    assert!(
        run.stderr()
            .contains("recorded 3 message(s) from fetchmail's")
            && run.stderr().contains(".fetchids"),
        "{}",
        run.stderr()
    );
    assert_eq!(fetched(&home), 0, "nothing is fetched again");
    assert_eq!(home.delivered().len(), 3);
}

#[test]
fn after_the_real_mpop_import_state_fetches_nothing_again() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(home.maildir().join(sub)).unwrap();
    }
    // mpop's default uidls_file, ~/.mpop_uidls/%U_at_%H, found by import-config.
    let rc = home.path().join("mpoprc");
    write_private(
        &rc,
        &format!(
            "account dovecot\nhost 127.0.0.1\nport {port}\ntls off\nauth user\nuser {user}\npasswordeval echo '{password}'\nkeep on\ndelivery maildir {maildir}\n",
            port = server.port,
            user = dovecot::USER,
            password = dovecot::PASSWORD,
            maildir = home.maildir().display(),
        ),
    );
    run_tool(
        &home,
        Command::new("mpop").arg("-C").arg(&rc).arg("-a"),
        "mpop",
    );
    assert_eq!(home.delivered().len(), 3, "mpop delivered them");

    let run = write_and_import(&home, "mpop", &rc);
    assert!(
        run.stderr().contains("recorded 3 message(s) from mpop's")
            && run.stderr().contains(".mpop_uidls/alice_at_127.0.0.1"),
        "{}",
        run.stderr()
    );
    assert_eq!(fetched(&home), 0, "nothing is fetched again");
    assert_eq!(home.delivered().len(), 3);
}

#[test]
fn import_state_needs_the_accounts_in_the_config() {
    let home = Home::new();
    let rc = home.path().join("mpoprc");
    write_private(&rc, "account x\nhost h\nuser u\ndelivery mbox ~/mbox\n");
    home.write_config("[accounts.other]\nhost = \"h\"\nuser = \"u\"\ndeliver = \"mbox:~/mbox\"\n");
    let run = home.run(&[
        "import-config",
        "--from",
        "mpop",
        rc.to_str().unwrap(),
        "--import-state",
    ]);
    run.expect(78);
    assert!(
        run.stderr().contains("account \"x\" is not in"),
        "{}",
        run.stderr()
    );
    assert!(run.stdout().contains("[accounts.x]"));
    // -c names the file --write creates.
    let other = home.path().join("sub/popfetch.toml");
    let run = home.run(&[
        "-c",
        other.to_str().unwrap(),
        "import-config",
        "--from",
        "mpop",
        rc.to_str().unwrap(),
        "--write",
    ]);
    run.expect(0);
    assert!(
        run.stderr().contains("with 1 account(s): x"),
        "{}",
        run.stderr()
    );
    home.run(&["-c", other.to_str().unwrap(), "accounts"])
        .expect(0);
    // A file whose mailboxes are all IMAP says so.
    let rc = home.path().join("fetchmailrc");
    write_private(&rc, "poll imap.example proto imap user me\n");
    let run = home.run(&["import-config", "--from", "fetchmail", rc.to_str().unwrap()]);
    run.expect(78);
    assert!(
        run.stderr().contains("no POP3 mailbox") && run.stderr().contains("protocol imap"),
        "{}",
        run.stderr()
    );
}

#[test]
fn after_the_real_getmail_import_state_fetches_nothing_again() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    // getmail keeps oldmail-SERVER-PORT-USER beside its rc file.
    let dir = home.path().join(".getmail");
    fs::create_dir_all(&dir).unwrap();
    let rc = dir.join("getmailrc");
    write_private(
        &rc,
        &format!(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\nusername = {user}\npassword_command = (\"/bin/echo\", \"{password}\")\n\n[destination]\ntype = MDA_external\npath = /bin/true\nallow_root_commands = true\n\n[options]\nread_all = false\ndelete = false\n",
            port = server.port,
            user = dovecot::USER,
            password = dovecot::PASSWORD,
        ),
    );
    // getmail refuses a Maildir as root (as CI runs): an MDA that drops them.
    run_tool(
        &home,
        Command::new("getmail")
            .arg(format!("--getmaildir={}", dir.display()))
            .arg("--rcfile=getmailrc"),
        "getmail",
    );
    let run = write_and_import(&home, "getmail", &rc);
    assert!(
        run.stderr()
            .contains("recorded 3 message(s) from getmail's")
            && run.stderr().contains("oldmail-127.0.0.1-"),
        "{}",
        run.stderr()
    );
    let config = fs::read_to_string(home.config_path()).unwrap();
    assert!(
        config.contains("password_command = \"/bin/echo"),
        "{config}"
    );
    // Plain POP3 on loopback, as getmail's SimplePOP3Retriever logged in.
    let config = config.replace("tls = \"none\"", "tls = \"none\"\nauth = \"user\"");
    fs::write(home.config_path(), config).unwrap();
    assert_eq!(fetched(&home), 0, "nothing is fetched again");
}
