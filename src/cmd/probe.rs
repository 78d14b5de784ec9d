//! `popfetch probe`: connects to a server and shows what it offers — greeting,
//! capabilities, TLS version and cipher, the certificate (with the fingerprint ready
//! to paste as `tls_fingerprint`), the login methods, and the mailbox size when it
//! can log in. It reports certificate problems instead of stopping at them, so that
//! a self-signed certificate can be inspected and pinned, but it logs in only when
//! the account's own trust rules (CA and tls_ca_file, host name, tls_fingerprint,
//! tls_min_version, tls_insecure_skip_verify) accept the server, as a sync would.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::config::{Account, TlsMode};
use crate::net::{
    self, fingerprint_text, CertificateDetails, CertificateProblem, Stream, TlsConfig, TlsOptions,
    TlsVersion,
};
use crate::pop3::proto::response::apop_timestamp;
use crate::pop3::{self, Capabilities, Client, Trace};

/// Where to probe, and what to trust there.
pub(crate) struct Target {
    pub host: String,
    /// The name the certificate must carry (`tls_host_override`, else `host`).
    pub name: String,
    /// `source_ip`, `ip_version` and `proxy`.
    pub route: crate::net::Route,
    pub port: u16,
    pub tls: TlsMode,
    /// The trust rules: the account's own, or (`--host`) the defaults with any
    /// `--tls-ca-file`.
    pub trust: TlsOptions,
    pub timeout: Duration,
}

impl Target {
    /// The account's server, reached as a sync reaches it (the proxy's
    /// password command runs).
    pub(crate) fn of(account: &Account) -> Result<Target, crate::config::secret::SecretError> {
        Ok(Target {
            host: account.host.clone(),
            name: account.tls_name().to_string(),
            route: account.route()?,
            port: account.port,
            tls: account.tls,
            trust: account.tls_options(),
            timeout: account.timeout,
        })
    }

    /// A server given on the command line, verified against the system's roots
    /// and `ca_file`.
    pub(crate) fn host(host: &str, port: u16, tls: TlsMode, ca_file: Option<PathBuf>) -> Target {
        Target {
            host: host.to_string(),
            name: host.to_string(),
            route: crate::net::Route::default(),
            port,
            tls,
            trust: TlsOptions {
                ca_file,
                min_version: TlsVersion::V1_2,
                skip_verify: false,
                fingerprint: None,
                client: None,
            },
            timeout: Duration::from_secs(30),
        }
    }
}

/// Probes `target`, writing the report to `out` and the protocol steps to
/// `trace`. With `login`, also logs in with that account's credentials and shows
/// the mailbox size, if the target's trust rules accept the server; if they do not,
/// the report ends before the login with an error that says why.
pub(crate) fn probe(
    target: &Target,
    login: Option<&Account>,
    mut trace: Option<Trace>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut stream = Stream::connect_by(&target.host, target.port, target.timeout, &target.route)
        .map_err(pop3::Error::from)?;
    crate::sync::connect::trace_connect(&mut trace, &stream);
    if let (Some(local), Some(peer)) = (stream.local(), stream.peer()) {
        let family = if peer.is_ipv4() { "IPv4" } else { "IPv6" };
        writeln!(
            out,
            "route:         {}; {family}, {local} -> {peer}",
            target.route.describe()
        )?;
    }
    let mut trusted = Ok(());
    if target.tls == TlsMode::Implicit {
        let (secured, verdict) = handshake(stream, target, out)?;
        (stream, trusted) = (secured, verdict);
    }
    let mut client = Client::new(stream, trace).map_err(crate::sync::connect::advise)?;
    writeln!(out, "greeting:      +OK {}", client.greeting().text)?;
    if target.tls == TlsMode::Starttls {
        show_capabilities(client.capabilities()?, out, "before STLS")?;
        let mut report = Vec::new();
        let verdict = &mut trusted;
        client = client.starttls(|plain| {
            let (secured, v) = handshake(plain, target, &mut report).map_err(|e| {
                pop3::Error::Net(net::Error::Tls {
                    host: target.host.clone(),
                    reason: format!("{e:#}"),
                })
            })?;
            *verdict = v;
            Ok(secured)
        })?;
        out.write_all(&report)?;
    }
    let caps = client.capabilities()?.clone();
    show_capabilities(&caps, out, "")?;
    let apop = apop_timestamp(&client.greeting().raw).is_some();
    let mut methods = caps.sasl.clone();
    if caps.user || !caps.known {
        methods.push("USER".into());
    }
    if apop {
        methods.push("APOP".into());
    }
    writeln!(out, "login methods: {}", methods.join(" "))?;
    let Some(account) = login else {
        return Ok(client.quit()?);
    };
    if let Err(why) = trusted {
        // Nothing secret has been sent; the password is not offered to a server
        // the account would not trust.
        let _ = client.quit();
        return Err(pop3::Error::Net(net::Error::Tls {
            host: target.host.clone(),
            reason: format!("{why}; not logging in"),
        })
        .into());
    }
    let secret = crate::sync::connect::secret(account)?;
    let mut session = crate::sync::connect::login(client, account, &secret)?;
    if let Some(oauth) = &account.oauth {
        writeln!(
            out,
            "logged in:     as {} with an OAuth token ({}, stored in {})",
            account.user,
            oauth.provider_name,
            oauth.store(&account.state_dir).describe()
        )?;
    }
    let (count, size) = session.stat()?;
    writeln!(out, "mailbox:       {count} message(s), {size} bytes")?;
    Ok(session.quit()?)
}

