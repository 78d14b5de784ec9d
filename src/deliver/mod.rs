//! Delivery targets: where a fetched message goes. This module owns the whole of a
//! target: reading its `deliver = "kind:…"` value, showing it, opening it, and its
//! errors. Each kind lives in a file of its own, with its own error type, and is
//! listed once in [`KINDS`]; nothing outside this directory names a kind.
//!
//! Each target announces the location of a delivery just before its first byte
//! lands, so the state can record the intent, and can later tell whether an
//! announced delivery completed (crash recovery). Targets read the message as a
//! stream and never see the connection it comes from.

pub(crate) mod envelope;
pub(crate) mod imap;
pub(crate) mod lmtp;
pub(crate) mod maildir;
pub(crate) mod mbox;
pub(crate) mod mda;
mod relay;
pub(crate) mod smtp;

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::net::TlsOptions;
use crate::sys::copy::{self, CopyError};
use crate::sys::expand::{self, toml_string};

/// The config key that names a target.
const KEY: &str = "deliver";

/// Every kind of target. A new kind is a file in this directory and one line here,
/// plus its docs: the README's "Delivery targets" and the `deliver` key's line in
/// `config/keys.rs`. Messages that list the kinds are built from this list.
const KINDS: &[Kind] = &[
    maildir::KIND,
    mbox::KIND,
    mda::KIND,
    lmtp::KIND,
    smtp::KIND,
    imap::KIND,
];

/// One kind of target: the word before the colon in `deliver`, and how to read
/// what follows it.
pub(crate) struct Kind {
    pub name: &'static str,
    /// What follows the colon, for messages: `PATH`, `COMMAND`.
    pub takes: &'static str,
    /// Reads what follows the colon.
    pub parse: fn(&str, &Env) -> Result<Delivery, String>,
}

/// A parsed `deliver` value: one kind's description of where messages go.
/// Shown (`Display`), it reads back as the same value.
pub(crate) trait Spec: fmt::Debug + fmt::Display + Send + Sync {
    /// Opens the target for one session.
    fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError>;

    /// The keyring entry (`USER@HOST`) of the login the target makes, if it makes
    /// one (an IMAP server, an SMTP server with AUTH).
    fn keyring_entry(&self, context: &Context) -> Option<String> {
        let _ = context;
        None
    }

    /// Whether an opened target can say which delivered messages were deleted
    /// there since ([`Target::gone`]): a Maildir can.
    fn tells_deletion(&self) -> bool {
        false
    }
}

/// Where an account's messages go.
#[derive(Debug, Clone)]
pub(crate) struct Delivery(Arc<dyn Spec>);

impl Delivery {
    pub(crate) fn new(spec: impl Spec + 'static) -> Delivery {
        Delivery(Arc::new(spec))
    }

    /// Reads a `deliver` value: the name of a kind, a colon, and what that kind takes.
    /// `home` is what `~` stands for. The error is one line naming the key.
    pub(crate) fn parse(text: &str, home: &Path) -> Result<Delivery, String> {
        let found = text.split_once(':').and_then(|(name, rest)| {
            KINDS
                .iter()
                .find(|kind| kind.name == name)
                .map(|kind| (kind, rest))
        });
        let Some((kind, rest)) = found else {
            return Err(format!(
                "cannot understand deliver = \"{text}\"; use {}",
                usage()
            ));
        };
        (kind.parse)(
            rest,
            &Env {
                home,
                kind: kind.name,
                written: text,
            },
        )
    }

    /// Opens the target for one session.
    pub(crate) fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError> {
        self.0.open(context)
    }

    /// The keyring entry of the target's own login, if it makes one.
    pub(crate) fn keyring_entry(&self, context: &Context) -> Option<String> {
        self.0.keyring_entry(context)
    }

