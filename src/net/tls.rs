//! TLS trust and pinning: the platform's own library through `native-tls`
//! (OpenSSL on Linux and the BSDs, Security.framework on macOS), verifying the
//! chain and the host name, or a pinned certificate, or (when asked to) nothing;
//! the minimum version; and handshake failures told apart by cause.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use native_tls::{Certificate, HandshakeError, Protocol, TlsConnector, TlsStream};
use sha2::{Digest, Sha256};

use super::batch::Tcp;
use super::{Error, Negotiated, Route, Stream};

/// A TLS session, and what its handshake negotiated.
pub(crate) struct Secured {
    stream: TlsStream<Socket>,
    negotiated: Option<Negotiated>,
}

/// The TCP socket under TLS, read through a buffer: OpenSSL asks for a record's
/// 5-byte header and then its body, and the buffer turns those two system calls
/// per record into one per 64 KiB. During the handshake it keeps the first bytes
/// the server sends, its hello, for [`Negotiated`].
pub(super) struct Socket {
    reader: BufReader<Tcp>,
    hello: Option<Vec<u8>>,
}

/// How much of the server's first flight is kept: its ServerHello (RFC 8446
/// §4.1.3) comes first and is a few hundred bytes at most.
const HELLO_BYTES: usize = 2048;

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        if let Some(hello) = &mut self.hello {
            let room = HELLO_BYTES.saturating_sub(hello.len()).min(n);
            hello.extend_from_slice(&buf[..room]);
        }
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reader.get_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.reader.get_mut().flush()
    }
}

impl Stream {
    /// Runs the TLS handshake over a plain stream, checking the certificate chain
    /// and that it names `host` (or, with a pin, that it is the pinned one), and
    /// that the version negotiated is at least the minimum.
    pub(crate) fn secure(self, tls: &TlsConfig, host: &str) -> Result<Stream, Error> {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            already @ Stream::Tls(_) => return Ok(already),
        };
        let socket = Socket {
            reader: BufReader::with_capacity(64 * 1024, tcp),
            hello: Some(Vec::new()),
        };
        match tls.connector.connect(host, socket) {
            Ok(mut stream) => {
                let hello = stream.get_mut().hello.take().unwrap_or_default();
                let secured = Secured {
                    negotiated: Negotiated::from_hello(&hello),
                    stream,
                };
                tls.check_pin(&secured, host)?;
                tls.check_version(&secured, host)?;
                Ok(Stream::Tls(Box::new(secured)))
            }
            // The socket's read timeout fired inside the handshake.
            Err(HandshakeError::WouldBlock(_)) => Err(Error::Timeout("the TLS handshake")),
            Err(HandshakeError::Failure(e)) => Err(handshake_failure(&e, host)),
        }
    }

    /// Whether `host:port` answers a TLS handshake within `patience`: a fresh
    /// connection on `route` (never around its proxy), nothing verified,
    /// nothing sent after it.
    pub(crate) fn speaks_tls(host: &str, port: u16, patience: Duration, route: &Route) -> bool {
        let options = TlsOptions {
            ca_file: None,
            min_version: TlsVersion::V1_0,
            skip_verify: true,
            fingerprint: None,
            client: None,
        };
        let Ok(config) = TlsConfig::new(&options) else {
            return false;
        };
        Stream::connect_by(host, port, patience, route)
            .and_then(|plain| plain.secure(&config, host))
            .is_ok()
    }
}

impl Secured {
    /// The TCP connection under the session.
    pub(super) fn tcp(&self) -> &Tcp {
        self.stream.get_ref().reader.get_ref()
    }

    pub(super) fn tcp_mut(&mut self) -> &mut Tcp {
        self.stream.get_mut().reader.get_mut()
    }

    /// What the handshake negotiated, as the server's hello said; `None` if the
    /// hello could not be read.
    pub(crate) fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The server's certificate, DER.
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.stream
            .peer_certificate()
            .ok()
            .flatten()
            .and_then(|cert| cert.to_der().ok())
    }
}

impl Read for Secured {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Secured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A failed handshake, told apart by cause. native-tls gives its error as text
/// only (OpenSSL's reason and verification result; Security.framework's message).
fn handshake_failure(e: &native_tls::Error, host: &str) -> Error {
    use std::error::Error as _;
    let text = e.to_string();
    if let Some(problem) = certificate_problem(&text) {
        return Error::Certificate {
            host: host.to_string(),
            problem,
        };
    }
    if not_tls(&text) {
        return Error::NotTls {
            host: host.to_string(),
        };
    }
    let reason = match e.source().and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => format!("the connection broke: {io}"),
        None => describe_tls_failure(&text),
    };
    Error::Tls {
        host: host.to_string(),
        reason,
    }
}

