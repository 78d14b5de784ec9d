//! mpop's configuration (`~/.mpoprc` or `$XDG_CONFIG_HOME/mpop/config`, see
//! mpop(1)): `defaults`, `account NAME [: OTHER,...]` with its inheritance, one
//! command and its argument a line; each account becomes a [`Mailbox`].

use super::command::{mda, without_shell};
use super::{sha256_fingerprint, size, Draft, Mailbox, MigrateError, SeenFile};

/// The commands of one account, as set (later ones replace earlier ones).
#[derive(Debug, Clone, Default)]
struct Settings(Vec<(String, String)>);

impl Settings {
    fn set(&mut self, command: &str, arg: &str) {
        match self.0.iter_mut().find(|(c, _)| c == command) {
            Some(slot) => slot.1 = arg.to_string(),
            None => self.0.push((command.to_string(), arg.to_string())),
        }
    }

    fn get(&self, command: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(c, _)| c == command)
            .map(|(_, a)| a.as_str())
    }

    fn merge(&mut self, other: &Settings) {
        for (c, a) in &other.0 {
            self.set(c, a);
        }
    }
}

/// One line: the command and its argument, unquoted.
fn line(text: &str, number: usize) -> Result<Option<(String, String)>, MigrateError> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let (command, arg) = match text.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (text, ""),
    };
    let arg = match unquote(arg) {
        Some(Ok(arg)) => arg,
        Some(Err(())) => {
            return Err(MigrateError::Syntax {
                line: number,
                what: "a quoted argument ends in a backslash".into(),
            })
        }
        None => arg.to_string(),
    };
    Ok(Some((command.to_string(), arg)))
}

/// The text inside `"…"` with its backslash escapes undone; `None` when `arg` is
/// not quoted.
fn unquote(arg: &str) -> Option<Result<String, ()>> {
    if arg.len() < 2 || !arg.starts_with('"') || !arg.ends_with('"') {
        return None;
    }
    let mut out = String::new();
    let mut chars = arg[1..arg.len() - 1].chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => return Some(Err(())),
            }
        } else {
            out.push(c);
        }
    }
    Some(Ok(out))
}

fn on(arg: &str) -> bool {
    arg.is_empty() || arg == "on"
}

/// The accounts of a file, named, in file order.
type Accounts = Vec<(String, Settings)>;

/// Reads the accounts of an mpoprc, each with its defaults and inheritance, and
/// notes on the lines that cannot be converted.
fn accounts(text: &str) -> Result<(Accounts, Vec<String>), MigrateError> {
    let mut defaults = Settings::default();
    let mut accounts: Accounts = Vec::new();
    let mut in_account = false;
    let mut notes = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let Some((command, arg)) = line(raw, number)? else {
            continue;
        };
        match command.as_str() {
            "defaults" => in_account = false,
            "account" => {
                let (name, parents) = match arg.split_once(':') {
                    Some((n, p)) => (n.trim(), Some(p)),
                    None => (arg.trim(), None),
                };
                if name.is_empty() {
                    return Err(MigrateError::Syntax {
                        line: number,
                        what: "`account` needs a name".into(),
                    });
                }
                let mut settings = defaults.clone();
                for parent in parents.into_iter().flat_map(|p| p.split(',')) {
                    let parent = parent.trim();
                    let Some((_, found)) = accounts.iter().find(|(n, _)| n == parent) else {
                        return Err(MigrateError::Syntax {
                            line: number,
                            what: format!("account {name} inherits from {parent}, which is not defined before it"),
                        });
                    };
                    settings.merge(&found.clone());
                }
                accounts.retain(|(n, _)| n != name);
                accounts.push((name.to_string(), settings));
                in_account = true;
            }
            "eval" => notes.push(format!(
                "line {number}: `eval {arg}` sets a value from a command's output when mpop reads its file; run the command and write the value in"
            )),
            _ if in_account => {
                accounts
                    .last_mut()
                    .expect("in an account")
                    .1
                    .set(&command, &arg);
            }
            _ => defaults.set(&command, &arg),
        }
    }
    Ok((accounts, notes))
}

