//! fetchmail's run control file (`~/.fetchmailrc`, see fetchmail(1)): `set`
//! lines, `defaults`, and `poll`/`skip` entries with their server options and
//! user clauses (`user X there with password Y is Z here`, then options); each
//! user of an entry becomes a [`Mailbox`].

use super::command::mda;
use super::{sha256_fingerprint, Context, Draft, Mailbox, MigrateError, SeenFile};

/// One word of the file: `quoted` ones are never keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    quoted: bool,
    line: usize,
}

/// Splits the file into words: `#` comments, "…" and '…' strings with backslash
/// escapes, and `,` `:` `;` as separators (fetchmail ignores them).
fn tokens(text: &str) -> Result<Vec<Token>, MigrateError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() || ",:;".contains(c) => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                let quote = c;
                let start = line;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(MigrateError::Syntax {
                                line: start,
                                what: "a quoted string is not closed".into(),
                            })
                        }
                        Some(c) if c == quote => break,
                        Some('\\') => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some(other) => word.push(other),
                            None => {}
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            word.push(c);
                        }
                    }
                }
                out.push(Token {
                    text: word,
                    quoted: true,
                    line: start,
                });
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",:;#\"'".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token {
                    text: word,
                    quoted: false,
                    line,
                });
            }
        }
    }
    Ok(out)
}

/// Words that only make the file read like English.
const NOISE: &[&str] = &["and", "with", "has", "wants", "options"];

/// Keywords that end a list of names (`is a b c here`, `aka x y`, `smtphost a b`).
const KEYWORDS: &[&str] = &[
    "poll",
    "skip",
    "defaults",
    "set",
    "via",
    "proto",
    "protocol",
    "port",
    "service",
    "auth",
    "authenticate",
    "timeout",
    "envelope",
    "qvirtual",
    "aka",
    "localdomains",
    "interface",
    "monitor",
    "plugin",
    "plugout",
    "principal",
    "esmtpname",
    "esmtppassword",
    "tracepolls",
    "dns",
    "checkalias",
    "uidl",
    "bad-header",
    "user",
    "username",
    "pass",
    "password",
    "passwords",
    "is",
    "to",
    "here",
    "there",
    "folder",
    "smtphost",
    "fetchdomains",
    "smtpaddress",
    "smtpname",
    "antispam",
    "mda",
    "bsmtp",
    "lmtp",
    "preconnect",
    "postconnect",
    "keep",
    "flush",
    "limitflush",
    "fetchall",
    "rewrite",
    "forcecr",
    "stripcr",
    "pass8bits",
    "dropstatus",
    "dropdelivered",
    "mimedecode",
    "idle",
    "ssl",
    "sslcert",
    "sslkey",
    "sslproto",
    "sslcertck",
    "sslcertfile",
    "sslcertpath",
    "sslfingerprint",
    "sslcommonname",
    "limit",
    "warnings",
    "batchlimit",
    "fetchlimit",
    "fetchsizelimit",
    "fastuidl",
    "expunge",
    "properties",
    "showdots",
    "retrieveerror",
    "no",
    "and",
    "with",
    "has",
    "wants",
    "options",
];

