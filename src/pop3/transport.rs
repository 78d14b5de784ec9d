//! The byte stream under POP3: a TCP connection, plain or inside TLS (implicit on
//! port 995, RFC 8314, or after STLS, RFC 2595). Every phase is bounded by a timeout,
//! and message bodies the protocol says are due are read in batches (see `Tcp`).
//!
//! TLS is the platform's own library through `native-tls`: OpenSSL on Linux and
//! the BSDs, Security.framework on macOS. It does not report what a handshake
//! negotiated, so the server's hello is read off the wire for that (`Negotiated`).

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use native_tls::{Certificate, HandshakeError, Protocol, TlsConnector, TlsStream};
use sha2::{Digest, Sha256};

use super::{Error, Wire};

/// A connection to the server, secured or not.
pub enum Stream {
    Plain(Tcp),
    Tls(Box<Secured>),
}

/// A TLS session, and what its handshake negotiated.
pub struct Secured {
    stream: TlsStream<Socket>,
    negotiated: Option<Negotiated>,
}

/// The TCP socket under TLS, read through a buffer: OpenSSL asks for a record's
/// 5-byte header and then its body, and the buffer turns those two system calls
/// per record into one per 64 KiB. During the handshake it keeps the first bytes
/// the server sends, its hello, for [`Negotiated`].
pub struct Socket {
    reader: BufReader<Tcp>,
    hello: Option<Vec<u8>>,
}

/// How much of the server's first flight is kept: its ServerHello (RFC 8446
/// §4.1.3) comes first and is a few hundred bytes at most.
const HELLO_BYTES: usize = 2048;

/// What a read waits for while at least that much is due: one wake-up per 64 KiB,
/// where a server writing 4 KiB at a time (Dovecot's TLS proxy writes a record at
/// a time) would wake the reader for nearly every write.
const BATCH: usize = 64 * 1024;
/// Less than this due, and a read takes whatever has come.
const MIN_BATCH: usize = 16 * 1024;
/// How long a read waits for its batch. A batch that does not come in time (a
/// slow path, a moment of packet loss, a server that sends less than it listed)
/// ends batching on the connection: reads then take whatever comes, within the
/// account's timeout.
const PATIENCE: Duration = Duration::from_millis(250);

/// The TCP connection, told how many bytes are on their way: the listed sizes of
/// the messages asked for, which the replies usually exceed (a status line,
/// dot-stuffing, the terminator; under TLS, each record's header and tag). While
/// enough is due, a read waits for a batch of it (SO_RCVLOWAT, socket(7)).
pub struct Tcp {
    socket: TcpStream,
    /// Bytes due: counted down by every byte read, and cleared when the protocol
    /// is owed nothing more, so it overshoots only by what a server overstated.
    due: u64,
    /// SO_RCVLOWAT as it is set now; 1, the system's default, when not batching.
    low_water: usize,
    /// The account's timeout, for reads that do not batch.
    timeout: Duration,
    /// How long a batch may take: PATIENCE (the tests set their own).
    patience: Duration,
    batching: bool,
}

impl Tcp {
    fn new(socket: TcpStream, timeout: Duration) -> Tcp {
        Tcp {
            socket,
            due: 0,
            low_water: 1,
            timeout,
            patience: PATIENCE,
            batching: true,
        }
    }