/// Converts an mpoprc.
pub(crate) fn convert(text: &str) -> Result<Draft, MigrateError> {
    let (accounts, mut notes) = accounts(text)?;
    let mut out: Vec<Mailbox> = Vec::new();
    let mut mailboxes: Vec<(String, String, String, String)> = Vec::new();
    for (name, settings) in &accounts {
        let host = settings.get("host").unwrap_or("");
        let user = settings.get("user").unwrap_or("");
        if host.is_empty() {
            notes.push(format!("account {name}: no host, so nothing to fetch"));
            continue;
        }
        if user.is_empty() {
            notes.push(format!(
                "account {name}: no user (popfetch logs in with a user name and a password or token)"
            ));
            continue;
        }
        let port = settings.get("port").unwrap_or("");
        // mpop's own man page ends with `account default : freemail`: the same
        // mailbox under a second name, fetched once.
        let id = (host.to_string(), port.to_string(), user.to_string());
        if let Some((first, ..)) = mailboxes
            .iter()
            .find(|(_, h, p, u)| (h, p, u) == (&id.0, &id.1, &id.2))
        {
            notes.push(format!(
                "account {name} is account {first} under another name (the same user, host and port): converted once, as {first}"
            ));
            continue;
        }
        mailboxes.push((name.clone(), id.0, id.1, id.2));
        out.push(mailbox(name, settings));
    }
    Ok(Draft {
        tool: None,
        accounts: out,
        notes,
    })
}

/// The commands popfetch has no use for, and why.
const UNMAPPED: &[(&str, &str)] = &[
    (
        "pipelining",
        "popfetch pipelines whenever the server offers PIPELINING",
    ),
    (
        "tls_crl_file",
        "popfetch has no CRL file; the system's revocation checks apply",
    ),
    (
        "tls_priorities",
        "popfetch takes TLS parameters from the system; only tls_min_version can be set",
    ),
    (
        "tls_min_dh_prime_bits",
        "popfetch takes TLS parameters from the system (and mpop deprecated it)",
    ),
    ("ntlmdomain", "popfetch has no NTLM"),
    ("socket", "popfetch connects over TCP only (host and port)"),
];

/// The commands converted above.
const KNOWN: &[&str] = &[
    "host",
    "port",
    "tls",
    "tls_starttls",
    "tls_trust_file",
    "tls_fingerprint",
    "tls_certcheck",
    "tls_host_override",
    "tls_cert_file",
    "tls_key_file",
    "source_ip",
    "proxy_host",
    "proxy_port",
    "timeout",
    "user",
    "password",
    "passwordeval",
    "auth",
    "delivery",
    "keep",
    "only_new",
    "killsize",
    "skipsize",
    "filter",
    "received_header",
    "uidls_file",
];

