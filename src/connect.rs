//! Opening a logged-in POP3 session for an account — the secret, TLS, the
//! connection, STLS, the login — and reading what is on the server, with a digest of
//! the headers standing in for unique-ids on servers without UIDL.

use std::io::Read;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::auth::{self, Login, Offer};
use crate::config::{Account, TlsMode};
use crate::pop3::response::apop_timestamp;
use crate::pop3::transport::{Stream, TlsConfig};
use crate::pop3::{self, Client, Credentials, ListedMessage, Listing, Peer, Session, Trace, Wire};
use crate::secret::Secret;

/// How much of a message's headers we read through TOP.
const MAX_HEADERS: u64 = 256 * 1024;

/// Resolves the secret, connects, secures and logs in.
pub fn open_session(account: &Account, trace: Option<Trace>) -> Result<Session<Stream>> {
    let secret = secret(account)?;
    let client = connect(account, trace)?;
    login(client, account, &secret)
}

/// Connects and secures the connection as configured; never falls back to cleartext.
fn connect(account: &Account, trace: Option<Trace>) -> Result<Client<Stream>> {
    // Only an account that uses TLS sets it up (reading tls_ca_file, finding the
    // system's roots), and before connecting, so that a bad tls_ca_file is
    // reported as such.
    let tls = match account.tls {
        TlsMode::None => None,
        TlsMode::Implicit | TlsMode::Starttls => Some(TlsConfig::new(&account.tls_options())?),
    };
    let stream = Stream::connect(&account.host, account.port, account.timeout)?;
    let mut client = match (&tls, account.tls) {
        (Some(tls), TlsMode::Implicit) => Client::new(stream.secure(tls, &account.host)?, trace)?,
        _ => Client::new(stream, trace)?,
    };
    if let (Some(tls), TlsMode::Starttls) = (&tls, account.tls) {
        client = client.starttls(|plain| plain.secure(tls, &account.host))?;
    }
    Ok(client)
}

/// The account's password, or its OAuth token for XOAUTH2 and OAUTHBEARER.
pub fn secret(account: &Account) -> Result<Secret> {
    Ok(if account.auth.uses_token() {
        account.oauth_token.resolve()?
    } else {
        account.password.resolve()?
    })
}

/// Logs in the way the account asks, or the strongest way the server offers.
pub fn login<S: Wire>(
    mut client: Client<S>,
    account: &Account,
    secret: &Secret,
) -> Result<Session<S>> {
    let caps = client.capabilities()?.clone();
    let offer = Offer {
        caps: &caps,
        apop: apop_timestamp(&client.greeting().raw).is_some(),
        encrypted: account.tls != TlsMode::None,
    };
    let (user, secret) = (account.user.as_str(), secret.expose());
    let credentials = match auth::choose(account.auth, &offer)? {
        Login::User => Credentials::User {
            user,
            password: secret,
        },
        Login::Apop => Credentials::Apop {
            user,
            password: secret,
        },
        Login::Sasl(mechanism) => Credentials::Sasl {
            mechanism,
            user,
            secret,
            peer: Peer {
                host: account.host.clone(),
                port: account.port,
            },
        },
    };
    match client.login(credentials) {
        Ok(session) => Ok(session),
        Err(failed) => {
            // Be polite, but the login error is what matters.
            let _ = failed.client.quit();
            Err(failed.error.into())
        }
    }
}

/// Every message on the server with a unique-id, and its size: of every message
/// when `sized` is `None`, else of those whose unique-id it picks (the others have
/// size 0; see [`Session::listing_sized`]). A server without UIDL (RFC 1939 makes
/// it optional) gets a digest of each message's headers and size as its unique-id.
/// A server that repeats a unique-id (popa3d does, for messages without Message-ID
/// and Date) gets the digest appended for those messages. `warn` is told once; if
/// messages still cannot be told apart, the session stops rather than risk deleting
/// one never fetched.
pub fn listing(
    session: &mut Session<Stream>,
    sized: Option<&dyn Fn(&str) -> bool>,
    warn: &dyn Fn(&str),
) -> Result<Vec<ListedMessage>> {
    let listing = match sized {
        Some(sized) => session.listing_sized(sized)?,
        None => session.listing()?,
    };
    let mut messages = match listing {
        Listing::WithUids(messages) => messages,
        Listing::SizesOnly(sizes) => {
            warn("the server has no UIDL; messages are told apart by a digest of their headers");
            let mut uids = Vec::with_capacity(sizes.len());
            for &(num, size) in &sizes {
                uids.push((num, format!("hdr-{}", digest(session, num, size)?)));
            }
            pop3::join(uids, &sizes)?
        }
    };
    let repeated: Vec<usize> = {
        let uids = pop3::repeated_uids(messages.iter().map(|m| m.uid.as_str()));
        (0..messages.len())
            .filter(|&i| uids.contains(messages[i].uid.as_str()))
            .collect()
    };
    if !repeated.is_empty() {
        warn("the server gave several messages the same unique-id; they are told apart by a digest of their headers");
        for i in repeated {
            let m = &mut messages[i];
            m.uid = format!("{}-{}", m.uid, digest(session, m.num, m.size)?);
        }
        pop3::check_unique(&messages)?;
    }
    Ok(messages)
}

/// A digest of a message's headers and size, stable across sessions.
fn digest(session: &mut Session<Stream>, num: u32, size: u64) -> Result<String, pop3::Error> {
    let head = headers(session, num)?;
    let mut digest = Sha256::new();
    digest.update(&head);
    digest.update(size.to_be_bytes());
    Ok(digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A message's header block, through `TOP n 0` (RFC 1939 §7), bounded.
pub fn headers(session: &mut Session<Stream>, num: u32) -> Result<Vec<u8>, pop3::Error> {
    session.top(num, 0, |body| {
        let mut head = Vec::new();
        let _ = body.take(MAX_HEADERS).read_to_end(&mut head);
        head
    })
}
