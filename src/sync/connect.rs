//! Opening a logged-in POP3 session for an account — the secret, TLS, the
//! connection, STLS, the login — and reading what is on the server, with a digest of
//! the headers standing in for unique-ids on servers without UIDL.

use std::collections::HashSet;
use std::io::Read;
use std::thread::JoinHandle;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::config::{Account, AuthMethod, TlsMode};
use crate::net::{self, CertificateDetails, CertificateProblem, Stream, TlsConfig, TlsConfigError};
use crate::pop3::proto::response::apop_timestamp;
use crate::pop3::proto::sasl::tls_server_end_point;
use crate::pop3::{
    self, ChannelBinding, Client, Credentials, Flow, ListedMessage, Listing, Mechanism, Peer,
    Session, Status, Trace, Wire,
};
use crate::secret::Secret;
use crate::sync::auth::{self, Login, Offer};
use crate::sync::policy;

/// How long a look at a silent port may take to see whether it speaks TLS.
const TLS_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// How much of a message's headers we read through TOP.
const MAX_HEADERS: u64 = 256 * 1024;

/// Resolves the secret, connects, secures and logs in.
pub(crate) fn open_session(account: &Account, trace: Option<Trace>) -> Result<Session<Stream>> {
    open_prepared_session(account, trace, prepare_tls(account))
}

/// As [`open_session`], with the TLS setup already started by [`prepare_tls`].
pub(crate) fn open_prepared_session(
    account: &Account,
    trace: Option<Trace>,
    tls: PreparedTls,
) -> Result<Session<Stream>> {
    let secret = secret(account)?;
    let client = connect(account, trace, tls)?;
    login(client, account, &secret).map_err(|e| match &account.oauth {
        Some(oauth) if refused_login(&e) => {
            let store = oauth.store(&account.state_dir);
            match crate::oauth::store::drop_access(&store, &secret) {
                Ok(()) => e.context(format!(
                    "the server refused the OAuth access token (dropped: the next run gets a new one; if that is refused too, run popfetch oauth login {})",
                    account.name
                )),
                Err(_) => e,
            }
        }
        _ => e,
    })
}

/// The server turned the credentials down (not a network or protocol failure).
fn refused_login(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| pop3_error(cause).is_some_and(|e| e.kind() == pop3::ErrorKind::Auth))
}

/// The POP3 error in one link of an error chain, bare or with its advice.
pub(crate) fn pop3_error<'a>(
    cause: &'a (dyn std::error::Error + 'static),
) -> Option<&'a pop3::Error> {
    match cause.downcast_ref::<Advised>() {
        Some(advised) => Some(&advised.error),
        None => cause.downcast_ref::<pop3::Error>(),
    }
}

/// The TLS setup of an account, being built on a thread of its own.
pub(crate) struct PreparedTls(Option<JoinHandle<Result<TlsConfig, TlsConfigError>>>);

/// Starts building the account's TLS setup, if it uses TLS: reading
/// tls_ca_file and loading the system's roots, which native-tls does eagerly
/// (some 40 ms of CPU with OpenSSL 3, see the README). It runs on a thread while
/// the caller does other work (taking the lock, opening the target, reading the
/// state) and TCP connects, so the earlier it starts, the less of it is waited for.
pub(crate) fn prepare_tls(account: &Account) -> PreparedTls {
    PreparedTls(match account.tls {
        TlsMode::None => None,
        TlsMode::Implicit | TlsMode::Starttls => {
            let options = account.tls_options();
            Some(std::thread::spawn(move || TlsConfig::new(&options)))
        }
    })
}