    /// See [`Spec::tells_deletion`].
    pub(crate) fn tells_deletion(&self) -> bool {
        self.0.tells_deletion()
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether `name` is the name of a kind of target.
pub(crate) fn is_kind(name: &str) -> bool {
    KINDS.iter().any(|kind| kind.name == name)
}

/// `"maildir:PATH", "mbox:PATH" or "mda:COMMAND"`.
fn usage() -> String {
    let forms: Vec<String> = KINDS
        .iter()
        .map(|kind| format!("\"{}:{}\"", kind.name, kind.takes))
        .collect();
    match forms.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// What a kind's parser may use: config text expanded as everywhere in the config,
/// with errors that name the `deliver` setting.
pub(crate) struct Env<'a> {
    home: &'a Path,
    kind: &'static str,
    /// The whole setting, for messages.
    written: &'a str,
}

impl Env<'_> {
    /// The one-line error of a value this kind cannot read: the setting as
    /// written, then why.
    pub(crate) fn invalid(&self, why: impl fmt::Display) -> String {
        format!("{KEY} = {}: {why}", toml_string(self.written))
    }

    /// An absolute path: `~`, `~user` and `$VAR` expanded.
    pub(crate) fn path(&self, text: &str) -> Result<PathBuf, String> {
        expand::expand_path(text, self.home).map_err(|e| self.invalid(e))
    }

    /// The value of a kind that takes one path, opened by `open`.
    pub(crate) fn path_spec(&self, text: &str, open: Open) -> Result<Delivery, String> {
        Ok(Delivery::new(PathSpec {
            kind: self.kind,
            path: self.path(text)?,
            open,
        }))
    }

    /// A command split for running without a shell, a leading `~` expanded.
    pub(crate) fn command(&self, text: &str) -> Result<Vec<String>, String> {
        expand::split_command(text, KEY, &format!("{}:", self.kind), self.home)
    }
}

/// The value of a kind that takes one path: `maildir:PATH`, `mbox:PATH`.
#[derive(Debug)]
struct PathSpec {
    kind: &'static str,
    path: PathBuf,
    open: Open,
}

/// Opens a target at a path.
type Open = fn(&Path, &Context) -> Result<Box<dyn Target>, DeliverError>;

impl fmt::Display for PathSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.path.display())
    }
}

impl Spec for PathSpec {
    fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError> {
        (self.open)(&self.path, context)
    }

    fn tells_deletion(&self) -> bool {
        self.kind == maildir::KIND.name
    }
}

/// What opening a target takes from its account.
#[derive(Clone)]
pub(crate) struct Context<'a> {
    /// `timeout`: bounds waiting for an mbox's locks, and a network target's connect
    /// and every read.
    pub timeout: Duration,
    /// `recipient`: what an MDA's `%T` stands for, and the RCPT TO of LMTP and SMTP.
    pub recipient: &'a str,
    /// `mda_timeout`: how long one MDA call may take.
    pub mda_timeout: Duration,
    /// How an SMTP target secures its connection (`smtp_tls`, `smtp_tls_ca_file`).
    pub smtp: Remote,
    /// `smtp_user`: log in to the SMTP server (AUTH) as this user.
    pub smtp_user: Option<&'a str>,
    /// How an IMAP target secures its connection (`imap_tls`, `imap_tls_ca_file`).
    pub imap: Remote,
    /// Where the passwords of a target's login come from.
    pub secrets: &'a dyn Secrets,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("timeout", &self.timeout)
            .field("recipient", &self.recipient)
            .field("smtp", &self.smtp)
            .field("imap", &self.imap)
            .finish_non_exhaustive()
    }
}

/// How a network target secures its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte.
    Implicit,
    /// Plain, upgraded with STARTTLS before anything else; never a fallback.
    Starttls,
    /// No TLS.
    Plain,
}

/// A network target's TLS: how, and whom to trust (verified as for POP3).
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub security: Security,
    /// Whether the account chose `security`, or it is the key's default.
    pub chosen: bool,
    pub tls: TlsOptions,
}

/// The source of the passwords a target logs in with, kept by the configuration.
pub(crate) trait Secrets {
    /// The password of the login `entry` (`USER@HOST`) of a target's `service`
    /// (`"imap"`, `"smtp"`), or why there is none.
    fn password(&self, service: &'static str, entry: &str) -> Result<String, NoSecret>;

    /// The route a target's TCP connection takes to a server not on this
    /// machine: direct, or through the account's proxy (whose password may
    /// come from a command).
    fn route(&self) -> Result<crate::net::Route, NoSecret>;
}

/// A target's login has no password: nothing configured, a command that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct NoSecret {
    pub message: String,
    /// A command that was slow may do better later.
    pub temporary: bool,
}

impl TargetError for NoSecret {
    fn class(&self) -> Class {
        if self.temporary {
            Class::Temporary
        } else {
            Class::Config
        }
    }
}