/// Options popfetch has no use for, and why. Each takes the number of arguments
/// given (`usize::MAX`: a list of names).
const UNMAPPED: &[(&str, usize, &str)] = &[
    (
        "envelope",
        1,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "qvirtual",
        1,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "aka",
        usize::MAX,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "localdomains",
        usize::MAX,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "fetchdomains",
        usize::MAX,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "interface",
        1,
        "popfetch does not check interfaces; source_ip picks the local address",
    ),
    ("monitor", 1, "popfetch does not watch interfaces"),
    (
        "plugout",
        1,
        "popfetch connects to its SMTP and LMTP targets itself",
    ),
    ("principal", 1, "popfetch has no Kerberos"),
    (
        "esmtpname",
        1,
        "popfetch's SMTP target logs in with smtp_user",
    ),
    (
        "esmtppassword",
        1,
        "popfetch's SMTP target logs in with smtp_user and smtp_password",
    ),
    ("bad-header", 1, "popfetch delivers every message as it is"),
    (
        "folder",
        usize::MAX,
        "folders are IMAP's; popfetch fetches a POP3 mailbox",
    ),
    (
        "smtpaddress",
        1,
        "popfetch sends RCPT TO the `recipient` as it is",
    ),
    (
        "smtpname",
        1,
        "popfetch sends RCPT TO the `recipient` as it is",
    ),
    (
        "antispam",
        usize::MAX,
        "popfetch does not bounce; a refused message stays on the server",
    ),
    (
        "preconnect",
        1,
        "popfetch runs no command before connecting (run it before popfetch in your cron line)",
    ),
    (
        "postconnect",
        1,
        "popfetch runs no command after a poll (on_new_mail and on_error run after a sync)",
    ),
    ("warnings", 1, "popfetch warns once per run"),
    (
        "batchlimit",
        1,
        "popfetch uses one SMTP connection per session",
    ),
    ("fetchsizelimit", 1, "popfetch lists sizes in one command"),
    (
        "fastuidl",
        1,
        "popfetch reads the whole UIDL listing in one command",
    ),
    (
        "expunge",
        1,
        "popfetch deletes with DELE as it goes and commits with QUIT",
    ),
    ("properties", 1, "it is for fetchmail's extensions only"),
    (
        "retrieveerror",
        1,
        "a message that cannot be fetched stays on the server and the run fails",
    ),
    (
        "limitflush",
        0,
        "popfetch leaves large messages on the server (max_size_action = \"delete\" deletes them)",
    ),
    ("rewrite", 0, "popfetch never rewrites headers"),
    (
        "forcecr",
        0,
        "popfetch writes what each target expects (CRLF on SMTP and LMTP)",
    ),
    (
        "stripcr",
        0,
        "popfetch writes what each target expects (LF in a Maildir, an mbox and an MDA)",
    ),
    (
        "pass8bits",
        0,
        "popfetch passes 8-bit messages as they are, and declares 8BITMIME where offered",
    ),
    ("dropstatus", 0, "popfetch never changes a message"),
    ("dropdelivered", 0, "popfetch never changes a message"),
    ("mimedecode", 0, "popfetch never changes a message"),
    (
        "idle",
        0,
        "IDLE is IMAP's; `popfetch daemon` polls every poll_interval",
    ),
    ("showdots", 0, "popfetch shows a progress bar at a terminal"),
    (
        "tracepolls",
        0,
        "popfetch's received_header names the account's server",
    ),
    (
        "dns",
        0,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "checkalias",
        0,
        "multidrop: popfetch fetches one mailbox for one recipient",
    ),
    (
        "uidl",
        0,
        "popfetch always uses UIDL (and a header digest without it)",
    ),
];

/// The options set in one place (`defaults`, an entry, a user clause).
#[derive(Debug, Clone, Default)]
struct Opts {
    proto: Option<String>,
    via: Option<String>,
    port: Option<String>,
    timeout: Option<String>,
    auth: Option<String>,
    plugin: Option<String>,
    remote: Option<String>,
    locals: Option<Vec<String>>,
    password: Option<String>,
    keep: Option<bool>,
    fetchall: Option<bool>,
    flush: Option<bool>,
    ssl: Option<bool>,
    sslproto: Option<String>,
    sslcertck: Option<bool>,
    sslcertfile: Option<String>,
    sslcertpath: Option<String>,
    sslfingerprint: Option<String>,
    sslcommonname: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    mda: Option<String>,
    bsmtp: Option<String>,
    smtphost: Option<Vec<String>>,
    lmtp: Option<bool>,
    limit: Option<String>,
    fetchlimit: Option<String>,
    /// Options that do not map, as written, with why.
    unmapped: Vec<(String, &'static str)>,
}

impl Opts {
    /// `self` with `over` on top.
    fn merged(&self, over: &Opts) -> Opts {
        macro_rules! pick {
            ($($f:ident),*) => { Opts { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* unmapped: {
                let mut u = self.unmapped.clone();
                for x in &over.unmapped { if !u.contains(x) { u.push(x.clone()); } }
                u
            } } };
        }
        pick!(
            proto,
            via,
            port,
            timeout,
            auth,
            plugin,
            remote,
            locals,
            password,
            keep,
            fetchall,
            flush,
            ssl,
            sslproto,
            sslcertck,
            sslcertfile,
            sslcertpath,
            sslfingerprint,
            sslcommonname,
            sslcert,
            sslkey,
            mda,
            bsmtp,
            smtphost,
            lmtp,
            limit,
            fetchlimit
        )
    }
}

/// A `poll` or `skip` entry.
#[derive(Debug, Clone)]
struct Entry {
    keyword: String,
    name: String,
    server: Opts,
    users: Vec<Opts>,
}

/// The parser's place in the token list.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// The argument of `keyword`.
    fn arg(&mut self, keyword: &str, line: usize) -> Result<String, MigrateError> {
        match self.next() {
            Some(t) => Ok(t.text),
            None => Err(MigrateError::Syntax {
                line,
                what: format!("`{keyword}` needs a value"),
            }),
        }
    }