fn show_capabilities(caps: &Capabilities, out: &mut dyn Write, when: &str) -> io::Result<()> {
    let label = if when.is_empty() {
        "capabilities:".to_string()
    } else {
        format!("capabilities ({when}):")
    };
    if caps.known {
        writeln!(out, "{label} {}", caps.lines.join(", "))
    } else {
        writeln!(out, "{label} none (the server does not support CAPA)")
    }
}

/// The TLS handshake, not insisting on any check, a report of what was found,
/// and whether the target's trust rules accept the server (else why not).
fn handshake(
    stream: Stream,
    target: &Target,
    out: &mut dyn Write,
) -> Result<(Stream, Result<(), String>)> {
    let options = TlsOptions {
        // Whatever the server speaks is worth reporting; the account's minimum
        // is checked below.
        min_version: TlsVersion::V1_0,
        skip_verify: true,
        fingerprint: None,
        ..target.trust.clone()
    };
    let config = TlsConfig::report(&options).map_err(crate::sync::connect::tls_setup_error)?;
    let tls = stream
        .secure(&config, &target.name)
        .map_err(|e| crate::sync::connect::advise(e.into()))?;
    let session = tls.tls().expect("a secured stream has a TLS session");
    let negotiated = session.negotiated();
    match negotiated {
        Some(n) => writeln!(
            out,
            "tls:           {}, {}",
            n.version_name(),
            n.cipher_name()
        )?,
        None => writeln!(out, "tls:           (the server's hello could not be read)")?,
    }
    let Some(der) = session.peer_certificate() else {
        writeln!(out, "certificate:   none")?;
        return Ok((tls, Err("the server sent no certificate".into())));
    };
    let digest: [u8; 32] = Sha256::digest(&der).into();
    writeln!(out, "certificate:")?;
    match CertificateDetails::of(&der) {
        Some(details) => {
            writeln!(out, "  subject:     {}", details.subject)?;
            writeln!(out, "  issuer:      {}", details.issuer)?;
            writeln!(out, "  valid until: {}", details.not_after)?;
        }
        None => writeln!(out, "  (not a certificate this version can read)")?,
    }
    let version = negotiated.and_then(|n| n.tls_version());
    let chain = if target.trust.skip_verify || target.trust.fingerprint.is_some() {
        // Not what the account trusts: no need to ask.
        Ok(())
    } else {
        chain_verdict(target)
    };
    let verdict = verdict(&target.trust, &target.name, chain, &digest, version);
    match &verdict {
        Ok(how) => writeln!(out, "  verified:    {how}")?,
        Err(why) => writeln!(out, "  verified:    NO ({why})")?,
    }
    writeln!(out, "  tls_fingerprint = \"{}\"", fingerprint_text(&digest))?;
    Ok((tls, verdict.map(drop)))
}

/// The chain and host name as a sync checks them (the system's roots and
/// tls_ca_file), on a connection of its own: native-tls gives its verdict only by
/// refusing the handshake, and the report's handshake must go on whatever it is.
fn chain_verdict(target: &Target) -> Result<(), ChainProblem> {
    let options = TlsOptions {
        min_version: TlsVersion::V1_0,
        skip_verify: false,
        fingerprint: None,
        ..target.trust.clone()
    };
    let unchecked = |e: &dyn std::fmt::Display| ChainProblem::Unchecked(e.to_string());
    let config = TlsConfig::new(&options).map_err(|e| unchecked(&e))?;
    let plain = Stream::connect_by(&target.host, target.port, target.timeout, &target.route)
        .map_err(|e| unchecked(&e))?;
    let secured = match target.tls {
        TlsMode::Starttls => Client::new(plain, None)
            .and_then(|client| {
                client.starttls(|p| p.secure(&config, &target.name).map_err(Into::into))
            })
            .map(|client| drop(client.quit())),
        _ => plain
            .secure(&config, &target.name)
            .map(drop)
            .map_err(pop3::Error::from),
    };
    match secured {
        Ok(()) => Ok(()),
        Err(pop3::Error::Net(net::Error::Certificate { problem, .. })) => {
            Err(ChainProblem::Certificate(problem))
        }
        Err(e) => Err(unchecked(&e)),
    }
}

