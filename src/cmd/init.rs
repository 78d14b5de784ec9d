//! `popfetch init`: the answers for a first configuration file — given as flags or
//! asked at a terminal — checked when they are given, so that a mistake is caught
//! now and not at the first sync, and rendered as TOML (strings by `toml_string`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use crate::config::keys::{self, name as key, DefaultValue};
use crate::config::TlsMode;
use crate::deliver::{self, Delivery};
use crate::sys::expand::toml_string;

/// What the user may give on the command line instead of answering questions.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Given {
    /// The POP3 server's host name, without a port
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The server's port [default: 995 with implicit TLS, else 110]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// How to secure the connection [default: implicit]
    #[arg(long, value_enum, value_name = "MODE")]
    pub tls: Option<TlsMode>,
    /// The login name on the server
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Where mail goes: maildir:PATH, mbox:PATH or mda:COMMAND ARGS; a bare path is
    /// a Maildir, and a path must be absolute or start with ~/
    #[arg(long, value_name = "TARGET")]
    pub deliver: Option<String>,
    /// Leave messages on the server after delivery (asked at a terminal otherwise)
    #[arg(long)]
    pub keep: bool,
}

/// Checked answers, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answers {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: String,
    pub deliver: String,
    pub keep: bool,
}

/// A host answer: a plain host, or one that carries a port.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Plain(String),
    WithPort(String, u16),
}

fn check_host(text: &str) -> Result<Host, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the host is empty".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} is not a host name"));
    }
    // One colon is host:port; more is an IPv6 address, which is left alone.
    if let Some((host, port)) = text.rsplit_once(':') {
        if !host.contains(':') {
            return match port.parse::<u16>() {
                Ok(port) if port > 0 && !host.is_empty() => {
                    Ok(Host::WithPort(host.to_string(), port))
                }
                _ => Err(format!("{text:?} is not a host name")),
            };
        }
    }
    Ok(Host::Plain(text.to_string()))
}

fn check_user(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the user name is empty".into());
    }
    if text.chars().any(char::is_control) {
        return Err("the user name holds a control character".into());
    }
    Ok(text.to_string())
}

/// A delivery target read as the config will read it, and written back with its
/// path made absolute (`~` expanded), so that a cron job and a shell deliver to the
/// same place. A bare path is a Maildir.
fn check_deliver(text: &str, home: &Path) -> Result<String, String> {
    let text = text.trim();
    let text = match text.split_once(':') {
        Some((kind, rest)) if deliver::is_kind(kind) => format!("{kind}:{}", rest.trim()),
        _ => format!("maildir:{text}"),
    };
    Ok(Delivery::parse(&text, home)?.to_string())
}

/// The answers: given ones are checked (an error names the flag to fix), missing
/// ones are asked at a terminal, else take their defaults.
pub(crate) fn answers(given: &Given, home: &Path) -> Result<Answers, String> {
    let terminal = std::io::stdin().is_terminal();
    let mut port = given.port;
    let host = match &given.host {
        Some(text) => match check_host(text)? {
            Host::Plain(host) => host,
            Host::WithPort(host, p) => {
                return Err(format!(
                    "--host {text}: give the port on its own, as --host {host} --port {p}"
                ))
            }
        },
        None if terminal => loop {
            match check_host(&ask("POP3 server", "pop.example.com")) {
                Ok(Host::Plain(host)) => break host,
                Ok(Host::WithPort(host, p)) => {
                    if yes(&format!("Use host {host} and port {p}?"), true) {
                        port = Some(p);
                        break host;
                    }
                }
                Err(e) => eprintln!("{e}"),
            }
        },
        None => "pop.example.com".to_string(),
    };
    let tls = match given.tls {
        Some(tls) => tls,
        None if terminal => {
            let default = if port == Some(TlsMode::Starttls.default_port()) {
                "starttls"
            } else {
                "implicit"
            };
            let question = format!(
                "TLS: implicit (port {}), starttls (port {}) or none",
                TlsMode::Implicit.default_port(),
                TlsMode::Starttls.default_port()
            );
            loop {
                let answer = ask(&question, default);
                match <TlsMode as clap::ValueEnum>::from_str(&answer, true) {
                    Ok(tls) => break tls,
                    Err(_) => eprintln!("{answer:?}: answer implicit, starttls or none"),
                }
            }
        }
        None => TlsMode::Implicit,
    };
    let port = match port {
        Some(port) => port,
        None if terminal => loop {
            let default = tls.default_port().to_string();
            match ask("Port", &default).parse::<u16>() {
                Ok(port) if port > 0 => break port,
                _ => eprintln!("a port is a number from 1 to 65535"),
            }
        },
        None => tls.default_port(),
    };
    let user = match &given.user {
        Some(text) => check_user(text).map_err(|e| format!("--user: {e}"))?,
        None if terminal => loop {
            match check_user(&ask("User name", "me@example.com")) {
                Ok(user) => break user,
                Err(e) => eprintln!("{e}"),
            }
        },
        None => "me@example.com".to_string(),
    };
    let deliver = match &given.deliver {
        Some(text) => check_deliver(text, home).map_err(|e| format!("--deliver: {e}"))?,
        None if terminal => loop {
            match check_deliver(&ask("Deliver to", "maildir:~/Mail/inbox"), home) {
                Ok(deliver) => break deliver,
                Err(e) => eprintln!("{e}"),
            }
        },
        None => check_deliver("maildir:~/Mail/inbox", home)?,
    };
    let keep =
        given.keep || (terminal && yes("Keep messages on the server after delivery?", false));
    Ok(Answers {
        host,
        port,
        tls,
        user,
        deliver,
        keep,
    })
}