/// A failed delivery.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    /// The message stream failed (the connection broke); nothing was delivered.
    #[error("the message could not be read from the server")]
    Source(#[source] io::Error),
    /// The intent could not be recorded, so nothing was delivered.
    #[error("cannot record the delivery in the state")]
    State(#[source] Unrecorded),
    /// A location read back from the state is not one this target writes: the
    /// state is damaged, and nothing is touched (issue 15, bug 8).
    #[error("the state names {location:?} as a delivery into {target}, which is not a location popfetch writes there; the state file is damaged: restore it from a backup or remove that line")]
    BadLocation { target: PathBuf, location: String },
    /// The target failed, as its kind tells.
    #[error(transparent)]
    Target(KindError),
}

/// How a failure of a target counts: for the exit code, and whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Something must change first: local I/O failed, a message was refused (EX_IOERR).
    Failed,
    /// Worth retrying later without any change: a lock held, a delivery deferred
    /// (EX_TEMPFAIL).
    Temporary,
    /// The target is named wrongly in the config, such as an MDA that cannot be
    /// started (EX_CONFIG).
    Config,
    /// A network target cannot be reached or secured: connect, DNS, TLS, its
    /// certificate (EX_UNAVAILABLE, as for the POP3 server).
    Unavailable,
    /// A network target refused the login (EX_NOPERM, as for the POP3 server).
    Auth,
}

/// The error type of one kind of target.
pub(crate) trait TargetError: Error + Send + Sync + 'static {
    fn class(&self) -> Class;

    /// Concerns this one message only (an MDA's verdict, a server's reply to one
    /// message): the next message may well be delivered.
    fn is_per_message(&self) -> bool {
        false
    }
}

/// A kind's own error, boxed so that the common error need not know its variants.
#[derive(Debug)]
pub(crate) struct KindError(Box<dyn TargetError>);

impl fmt::Display for KindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for KindError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl<E: TargetError> From<E> for DeliverError {
    fn from(e: E) -> DeliverError {
        DeliverError::Target(KindError(Box::new(e)))
    }
}

impl DeliverError {
    /// How it counts. A broken source, state or location fails the run (EX_IOERR).
    pub(crate) fn class(&self) -> Class {
        match self {
            DeliverError::Target(KindError(e)) => e.class(),
            _ => Class::Failed,
        }
    }

    /// Concerns this one message only: the next message may well be delivered.
    pub(crate) fn is_per_message(&self) -> bool {
        matches!(self, DeliverError::Target(KindError(e)) if e.is_per_message())
    }

    /// The kind's own error, when it is an `E`.
    #[cfg(test)]
    pub(crate) fn of_kind<E: TargetError>(&self) -> Option<&E> {
        match self {
            DeliverError::Target(KindError(e)) => (&**e as &dyn Error).downcast_ref(),
            _ => None,
        }
    }
}

/// Called by a target with the location of a delivery before its first byte lands.
/// It fails when the intent cannot be recorded; the target then delivers nothing.
pub(crate) type Announce<'a> = &'a mut dyn FnMut(&str) -> Result<(), Unrecorded>;

/// What became of one message a flush committed (see [`Target::landed`]).
pub(crate) type Landed = Result<Option<String>, DeliverError>;

/// Why an announced delivery could not be recorded: the state's own error, which
/// the layer that keeps the state knows.
pub(crate) type Unrecorded = Box<dyn Error + Send + Sync>;

/// What recovery found at the location of an interrupted delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// The delivery completed before the run died.
    Delivered,
    /// It did not; whatever it left has been removed.
    NotDelivered,
}

/// A place messages can be delivered to, opened for one session by [`Spec::open`].
///
/// A network target (LMTP, SMTP, IMAP) fits the same shape: it connects in `open`
/// with the [`Context`]'s timeout and TLS settings; the server's refusal of one
/// message is its own error with [`TargetError::is_per_message`], temporary or not
/// as the reply code says; a target that pipelines or batches stages its messages
/// and ends the transaction in `flush`; it says goodbye when dropped.
pub(crate) trait Target {
    /// The next message's size as the POP3 server listed it: an estimate a mail
    /// server may check against its limit (SMTP SIZE, RFC 1870 §6).
    fn expect(&mut self, listed_size: u64) {
        let _ = listed_size;
    }

    /// Delivers `message` (durably, or staged for `flush` when [`Target::stages`])
    /// and returns how many bytes it took. Calls `announce` once, before anything
    /// is written. On error, nothing is left behind.
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError>;