fn mailbox(name: &str, s: &Settings) -> Mailbox {
    let mut m = Mailbox {
        name: name.to_string(),
        origin: format!("mpop account {name}"),
        ..Default::default()
    };
    let get = |c: &str| s.get(c).filter(|a| !a.is_empty());
    let host = s.get("host").unwrap_or_default();
    let user = s.get("user").unwrap_or_default();
    m.set("host", host);
    if let Some(port) = get("port") {
        match port.parse::<i64>() {
            Ok(n) => m.set("port", n),
            Err(_) => m.note(format!("`port {port}`: popfetch takes a port number")),
        }
    }
    let tls = s.get("tls").is_some_and(on);
    let starttls = s.get("tls_starttls").is_none_or(on);
    m.set(
        "tls",
        match (tls, starttls) {
            (true, false) => "implicit",
            (true, true) => "starttls",
            (false, _) => "none",
        },
    );
    if !tls {
        m.note("mpop's `tls off` (its default): popfetch then never sends a cleartext password (auth = \"auto\" picks a method that hides it, if the server has one); prefer `tls = \"implicit\"` or `\"starttls\"`");
    }
    match s.get("tls_trust_file") {
        Some("system") | None => {}
        Some("") => {
            m.note("`tls_trust_file` empty (trust no CA): popfetch needs a CA or a tls_fingerprint")
        }
        Some(file) => m.set("tls_ca_file", file),
    }
    if let Some(fp) = get("tls_fingerprint") {
        match sha256_fingerprint(fp) {
            Some(fp) => m.set("tls_fingerprint", fp),
            None => m.note(format!("`tls_fingerprint {fp}`: SHA-1 or MD5; popfetch pins SHA-256 only (`popfetch probe` prints it)")),
        }
    }
    if s.get("tls_certcheck") == Some("off") {
        m.note("`tls_certcheck off`: popfetch verifies the certificate; pin it with tls_fingerprint (or, if you must, tls_insecure_skip_verify = true)");
    }
    for (from, to) in [
        ("tls_host_override", "tls_host_override"),
        ("tls_cert_file", "tls_cert_file"),
        ("tls_key_file", "tls_key_file"),
        ("source_ip", "source_ip"),
    ] {
        if let Some(v) = get(from) {
            m.set(to, v);
        }
    }
    if let Some(proxy) = get("proxy_host") {
        let port = get("proxy_port").unwrap_or("1080");
        let proxy = if proxy.contains(':') {
            format!("[{proxy}]")
        } else {
            proxy.to_string()
        };
        m.set("proxy", format!("socks5h://{proxy}:{port}"));
    }
    match get("timeout") {
        Some("off") => {
            m.note("`timeout off`: popfetch always has a timeout (60 s by default, at most 86400)")
        }
        Some(t) => match t.parse::<i64>() {
            Ok(n) => m.set("timeout", n.clamp(1, 86_400)),
            Err(_) => m.note(format!("`timeout {t}`: popfetch takes seconds")),
        },
        None => {}
    }
    m.set("user", user);
    let auth = get("auth").unwrap_or("on");
    let oauth = matches!(auth, "oauthbearer" | "xoauth2");
    if let Some(password) = get("password") {
        m.password = Some(password.to_string());
    }
    if let Some(eval) = get("passwordeval") {
        let key = if oauth {
            "oauth_token_command"
        } else {
            "password_command"
        };
        m.set(key, without_shell(eval));
    }
    match auth {
        "on" => {}
        "user" | "plain" | "login" | "apop" | "cram-md5" | "scram-sha-1" | "scram-sha-256"
        | "oauthbearer" | "xoauth2" => m.set("auth", auth),
        other => m.note(format!("`auth {other}`: popfetch has no such login method")),
    }
    match get("delivery") {
        Some(delivery) => {
            let (method, arg) = delivery
                .split_once(char::is_whitespace)
                .map_or((delivery, ""), |(m, a)| (m, a.trim()));
            let unquoted = unquote(arg).and_then(Result::ok);
            let arg = unquoted.as_deref().unwrap_or(arg);
            match method {
                "mda" => m.set("deliver", format!("mda:{}", mda(arg))),
                "maildir" => m.set("deliver", format!("maildir:{}", arg.trim_end_matches('/'))),
                "mbox" => m.set("deliver", format!("mbox:{arg}")),
                _ => {
                    m.note(format!("`delivery {delivery}`: popfetch delivers to a Maildir, an mbox, an MDA, LMTP, SMTP or IMAP"));
                    m.set("deliver", "maildir:~/Maildir");
                    m.note("deliver = \"maildir:~/Maildir\" stands in for it: change it");
                }
            }
        }
        None => {
            m.set("deliver", "maildir:~/Maildir");
            m.note("mpop had no `delivery` for this account: deliver = \"maildir:~/Maildir\" stands in for it, change it");
        }
    }
    let keep = s.get("keep").is_some_and(on);
    if keep {
        m.set("keep", true);
    }
    if s.get("only_new").is_some_and(|a| !on(a)) {
        m.set("fetch_all", true);
    }
    let kill = get("killsize").filter(|k| *k != "off");
    let skip = get("skipsize").filter(|k| *k != "off");
    match (kill, skip) {
        (Some(k), other) => match size(k) {
            Some(v) => {
                m.set("max_size", v);
                // With keep, mpop only skips what killsize would delete.
                m.set("max_size_action", if keep { "skip" } else { "delete" });
                if let Some(other) = other {
                    m.note(format!("`skipsize {other}` with `killsize {k}`: popfetch has one max_size, which took killsize"));
                }
            }
            None => m.note(format!("`killsize {k}`: not a size")),
        },
        (None, Some(k)) => match size(k) {
            Some(v) => m.set("max_size", v),
            None => m.note(format!("`skipsize {k}`: not a size")),
        },
        (None, None) => {}
    }
    if let Some(filter) = get("filter") {
        if filter.contains("%F") || filter.contains("%S") {
            m.note(format!("`filter {filter}`: popfetch's filter gets the headers on stdin but no %F or %S; read the sender from the headers"));
        } else {
            m.set("filter", without_shell(filter));
        }
    }
    if let Some(r) = s.get("received_header") {
        m.set("received_header", on(r));
    }
    for (command, arg) in &s.0 {
        if let Some((_, why)) = UNMAPPED.iter().find(|(c, _)| c == command) {
            if !arg.is_empty() {
                m.note(format!("`{command} {arg}`: {why}"));
            }
        } else if !KNOWN.contains(&command.as_str()) {
            m.note(format!("`{command}`: not an mpop command popfetch knows"));
        }
    }
    let candidates = match get("uidls_file") {
        Some(file) => vec![file.replace("%U", user).replace("%H", host)],
        None => vec![
            format!("~/.mpop_uidls/{user}_at_{host}"),
            "~/.mpop_uidls".to_string(),
            "~/.local/state/mpop/uidls".to_string(),
        ],
    };
    m.seen = Some(SeenFile { candidates });
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::Value;

    #[test]
    fn defaults_inheritance_and_the_default_alias() {
        let rc = "defaults\ntls on\ndelivery mbox ~/Mail/inbox\n\naccount freemail\nhost pop.freemail.example\nuser joe.smith\npasswordeval gpg2 --no-tty -q -d ~/.mpop-password.gpg\n\naccount freemail2 : freemail\nuser joey\n\naccount default : freemail\n";
        let draft = convert(rc).unwrap();
        let names: Vec<_> = draft.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["freemail", "freemail2"]);
        let joey = &draft.accounts[1];
        assert_eq!(joey.str("user"), Some("joey"));
        assert_eq!(joey.str("host"), Some("pop.freemail.example"));
        assert_eq!(joey.str("tls"), Some("starttls"));
        assert_eq!(joey.str("deliver"), Some("mbox:~/Mail/inbox"));
        assert_eq!(
            joey.str("password_command"),
            Some("gpg2 --no-tty -q -d ~/.mpop-password.gpg")
        );
        assert!(draft.notes[0].contains("account default is account freemail"));
    }

    #[test]
    fn sizes_tls_proxy_and_quotes() {
        let rc = "account a\nhost h\nuser \"u s\"\ntls on\ntls_starttls off\nkillsize 10m\nkeep\nproxy_host 127.0.0.1\nproxy_port 9050\ndelivery mda \"/usr/bin/procmail -f '%F' -d $USER\"\npipelining off\n";
        let a = &convert(rc).unwrap().accounts[0];
        assert_eq!(a.str("user"), Some("u s"));
        assert_eq!(a.str("tls"), Some("implicit"));
        assert_eq!(a.get("max_size"), Some(&Value::Str("10M".into())));
        assert_eq!(a.str("max_size_action"), Some("skip"));
        assert_eq!(a.get("keep"), Some(&Value::Bool(true)));
        assert_eq!(a.str("proxy"), Some("socks5h://127.0.0.1:9050"));
        assert_eq!(
            a.str("deliver"),
            Some(r#"mda:sh -c '/usr/bin/procmail -f "$1" -d $USER' sh %F"#)
        );
        assert!(a.notes.iter().any(|n| n.starts_with("`pipelining off`")));
    }

    #[test]
    fn an_unknown_parent_is_an_error() {
        assert!(matches!(
            convert("account b : a\nhost h\n"),
            Err(MigrateError::Syntax { line: 1, .. })
        ));
    }
}