/// Connects and secures the connection as configured; never falls back to cleartext.
fn connect(
    account: &Account,
    mut trace: Option<Trace>,
    building: PreparedTls,
) -> Result<Client<Stream>> {
    let route = account.route()?;
    let connected = Stream::connect_by(&account.host, account.port, account.timeout, &route);
    // The setup's error comes first, so that a bad tls_ca_file is reported as such.
    let tls = building
        .0
        .map(|thread| {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .transpose()
        .map_err(tls_setup_error)?;
    let stream = connected.map_err(|e| advise(e.into()))?;
    trace_connect(&mut trace, &stream);
    let greeted = |stream, trace| {
        Client::new(stream, trace).map_err(|e| match e {
            // An implicit-TLS port (995, RFC 8314 §3.3) waits for our handshake
            // as we wait for its greeting: a second, short look tells it apart
            // from a slow server, so the error says what to change.
            pop3::Error::Timeout(_)
                if account.tls != TlsMode::Implicit
                    && Stream::speaks_tls(&account.host, account.port, TLS_LOOK, &route) =>
            {
                advise(pop3::Error::TlsNotGreeting)
            }
            e => advise(e),
        })
    };
    let mut client = match (&tls, account.tls) {
        (Some(tls), TlsMode::Implicit) => {
            let secured = stream
                .secure(tls, account.tls_name())
                .map_err(|e| advise(e.into()))?;
            trace_tls(&mut trace, &secured);
            greeted(secured, trace)?
        }
        _ => greeted(stream, trace)?,
    };
    if let (Some(tls), TlsMode::Starttls) = (&tls, account.tls) {
        client = client
            .starttls(|plain| plain.secure(tls, account.tls_name()).map_err(Into::into))
            .map_err(advise)?;
        let lines = stream_report(client.stream());
        for line in lines {
            client.note(&line);
        }
    }
    Ok(client)
}

/// For -v: the address connected to, as fetchmail -v shows it.
pub(crate) fn trace_connect(trace: &mut Option<Trace>, stream: &Stream) {
    if let Some(trace) = trace {
        match stream.peer() {
            Some(addr) => trace(&format!("connected to {} port {}", addr.ip(), addr.port())),
            None => trace("connected"),
        }
    }
}

/// For -v: the TLS version and cipher and the certificate's subject and issuer.
pub(crate) fn trace_tls(trace: &mut Option<Trace>, stream: &Stream) {
    if let Some(trace) = trace {
        for line in stream_report(stream) {
            trace(&line);
        }
    }
}

fn stream_report(stream: &Stream) -> Vec<String> {
    let Some(tls) = stream.tls() else {
        return Vec::new();
    };
    let mut lines = vec![match tls.negotiated() {
        Some(n) => format!("TLS: {}, cipher {}", n.version_name(), n.cipher_name()),
        None => "TLS: version and cipher not seen".to_string(),
    }];
    if let Some(cert) = tls
        .peer_certificate()
        .and_then(|der| CertificateDetails::of(&der))
    {
        lines.push(format!("certificate subject: {}", cert.subject));
        lines.push(format!("certificate issuer: {}", cert.issuer));
    }
    lines
}

/// A problem with the local TLS settings, naming the key to look at where one
/// is the cause.
pub(crate) fn tls_setup_error(error: TlsConfigError) -> anyhow::Error {
    match error {
        TlsConfigError::ReadCa { .. } | TlsConfigError::BadCa { .. } => {
            anyhow::Error::new(error).context("tls_ca_file")
        }
        TlsConfigError::ReadClient { .. }
        | TlsConfigError::BadClient { .. }
        | TlsConfigError::Setup(_) => error.into(),
    }
}

/// A connection error with the advice that names what to change in the config.
#[derive(Debug, thiserror::Error)]
#[error("{error}; {hint}")]
pub(crate) struct Advised {
    pub error: pop3::Error,
    pub hint: &'static str,
}

/// Adds the advice a user needs to a connection or TLS error, where there is one.
pub(crate) fn advise(error: pop3::Error) -> anyhow::Error {
    let hint = match &error {
        pop3::Error::Net(net::Error::NotTls { .. }) => {
            "is this a plain POP3 port? try tls = \"starttls\" (or port 995 for tls = \"implicit\")"
        }
        pop3::Error::TlsNotGreeting => {
            "port 995 speaks TLS from the start: use tls = \"implicit\" (or port 110 for tls = \"starttls\")"
        }
        pop3::Error::StlsUnavailable | pop3::Error::StlsRefused(_) => {
            "tls = \"starttls\" never falls back to cleartext: if the server has a TLS port, use it with tls = \"implicit\""
        }
        pop3::Error::Net(net::Error::Certificate { problem, .. }) => certificate_hint(problem),
        pop3::Error::Net(net::Error::PinMismatch { .. }) => {
            "it does not match tls_fingerprint: if the certificate was renewed, check the new one and update the pin (popfetch probe shows it)"
        }
        pop3::Error::Net(net::Error::ProxyLogin { given: false, .. }) => {
            "give the user name in proxy (\"socks5://USER@HOST:PORT\") and the password there or in proxy_password_command"
        }
        pop3::Error::Net(net::Error::ProxyLogin { given: true, .. }) => {
            "check the user name in proxy and the proxy's password"
        }
        pop3::Error::Net(net::Error::ProxyUnreachable { .. }) => {
            "check that the proxy runs and that proxy names its address and port"
        }
        _ => return error.into(),
    };
    Advised { error, hint }.into()
}

/// What to do about a certificate problem: "set tls_ca_file" only where a CA the
/// machine does not know is the cause.
pub(crate) fn certificate_hint(problem: &CertificateProblem) -> &'static str {
    match problem {
        CertificateProblem::Expired => {
            "the server's administrator must renew it (or this machine's clock is wrong)"
        }
        CertificateProblem::NotYetValid => {
            "check this machine's clock; else the server's administrator installed it early"
        }
        CertificateProblem::SelfSigned => {
            "check it out of band, then pin it with tls_fingerprint (popfetch probe shows it)"
        }
        CertificateProblem::UnknownIssuer => {
            "if the server uses a private CA, set tls_ca_file to that CA's certificate, or pin the server's with tls_fingerprint (popfetch probe shows it)"
        }
        CertificateProblem::WrongName => {
            "connect by a name the certificate was issued for (popfetch probe shows its subject)"
        }
        CertificateProblem::Other(_) => {
            "popfetch probe shows the certificate; pin it with tls_fingerprint if you trust it"
        }
    }
}

/// A certificate problem with its advice, for `probe`.
pub(crate) fn certificate_problem(problem: &CertificateProblem) -> String {
    format!("it {problem}; {}", certificate_hint(problem))
}

/// The account's password, or its OAuth access token: the cached one while it
/// lasts, else a refreshed one (stored before it is used), or what
/// `oauth_token_command` prints.
pub(crate) fn secret(account: &Account) -> Result<Secret> {
    if let Some(oauth) = &account.oauth {
        let store = oauth.store(&account.state_dir);
        return Ok(crate::oauth::store::access_token(&store, oauth)?);
    }
    Ok(if account.uses_token() {
        account.oauth_token.resolve()?
    } else {
        account.password.resolve()?
    })
}

/// A stream that may be inside TLS: the server's certificate, for SCRAM's channel
/// binding (RFC 5929 §4.1).
pub(crate) trait ServerCertificate {
    /// The server's certificate, DER, when the stream is inside TLS.
    fn server_certificate(&self) -> Option<Vec<u8>>;
}

impl ServerCertificate for Stream {
    fn server_certificate(&self) -> Option<Vec<u8>> {
        self.tls().and_then(net::Secured::peer_certificate)
    }
}

/// Logs in the way the account asks, or the strongest way the server offers.
pub(crate) fn login<S: Wire + ServerCertificate>(
    mut client: Client<S>,
    account: &Account,
    secret: &Secret,
) -> Result<Session<S>> {
    let caps = client.capabilities()?.clone();
    let encrypted = account.tls != TlsMode::None;
    let certificate = client.stream().server_certificate().filter(|_| encrypted);
    let offer = Offer {
        caps: &caps,
        apop: apop_timestamp(&client.greeting().raw).is_some(),
        encrypted,
        bindable: certificate
            .as_deref()
            .is_some_and(|der| tls_server_end_point(der).is_ok()),
        token: account.uses_token(),
    };
    let (user, secret) = (account.user.as_str(), secret.expose());
    let sasl = |mechanism: Mechanism, binding: ChannelBinding| Credentials::Sasl {
        mechanism,
        user,
        secret,
        peer: Peer {
            host: account.host.clone(),
            port: account.port,
        },
        binding,
    };
    let chosen = auth::choose(account.auth, &offer)?;
    let credentials = match chosen {
        Login::User => Credentials::User {
            user,
            password: secret,
        },
        Login::Apop => Credentials::Apop {
            user,
            password: secret,
        },
        Login::Sasl(mechanism) => sasl(
            mechanism,
            ChannelBinding::for_scram(
                mechanism,
                certificate.as_deref(),
                caps.offers_channel_binding(),
            )?,
        ),
    };
    let (error, client) = match client.login(credentials) {
        Ok(session) => return Ok(session),
        Err(failed) => (failed.error, failed.client),
    };
    let mut bound = matches!(chosen, Login::Sasl(m) if m.binds_channel());
    let (error, client) = match (chosen, error) {
        // `auto` tried a -PLUS mechanism and the server refused its binding
        // type: before any proof, on its GS2 header, or saying
        // e=unsupported-channel-binding-type. It binds to another type than
        // tls-server-end-point, the one popfetch has. A relaying man in the
        // middle cannot cause such a refusal (the type is ours whoever relays),
        // so the same hash without binding follows on the same connection, with
        // "n" (RFC 5802 §6: a client that does not bind; "y" would be refused,
        // as the server advertised -PLUS). One who rewrites the dialogue could
        // fake it, but could as well strike SCRAM from CAPA and be sent the
        // password over TLS by `auto`.
        //
        // Any other refusal of a -PLUS login is never retried: a relaying man in
        // the middle causes one (the server sees his certificate's hash),
        // and a retry without binding would log him in. Cyrus is such a case
        // without any man in the middle: it binds to tls-unique only, which
        // native-tls cannot give, and says so only after the proof, with the
        // same -ERR; there, auth = "scram-sha-256" (gs2 "n") is the way, and the
        // error says so. Naming a -PLUS mechanism in the config makes the
        // binding required.
        (Login::Sasl(mechanism), pop3::Error::BindingRefused { .. })
            if account.auth == AuthMethod::Auto =>
        {
            bound = false;
            let mut client = client;
            let unbound = mechanism.unbound();
            client.note(&format!(
                "{} refused its channel binding type; trying {} without channel binding",
                mechanism.name(),
                unbound.name()
            ));
            match client.login(sasl(unbound, ChannelBinding::None)) {
                Ok(session) => return Ok(session),
                Err(failed) => (failed.error, failed.client),
            }
        }
        (_, error) => (error, client),
    };
    // Be polite, but the login error is what matters.
    let _ = client.quit();
    Err(match error {
        pop3::Error::BindingRefused { .. } => Advised {
            error,
            hint: "a SCRAM auth without -PLUS (or \"auto\") logs in without channel binding",
        }
        .into(),
        pop3::Error::Auth { .. } if bound && error.kind() == pop3::ErrorKind::Auth => Advised {
            error,
            hint: "the login was bound to the TLS certificate (SCRAM -PLUS): if the password is right, either the server binds to tls-unique only (Cyrus does: set auth = \"scram-sha-256\") or a man in the middle relays the connection",
        }
        .into(),
        error => error.into(),
    })
}

/// Every message on the server with a unique-id, and its size: of every message
/// when `sized` is `None`, else of those whose unique-id it picks (the others have
/// size 0; see [`Session::listing_sized`]). A server without UIDL (RFC 1939 makes
/// it optional) gets a digest of each message's headers and size as its unique-id.
/// A unique-id may repeat (popa3d repeats one for messages without Message-ID and
/// Date); [`probe`] tells such messages apart.
pub(crate) fn listing<S: Wire>(
    session: &mut Session<S>,
    sized: Option<&dyn Fn(&str) -> bool>,
    warn: &dyn Fn(&str),
) -> Result<Vec<ListedMessage>> {
    let listing = match sized {
        Some(sized) => session.listing_sized(sized)?,
        None => session.listing()?,
    };
    Ok(match listing {
        Listing::WithUids(messages) => messages,
        Listing::SizesOnly(sizes) => {
            warn("the server has no UIDL; messages are told apart by a digest of their headers");
            let mut uids = Vec::with_capacity(sizes.len());
            let mut refused = None;
            session.tops(&sizes, hash_head, |&(num, size), head| match head {
                Ok((_, legacy)) => {
                    uids.push((num, format!("hdr-{}", sized_digest(legacy, size))));
                    Flow::Continue
                }
                Err(status) => {
                    refused = Some(pop3::Error::Server {
                        command: "TOP",
                        code: status.code,
                        text: status.text,
                    });
                    Flow::Stop
                }
            })?;
            if let Some(refused) = refused {
                return Err(refused.into());
            }
            pop3::join(uids, &sizes)?
        }
    })
}

/// Probes, with `TOP n 0` pipelined, the messages whose records must be checked
/// before they are planned (see [`policy::needs_probe`]). Messages of one unique-id
/// that even their size and headers cannot tell apart stop the session: a record
/// of one would pass for the other, and a DELE could take one never fetched.
pub(crate) fn probe<S: Wire>(
    session: &mut Session<S>,
    listing: &[ListedMessage],
    known: &dyn policy::Known,
    policy: &policy::Policy,
    now: u64,
    warn: &dyn Fn(&str),
) -> Result<policy::Probes> {
    let repeated = pop3::repeated_uids(listing.iter().map(|m| m.uid.as_str()));
    if !repeated.is_empty() {
        warn("the server gave several messages the same unique-id; they are told apart by their size and a digest of their headers");
    }
    let wanted: Vec<&ListedMessage> = listing
        .iter()
        .filter(|m| {
            policy::needs_probe(
                &m.uid,
                repeated.contains(m.uid.as_str()),
                known,
                policy,
                now,
            )
        })
        .collect();
    let mut probes = policy::Probes::default();
    if wanted.is_empty() {
        return Ok(probes);
    }
    let nums: Vec<(u32, u64)> = wanted.iter().map(|m| (m.num, m.size)).collect();
    let mut heads = Vec::with_capacity(nums.len());
    let mut refused = Vec::new();
    session.tops(&nums, hash_head, |&(num, _), head| {
        match head {
            Ok(hashed) => heads.push((num, hashed)),
            Err(_) => refused.push(num),
        }
        Flow::Continue
    })?;
    let sizes: foldhash::HashMap<u32, &ListedMessage> =
        wanted.iter().map(|m| (m.num, *m)).collect();
    // Of a repeated unique-id whose messages were not all probed, none is: the one
    // refused might be the twin of one probed, which would then pass for the
    // message delivered and be deleted unfetched.
    let unprobed: HashSet<&str> = refused
        .iter()
        .map(|num| sizes[num].uid.as_str())
        .filter(|uid| repeated.contains(uid))
        .collect();
    heads.retain(|(num, _)| !unprobed.contains(sizes[num].uid.as_str()));
    let mut seen = foldhash::HashMap::default();
    for (num, (digest, legacy)) in heads {
        let message = sizes[&num];
        let legacy = sized_digest(legacy, message.size);
        if let Some(other) = seen.insert((message.uid.as_str(), message.size, digest), num) {
            return Err(pop3::Error::Protocol(format!(
                "the server gave messages {other} and {num} the same unique-id \"{}\" (RFC 1939 §7 requires them to differ), the same size and the same headers",
                crate::pop3::proto::response::escape(message.uid.as_bytes())
            ))
            .into());
        }
        probes.insert(num, policy::Probe { digest, legacy });
    }
    Ok(probes)
}

/// The digest of a header section as [`crate::sync::state::identity::Identity`] takes it, and
/// the hash an older popfetch took of the first [`MAX_HEADERS`] bytes of a `TOP n 0`
/// reply (the listed size is added after), streamed.
fn hash_head(head: &mut dyn Read) -> ([u8; 16], Sha256) {
    let mut section = crate::sync::state::identity::HeadHasher::default();
    let mut legacy = Sha256::new();
    let mut taken = 0u64;
    let mut buf = [0u8; 8192];
    while let Ok(n) = head.read(&mut buf) {
        if n == 0 {
            break;
        }
        section.update(&buf[..n]);
        let left = usize::try_from(MAX_HEADERS - taken).unwrap_or(usize::MAX);
        let keep = n.min(left);
        legacy.update(&buf[..keep]);
        taken += keep as u64;
    }
    (section.finish(), legacy)
}

/// The digest of a message's headers (as [`hash_head`] took them) and size, stable
/// across sessions: the unique-id of a message on a server without UIDL, and what
/// an older popfetch recorded.
fn sized_digest(mut head: Sha256, size: u64) -> String {
    head.update(size.to_be_bytes());
    head.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The header block of each of `messages` (number, listed size), through `TOP n 0`
/// (RFC 1939 §7) pipelined, each bounded by [`MAX_HEADERS`] and handed to `each`
/// in order once its `LIST n` fence passed; a refused TOP comes as the server's
/// status. One block is held at a time, however many messages there are.
pub(crate) fn headers<S: Wire>(
    session: &mut Session<S>,
    messages: &[(u32, u64)],
    mut each: impl FnMut(u32, Result<&[u8], Status>) -> Flow,
) -> Result<(), pop3::Error> {
    let read = |reply: &mut dyn Read| {
        let mut head = Vec::new();
        let _ = reply.take(MAX_HEADERS).read_to_end(&mut head);
        head
    };
    session.tops(messages, read, |&(num, _), head| match head {
        Ok(head) => each(num, Ok(&head)),
        Err(status) => each(num, Err(status)),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::net::mock::MockStream;

    fn session(server: &str) -> Session<MockStream> {
        Client::new(MockStream::new(server), None)
            .unwrap()
            .login(Credentials::User {
                user: "u",
                password: "p",
            })
            .map_err(|f| f.error)
            .unwrap()
    }

    #[test]
    fn a_server_without_uidl_gets_a_digest_of_each_message_headers() {
        let server = "+OK hi\r\n+OK\r\n+OK\r\n-ERR no UIDL\r\n+OK\r\n1 20\r\n2 20\r\n.\r\n\
                      +OK\r\nSubject: a\r\n\r\n.\r\n+OK 1 20\r\n\
                      +OK\r\nSubject: b\r\n\r\n.\r\n+OK 2 20\r\n";
        let warned = RefCell::new(Vec::new());
        let warn = |text: &str| warned.borrow_mut().push(text.to_string());
        let listed = listing(&mut session(server), None, &warn).unwrap();
        let uids: Vec<&str> = listed.iter().map(|m| m.uid.as_str()).collect();
        assert_eq!(uids.len(), 2);
        assert!(uids.iter().all(|uid| uid.starts_with("hdr-")), "{uids:?}");
        assert_ne!(uids[0], uids[1]);
        assert_eq!(warned.borrow().len(), 1);
        // The same headers and size give the same unique-id in the next session.
        let again = listing(&mut session(server), None, &warn).unwrap();
        assert_eq!(again, listed);
    }
}
