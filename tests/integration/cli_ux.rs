//! The command line as a person meets it: `init` answers, `sync --dry-run --json`,
//! the one generated man page, completions, and what a real terminal shows while
//! several accounts sync (bars, the password prompt, Ctrl-C), read back from tmux.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::dovecot::{self, numbered};
use crate::support::{Dovecot, Home};

/// popfetch in a detached tmux session on its own socket: the screen is read back
/// as a terminal shows it, so what stays on screen is what a person sees.
struct Screen {
    socket: PathBuf,
}

impl Screen {
    fn start(home: &Home, args: &[&str]) -> Screen {
        let socket = home.path().join("tmux.sock");
        let mut words = vec![env!("CARGO_BIN_EXE_popfetch")];
        words.extend_from_slice(args);
        // The shell lingers after popfetch so its exit code can be read off the screen.
        let line = format!("{}; echo EXIT=$?; sleep 600", shell_words::join(words));
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "40",
            ])
            .arg(line)
            .env_clear()
            .envs(
                home.command()
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
            )
            .env("TERM", "xterm")
            .current_dir(home.path())
            .status()
            .expect("tmux is needed for the terminal tests: apt-get install tmux");
        assert!(status.success());
        Screen { socket }
    }

    fn text(&self) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`, and returns the screen.
    #[track_caller]
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.text();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {text:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["send-keys", "-t", "0"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// Accounts named `names` (three at most) on one Dovecot mailbox, each into its
/// own Maildir; `edit` may change one account's text. Each reaches the mailbox by
/// another host:port, so each has a state and a lock of its own.
fn accounts(
    server: &Dovecot,
    home: &Home,
    names: &[&str],
    extra: &str,
    edit: impl Fn(&str, String) -> String,
) -> String {
    let implicit = server.config(home, "implicit", extra);
    let ways = [
        implicit.clone(),
        server.config(home, "starttls", extra),
        implicit.replace("host = \"127.0.0.1\"", "host = \"localhost\""),
    ];
    assert!(names.len() <= ways.len(), "three ways to one mailbox");
    let mut config = String::new();
    for (name, one) in names.iter().zip(ways) {
        let text = one
            .replace("[accounts.test]", &format!("[accounts.{name}]"))
            .replace(
                &home.maildir().display().to_string(),
                &home.path().join(name).display().to_string(),
            );
        config.push_str(&edit(name, text));
    }
    config
}

/// Lines still on screen that belong to a progress bar.
fn bar_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.contains("messages,") || l.contains("0/0"))
        .collect()
}

#[test]
fn a_failing_account_leaves_no_stale_bars_above_its_error() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    home.write_config(&accounts(
        &server,
        &home,
        &["a", "b", "c"],
        "keep = true",
        |name, text| {
            if name == "b" {
                text.replace(dovecot::PASSWORD, "wrong")
            } else {
                text
            }
        },
    ));
    let screen = Screen::start(&home, &["sync"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=77"), "{text}");
    assert!(text.contains("account \"b\""), "{text}");
    assert!(bar_lines(&text).is_empty(), "stale bars:\n{text}");
    for name in ["a", "c"] {
        assert!(
            text.contains(&format!("{name}: 3 message(s) fetched")),
            "{text}"
        );
    }
}

#[test]
fn the_password_prompt_has_a_line_of_its_own_before_any_bar() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let home = Home::new();
    let with = accounts(&server, &home, &["a"], "keep = true", |_, t| t);
    // By another host name, so that it is a mailbox with a state of its own.
    let without = server
        .config_without_password(&home, "implicit", "keep = true")
        .replace("[accounts.test]", "[accounts.b]")
        .replace("host = \"127.0.0.1\"", "host = \"localhost\"");
    home.write_config(&format!("{with}{without}"));
    let screen = Screen::start(&home, &["sync"]);
    // tmux drops the trailing space of a line.
    let prompt = format!("Password for {}@localhost:", dovecot::USER);
    let text = screen.wait_for(&prompt);
    let line = text.lines().find(|l| l.contains(&prompt)).unwrap();
    assert!(line.starts_with(&prompt), "shares a line: {line:?}\n{text}");
    assert!(
        bar_lines(&text).is_empty(),
        "a bar before the prompt:\n{text}"
    );
    screen.keys(&[dovecot::PASSWORD, "Enter"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "{text}");
    assert!(bar_lines(&text).is_empty(), "stale bars:\n{text}");
    for name in ["a", "b"] {
        assert!(
            text.contains(&format!("{name}: 2 message(s) fetched")),
            "{text}"
        );
    }
}

#[test]
fn ctrl_c_clears_the_bar_says_nothing_is_lost_and_exits_130() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    let home = Home::new();
    // An MDA that ignores SIGINT and takes its time: the interrupt arrives while a
    // message is in flight, with keep off, so anything recorded or deleted early shows.
    home.write_config(&server.config(&home, "implicit", "").replace(
        &format!("deliver = \"maildir:{}\"", home.maildir().display()),
        "deliver = '''mda:sh -c \"trap '' INT; sleep 20; cat >/dev/null\"'''",
    ));
    let screen = Screen::start(&home, &["sync"]);
    screen.wait_for("0/3 messages,");
    screen.keys(&["C-c"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=130"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "popfetch: interrupted: nothing lost, run sync again"),
        "{text}"
    );
    assert!(bar_lines(&text).is_empty(), "stale bar:\n{text}");
    assert_eq!(server.messages().len(), 3, "nothing deleted");
    let state = fs::read_dir(home.state_dir())
        .map(|d| {
            d.map(|e| fs::read_to_string(e.unwrap().path()).unwrap_or_default())
                .collect::<String>()
        })
        .unwrap_or_default();
    assert!(
        !state
            .lines()
            .any(|l| l.starts_with("D ") || l.starts_with("d ")),
        "nothing recorded as delivered: {state}"
    );
}

#[test]
fn dry_run_json_is_json_with_the_plan() {
    let server = Dovecot::start();
    server.add_messages(&[
        b"Date: Tue, 1 Jul 2003 10:52:37 +0200\nFrom: a@example.org\nSubject: one\n\n1\n".to_vec(),
        b"Date: Wed, 2 Jul 2003 10:52:37 -0700\nFrom: b@example.org\nSubject: two\n\n2\n".to_vec(),
    ]);
    let home = Home::new();
    home.write_config(&server.config(&home, "implicit", ""));
    let run = home.run(&["sync", "--dry-run", "--json"]);
    run.expect(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout()));
    let account = &json["accounts"][0];
    assert_eq!(account["account"], "test");
    assert_eq!(account["fetched"], 2, "{json}");
    let plan = account["plan"].as_array().expect("the plan, per message");
    assert_eq!(plan.len(), 2, "{json}");
    for entry in plan {
        assert_eq!(entry["state"], "new", "{json}");
        // RFC 3339, with its zone.
        let date = entry["date"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(date).is_ok(),
            "{date} is not RFC 3339"
        );
        assert!(entry["subject"].is_string(), "{json}");
    }
    // The text plan shows date, sender and subject as `list` does.
    let run = home.run(&["sync", "--dry-run"]);
    run.expect(0);
    let out = run.stdout();
    assert!(out.contains("octets on the server"), "{out}");
    for shown in [
        "2003-07-01 08:52Z",
        "a@example.org",
        "one",
        "2003-07-02 17:52Z",
        "two",
    ] {
        assert!(out.contains(shown), "{shown} missing:\n{out}");
    }
    assert!(home.delivered().is_empty(), "a dry run fetches nothing");
    assert_eq!(server.messages().len(), 2);
}

#[test]
fn init_writes_proper_toml_from_checked_answers() {
    let home = Home::new();
    let file = home.path().join("work.toml");
    let file_arg = file.to_str().unwrap();
    let run = home.run(&[
        "-c",
        file_arg,
        "init",
        "--host",
        "pop.example.com",
        "--port",
        "1995",
        "--user",
        "al\"ice\\",
        "--deliver",
        "~/Mail",
        "--keep",
    ]);
    run.expect(0);
    let text = fs::read_to_string(&file).unwrap();
    let toml: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("init wrote broken TOML ({e}):\n{text}"));
    let main = &toml["accounts"]["main"];
    assert_eq!(main["user"].as_str(), Some("al\"ice\\"), "{text}");
    assert_eq!(main["host"].as_str(), Some("pop.example.com"));
    assert_eq!(main["port"].as_integer(), Some(1995));
    assert_eq!(main["keep"].as_bool(), Some(true));
    let maildir = format!("maildir:{}", home.path().join("Mail").display());
    assert_eq!(main["deliver"].as_str(), Some(maildir.as_str()), "{text}");
    // The next step names the file written and suggests probe.
    let hint = run.stderr();
    assert!(
        hint.contains(&format!("popfetch -c {file_arg} probe main")),
        "{hint}"
    );
    // The written file is one popfetch reads.
    let run = home.run(&["-c", file_arg, "accounts"]);
    run.expect(0);
    assert!(
        run.stdout().contains("al\"ice\\@pop.example.com:1995"),
        "{}",
        run.stdout()
    );

    // Answers that would only fail later are refused now, and nothing is written.
    for (flag, value, says) in [
        ("--host", "pop.example.com:995", "--port"),
        ("--deliver", "Mail/inbox", "absolute"),
        ("--user", "", "user"),
    ] {
        let other = home.path().join("other.toml");
        let run = home.run(&["-c", other.to_str().unwrap(), "init", flag, value]);
        run.expect(64);
        assert!(
            run.stderr().contains(says),
            "{flag} {value}: {}",
            run.stderr()
        );
        assert!(!other.exists());
    }
}

#[test]
fn init_at_a_terminal_splits_host_and_port_and_asks_about_keep() {
    let home = Home::new();
    let screen = Screen::start(&home, &["init"]);
    screen.wait_for("POP3 server");
    screen.keys(&["pop.example.com:1110", "Enter"]);
    screen.wait_for("port 1110");
    screen.keys(&["y", "Enter"]);
    screen.wait_for("TLS");
    screen.keys(&["starttls", "Enter"]);
    screen.wait_for("User name");
    screen.keys(&["me", "Enter"]);
    screen.wait_for("Deliver to");
    screen.keys(&["Enter"]);
    screen.wait_for("Keep");
    screen.keys(&["y", "Enter"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "{text}");
    let written = fs::read_to_string(home.config_path()).unwrap();
    let toml: toml::Value = toml::from_str(&written).unwrap();
    let main = &toml["accounts"]["main"];
    assert_eq!(main["host"].as_str(), Some("pop.example.com"), "{written}");
    assert_eq!(main["port"].as_integer(), Some(1110), "{written}");
    assert_eq!(main["tls"].as_str(), Some("starttls"), "{written}");
    assert_eq!(main["keep"].as_bool(), Some(true), "{written}");
    assert!(text.contains("popfetch probe main"), "{text}");
}

/// One page documents every subcommand and every option, and points at no page
/// that does not exist.
#[test]
fn the_man_page_is_one_complete_page() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let man = fs::read_to_string(root.join("man/popfetch.1")).unwrap();
    assert!(!man.contains("popfetch\\-"), "refers to other pages");
    let command = popfetch::command();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        assert!(
            man.contains(&format!(
                ".SS \"popfetch {}",
                sub.get_name().replace('-', "\\-")
            )),
            "{} has no section",
            sub.get_name()
        );
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    man.contains(&roff),
                    "{} {roff} undocumented",
                    sub.get_name()
                );
            }
        }
    }
    for flag in ["dry\\-run", "json", "jobs", "from", "host", "port", "tls"] {
        assert!(man.contains(&format!("\\-\\-{flag}")), "{flag}");
    }
    assert!(man.contains(".B 70\n"), "exit code 70");
    assert!(man.contains(".B 130\n"), "exit code 130");
}

/// Every argument of every subcommand says what it is, and a subcommand does not
/// advertise global flags that mean nothing to it.
#[test]
fn help_describes_every_argument() {
    let mut command = popfetch::command();
    command.build();
    fn check(cmd: &clap::Command, path: &str) {
        for arg in cmd.get_arguments() {
            if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "{path}: {} has no description",
                arg.get_id()
            );
        }
        for sub in cmd.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()));
        }
    }
    check(&command, "popfetch");
    let home = Home::new();
    let help = home.run(&["init", "--help"]);
    help.expect(0);
    assert!(!help.stdout().contains("--verbose"), "{}", help.stdout());
    let help = home.run(&["accounts", "--help"]);
    help.expect(0);
    assert!(!help.stdout().contains("--verbose"), "{}", help.stdout());
    assert!(!help.stdout().contains("--quiet"), "{}", help.stdout());
    // Both places still work for sync.
    home.run(&["-v", "sync", "--help"]).expect(0);
    home.run(&["sync", "-v", "--help"]).expect(0);
}

/// The bash completion offers the configured account names and the values of --tls.
#[test]
fn completion_offers_account_names_and_tls_values() {
    let home = Home::new();
    home.write_config(
        "[defaults]\nhost = \"h\"\nuser = \"u\"\npassword_command = \"echo x\"\ndeliver = \"maildir:/tmp/x\"\n[accounts.work]\n[accounts.home]\n",
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_popfetch"))
        .parent()
        .unwrap()
        .to_owned();
    let complete = |words: &str, cword: usize| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _popfetch_with_accounts popfetch \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            root.join("completions/popfetch.bash").display()
        );
        let mut path = std::ffi::OsString::from(&bin);
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let out = home
            .command()
            .env("PATH", path)
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .fold(Command::new("bash"), |mut cmd, (k, v)| {
                cmd.env(k, v);
                cmd
            })
            .args(["--norc", "-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names = complete("popfetch sync w", 2);
    assert_eq!(names.trim(), "work", "{names}");
    let names = complete("popfetch list \"\"", 2);
    assert!(
        names.contains("home\n") && names.contains("work"),
        "{names}"
    );
    let values = complete("popfetch probe --tls \"\"", 3);
    for value in ["implicit", "starttls", "none"] {
        assert!(values.contains(value), "{values}");
    }
}
