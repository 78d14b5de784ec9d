//! Opening a logged-in POP3 session for an account — the secret, TLS, the
//! connection, STLS, the login — and reading what is on the server, with a digest of
//! the headers standing in for unique-ids on servers without UIDL.

use std::io::Read;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::auth::{self, Login, Offer};
use crate::config::{Account, TlsMode};
use crate::policy;
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
/// A unique-id may repeat (popa3d repeats one for messages without Message-ID and
/// Date); [`probe`] tells such messages apart.
pub fn listing(
    session: &mut Session<Stream>,
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
            for &(num, size) in &sizes {
                uids.push((num, format!("hdr-{}", digest(session, num, size)?)));
            }
            pop3::join(uids, &sizes)?
        }
    })
}

/// Probes, with `TOP n 0` pipelined, the messages whose records must be checked
/// before they are planned (see [`policy::needs_probe`]). Messages of one unique-id
/// that even their size and headers cannot tell apart stop the session: a record
/// of one would pass for the other, and a DELE could take one never fetched.
pub fn probe(
    session: &mut Session<Stream>,
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
    let nums: Vec<u32> = wanted.iter().map(|m| m.num).collect();
    let mut heads = Vec::with_capacity(nums.len());
    session.tops(&nums, |num, head| {
        if let Some(head) = head {
            heads.push((num, hash_head(head)));
        }
    })?;
    let sizes: foldhash::HashMap<u32, &ListedMessage> =
        wanted.iter().map(|m| (m.num, *m)).collect();
    let mut seen = foldhash::HashMap::default();
    for (num, (digest, legacy)) in heads {
        let message = sizes[&num];
        let mut legacy = legacy;
        legacy.update(message.size.to_be_bytes());
        let legacy: String = legacy.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(other) = seen.insert((message.uid.as_str(), message.size, digest), num) {
            return Err(pop3::Error::Protocol(format!(
                "the server gave messages {other} and {num} the same unique-id \"{}\" (RFC 1939 §7 requires them to differ), the same size and the same headers",
                crate::pop3::response::escape(message.uid.as_bytes())
            ))
            .into());
        }
        probes.insert(num, policy::Probe { digest, legacy });
    }
    Ok(probes)
}

/// The digest of a header section as [`crate::identity::Identity`] takes it, and
/// the hash an older popfetch took of the first [`MAX_HEADERS`] bytes of a `TOP n 0`
/// reply (the listed size is added after), streamed.
fn hash_head(head: &mut dyn Read) -> ([u8; 16], Sha256) {
    let mut section = crate::identity::HeadHasher::default();
    let mut legacy = Sha256::new();
    let mut taken = 0u64;
    let mut buf = [0u8; 8192];
    while let Ok(n) = head.read(&mut buf) {
        if n == 0 {
            break;
        }
        section.update(&buf[..n]);
        let keep = (n as u64).min(MAX_HEADERS.saturating_sub(taken)) as usize;
        legacy.update(&buf[..keep]);
        taken += keep as u64;
    }
    (section.finish(), legacy)
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
