//! The byte stream under POP3: a TCP connection, plain or inside TLS (implicit on
//! port 995, RFC 8314, or after STLS, RFC 2595). Every phase is bounded by a timeout.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use std::time::Duration;

use native_tls::{Certificate, HandshakeError, Protocol, TlsConnector, TlsStream};

use super::Error;

/// A connection to the server, secured or not.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `host:port`, trying each address in turn, each attempt bounded by
    /// `timeout`, which then also bounds every read and write.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Stream, Error> {
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                host: host.to_string(),
                source,
            })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(tcp) => {
                    let setup = tcp
                        .set_read_timeout(Some(timeout))
                        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
                        .and_then(|()| tcp.set_nodelay(true));
                    setup.map_err(|source| Error::Connect {
                        addr: addr.to_string(),
                        source,
                    })?;
                    return Ok(Stream::Plain(tcp));
                }
                Err(source) => last = Some((addr, source)),
            }
        }
        Err(match last {
            Some((addr, source)) => Error::Connect {
                addr: addr.to_string(),
                source,
            },
            None => Error::Resolve {
                host: host.to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
            },
        })
    }

    /// Runs the TLS handshake over a plain stream, checking the certificate chain
    /// and that it names `host`.
    pub fn secure(self, tls: &TlsConfig, host: &str) -> Result<Stream, Error> {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            already @ Stream::Tls(_) => return Ok(already),
        };
        match tls.connector.connect(host, tcp) {
            Ok(stream) => {
                tls.check_pin(&stream, host)?;
                Ok(Stream::Tls(Box::new(stream)))
            }
            // The socket's read timeout fired inside the handshake.
            Err(HandshakeError::WouldBlock(_)) => Err(Error::Timeout("the TLS handshake")),
            Err(HandshakeError::Failure(e)) => Err(Error::Tls {
                host: host.to_string(),
                reason: describe_tls_failure(&e),
            }),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// Adds the advice a user needs to the TLS library's terse error text.
fn describe_tls_failure(e: &native_tls::Error) -> String {
    let text = e.to_string();
    if text.contains("certificate verify failed") {
        format!("{text}; the server's certificate is not trusted for this host name (set tls_ca_file if it comes from a private CA)")
    } else {
        text
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

/// What the user asked of TLS.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Extra trusted CA certificates, PEM.
    pub ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// Accept any certificate (tls_insecure_skip_verify).
    pub skip_verify: bool,
    /// The SHA-256 of the server certificate's DER (tls_fingerprint). When set, it
    /// replaces the CA and host name checks: the pin is the trust.
    pub fingerprint: Option<[u8; 32]>,
}

/// How to verify servers: the system's trusted roots plus any extra CA file, or a
/// pinned certificate.
pub struct TlsConfig {
    connector: TlsConnector,
    fingerprint: Option<[u8; 32]>,
}

/// The SHA-256 fingerprint of a DER certificate, as `tls_fingerprint` writes it.
pub fn fingerprint_text(digest: &[u8]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// A problem with the local TLS settings, found before connecting.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read tls_ca_file {path}")]
    ReadCa { path: String, source: io::Error },
    #[error("tls_ca_file {path} holds no usable PEM certificate: {reason}")]
    BadCa { path: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

impl TlsConfig {
    pub fn new(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
        let mut builder = TlsConnector::builder();
        builder.min_protocol_version(Some(match options.min_version {
            TlsVersion::V1_0 => Protocol::Tlsv10,
            TlsVersion::V1_1 => Protocol::Tlsv11,
            TlsVersion::V1_2 => Protocol::Tlsv12,
            TlsVersion::V1_3 => Protocol::Tlsv13,
        }));
        if options.skip_verify || options.fingerprint.is_some() {
            builder.danger_accept_invalid_certs(true);
            builder.danger_accept_invalid_hostnames(true);
        }
        if let Some(path) = &options.ca_file {
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
            for cert in certs {
                builder.add_root_certificate(cert);
            }
        }
        let connector = builder
            .build()
            .map_err(|e| TlsConfigError::Setup(e.to_string()))?;
        Ok(TlsConfig {
            connector,
            fingerprint: options.fingerprint,
        })
    }

    /// With a pinned fingerprint, the certificate must match it before a single byte
    /// of POP3 is read or sent.
    fn check_pin(&self, stream: &TlsStream<TcpStream>, host: &str) -> Result<(), Error> {
        let Some(expected) = self.fingerprint else {
            return Ok(());
        };
        let failed = |reason: String| Error::Tls {
            host: host.to_string(),
            reason,
        };
        let der = stream
            .peer_certificate()
            .ok()
            .flatten()
            .and_then(|cert| cert.to_der().ok())
            .ok_or_else(|| failed("the server sent no certificate".into()))?;
        let actual: [u8; 32] = Sha256::digest(&der).into();
        if actual != expected {
            return Err(failed(format!(
                "the certificate does not match tls_fingerprint: it is {}, expected {}",
                fingerprint_text(&actual),
                fingerprint_text(&expected)
            )));
        }
        Ok(())
    }
}
