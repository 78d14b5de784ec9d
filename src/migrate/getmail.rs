//! getmail's rc file (getmail6, `~/.config/getmail/getmailrc` or
//! `~/.getmail/getmailrc`): one `[retriever]`, one `[destination]` and
//! `[options]`, in Python's INI dialect with Python tuples for commands; it
//! becomes one [`Mailbox`].

use super::command::join;
use super::ini::{self, Ini};
use super::{sha256_fingerprint, size, Context, Draft, Mailbox, MigrateError, SeenFile, Value};

/// A Python boolean as getmail reads it.
fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The strings of a Python tuple or list of string literals (`("a", 'b')`), or a
/// lone string; `None` when it is something else.
pub(crate) fn python_strings(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .or_else(|| text.strip_prefix('[').and_then(|t| t.strip_suffix(']')));
    let Some(inner) = inner else {
        // A bare word (getmail accepts `password_command = /path/cmd`).
        return (!text.is_empty() && !text.contains(['"', '\''])).then(|| vec![text.to_string()]);
    };
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(quote) = chars.next() else {
            return Some(out);
        };
        if quote != '"' && quote != '\'' {
            return None;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                c if c == quote => break,
                '\\' => s.push(chars.next()?),
                c => s.push(c),
            }
        }
        out.push(s);
    }
}