    /// Whether the next token is the (unquoted) keyword `word`.
    fn at_word(&self, word: &str) -> bool {
        self.peek()
            .is_some_and(|t| !t.quoted && t.text.eq_ignore_ascii_case(word))
    }

    /// Names up to the next keyword.
    fn list(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            if !t.quoted && KEYWORDS.contains(&t.text.to_ascii_lowercase().as_str()) {
                break;
            }
            out.push(t.text.clone());
            self.at += 1;
        }
        out
    }
}

/// The file read into its `set` lines, defaults and entries.
struct Rc {
    idfile: Option<String>,
    daemon: Option<String>,
    notes: Vec<String>,
    entries: Vec<Entry>,
}

fn parse(text: &str) -> Result<Rc, MigrateError> {
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    let mut rc = Rc {
        idfile: None,
        daemon: None,
        notes: Vec::new(),
        entries: Vec::new(),
    };
    let mut defaults = Opts::default();
    // Where options go: 0 the defaults, 1 the current entry's server part, 2 its
    // current user.
    let mut level = 0;
    while let Some(token) = p.next() {
        let word = token.text.to_ascii_lowercase();
        if token.quoted {
            return Err(MigrateError::Syntax {
                line: token.line,
                // Never shown: a misplaced string may well be a password.
                what: "a quoted string where a keyword should be".into(),
            });
        }
        match word.as_str() {
            "set" => {
                let what = p.arg("set", token.line)?;
                let lower = what.to_ascii_lowercase();
                match lower.as_str() {
                    "idfile" => rc.idfile = Some(p.arg("set idfile", token.line)?),
                    "daemon" => rc.daemon = Some(p.arg("set daemon", token.line)?),
                    "no" => {
                        let what = p.arg("set no", token.line)?;
                        rc.notes.push(format!(
                            "`set no {what}`: a fetchmail-wide setting popfetch does not have"
                        ));
                    }
                    "logfile" | "postmaster" | "properties" | "pidfile" => {
                        let value = p.arg(&what, token.line)?;
                        let why = match lower.as_str() {
                            "logfile" => "popfetch writes to stderr (the daemon to $XDG_STATE_HOME/popfetch/daemon.log)",
                            "postmaster" => "popfetch bounces nothing; a refused message stays on the server",
                            _ => "popfetch does not have it",
                        };
                        rc.notes.push(format!("`set {what} {value}`: {why}"));
                    }
                    _ => rc.notes.push(format!(
                        "`set {what}`: a fetchmail-wide setting popfetch does not have"
                    )),
                }
            }
            "defaults" => {
                level = 0;
            }
            "poll" | "skip" | "server" => {
                let name = p.arg(&word, token.line)?;
                rc.entries.push(Entry {
                    keyword: if word == "server" {
                        "poll".into()
                    } else {
                        word.clone()
                    },
                    name,
                    server: Opts::default(),
                    users: Vec::new(),
                });
                level = 1;
            }
            "user" | "username" => {
                let name = p.arg(&word, token.line)?;
                let Some(entry) = rc.entries.last_mut().filter(|_| level > 0) else {
                    // `defaults user x` is rare; take it as a default.
                    defaults.remote = Some(name);
                    continue;
                };
                let mut user = Opts::default();
                if p.at_word("here") {
                    p.at += 1;
                    user.locals = Some(vec![name]);
                } else {
                    if p.at_word("there") {
                        p.at += 1;
                    }
                    user.remote = Some(name);
                }
                entry.users.push(user);
                level = 2;
            }
            _ => {
                let target = match level {
                    0 => &mut defaults,
                    1 => &mut rc.entries.last_mut().expect("an entry").server,
                    _ => rc
                        .entries
                        .last_mut()
                        .and_then(|e| e.users.last_mut())
                        .expect("a user"),
                };
                option(&mut p, &token, target)?;
            }
        }
    }
    for entry in &mut rc.entries {
        entry.server = defaults.merged(&entry.server);
    }
    Ok(rc)
}