/// The TLS library's error, in its own short words: of OpenSSL's error stack
/// ("error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake
/// failure:../ssl/record/rec_layer_s3.c:1605:..."), the reasons only, not the
/// internal file and function names.
fn describe_tls_failure(text: &str) -> String {
    let reasons: Vec<&str> = text
        .split(", ")
        .filter_map(|e| e.strip_prefix("error:"))
        .filter_map(|e| e.split(':').nth(3))
        .filter(|reason| !reason.is_empty())
        .collect();
    if !reasons.is_empty() {
        reasons.join(", ")
    } else if text.is_empty() || text.starts_with("error:") {
        "the handshake failed".into()
    } else {
        text.to_string()
    }
}

/// Whether the peer answered the handshake with something that is not TLS at
/// all (OpenSSL's "wrong version number" or "packet length too long": a plain
/// POP3 greeting read as a record header).
fn not_tls(text: &str) -> bool {
    [
        "wrong version number",
        "packet length too long",
        "record layer failure",
    ]
    .iter()
    .any(|reason| text.contains(reason))
}

/// What is wrong with a certificate, in a few words, from the verification
/// result in the TLS library's error text (OpenSSL's `X509_verify_cert_error_string`,
/// or Security.framework's trust result), or `None` if the error is not about
/// the certificate.
pub(super) fn certificate_problem(text: &str) -> Option<CertificateProblem> {
    let lower = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    Some(if has(&["certificate has expired", "expired"]) {
        CertificateProblem::Expired
    } else if has(&["not yet valid"]) {
        CertificateProblem::NotYetValid
    } else if has(&["self-signed", "self signed"]) {
        CertificateProblem::SelfSigned
    } else if has(&[
        "unable to get local issuer",
        "unable to get issuer",
        "unable to verify the first certificate",
        "not trusted",
        "untrusted",
    ]) {
        CertificateProblem::UnknownIssuer
    } else if has(&[
        "hostname mismatch",
        "ip address mismatch",
        "host name mismatch",
    ]) {
        CertificateProblem::WrongName
    } else if has(&["certificate verify failed"]) {
        // OpenSSL's own words follow in parentheses.
        let why = text
            .rsplit_once(" (")
            .map_or(text, |(_, why)| why.trim_end_matches(')'));
        CertificateProblem::Other(why.to_string())
    } else {
        return None;
    })
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertificateProblem {
    Expired,
    NotYetValid,
    SelfSigned,
    UnknownIssuer,
    WrongName,
    Other(String),
}

impl std::fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertificateProblem::Expired => f.write_str("has expired"),
            CertificateProblem::NotYetValid => f.write_str("is not valid yet"),
            CertificateProblem::SelfSigned => f.write_str("is self-signed"),
            CertificateProblem::UnknownIssuer => {
                f.write_str("is issued by a CA this machine does not trust")
            }
            CertificateProblem::WrongName => f.write_str("does not name this host"),
            CertificateProblem::Other(text) => write!(f, "was refused: {text}"),
        }
    }
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_0 => "1.0",
            TlsVersion::V1_1 => "1.1",
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// What the user asked of TLS.
#[derive(Debug, Clone)]
pub(crate) struct TlsOptions {
    /// Extra trusted CA certificates, PEM.
    pub ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// Accept any certificate.
    pub skip_verify: bool,
    /// The SHA-256 of the server certificate's DER, pinned. When set, it
    /// replaces the CA and host name checks: the pin is the trust.
    pub fingerprint: Option<[u8; 32]>,
    /// A certificate of ours, for a server that asks for one (RFC 8446 §4.4.2).
    pub client: Option<ClientCert>,
}

/// A client certificate and its key, PEM files (the key PKCS#8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to verify servers: the system's trusted roots plus any extra CA file, or a
/// pinned certificate.
pub(crate) struct TlsConfig {
    connector: TlsConnector,
    min_version: TlsVersion,
    fingerprint: Option<[u8; 32]>,
}