/// Converts a getmailrc.
pub(crate) fn convert(text: &str, context: &Context) -> Result<Draft, MigrateError> {
    let ini = ini::parse(text)?;
    let r = |key: &str| ini.get("retriever", key).filter(|v| !v.is_empty());
    let kind = r("type").ok_or_else(|| MigrateError::Other("[retriever] has no type".into()))?;
    let (tls, default_port) = match kind {
        "SimplePOP3Retriever" | "BrokenUIDLPOP3Retriever" | "MultidropPOP3Retriever" => ("none", 110),
        "SimplePOP3SSLRetriever" | "BrokenUIDLPOP3SSLRetriever" | "MultidropPOP3SSLRetriever" => {
            ("implicit", 995)
        }
        other => {
            return Err(MigrateError::Other(format!(
                "[retriever] type = {other}: popfetch fetches over POP3 only (SimplePOP3Retriever, SimplePOP3SSLRetriever and their BrokenUIDL and Multidrop kinds)"
            )))
        }
    };
    let server =
        r("server").ok_or_else(|| MigrateError::Other("[retriever] has no server".into()))?;
    let username =
        r("username").ok_or_else(|| MigrateError::Other("[retriever] has no username".into()))?;
    let mut m = Mailbox {
        name: if username.contains('@') {
            username.to_string()
        } else {
            format!("{username}@{server}")
        },
        origin: format!("getmail [retriever] {kind}, server {server}"),
        ..Default::default()
    };
    m.set("host", server);
    let port = match r("port") {
        Some(p) => match p.parse::<i64>() {
            Ok(n) => {
                m.set("port", n);
                n
            }
            Err(_) => {
                m.note(format!("`port = {p}`: popfetch takes a port number"));
                default_port
            }
        },
        None => default_port,
    };
    m.set("tls", tls);
    if tls == "none" {
        m.note("SimplePOP3Retriever: no TLS; popfetch then never sends a cleartext password (auth = \"auto\" picks a method that hides it, if the server has one); prefer SimplePOP3SSLRetriever's tls = \"implicit\"");
    }
    if kind.starts_with("BrokenUIDL") {
        m.note(format!("type = {kind}: popfetch uses UIDL where the server has it, and a digest of the headers and size where it does not"));
    }
    if kind.starts_with("Multidrop") {
        m.note(format!(
            "type = {kind}: multidrop; popfetch delivers every message to one recipient"
        ));
    }
    for (key, to) in [
        ("ca_certs", "tls_ca_file"),
        ("certfile", "tls_cert_file"),
        ("keyfile", "tls_key_file"),
        ("ssl_cert_hostname", "tls_host_override"),
    ] {
        if let Some(v) = r(key) {
            m.set(to, v);
        }
    }
    if let Some(fps) = r("ssl_fingerprints") {
        let list = python_strings(fps).unwrap_or_else(|| vec![fps.to_string()]);
        let mut pinned = list.iter().filter_map(|f| sha256_fingerprint(f));
        match pinned.next() {
            Some(fp) => m.set("tls_fingerprint", fp),
            None => m.note(format!(
                "`ssl_fingerprints = {fps}`: no SHA-256 fingerprint popfetch can read"
            )),
        }
        if list.len() > 1 {
            m.note("ssl_fingerprints holds several: popfetch pins one, the first");
        }
    }
    if let Some(v) = r("ssl_version") {
        match v.to_ascii_uppercase().replace(['.', '_'], "").as_str() {
            "TLSV12" => {}
            "TLSV13" => m.set("tls_min_version", "1.3"),
            "TLSV11" => m.set("tls_min_version", "1.1"),
            "TLSV1" => m.set("tls_min_version", "1.0"),
            _ => m.note(format!(
                "`ssl_version = {v}`: popfetch sets a lowest TLS version only"
            )),
        }
    }
    if let Some(t) = r("timeout") {
        match t.parse::<f64>() {
            Ok(n) if n >= 1.0 => m.set("timeout", (n as i64).min(86_400)),
            _ => m.note(format!(
                "`timeout = {t}`: popfetch takes whole seconds, at least 1"
            )),
        }
    }
    m.set("user", username);
    let oauth = r("use_xoauth2").and_then(boolean) == Some(true);
    if let Some(password) = r("password") {
        m.password = Some(password.to_string());
    }
    if let Some(command) = r("password_command") {
        match python_strings(command) {
            Some(argv) if !argv.is_empty() => m.set(
                if oauth {
                    "oauth_token_command"
                } else {
                    "password_command"
                },
                join(&argv),
            ),
            _ => m.note(format!(
                "`password_command = {command}`: not a tuple of strings"
            )),
        }
    }
    if oauth {
        m.set("auth", "xoauth2");
        m.note("use_xoauth2: the token command is kept as oauth_token_command; popfetch can also log in itself (oauth_provider, then `popfetch oauth login`)");
    } else if r("use_apop").and_then(boolean) == Some(true) {
        m.set("auth", "apop");
    }
    for key in ini.keys("retriever") {
        let why = match key {
            "envelope_recipient" => "multidrop: popfetch delivers every message to one recipient",
            "delete_dup_msgids" => "popfetch tells messages apart by UIDL, not Message-ID",
            "ssl_ciphers" => "popfetch takes the ciphers from the system",
            "imap_on_delete" | "mailboxes" | "move_on_delete" | "use_peek" | "record_mailbox" => {
                "IMAP's; popfetch fetches over POP3"
            }
            "type" | "server" | "port" | "username" | "password" | "password_command"
            | "use_apop" | "use_xoauth2" | "ca_certs" | "certfile" | "keyfile"
            | "ssl_cert_hostname" | "ssl_fingerprints" | "ssl_version" | "timeout" => continue,
            _ => "not a getmail option popfetch knows",
        };
        m.note(format!("[retriever] `{key}`: {why}"));
    }
    destination(&ini, &mut m);
    options(&ini, &mut m);
    for (section, _) in &ini.sections {
        if section.starts_with("filter") {
            m.note(format!("[{section}]: getmail's filters change or drop a message after it is fetched; popfetch's filter decides from the headers before (exit 0 fetch, 1 delete, 2 skip)"));
        }
    }
    let oldmail = format!("oldmail-{server}-{port}-{username}").replace(['/', ':'], "-");
    m.seen = Some(SeenFile {
        candidates: vec![context.rc_dir.join(oldmail).to_string_lossy().into_owned()],
    });
    Ok(Draft {
        tool: None,
        accounts: vec![m],
        notes: Vec::new(),
    })
}