/// One option at `token`, its arguments taken from `p`.
fn option(p: &mut Parser, token: &Token, o: &mut Opts) -> Result<(), MigrateError> {
    let word = token.text.to_ascii_lowercase();
    let line = token.line;
    if NOISE.contains(&word.as_str()) || word == "here" || word == "there" {
        return Ok(());
    }
    // `no keep`, `nokeep`: a flag turned off.
    let (negated, flag) = if word == "no" {
        (true, p.arg("no", line)?.to_ascii_lowercase())
    } else if let Some(rest) = word.strip_prefix("no").filter(|r| {
        matches!(
            *r,
            "keep"
                | "flush"
                | "fetchall"
                | "rewrite"
                | "stripcr"
                | "forcecr"
                | "pass8bits"
                | "dropstatus"
                | "dropdelivered"
                | "mimedecode"
                | "idle"
                | "sslcertck"
                | "envelope"
                | "dns"
                | "checkalias"
                | "uidl"
                | "limitflush"
                | "showdots"
        )
    }) {
        (true, rest.to_string())
    } else {
        (false, word.clone())
    };
    let on = !negated;
    match flag.as_str() {
        "via" => o.via = Some(p.arg(&flag, line)?),
        "proto" | "protocol" => o.proto = Some(p.arg(&flag, line)?.to_ascii_lowercase()),
        "port" | "service" => o.port = Some(p.arg(&flag, line)?),
        "auth" | "authenticate" => o.auth = Some(p.arg(&flag, line)?.to_ascii_lowercase()),
        "timeout" => o.timeout = Some(p.arg(&flag, line)?),
        "plugin" => o.plugin = Some(p.arg(&flag, line)?),
        "pass" | "password" | "passwords" => o.password = Some(p.arg(&flag, line)?),
        "is" | "to" => {
            let names = p.list();
            if p.at_word("there") {
                p.at += 1;
                o.remote = names.into_iter().next();
            } else {
                if p.at_word("here") {
                    p.at += 1;
                }
                o.locals = Some(names);
            }
        }
        "keep" => o.keep = Some(on),
        "fetchall" => o.fetchall = Some(on),
        "flush" => o.flush = Some(on),
        "ssl" => o.ssl = Some(on),
        "sslcertck" => o.sslcertck = Some(on),
        "sslproto" => o.sslproto = Some(p.arg(&flag, line)?),
        "sslcertfile" => o.sslcertfile = Some(p.arg(&flag, line)?),
        "sslcertpath" => o.sslcertpath = Some(p.arg(&flag, line)?),
        "sslfingerprint" => o.sslfingerprint = Some(p.arg(&flag, line)?),
        "sslcommonname" => o.sslcommonname = Some(p.arg(&flag, line)?),
        "sslcert" => o.sslcert = Some(p.arg(&flag, line)?),
        "sslkey" => o.sslkey = Some(p.arg(&flag, line)?),
        "mda" => o.mda = Some(p.arg(&flag, line)?),
        "bsmtp" => o.bsmtp = Some(p.arg(&flag, line)?),
        "smtphost" | "smtphosts" => o.smtphost = Some(p.list()),
        "lmtp" => o.lmtp = Some(on),
        "limit" => o.limit = Some(p.arg(&flag, line)?),
        "fetchlimit" => o.fetchlimit = Some(p.arg(&flag, line)?),
        _ => {
            let Some((name, args, why)) = UNMAPPED.iter().find(|(n, ..)| *n == flag) else {
                return Err(MigrateError::Syntax {
                    line,
                    what: format!("`{}` is not a fetchmail option", token.text),
                });
            };
            let mut text = if negated {
                format!("no {name}")
            } else {
                name.to_string()
            };
            if !negated {
                let secret = *name == "esmtppassword";
                let values = match *args {
                    0 => Vec::new(),
                    usize::MAX => p.list(),
                    n => {
                        let mut v = Vec::new();
                        // `envelope 2 Delivered-To`: an optional count first.
                        if *name == "envelope"
                            && p.peek().is_some_and(|t| t.text.parse::<u32>().is_ok())
                        {
                            v.push(p.arg(name, line)?);
                        }
                        for _ in 0..n {
                            v.push(p.arg(name, line)?);
                        }
                        v
                    }
                };
                for v in values {
                    text.push(' ');
                    // A password is never written where it could be printed.
                    if secret {
                        text.push('…');
                    } else {
                        text.push_str(&quote(&v));
                    }
                }
            }
            if !(negated && *args == 0) || *name != "uidl" {
                o.unmapped.push((text, why));
            }
        }
    }
    Ok(())
}