    /// Looks at the location of a delivery that a killed run announced, and cleans
    /// up after it if it did not complete.
    fn recover(&mut self, location: &str) -> Result<Recovered, DeliverError>;

    /// Whether `recover` can tell a completed delivery from one that did not
    /// complete. One that cannot (an MDA, a mail server) always answers
    /// [`Recovered::NotDelivered`], so its intents need not be durable first.
    fn recovers(&self) -> bool {
        true
    }

    /// Whether `deliver` only stages a message, which `flush` then commits: the
    /// caller must make the intents durable before `flush`, and may record the
    /// messages as delivered only after it.
    fn stages(&self) -> bool {
        false
    }

    /// Drops the message `deliver` staged last, as if its delivery had failed: it
    /// could not be recorded as the caller needs.
    fn unstage(&mut self) {}

    /// Commits what `deliver` staged and makes every delivery so far durable. On
    /// error, staged messages are dropped; those already placed are found by
    /// recovery. Called before any DELE.
    fn flush(&mut self) -> Result<(), DeliverError> {
        Ok(())
    }

    /// After a `flush`: what became of each message it committed, in the order
    /// they were staged (empty: all delivered, nothing more to say). `Ok` is a
    /// delivery, with where it landed if the server said (IMAP's APPENDUID, RFC
    /// 4315), which the caller records first; `Err` is a refusal of that message
    /// alone, which stays on the server while the others are delivered.
    fn landed(&mut self) -> Vec<Landed> {
        Vec::new()
    }

    /// Of the `locations` earlier deliveries of the mailbox `owner` landed at,
    /// those no longer there: deleted by the user, not merely moved or renamed.
    /// A target that cannot tell says none.
    fn gone(&mut self, locations: &[&str], owner: &str) -> Result<Vec<String>, DeliverError> {
        let _ = (locations, owner);
        Ok(Vec::new())
    }
}

/// Copies a message in large batches (see [`copy::batched`]): a failed read
/// is the server's, a failed write the target's, which `local` describes.
pub(crate) fn copy_message<E: Into<DeliverError>>(
    message: &mut dyn Read,
    out: &mut dyn Write,
    local: impl Fn(io::Error) -> E,
) -> Result<u64, DeliverError> {
    copy::batched(message, out).map_err(|e| match e {
        CopyError::Read(e) => DeliverError::Source(e),
        CopyError::Write(e) => local(e).into(),
    })
}