fn destination(ini: &Ini, m: &mut Mailbox) {
    let d = |key: &str| ini.get("destination", key).filter(|v| !v.is_empty());
    let kind = d("type").unwrap_or("");
    let mut known = vec!["type"];
    match kind {
        "Maildir" => {
            known.push("path");
            match d("path") {
                Some(path) => m.set("deliver", format!("maildir:{}", path.trim_end_matches('/'))),
                None => m.note("[destination] Maildir without a path"),
            }
        }
        "Mboxrd" => {
            known.push("path");
            match d("path") {
                Some(path) => m.set("deliver", format!("mbox:{path}")),
                None => m.note("[destination] Mboxrd without a path"),
            }
        }
        "MDA_external" => {
            known.extend(["path", "arguments"]);
            let mut argv = vec![d("path").unwrap_or("").to_string()];
            if let Some(args) = d("arguments") {
                match python_strings(args) {
                    Some(args) => argv.extend(args),
                    None => m.note(format!("`arguments = {args}`: not a tuple of strings")),
                }
            }
            let mut unknown = Vec::new();
            for arg in argv.iter_mut() {
                *arg = arg
                    .replace("%(sender)", "%F")
                    .replace("%(recipient)", "%T");
                for code in ["%(local)", "%(domain)", "%(mailbox)", "%(unixfrom)"] {
                    if arg.contains(code) {
                        unknown.push(code);
                    }
                }
            }
            if !unknown.is_empty() {
                m.note(format!("{}: popfetch substitutes only %(sender) as %F and %(recipient) as %T", unknown.join(", ")));
            }
            if argv[0].is_empty() {
                m.note("[destination] MDA_external without a path");
            } else {
                m.set("deliver", format!("mda:{}", join(&argv)));
            }
        }
        "MDA_lmtp" => {
            known.extend(["host", "port", "override"]);
            let host = d("host").unwrap_or("localhost");
            if host.starts_with('/') {
                m.set("deliver", format!("lmtp:{host}"));
            } else {
                m.set("deliver", format!("lmtp:{host}:{}", d("port").unwrap_or("24")));
            }
            if let Some(to) = d("override") {
                m.set("recipient", to);
            }
        }
        other => m.note(format!("[destination] type = {other}: popfetch delivers to one Maildir, mbox, MDA, LMTP, SMTP or IMAP target")),
    }
    for key in ini.keys("destination") {
        if known.contains(&key) {
            continue;
        }
        let why = match key {
            "user" | "group" => "popfetch delivers as the user running it",
            "allow_root_commands" => "popfetch runs an MDA as the user running it",
            "ignore_stderr" => "the MDA's stderr goes to popfetch's stderr; a failing MDA leaves the message on the server",
            "unixfrom" => "popfetch's mda gets the message without a From_ line",
            "locktype" => "popfetch locks an mbox with fcntl and a dotlock",
            "fallback" => "popfetch leaves the message on the server when the LMTP server refuses it",
            _ => "not a getmail option popfetch knows",
        };
        m.note(format!("[destination] `{key}`: {why}"));
    }
    if m.get("deliver").is_none() {
        m.set("deliver", "maildir:~/Maildir");
        m.note("deliver = \"maildir:~/Maildir\" stands in for the destination: change it");
    }
}