/// Why the chain was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChainProblem {
    Certificate(CertificateProblem),
    /// The checking connection failed for another reason.
    Unchecked(String),
}

/// Whether `trust` accepts the server, as a sync with the same settings would:
/// how it was verified, or why not. `chain` is the TLS library's verdict on the
/// chain and host name (against the system's roots and tls_ca_file); `digest` is
/// the SHA-256 of the certificate; `version` what the handshake negotiated.
fn verdict(
    trust: &TlsOptions,
    host: &str,
    chain: Result<(), ChainProblem>,
    digest: &[u8; 32],
    version: Option<TlsVersion>,
) -> Result<String, String> {
    match version {
        Some(v) if v >= trust.min_version => {}
        _ => {
            return Err(format!(
                "the server negotiated an older TLS than tls_min_version = \"{}\" allows",
                trust.min_version
            ))
        }
    }
    if trust.skip_verify {
        return Ok("not checked (tls_insecure_skip_verify = true)".into());
    }
    if let Some(pin) = trust.fingerprint {
        return if &pin == digest {
            Ok("yes, by tls_fingerprint".into())
        } else {
            Err("the certificate does not match tls_fingerprint".into())
        };
    }
    match chain {
        Ok(()) => Ok(format!("yes, for {host}")),
        Err(ChainProblem::Certificate(problem)) => {
            Err(crate::sync::connect::certificate_problem(&problem))
        }
        Err(ChainProblem::Unchecked(why)) => Err(format!("it could not be checked: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(min_version: TlsVersion, pin: Option<[u8; 32]>, skip: bool) -> TlsOptions {
        TlsOptions {
            ca_file: None,
            min_version,
            skip_verify: skip,
            fingerprint: pin,
            client: None,
        }
    }

    const OK: Result<(), ChainProblem> = Ok(());

    #[test]
    fn an_older_tls_than_the_account_allows_is_refused_whatever_the_chain() {
        let digest = [7; 32];
        let v12 = trust(TlsVersion::V1_2, None, false);
        let why = verdict(&v12, "h", OK, &digest, Some(TlsVersion::V1_0)).unwrap_err();
        assert!(why.contains("tls_min_version = \"1.2\""), "{why}");
        assert!(verdict(&v12, "h", OK, &digest, None).is_err());
        // Not even a pin or a skipped check lets it through.
        let pinned = trust(TlsVersion::V1_2, Some(digest), false);
        assert!(verdict(&pinned, "h", OK, &digest, Some(TlsVersion::V1_1)).is_err());
        let skip = trust(TlsVersion::V1_3, None, true);
        assert!(verdict(&skip, "h", OK, &digest, Some(TlsVersion::V1_2)).is_err());
        let v10 = trust(TlsVersion::V1_0, None, false);
        assert!(verdict(&v10, "h", OK, &digest, Some(TlsVersion::V1_0)).is_ok());
    }

    #[test]
    fn a_pin_is_the_trust_and_a_skip_trusts_anything() {
        let digest = [7; 32];
        // An untrusted chain (self-signed) with a matching pin is verified.
        let self_signed = Err(ChainProblem::Certificate(CertificateProblem::SelfSigned));
        let pinned = trust(TlsVersion::V1_2, Some(digest), false);
        let how = verdict(
            &pinned,
            "h",
            self_signed.clone(),
            &digest,
            Some(TlsVersion::V1_3),
        );
        assert_eq!(how.unwrap(), "yes, by tls_fingerprint");
        // A trusted chain with a pin that does not match is not.
        let why = verdict(&pinned, "h", OK, &[8; 32], Some(TlsVersion::V1_3)).unwrap_err();
        assert!(why.contains("does not match tls_fingerprint"), "{why}");
        let skip = trust(TlsVersion::V1_2, None, true);
        assert!(verdict(
            &skip,
            "h",
            self_signed.clone(),
            &digest,
            Some(TlsVersion::V1_3)
        )
        .is_ok());
        let plain = trust(TlsVersion::V1_2, None, false);
        let why = verdict(&plain, "h", self_signed, &digest, Some(TlsVersion::V1_3)).unwrap_err();
        assert!(
            why.contains("self-signed") && why.contains("tls_fingerprint"),
            "{why}"
        );
        assert!(!why.contains("tls_ca_file"), "{why}");
    }
}