/// A context for unit tests: one-second timeouts, recipient "me", verified TLS
/// with the system's roots, and no passwords.
#[cfg(test)]
pub(crate) fn test_context() -> Context<'static> {
    struct NoSecrets;
    impl Secrets for NoSecrets {
        fn password(&self, service: &'static str, entry: &str) -> Result<String, NoSecret> {
            Err(NoSecret {
                message: format!("no {service} password for {entry}"),
                temporary: false,
            })
        }

        fn route(&self) -> Result<crate::net::Route, NoSecret> {
            Ok(crate::net::Route::default())
        }
    }
    let remote = |security| Remote {
        security,
        chosen: false,
        tls: TlsOptions {
            ca_file: None,
            min_version: crate::net::TlsVersion::V1_2,
            skip_verify: false,
            fingerprint: None,
            client: None,
        },
    };
    Context {
        timeout: Duration::from_secs(1),
        recipient: "me",
        mda_timeout: Duration::from_secs(1),
        smtp: remote(Security::Starttls),
        smtp_user: None,
        imap: remote(Security::Implicit),
        secrets: &NoSecrets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::mock::Trickle;

    /// Keeps what is written and the size of each write.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: Vec<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            self.writes.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn parse(text: &str) -> Result<Delivery, String> {
        Delivery::parse(text, Path::new("/home/u"))
    }

    #[test]
    fn every_kind_reads_back_what_it_shows() {
        for text in [
            "maildir:/home/u/Mail",
            "maildir:/cost$/5",
            "mbox:/var/mail/u",
            "mda:procmail",
            "mda:procmail -f %F -a %T",
            "mda:maildrop -d a~b",
            "mda:sh -c 'cat > /tmp/x; exit 75'",
            "mda:prog '' 'a b' a#b '#c' 'x\\ y'",
            "lmtp:/run/dovecot/lmtp",
            "lmtp:127.0.0.1:24",
            "lmtp:[::1]:2424",
            "smtp:localhost",
            "smtp:mx.example:587",
            "imap://me%40gmail.com@imap.gmail.com/INBOX",
            "imap://u@localhost:1143/Archive/2026",
            "imap://u@[::1]/Boîte",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        // Quoted another way, and shown in the one way that reads back.
        let shown = parse("mda:prog \"it's\" \"a\\\"b\"").unwrap().to_string();
        assert_eq!(shown, r#"mda:prog 'it'\''s' 'a"b'"#);
        assert_eq!(parse(&shown).unwrap().to_string(), shown);
    }

    #[test]
    fn shown_values_are_made_plain() {
        let shown = |text| parse(text).unwrap().to_string();
        assert_eq!(shown("maildir:~/Mail"), "maildir:/home/u/Mail");
        assert_eq!(
            shown("imap://me@gmail.com@imap.gmail.com"),
            "imap://me%40gmail.com@imap.gmail.com/INBOX"
        );
        assert_eq!(shown("mbox:~"), "mbox:/home/u");
        assert_eq!(
            shown("mda:procmail -m ~/.procmailrc"),
            "mda:procmail -m /home/u/.procmailrc"
        );
        assert_eq!(shown("mda:a  \"b c\"\td"), "mda:a 'b c' d");
    }

    #[test]
    fn unknown_and_empty_values_name_every_kind() {
        for bad in ["pigeon:/m", "/home/u/Mail", "", ":x", "Maildir:/m"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(r#"use "maildir:PATH", "mbox:PATH""#), "{err}");
            for kind in KINDS {
                assert!(err.contains(&format!("\"{}:{}\"", kind.name, kind.takes)));
            }
        }
        for bad in [
            "maildir:",
            "maildir:rel",
            "mbox:",
            "mda:",
            "mda:  ",
            "mda:a | b",
            "lmtp:",
            "lmtp:host",
            "lmtp:rel/sock",
            "smtp:",
            "smtp:a b",
            "smtp:h:99999",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("deliver"), "{bad}: {err}");
        }
        assert!(is_kind("mda") && !is_kind("MDA") && !is_kind(""));
    }

    #[test]
    fn kinds_have_distinct_plain_names() {
        for (i, kind) in KINDS.iter().enumerate() {
            assert!(kind.name.bytes().all(|b| b.is_ascii_lowercase()));
            assert!(KINDS[..i].iter().all(|other| other.name != kind.name));
        }
    }

    #[test]
    fn each_kind_opens_its_own_target() {
        let dir = tempfile::tempdir().unwrap();
        let context = test_context();
        let maildir = format!("maildir:{}", dir.path().join("md").display());
        let target = parse(&maildir).unwrap().open(&context).unwrap();
        assert!(target.stages() && dir.path().join("md/new").is_dir());
        let mbox = format!("mbox:{}", dir.path().join("sub/inbox").display());
        let target = parse(&mbox).unwrap().open(&context).unwrap();
        assert!(!target.stages() && dir.path().join("sub").is_dir());
        let target = parse("mda:true").unwrap().open(&context).unwrap();
        assert!(!target.stages());
    }

    #[test]
    fn kind_errors_keep_their_class_and_text() {
        let spawn = DeliverError::from(mda::MdaError::Spawn {
            program: "nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
        assert_eq!(spawn.class(), Class::Config);
        assert!(!spawn.is_per_message());
        assert_eq!(spawn.to_string(), "the MDA \"nope\" could not be started");
        assert!(spawn.source().is_some_and(|e| e.is::<io::Error>()));
        assert!(spawn.of_kind::<mda::MdaError>().is_some());
        assert!(spawn.of_kind::<mbox::MboxError>().is_none());
        let deferred = DeliverError::from(mda::MdaError::Deferred {
            program: "x".into(),
        });
        assert!(deferred.class() == Class::Temporary && deferred.is_per_message());
        let source = DeliverError::Source(io::Error::other("reset"));
        assert_eq!(source.class(), Class::Failed);
        assert!(!source.is_per_message());
    }

    #[test]
    fn small_reads_become_whole_buffer_writes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Recorder::default();
        let mut source = Trickle {
            data: &data,
            step: 4042,
        };
        let n = copy_message(&mut source, &mut out, DeliverError::Source).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out.bytes, data);
        assert_eq!(out.writes, vec![65536, 65536, 65536, 3392]);
    }
}