fn options(ini: &Ini, m: &mut Mailbox) {
    let o = |key: &str| ini.get("options", key).filter(|v| !v.is_empty());
    // getmail leaves mail on the server and fetches every message unless told.
    let delete = o("delete").and_then(boolean).unwrap_or(false);
    if !delete {
        m.set("keep", true);
        if o("delete").is_none() {
            m.note("getmail's default `delete = false` is kept as keep = true");
        }
    }
    let read_all = o("read_all").and_then(boolean).unwrap_or(true);
    if read_all {
        m.set("fetch_all", true);
        m.note("getmail's `read_all = true` (its default) is kept as fetch_all = true, which fetches every message on each run: remove it to fetch only new ones");
    }
    if let Some(days) = o("delete_after") {
        match days.parse::<i64>() {
            Ok(0) => {}
            Ok(n) => m.set("delete_after", format!("{n}d")),
            Err(_) => m.note(format!("`delete_after = {days}`: getmail counts days")),
        }
    }
    if let Some(max) = o("max_message_size") {
        match size(max) {
            Some(Value::Int(0)) => {}
            Some(v) => m.set("max_size", v),
            None => m.note(format!("`max_message_size = {max}`: not a size")),
        }
    }
    if let Some(n) = o("max_messages_per_session") {
        match n.parse::<i64>() {
            Ok(0) => {}
            Ok(n) => m.set("max_messages", n),
            Err(_) => m.note(format!("`max_messages_per_session = {n}`: not a number")),
        }
    }
    if let Some(r) = o("received").and_then(boolean) {
        m.set("received_header", r);
    }
    for key in ini.keys("options") {
        let why = match key {
            "delete" | "read_all" | "delete_after" | "max_message_size"
            | "max_messages_per_session" | "received" => continue,
            "delete_bigger_than" => "popfetch deletes large messages unfetched with max_size and max_size_action = \"delete\"",
            "max_bytes_per_session" => "popfetch limits a run by message count (max_messages)",
            "delivered_to" => "popfetch adds no Delivered-To header",
            "message_log" | "message_log_syslog" | "message_log_verbose" => {
                "popfetch reports to stderr, its status file and the on_new_mail hook"
            }
            "verbose" => "popfetch is quiet by default; -v is verbose",
            "to_oldmail_on_each_mail" => "popfetch records each message durably as it is delivered",
            "fingerprint" => "popfetch -v prints the certificate's SHA-256",
            _ => "not a getmail option popfetch knows",
        };
        m.note(format!("[options] `{key}`: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            local_user: "joe".into(),
            rc_dir: "/home/joe/.getmail".into(),
        }
    }

    #[test]
    fn python_tuples() {
        assert_eq!(
            python_strings("('/usr/bin/pass', \"show\", 'mail\\'s')"),
            Some(vec!["/usr/bin/pass".into(), "show".into(), "mail's".into()])
        );
        assert_eq!(python_strings("(\"one\",)"), Some(vec!["one".into()]));
        assert_eq!(python_strings("/bin/cmd"), Some(vec!["/bin/cmd".into()]));
        assert_eq!(python_strings("(1, 2)"), None);
    }

    #[test]
    fn a_gmail_rc() {
        let rc = "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = pop.gmail.com\nusername = me@gmail.com\npassword_command = (\"/usr/bin/pass\", \"show\", \"gmail\")\n\n[destination]\ntype = MDA_external\npath = /usr/bin/procmail\narguments = (\"-f\", \"%(sender)\")\n\n[options]\ndelete = true\nread_all = false\nmessage_log = ~/.getmail/log\n";
        let draft = convert(rc, &context()).unwrap();
        let m = &draft.accounts[0];
        assert_eq!(m.name, "me@gmail.com");
        assert_eq!(m.str("tls"), Some("implicit"));
        assert_eq!(m.str("password_command"), Some("/usr/bin/pass show gmail"));
        assert_eq!(m.str("deliver"), Some("mda:/usr/bin/procmail -f '%F'"));
        assert_eq!(m.get("keep"), None);
        assert_eq!(m.get("fetch_all"), None);
        assert!(m.notes.iter().any(|n| n.contains("message_log")));
        assert_eq!(
            m.seen.as_ref().unwrap().candidates,
            ["/home/joe/.getmail/oldmail-pop.gmail.com-995-me@gmail.com"]
        );
    }

    #[test]
    fn an_imap_retriever_is_refused() {
        let err = convert("[retriever]\ntype = SimpleIMAPSSLRetriever\n", &context()).unwrap_err();
        assert!(err.to_string().contains("POP3 only"), "{err}");
    }
}