/// A value as fetchmail would read it back.
fn quote(v: &str) -> String {
    if v.is_empty() || v.contains(|c: char| c.is_whitespace() || "\"'#,:;".contains(c)) {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

/// Converts a .fetchmailrc.
pub(crate) fn convert(text: &str, context: &Context) -> Result<Draft, MigrateError> {
    let rc = parse(text)?;
    let mut draft = Draft {
        tool: None,
        accounts: Vec::new(),
        notes: rc.notes.clone(),
    };
    for entry in &rc.entries {
        let users = if entry.users.is_empty() {
            vec![Opts::default()]
        } else {
            entry.users.clone()
        };
        for user in &users {
            let opts = entry.server.merged(user);
            match mailbox(entry, &opts, &rc, context) {
                Ok(m) => draft.accounts.push(m),
                Err(note) => draft.notes.push(note),
            }
        }
    }
    Ok(draft)
}

fn mailbox(entry: &Entry, o: &Opts, rc: &Rc, context: &Context) -> Result<Mailbox, String> {
    let remote = o
        .remote
        .clone()
        .unwrap_or_else(|| context.local_user.clone());
    let host = o.via.clone().unwrap_or_else(|| entry.name.clone());
    let mut m = Mailbox {
        name: if remote.contains('@') {
            remote.clone()
        } else {
            format!("{remote}@{}", entry.name)
        },
        origin: format!(
            "fetchmail `{} {}`, user {}",
            entry.keyword, entry.name, remote
        ),
        ..Default::default()
    };
    let proto = o.proto.as_deref().unwrap_or("auto");
    match proto {
        "pop3" | "auto" | "apop" => {}
        other => {
            return Err(format!(
                "`{} {}` user {remote}: protocol {other}: popfetch fetches over POP3 only; not converted",
                entry.keyword, entry.name
            ))
        }
    }
    if entry.keyword == "skip" {
        m.note("fetchmail skipped this entry unless named on its command line; popfetch syncs every account unless named (`popfetch sync ACCOUNT`)");
    }
    if proto == "auto" && o.proto.is_some() {
        m.note("fetchmail's `proto auto`: popfetch speaks POP3");
    }
    m.set("host", host.as_str());
    if let Some(port) = &o.port {
        match port.as_str() {
            "pop3" => m.set("port", 110i64),
            "pop3s" => m.set("port", 995i64),
            p => match p.parse::<i64>() {
                Ok(n) => m.set("port", n),
                Err(_) => m.note(format!("`port {p}`: popfetch takes a port number")),
            },
        }
    }
    let ssl = o.ssl == Some(true);
    let tls = if ssl {
        "implicit"
    } else if o.sslproto.as_deref() == Some("") {
        "none"
    } else {
        m.note("fetchmail used STARTTLS when the server offered it and went on in the clear when it did not: popfetch requires it (tls = \"none\" for a server without STLS)");
        "starttls"
    };
    m.set("tls", tls);
    if let Some(proto) = o.sslproto.as_deref().filter(|p| !p.is_empty()) {
        let version = match proto.to_ascii_lowercase().as_str() {
            "tls1+" => Some("1.0"),
            "tls1.1+" => Some("1.1"),
            "tls1.2+" => Some("1.2"),
            "tls1.3+" | "tls1.3" => Some("1.3"),
            "auto" | "ssl23" => None,
            _ => {
                m.note(format!("`sslproto {proto}`: popfetch sets a lowest TLS version only (tls_min_version, \"1.2\" by default)"));
                None
            }
        };
        if let Some(v) = version.filter(|v| *v != "1.2") {
            m.set("tls_min_version", v);
        }
    }
    if let Some(file) = &o.sslcertfile {
        m.set("tls_ca_file", file.as_str());
    }
    if let Some(path) = &o.sslcertpath {
        m.note(format!("`sslcertpath {}`: popfetch takes one PEM file of CAs (tls_ca_file) besides the system's", quote(path)));
    }
    if let Some(fp) = &o.sslfingerprint {
        match sha256_fingerprint(fp) {
            Some(fp) => m.set("tls_fingerprint", fp),
            None => m.note(format!("`sslfingerprint {}`: an MD5 fingerprint; popfetch pins SHA-256 (`popfetch probe` prints the tls_fingerprint line to paste)", quote(fp))),
        }
    }
    if o.sslcertck == Some(false) {
        m.note("`no sslcertck`: popfetch always verifies the certificate; pin it with tls_fingerprint (or, if you must, tls_insecure_skip_verify = true)");
    }
    for (value, key) in [
        (&o.sslcommonname, "tls_host_override"),
        (&o.sslcert, "tls_cert_file"),
        (&o.sslkey, "tls_key_file"),
    ] {
        if let Some(v) = value {
            m.set(key, v.as_str());
        }
    }
    if let Some(plugin) = &o.plugin {
        match socks_plugin(plugin) {
            Some(proxy) => m.set("proxy", proxy),
            None => m.note(format!("`plugin {}`: popfetch connects itself, directly or through a SOCKS5 proxy (proxy = \"socks5h://HOST:PORT\")", quote(plugin))),
        }
    }
    if let Some(t) = &o.timeout {
        match t.parse::<i64>() {
            Ok(0) => m.note("`timeout 0`: popfetch always has a timeout"),
            Ok(n) => m.set("timeout", n.clamp(1, 86_400)),
            Err(_) => m.note(format!("`timeout {t}`: popfetch takes seconds")),
        }
    }
    m.set("user", remote.as_str());
    m.password = o.password.clone();
    if proto == "apop" {
        m.set("auth", "apop");
    }
    match o.auth.as_deref() {
        None | Some("any") => {}
        Some("password") => m.set("auth", "user"),
        Some(a @ ("cram-md5" | "oauthbearer" | "xoauth2")) => m.set("auth", a),
        Some(other) => m.note(format!("`auth {other}`: popfetch has no such login method")),
    }
    // Where the mail goes.
    let locals = o.locals.clone().unwrap_or_default();
    if locals.len() > 1 {
        m.note(format!(
            "`is {} here`: multidrop; popfetch delivers to one recipient, the first",
            locals.join(" ")
        ));
    }
    let recipient = locals
        .first()
        .filter(|l| *l != "*")
        .cloned()
        .unwrap_or_else(|| context.local_user.clone());
    let mut uses_recipient = true;
    if let Some(command) = &o.mda {
        m.set("deliver", format!("mda:{}", mda(command)));
        uses_recipient = command.contains("%T") || command.contains("%t");
        if command.contains("%t") || command.contains("%f") {
            m.note("`%t` and `%f` in the mda (quoted for the shell): popfetch substitutes %T and %F into their own argument");
        }
    } else if let Some(file) = &o.bsmtp {
        m.note(format!(
            "`bsmtp {}`: popfetch writes no BSMTP; deliver = \"mbox:…\" or an MDA instead",
            quote(file)
        ));
        m.set("deliver", "maildir:~/Maildir");
        m.note("deliver = \"maildir:~/Maildir\" stands in for the bsmtp file: change it");
        uses_recipient = false;
    } else {
        let hosts = o.smtphost.clone().unwrap_or_default();
        if hosts.len() > 1 {
            m.note(format!(
                "`smtphost {}`: popfetch delivers to one server, the first",
                hosts.join(" ")
            ));
        }
        let host = hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_string());
        let (name, port) = match host.rsplit_once('/') {
            Some((h, p)) if !host.starts_with('/') => (h.to_string(), Some(p.to_string())),
            _ => (host.clone(), None),
        };
        if o.lmtp == Some(true) {
            if name.starts_with('/') {
                m.set("deliver", format!("lmtp:{name}"));
            } else {
                m.set(
                    "deliver",
                    format!("lmtp:{name}:{}", port.unwrap_or_else(|| "24".into())),
                );
            }
        } else if name.starts_with('/') {
            m.set("deliver", format!("lmtp:{name}"));
            m.note("an smtphost that is a socket: popfetch speaks LMTP on sockets");
        } else {
            m.set(
                "deliver",
                format!("smtp:{name}:{}", port.unwrap_or_else(|| "25".into())),
            );
            if o.smtphost.is_none() {
                m.note("no mda or smtphost: fetchmail's default, the SMTP server on this machine (port 25), is kept; deliver = \"maildir:~/Maildir\" would skip it");
            }
        }
    }
    if uses_recipient {
        m.set("recipient", recipient);
    }
    if o.keep == Some(true) {
        m.set("keep", true);
    }
    if o.fetchall == Some(true) {
        m.set("fetch_all", true);
    }
    if o.flush == Some(true) {
        m.note("`flush`: popfetch deletes what it delivered unless keep is set; delete_after = \"30d\" with keep = true deletes old messages");
    }
    if let Some(limit) = &o.limit {
        match limit.parse::<i64>() {
            Ok(0) => {}
            Ok(n) => m.set("max_size", n),
            Err(_) => m.note(format!("`limit {limit}`: popfetch takes a size")),
        }
    }
    if let Some(n) = &o.fetchlimit {
        match n.parse::<i64>() {
            Ok(0) => {}
            Ok(n) => m.set("max_messages", n),
            Err(_) => m.note(format!("`fetchlimit {n}`: popfetch takes a number")),
        }
    }
    if let Some(d) = &rc.daemon {
        match d.parse::<u64>() {
            Ok(s) if s > 0 => m.set("poll_interval", format!("{s}s")),
            _ => m.note(format!(
                "`set daemon {d}`: popfetch takes a poll_interval such as \"5m\""
            )),
        }
    }
    for (text, why) in &o.unmapped {
        m.note(format!("`{text}`: {why}"));
    }
    m.seen = Some(SeenFile {
        candidates: vec![rc
            .idfile
            .clone()
            .unwrap_or_else(|| "~/.fetchids".to_string())],
    });
    Ok(m)
}

/// `nc -X 5 -x HOST:PORT %h %p` (OpenBSD netcat through a SOCKS5 proxy, which
/// resolves the name) as `socks5h://HOST:PORT`.
fn socks_plugin(plugin: &str) -> Option<String> {
    let argv = shell_words::split(plugin).ok()?;
    let program = argv.first()?.rsplit('/').next()?;
    if !matches!(program, "nc" | "netcat" | "nc.openbsd") {
        return None;
    }
    let mut version_5 = false;
    let mut proxy = None;
    let mut rest = Vec::new();
    let mut args = argv[1..].iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-X" => version_5 = args.next().is_some_and(|v| v == "5"),
            "-x" => proxy = args.next().cloned(),
            other => rest.push(other),
        }
    }
    let proxy = proxy?;
    if !version_5 || rest != ["%h", "%p"] {
        return None;
    }
    let proxy = if proxy.contains(':') {
        proxy
    } else {
        format!("{proxy}:1080")
    };
    Some(format!("socks5h://{proxy}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::Value;

    fn context() -> Context {
        Context {
            local_user: "joe".into(),
            rc_dir: "/home/joe".into(),
        }
    }

    #[test]
    fn the_tokenizer_handles_quotes_comments_and_separators() {
        let t =
            tokens("poll a.example, user \"x y\"; # note\npass 'p\\'w'\nsmtphost \"::1\"").unwrap();
        let words: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            words,
            [
                "poll",
                "a.example",
                "user",
                "x y",
                "pass",
                "p'w",
                "smtphost",
                "::1"
            ]
        );
        assert_eq!(t[4].line, 2);
        assert!(tokens("poll \"a").is_err());
    }

    #[test]
    fn user_clauses_map_remote_and_local_names() {
        let rc = "defaults proto pop3 keep\npoll pop.example.com with proto POP3 port 995 and options ssl:\n  user 'jsmith' there with password 'secret' is 'john' here options fetchall limit 100000\n  user \"other\" there is 'jane' here nokeep\n";
        let draft = convert(rc, &context()).unwrap();
        assert_eq!(draft.accounts.len(), 2);
        let a = &draft.accounts[0];
        assert_eq!(a.name, "jsmith@pop.example.com");
        assert_eq!(a.str("user"), Some("jsmith"));
        assert_eq!(a.password.as_deref(), Some("secret"));
        assert_eq!(a.str("recipient"), Some("john"));
        assert_eq!(a.str("tls"), Some("implicit"));
        assert_eq!(a.get("port"), Some(&Value::Int(995)));
        assert_eq!(a.get("keep"), Some(&Value::Bool(true)));
        assert_eq!(a.get("fetch_all"), Some(&Value::Bool(true)));
        assert_eq!(a.get("max_size"), Some(&Value::Int(100000)));
        assert_eq!(a.str("deliver"), Some("smtp:localhost:25"));
        let b = &draft.accounts[1];
        assert_eq!(b.str("recipient"), Some("jane"));
        assert_eq!(b.get("keep"), None);
    }

    #[test]
    fn mda_lmtp_plugin_and_what_does_not_map() {
        let rc = "set daemon 300\nset idfile \"~/.fid\"\npoll mail.example via 10.0.0.1 plugin \"nc -X 5 -x 127.0.0.1:9050 %h %p\" envelope 2 Delivered-To localdomains example.org example.net\n user bob mda \"/usr/bin/procmail -d %T\" mimedecode sslfingerprint \"00:11\"\npoll other user x smtphost /var/run/lmtp lmtp\npoll imap.example proto imap user y\n";
        let draft = convert(rc, &context()).unwrap();
        let a = &draft.accounts[0];
        assert_eq!(a.str("host"), Some("10.0.0.1"));
        assert_eq!(a.str("proxy"), Some("socks5h://127.0.0.1:9050"));
        assert_eq!(a.str("deliver"), Some("mda:/usr/bin/procmail -d %T"));
        assert_eq!(a.str("recipient"), Some("joe"));
        assert_eq!(a.str("poll_interval"), Some("300s"));
        assert_eq!(a.seen.as_ref().unwrap().candidates, ["~/.fid"]);
        for want in [
            "`envelope 2 Delivered-To`",
            "`localdomains example.org example.net`",
            "`mimedecode`",
            "MD5",
        ] {
            assert!(
                a.notes.iter().any(|n| n.contains(want)),
                "{want}: {:?}",
                a.notes
            );
        }
        assert_eq!(draft.accounts[1].str("deliver"), Some("lmtp:/var/run/lmtp"));
        assert!(draft.notes.iter().any(|n| n.contains("protocol imap")));
    }

    #[test]
    fn passwords_never_reach_a_note_or_an_error() {
        let draft = convert("poll a user b esmtppassword hunter2\n", &context()).unwrap();
        assert!(!format!("{draft:?}").contains("hunter2"));
        let err = convert("poll a user b \"hunter2\"\n", &context()).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn an_unknown_word_is_a_syntax_error_with_its_line() {
        let err = convert("poll a\n user b frobnicate\n", &context()).unwrap_err();
        assert_eq!(
            err,
            MigrateError::Syntax {
                line: 2,
                what: "`frobnicate` is not a fetchmail option".into()
            }
        );
    }
}