    fn set_rcvlowat(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is this socket's, open for as long as `self`,
        // and the option value is a c_int, as SO_RCVLOWAT takes.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Has reads wait for `bytes` at a time, within `patience`. The short timeout
    /// goes first, so that a mark is never waited for with the account's.
    fn batch(&mut self, bytes: usize) -> io::Result<()> {
        self.socket
            .set_read_timeout(Some(self.patience.min(self.timeout)))?;
        self.set_rcvlowat(bytes)?;
        self.low_water = bytes;
        Ok(())
    }

    /// Has reads take whatever comes, within the account's timeout. The mark goes
    /// first, so that a mark is never waited for with the account's timeout.
    fn settle(&mut self) -> io::Result<()> {
        if self.low_water != 1 {
            self.set_rcvlowat(1)?;
            self.low_water = 1;
        }
        self.socket.set_read_timeout(Some(self.timeout))
    }

    /// Settles for good: batching is an optimisation, and whatever goes wrong
    /// with it ends it for the connection.
    fn stop_batching(&mut self) -> io::Result<()> {
        self.batching = false;
        self.due = 0;
        self.settle()
    }
}

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let batch = if self.batching {
            self.due.min(BATCH.min(buf.len()) as u64) as usize
        } else {
            1
        };
        let want = if batch >= MIN_BATCH { batch } else { 1 };
        if self.batching && want != self.low_water {
            if want == 1 {
                self.settle()?;
            } else if self.batch(want).is_err() {
                self.stop_batching()?;
            }
        }
        let waited = self.low_water > 1;
        let n = match self.socket.read(buf) {
            Ok(n) if waited && n > 0 && n < self.low_water => {
                // The batch fell short within its patience.
                self.stop_batching()?;
                n
            }
            Ok(n) => n,
            Err(e)
                if waited
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
            {
                // Nothing at all within its patience: wait as before (a real
                // timeout is then reported that much later).
                self.stop_batching()?;
                self.socket.read(buf)?
            }
            Err(e) => return Err(e),
        };
        self.due = self.due.saturating_sub(n as u64);
        Ok(n)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

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
                    return Ok(Stream::Plain(Tcp::new(tcp, timeout)));
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
    /// and that it names `host` (or, with a pin, that it is the pinned one), and
    /// that the version negotiated is at least the minimum.
    pub fn secure(self, tls: &TlsConfig, host: &str) -> Result<Stream, Error> {
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
    /// connection, nothing verified, nothing sent after it.
    pub fn speaks_tls(host: &str, port: u16, patience: Duration) -> bool {
        let options = TlsOptions {
            ca_file: None,
            min_version: TlsVersion::V1_0,
            skip_verify: true,
            fingerprint: None,
        };
        let Ok(config) = TlsConfig::new(&options) else {
            return false;
        };
        Stream::connect(host, port, patience)
            .and_then(|plain| plain.secure(&config, host))
            .is_ok()
    }

    /// The address connected to.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => s.stream.get_ref().reader.get_ref(),
        };
        tcp.socket.peer_addr().ok()
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TCP connection, under TLS or not.
    fn tcp(&mut self) -> &mut Tcp {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => s.stream.get_mut().reader.get_mut(),
        }
    }

    /// The TLS session, for a report of what was negotiated.
    pub fn tls(&self) -> Option<&Secured> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(s),
        }
    }
}

impl Secured {
    /// What the handshake negotiated, as the server's hello said; `None` if the
    /// hello could not be read.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The server's certificate, DER.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.stream
            .peer_certificate()
            .ok()
            .flatten()
            .and_then(|cert| cert.to_der().ok())
    }
}

/// The TLS version and cipher suite a handshake negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version's code point (0x0303 is TLS 1.2, RFC 8446 §4.2.1).
    pub version: u16,
    /// The cipher suite's code point (IANA "TLS Cipher Suites").
    pub cipher: u16,
}