/// The SHA-256 fingerprint of a DER certificate, written "sha256:AB:CD:…".
pub(crate) fn fingerprint_text(digest: &[u8]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// A problem with the local TLS settings, found before connecting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsConfigError {
    #[error("cannot read the CA file {path}")]
    ReadCa { path: String, source: io::Error },
    #[error("the CA file {path} holds no usable PEM certificate: {reason}")]
    BadCa { path: String, reason: String },
    #[error("cannot read the client certificate file {path}")]
    ReadClient { path: String, source: io::Error },
    #[error("tls_cert_file {cert} and tls_key_file {key} are not a PEM certificate and its PKCS#8 key ({reason}); convert the key with openssl pkcs8 -topk8 -nocrypt")]
    BadClient {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(#[from] native_tls::Error),
}

impl TlsConfig {
    /// Verifies as `options` say: the chain and the host name, or the pin, or
    /// (when asked to) nothing.
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
        let verify = !options.skip_verify && options.fingerprint.is_none();
        TlsConfig::build(options, verify)
    }

    /// Verifies nothing, so that the handshake goes on whatever the certificate,
    /// which is then shown: for `probe`, which judges it on its own.
    pub(crate) fn report(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
        TlsConfig::build(options, false)
    }

    fn build(options: &TlsOptions, verify: bool) -> Result<TlsConfig, TlsConfigError> {
        let mut builder = TlsConnector::builder();
        // native-tls's OpenSSL connector is the `openssl` crate's, with its safe
        // defaults: no SSLv2/3, no compression, no weak ciphers, SNI (RFC 6066 §3)
        // and the host name checked by name or address without partial wildcards
        // (RFC 6125 §6.4.3).
        builder.min_protocol_version(Some(match options.min_version {
            TlsVersion::V1_0 => Protocol::Tlsv10,
            TlsVersion::V1_1 => Protocol::Tlsv11,
            TlsVersion::V1_2 => Protocol::Tlsv12,
            TlsVersion::V1_3 => Protocol::Tlsv13,
        }));
        if !verify {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true)
                .disable_built_in_roots(true);
        }
        // Read even when not verifying, so that a bad CA file is reported.
        if let Some(path) = &options.ca_file {
            for cert in read_ca_file(path)? {
                builder.add_root_certificate(cert);
            }
        }
        if let Some(client) = &options.client {
            builder.identity(read_identity(client)?);
        }
        Ok(TlsConfig {
            connector: builder.build()?,
            min_version: options.min_version,
            fingerprint: options.fingerprint,
        })
    }

    /// With a pinned fingerprint, the certificate must match it before a single byte
    /// of POP3 is read or sent.
    fn check_pin(&self, secured: &Secured, host: &str) -> Result<(), Error> {
        let Some(expected) = self.fingerprint else {
            return Ok(());
        };
        let der = secured.peer_certificate().ok_or_else(|| Error::Tls {
            host: host.to_string(),
            reason: "the server sent no certificate".into(),
        })?;
        let actual: [u8; 32] = Sha256::digest(&der).into();
        if actual != expected {
            return Err(Error::PinMismatch {
                host: host.to_string(),
                actual: fingerprint_text(&actual),
                expected: fingerprint_text(&expected),
            });
        }
        Ok(())
    }

    /// The library enforces the minimum version; this checks it again from the
    /// server's hello, which every backend's handshake starts with.
    fn check_version(&self, secured: &Secured, host: &str) -> Result<(), Error> {
        match secured.negotiated().map(Negotiated::tls_version) {
            Some(Some(v)) if v < self.min_version => Err(Error::Tls {
                host: host.to_string(),
                reason: format!("the server negotiated TLS {v}, below the minimum"),
            }),
            _ => Ok(()),
        }
    }
}

/// The certificates of a CA file, PEM.
/// The client certificate and key, as native-tls's identity.
fn read_identity(client: &ClientCert) -> Result<native_tls::Identity, TlsConfigError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsConfigError::ReadClient {
            path: path.display().to_string(),
            source,
        })
    };
    let (cert, key) = (read(&client.cert)?, read(&client.key)?);
    native_tls::Identity::from_pkcs8(&cert, &key).map_err(|e| TlsConfigError::BadClient {
        cert: client.cert.display().to_string(),
        key: client.key.display().to_string(),
        reason: e.to_string().lines().next().unwrap_or("").to_string(),
    })
}