/// Asks one question on stderr; an empty answer takes the default.
fn ask(question: &str, default: &str) -> String {
    eprint!("{question} [{default}]: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    let answer = answer.trim();
    if answer.is_empty() {
        default.to_string()
    } else {
        answer.to_string()
    }
}

fn yes(question: &str, default: bool) -> bool {
    let hint = if default { "Y/n" } else { "y/N" };
    loop {
        eprint!("{question} [{hint}]: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).unwrap_or(0) == 0 {
            return default;
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "" => return default,
            "y" | "yes" => return true,
            "n" | "no" => return false,
            _ => eprintln!("answer y or n"),
        }
    }
}

/// A key in the template: its doc as a comment, then `name = value`, commented out
/// when `value` is `None` (the key's example, else its default, is shown), then a
/// blank line.
fn entry(out: &mut String, name: &str, value: Option<String>) {
    let key = keys::get(name);
    let mut doc = keys::plain(key.doc);
    if let Some(DefaultValue::Words(words)) = key.default {
        doc.push_str(&format!(" (default: {})", keys::plain(words)));
    }
    comment(out, &doc);
    match value {
        Some(value) => out.push_str(&format!("{name} = {value}\n")),
        None => {
            let shown = match (key.example, key.default) {
                (Some(example), _) => example.to_string(),
                (None, Some(DefaultValue::Toml(value))) => value,
                _ => String::new(),
            };
            out.push_str(&format!("# {name} = {shown}\n"));
        }
    }
    out.push('\n');
}

/// `text` as TOML comment lines of at most 80 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > 80 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The configuration file for these answers, commented from the keys' own docs.
pub(crate) fn render(a: &Answers) -> String {
    let tls = match a.tls {
        TlsMode::Implicit => "implicit",
        TlsMode::Starttls => "starttls",
        TlsMode::None => "none",
    };
    let mut out = String::from(
        "# popfetch configuration: see `man popfetch` and README.md for every key.\n\
         # This file may hold a password, so it must stay readable by you alone (chmod 600).\n\
         \n\
         [defaults]\n\
         # Keys here apply to every account that does not set them.\n\
         \n",
    );
    entry(&mut out, key::timeout, None);
    out.push_str("[accounts.main]\n");
    entry(&mut out, key::host, Some(toml_string(&a.host)));
    entry(&mut out, key::port, Some(a.port.to_string()));
    entry(&mut out, key::tls, Some(toml_string(tls)));
    entry(&mut out, key::user, Some(toml_string(&a.user)));
    comment(
        &mut out,
        "Where the password comes from, in order: password, password_command, the system \
         keyring (`popfetch password set main`), or a prompt at a terminal.",
    );
    entry(&mut out, key::password_command, None);
    entry(&mut out, key::deliver, Some(toml_string(&a.deliver)));
    entry(&mut out, key::keep, Some(a.keep.to_string()));
    entry(&mut out, key::delete_after, None);
    entry(&mut out, key::max_size, None);
    out.pop();
    out
}

/// What to run next, naming the file when it is not the default one.
pub(crate) fn next_steps(config: Option<&Path>) -> String {
    let c = config.map_or(String::new(), |p| {
        format!(" -c {}", shell_words::quote(&p.to_string_lossy()))
    });
    format!(
        "next: `popfetch{c} probe main` checks the server, its certificate and the login; \
         then `popfetch{c} password set main` (or set password_command) and `popfetch{c} sync`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_a_port_are_caught() {
        assert_eq!(
            check_host("pop.example.com:995"),
            Ok(Host::WithPort("pop.example.com".into(), 995))
        );
        assert_eq!(check_host(" h "), Ok(Host::Plain("h".into())));
        assert_eq!(check_host("::1"), Ok(Host::Plain("::1".into())));
        assert!(check_host("h:x").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_host("").is_err());
    }

    #[test]
    fn targets_are_absolute() {
        let home = Path::new("/home/u");
        assert_eq!(
            check_deliver("~/Mail", home).unwrap(),
            "maildir:/home/u/Mail"
        );
        assert_eq!(check_deliver("mbox:/var/m", home).unwrap(), "mbox:/var/m");
        assert_eq!(
            check_deliver("mda:procmail -f %F", home).unwrap(),
            "mda:procmail -f %F"
        );
        assert!(check_deliver("maildir:Mail", home).is_err());
        assert!(check_deliver("mbox:", home).is_err());
    }

    #[test]
    fn what_is_written_reads_back() {
        let answers = Answers {
            host: "h\"\\".into(),
            port: 1995,
            tls: TlsMode::Starttls,
            user: "al\"ice\\\n".into(),
            deliver: "maildir:/x \"y\"".into(),
            keep: true,
        };
        let text = render(&answers);
        let v: toml::Value = toml::from_str(&text).unwrap();
        let main = &v["accounts"]["main"];
        assert_eq!(main["host"].as_str(), Some("h\"\\"));
        assert_eq!(main["user"].as_str(), Some("al\"ice\\\n"));
        assert_eq!(main["deliver"].as_str(), Some("maildir:/x \"y\""));
        assert_eq!(main["tls"].as_str(), Some("starttls"));
        assert_eq!(main["keep"].as_bool(), Some(true));
        // Each key's comment is its declared doc.
        assert!(text.contains(&format!("# {}\n", keys::plain(keys::get("user").doc))));
        assert!(text.contains("\n# timeout = 60\n"), "{text}");
        let comments = text.lines().skip(2).filter(|line| line.starts_with('#'));
        assert!(comments.clone().all(|line| line.len() <= 80), "{text}");
    }
}