impl Negotiated {
    /// Reads the ServerHello at the start of the server's first flight: the
    /// legacy version, session id and cipher suite, and for TLS 1.3 the
    /// supported_versions extension that holds the real version (RFC 8446 §4.1.3,
    /// §4.2.1; RFC 5246 §7.4.1.3 before it).
    pub fn from_hello(bytes: &[u8]) -> Option<Negotiated> {
        // The record header: handshake (22), version, length.
        let record = bytes.get(5..)?;
        if bytes[0] != 22 {
            return None;
        }
        // The handshake header: server_hello (2), a 3-byte length.
        if *record.first()? != 2 {
            return None;
        }
        let body = record.get(4..)?;
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
        };
        let mut version = u16_at(0)?;
        let session_id = usize::from(*body.get(34)?);
        let mut at = 35 + session_id;
        let cipher = u16_at(at)?;
        at += 3;
        if let Some(total) = u16_at(at) {
            let end = at + 2 + usize::from(total);
            at += 2;
            while at + 4 <= end {
                let (kind, len) = (u16_at(at)?, usize::from(u16_at(at + 2)?));
                if kind == 43 && len == 2 {
                    version = u16_at(at + 4)?;
                }
                at += 4 + len;
            }
        }
        Some(Negotiated { version, cipher })
    }

    /// The version, if it is one `tls_min_version` names.
    pub fn tls_version(&self) -> Option<TlsVersion> {
        match self.version {
            0x0301 => Some(TlsVersion::V1_0),
            0x0302 => Some(TlsVersion::V1_1),
            0x0303 => Some(TlsVersion::V1_2),
            0x0304 => Some(TlsVersion::V1_3),
            _ => None,
        }
    }

    /// The version as OpenSSL names it ("TLSv1.3").
    pub fn version_name(&self) -> String {
        match self.tls_version() {
            Some(TlsVersion::V1_0) => "TLSv1".into(),
            Some(v) => format!("TLSv{v}"),
            None => format!("version 0x{:04x}", self.version),
        }
    }

    /// The cipher suite's IANA name, for the suites servers choose today.
    pub fn cipher_name(&self) -> String {
        let name = match self.cipher {
            0x1301 => "TLS_AES_128_GCM_SHA256",
            0x1302 => "TLS_AES_256_GCM_SHA384",
            0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
            0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            0x009e => "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
            0x009f => "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
            0xc013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            0xc014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            0x002f => "TLS_RSA_WITH_AES_128_CBC_SHA",
            0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
            0x009c => "TLS_RSA_WITH_AES_128_GCM_SHA256",
            0x009d => "TLS_RSA_WITH_AES_256_GCM_SHA384",
            other => return format!("0x{other:04x}"),
        };
        name.into()
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
pub fn certificate_problem(text: &str) -> Option<CertificateProblem> {
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
pub enum CertificateProblem {
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

impl Wire for Stream {
    fn due(&mut self, bytes: u64) {
        let tcp = self.tcp();
        tcp.due = tcp.due.saturating_add(bytes);
    }

    fn clear_due(&mut self) {
        self.tcp().due = 0;
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.stream.flush(),
        }
    }
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
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
    min_version: TlsVersion,
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
    Setup(#[from] native_tls::Error),
}

impl TlsConfig {
    /// Verifies as `options` say: the chain and the host name, or the pin, or
    /// (tls_insecure_skip_verify) nothing.
    pub fn new(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
        let verify = !options.skip_verify && options.fingerprint.is_none();
        TlsConfig::build(options, verify)
    }

    /// Verifies nothing, so that the handshake goes on whatever the certificate,
    /// which is then shown: for `probe`, which judges it on its own.
    pub fn report(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
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
        // Read even when not verifying, so that a bad tls_ca_file is reported.
        if let Some(path) = &options.ca_file {
            for cert in read_ca_file(path)? {
                builder.add_root_certificate(cert);
            }
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

/// The certificates of a `tls_ca_file`, PEM.
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
    use std::time::Instant;

    /// A loopback connection: our end as a plain `Stream` with a 30 s timeout and
    /// the given patience, and the server's end for a thread to write to.
    fn connected(patience: Duration) -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let timeout = Duration::from_secs(30);
        ours.set_read_timeout(Some(timeout)).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let mut tcp = Tcp::new(ours, timeout);
        tcp.patience = patience;
        (Stream::Plain(tcp), theirs)
    }

    /// Reads until `total` bytes came; for each read from the socket, what was
    /// due before it and how much of that it brought.
    fn reads(stream: &mut Stream, total: usize) -> Vec<(u64, u64)> {
        let mut buf = vec![0; 1 << 16];
        let (mut got, mut sizes) = (0, Vec::new());
        while got < total {
            let before = stream.tcp().due;
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the connection closed after {got} bytes");
            got += n;
            let after = stream.tcp().due;
            if after != before {
                sizes.push((before, before - after));
            }
        }
        sizes
    }

    /// Every read made while a full batch was due brought a full batch (without
    /// the low-water mark, a read would bring about one 4 KiB write).
    fn batched(sizes: &[(u64, u64)]) -> bool {
        let batch = BATCH as u64;
        let full: Vec<_> = sizes.iter().filter(|(due, _)| *due >= batch).collect();
        !full.is_empty() && full.iter().all(|(_, n)| *n >= batch)
    }

    /// Writes `total` bytes 4 KiB at a time, a millisecond apart.
    fn trickle(server: &mut impl Write, total: usize) {
        for _ in 0..total / 4096 {
            server.write_all(&[b'x'; 4096]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn what_is_due_is_read_in_batches_not_per_write() {
        let (mut stream, mut server) = connected(Duration::from_secs(10));
        let writer = std::thread::spawn(move || trickle(&mut server, 64 * 4096));
        Wire::due(&mut stream, 64 * 4096);
        assert_eq!(stream.tcp().due, 64 * 4096);
        let sizes = reads(&mut stream, 64 * 4096);
        writer.join().unwrap();
        assert!(batched(&sizes), "{sizes:?}");
        assert!(stream.tcp().batching);
        assert_eq!(stream.tcp().due, 0);
        Wire::due(&mut stream, 100);
        Wire::clear_due(&mut stream);
        assert_eq!(stream.tcp().due, 0);
    }

    #[test]
    fn a_server_sending_less_than_due_costs_patience_not_the_timeout() {
        let (mut stream, mut server) = connected(Duration::from_millis(100));
        server.write_all(&[b'x'; 10_000]).unwrap();
        Wire::due(&mut stream, 1 << 20);
        let start = Instant::now();
        let mut buf = [0; 1 << 16];
        assert_eq!(stream.read(&mut buf).unwrap(), 10_000);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // Batching is over for this connection; a later read takes what comes,
        // within the account's timeout.
        let tcp = stream.tcp();
        assert!(!tcp.batching);
        assert_eq!(tcp.low_water, 1);
        assert_eq!(tcp.socket.read_timeout().unwrap(), Some(tcp.timeout));
        Wire::due(&mut stream, 1 << 20);
        server.write_all(b"more").unwrap();
        assert_eq!(stream.read(&mut buf).unwrap(), 4);
    }

    #[test]
    fn a_server_slower_than_patience_is_still_read() {
        let (mut stream, mut server) = connected(Duration::from_millis(100));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            server.write_all(&[b'x'; 20_000]).unwrap();
            server
        });
        Wire::due(&mut stream, 1 << 20);
        let mut got = 0;
        let mut buf = [0; 1 << 16];
        while got < 20_000 {
            got += stream.read(&mut buf).unwrap();
        }
        assert_eq!(got, 20_000);
        let tcp = stream.tcp();
        assert!(!tcp.batching);
        assert_eq!(tcp.socket.read_timeout().unwrap(), Some(tcp.timeout));
        drop(writer.join().unwrap());
    }

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
        };
        let config = TlsConfig::new(&options).unwrap();
        let plain = Stream::connect("127.0.0.1", port, Duration::from_secs(30)).unwrap();
        let mut stream = plain.secure(&config, "localhost").unwrap();
        let negotiated = stream.tls().unwrap().negotiated().cloned().unwrap();
        assert!(negotiated.tls_version() >= Some(TlsVersion::V1_2));
        assert!(negotiated.version_name().starts_with("TLSv1."));
        stream.tcp().patience = Duration::from_secs(10);
        Wire::due(&mut stream, 64 * 4096);
        assert_eq!(stream.tcp().due, 64 * 4096);
        // What the socket brought per read, not what OpenSSL hands up per record.
        let sizes = reads(&mut stream, 64 * 4096);
        drop(server.join().unwrap());
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
        };
        let config = TlsConfig::new(&options).unwrap();
        let plain = Stream::connect("127.0.0.1", port, Duration::from_secs(30)).unwrap();
        let secured = plain.secure(&config, "localhost");
        server.join().unwrap();
        secured
    }

    #[test]
    #[cfg(not(any(target_vendor = "apple", windows)))]
    fn tls_min_version_1_3_refuses_a_server_that_stops_at_1_2() {
        let stream = against_tls_1_2(TlsVersion::V1_2).unwrap();
        let negotiated = stream.tls().unwrap().negotiated().unwrap();
        assert_eq!(negotiated.tls_version(), Some(TlsVersion::V1_2));
        assert!(matches!(
            against_tls_1_2(TlsVersion::V1_3),
            Err(Error::Tls { .. })
        ));
    }

    /// A ServerHello record: `version` in the legacy field, a 32-byte session
    /// id, `cipher`, and `extensions`.
    fn hello(version: u16, cipher: u16, extensions: &[u8]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        body.extend([7; 32]);
        body.push(32);
        body.extend([9; 32]);
        body.extend(cipher.to_be_bytes());
        body.push(0);
        body.extend(u16::try_from(extensions.len()).unwrap().to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![2, 0];
        handshake.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        handshake.extend(body);
        let mut record = vec![22, 3, 3];
        record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn the_server_hello_tells_the_version_and_cipher() {
        // TLS 1.2: the legacy version is the version.
        let v12 = Negotiated::from_hello(&hello(0x0303, 0xc030, &[0xff, 1, 0, 1, 0])).unwrap();
        assert_eq!(v12.tls_version(), Some(TlsVersion::V1_2));
        assert_eq!(v12.version_name(), "TLSv1.2");
        assert_eq!(v12.cipher_name(), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        // TLS 1.3: supported_versions (43) holds it, after another extension.
        let ext = [0, 51, 0, 2, 0xaa, 0xbb, 0, 43, 0, 2, 3, 4];
        let v13 = Negotiated::from_hello(&hello(0x0303, 0x1302, &ext)).unwrap();
        assert_eq!(v13.tls_version(), Some(TlsVersion::V1_3));
        assert_eq!(v13.cipher_name(), "TLS_AES_256_GCM_SHA384");
        let v10 = Negotiated::from_hello(&hello(0x0301, 0x1234, &[])).unwrap();
        assert_eq!(v10.version_name(), "TLSv1");
        assert_eq!(v10.cipher_name(), "0x1234");
        // Not a hello, or cut short: nothing is claimed.
        assert_eq!(Negotiated::from_hello(b"+OK POP3 ready\r\n"), None);
        assert_eq!(Negotiated::from_hello(&hello(0x0303, 1, &[])[..40]), None);
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