fn read_ca_file(path: &Path) -> Result<Vec<Certificate>, TlsConfigError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCa {
        path: shown.clone(),
        source,
    })?;
    let certs = Certificate::stack_from_pem(&pem).map_err(|e| TlsConfigError::BadCa {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsConfigError::BadCa {
            path: shown,
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::TcpListener;

    use super::super::tests::{batched, reads, trickle};
    use super::super::Wire;

    /// A self-signed certificate for "localhost" and its key, PEM (PKCS#8).
    #[cfg(not(any(target_vendor = "apple", windows)))]
    fn self_signed() -> (Vec<u8>, Vec<u8>) {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509Builder, X509NameBuilder};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut cert = X509Builder::new().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        (
            cert.build().to_pem().unwrap(),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
    }

    #[test]
    #[cfg(not(any(target_vendor = "apple", windows)))]
    fn under_tls_what_is_due_reaches_the_socket_and_batches_the_records() {
        let (cert, key) = self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
            let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
            let (tcp, _) = listener.accept().unwrap();
            let mut tls = acceptor.accept(tcp).unwrap();
            // One 4 KiB record per write, as Dovecot's proxy sends them.
            trickle(&mut tls, 64 * 4096);
            tls
        });
        let options = TlsOptions {
            ca_file: None,
            min_version: TlsVersion::V1_2,
            skip_verify: true,
            fingerprint: None,
            client: None,
        };
        let config = TlsConfig::new(&options).unwrap();
        let plain = Stream::connect("127.0.0.1", port, Duration::from_secs(30)).unwrap();
        let mut stream = plain.secure(&config, "localhost").unwrap();
        let negotiated = stream.tls().unwrap().negotiated().cloned().unwrap();
        assert!(negotiated.tls_version() >= Some(TlsVersion::V1_2));
        assert!(negotiated.version_name().starts_with("TLSv1."));
        stream.tcp_mut().patience = Duration::from_secs(10);
        Wire::due(&mut stream, 64 * 4096);
        assert_eq!(stream.tcp_mut().due, 64 * 4096);
        // What the socket brought per read, not what OpenSSL hands up per record.
        let sizes = reads(&mut stream, 64 * 4096);
        drop(server.join().unwrap());
        assert!(stream.tcp_mut().batching);
        assert!(batched(&sizes), "{sizes:?}");
    }

    /// A handshake with a server that speaks TLS 1.2 at most, from a client
    /// whose minimum is `min`.
    #[cfg(not(any(target_vendor = "apple", windows)))]
    fn against_tls_1_2(min: TlsVersion) -> Result<Stream, Error> {
        let (cert, key) = self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
            let acceptor = native_tls::TlsAcceptor::builder(identity)
                .max_protocol_version(Some(Protocol::Tlsv12))
                .build()
                .unwrap();
            let (tcp, _) = listener.accept().unwrap();
            drop(acceptor.accept(tcp));
        });
        let options = TlsOptions {
            ca_file: None,
            min_version: min,
            skip_verify: true,
            fingerprint: None,
            client: None,
        };
        let config = TlsConfig::new(&options).unwrap();
        let plain = Stream::connect("127.0.0.1", port, Duration::from_secs(30)).unwrap();
        let secured = plain.secure(&config, "localhost");
        server.join().unwrap();
        secured
    }

    #[test]
    #[cfg(not(any(target_vendor = "apple", windows)))]
    fn a_minimum_of_1_3_refuses_a_server_that_stops_at_1_2() {
        let stream = against_tls_1_2(TlsVersion::V1_2).unwrap();
        let negotiated = stream.tls().unwrap().negotiated().unwrap();
        assert_eq!(negotiated.tls_version(), Some(TlsVersion::V1_2));
        assert!(matches!(
            against_tls_1_2(TlsVersion::V1_3),
            Err(Error::Tls { .. })
        ));
    }

    #[test]
    fn certificate_errors_are_told_apart_by_their_verification_result() {
        let openssl = |why: &str| {
            format!("error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:2102: ({why})")
        };
        for (why, problem) in [
            ("certificate has expired", CertificateProblem::Expired),
            (
                "certificate is not yet valid",
                CertificateProblem::NotYetValid,
            ),
            ("self-signed certificate", CertificateProblem::SelfSigned),
            (
                "self signed certificate in certificate chain",
                CertificateProblem::SelfSigned,
            ),
            (
                "unable to get local issuer certificate",
                CertificateProblem::UnknownIssuer,
            ),
            ("hostname mismatch", CertificateProblem::WrongName),
            ("IP address mismatch", CertificateProblem::WrongName),
        ] {
            assert_eq!(certificate_problem(&openssl(why)), Some(problem), "{why}");
        }
        assert_eq!(
            certificate_problem(&openssl("certificate revoked")),
            Some(CertificateProblem::Other("certificate revoked".into()))
        );
        let wrong = "error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../ssl/record/ssl3_record.c:354:";
        assert_eq!(certificate_problem(wrong), None);
        assert!(not_tls(wrong));
        assert_eq!(describe_tls_failure(wrong), "wrong version number");
        assert_eq!(describe_tls_failure(""), "the handshake failed");
    }
}
