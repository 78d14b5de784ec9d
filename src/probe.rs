//! `popfetch probe`: connects to a server and shows what it offers — greeting,
//! capabilities, TLS version and cipher, the certificate (with the fingerprint ready
//! to paste as `tls_fingerprint`), the login methods, and the mailbox size when it
//! can log in. It reports certificate problems instead of stopping at them, so that
//! a self-signed certificate can be inspected and pinned.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use openssl::hash::MessageDigest;
use openssl::x509::X509NameRef;

use crate::config::{Account, TlsMode};
use crate::pop3::response::apop_timestamp;
use crate::pop3::transport::{fingerprint_text, Stream, TlsConfig, TlsOptions, TlsVersion};
use crate::pop3::{self, Capabilities, Client};

/// Where to probe.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl Target {
    pub fn of(account: &Account) -> Target {
        Target {
            host: account.host.clone(),
            port: account.port,
            tls: account.tls,
            ca_file: account.tls_ca_file.clone(),
            timeout: account.timeout,
        }
    }
}

/// Probes `target`, writing the report to `out`. With `login`, also logs in with
/// that account's credentials and shows the mailbox size.
pub fn probe(target: &Target, login: Option<&Account>, out: &mut dyn Write) -> Result<()> {
    let mut stream = Stream::connect(&target.host, target.port, target.timeout)?;
    if target.tls == TlsMode::Implicit {
        stream = handshake(stream, target, out)?;
    }
    let mut client = Client::new(stream, None)?;
    writeln!(out, "greeting:      +OK {}", client.greeting().text)?;
    if target.tls == TlsMode::Starttls {
        show_capabilities(client.capabilities()?, out, "before STLS")?;
        let mut report = Vec::new();
        client = client.starttls(|plain| {
            handshake(plain, target, &mut report).map_err(|e| pop3::Error::Tls {
                host: target.host.clone(),
                reason: format!("{e:#}"),
            })
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
    let secret = crate::connect::secret(account)?;
    let mut session = crate::connect::login(client, account, &secret)?;
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

/// The TLS handshake, verifying but not insisting, and a report of what was found.
fn handshake(stream: Stream, target: &Target, out: &mut dyn Write) -> Result<Stream> {
    let options = TlsOptions {
        ca_file: target.ca_file.clone(),
        // Whatever the server speaks is worth reporting.
        min_version: TlsVersion::V1_0,
        skip_verify: false,
        fingerprint: None,
    };
    let tls = stream.secure(&TlsConfig::report(&options)?, &target.host)?;
    let ssl = tls.tls().expect("a secured stream has a TLS session");
    writeln!(
        out,
        "tls:           {}, {}",
        ssl.version_str(),
        ssl.current_cipher().map_or("?", |c| c.name())
    )?;
    if let Some(cert) = ssl.peer_certificate() {
        let digest = cert.digest(MessageDigest::sha256())?;
        let verdict = ssl.verify_result();
        writeln!(out, "certificate:")?;
        writeln!(out, "  subject:     {}", name(cert.subject_name()))?;
        writeln!(out, "  issuer:      {}", name(cert.issuer_name()))?;
        writeln!(out, "  valid until: {}", cert.not_after())?;
        if verdict == openssl::x509::X509VerifyResult::OK {
            writeln!(out, "  verified:    yes, for {}", target.host)?;
        } else {
            writeln!(out, "  verified:    NO ({})", verdict.error_string())?;
        }
        writeln!(out, "  tls_fingerprint = \"{}\"", fingerprint_text(&digest))?;
    }
    Ok(tls)
}

fn name(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            // Certificate text is the server's choice: escape it like any other.
            let value = crate::pop3::response::escape(e.data().as_slice());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
