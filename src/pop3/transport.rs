//! The byte stream under POP3: a TCP connection, plain or inside TLS (implicit on
//! port 995, RFC 8314, or after STLS, RFC 2595). Every phase is bounded by a timeout,
//! and message bodies the protocol says are due are read in batches (see `Tcp`).
//!
//! TLS is OpenSSL through the `openssl` crate, the library native-tls wraps on
//! Unix, used directly so that the system's trusted roots are looked up lazily
//! (see `system_roots`) instead of the whole bundle being parsed, twice, per run.

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::ssl::{
    HandshakeError, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode,
    SslOptions, SslRef, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::store::{X509Lookup, X509StoreBuilder};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509VerifyResult, X509};
use sha2::{Digest, Sha256};

use super::{Error, Wire};

/// A connection to the server, secured or not.
pub enum Stream {
    Plain(Tcp),
    Tls(Box<SslStream<Socket>>),
}

/// The TCP socket under TLS, read through a buffer: OpenSSL asks for a record's
/// 5-byte header and then its body, and the buffer turns those two system calls
/// per record into one per 64 KiB.
pub struct Socket(BufReader<Tcp>);

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
        self.0.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.get_mut().flush()
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
    /// and that it names `host` (or, with a pin, that it is the pinned one).
    pub fn secure(self, tls: &TlsConfig, host: &str) -> Result<Stream, Error> {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            already @ Stream::Tls(_) => return Ok(already),
        };
        let failed = |reason: String| Error::Tls {
            host: host.to_string(),
            reason,
        };
        let ssl = tls.session(host).map_err(|e| failed(e.to_string()))?;
        let socket = Socket(BufReader::with_capacity(64 * 1024, tcp));
        match ssl.connect(socket) {
            Ok(stream) => {
                tls.check_pin(stream.ssl(), host)?;
                Ok(Stream::Tls(Box::new(stream)))
            }
            // The socket's read timeout fired inside the handshake.
            Err(HandshakeError::WouldBlock(_)) => Err(Error::Timeout("the TLS handshake")),
            Err(HandshakeError::SetupFailure(e)) => Err(failed(e.to_string())),
            Err(HandshakeError::Failure(mid)) => {
                let verdict = mid.ssl().verify_result();
                if verdict != X509VerifyResult::OK {
                    return Err(Error::Certificate {
                        host: host.to_string(),
                        problem: certificate_problem(verdict),
                    });
                }
                if not_tls(mid.error()) {
                    return Err(Error::NotTls {
                        host: host.to_string(),
                    });
                }
                Err(failed(describe_tls_failure(mid.error())))
            }
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
            Stream::Tls(s) => s.get_ref().0.get_ref(),
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
            Stream::Tls(s) => s.get_mut().0.get_mut(),
        }
    }

    /// The TLS session, for a report of what was negotiated.
    pub fn tls(&self) -> Option<&SslRef> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(s.ssl()),
        }
    }
}

/// The TLS library's error, in its own short words (the reasons of its error
/// stack, not the internal file and function names).
fn describe_tls_failure(e: &openssl::ssl::Error) -> String {
    if let Some(io) = e.io_error() {
        if e.ssl_error().is_none() {
            return format!("the connection broke: {io}");
        }
    }
    let reasons: Vec<&str> = e
        .ssl_error()
        .map(|stack| stack.errors().iter().filter_map(|e| e.reason()).collect())
        .unwrap_or_default();
    if reasons.is_empty() {
        "the handshake failed".into()
    } else {
        reasons.join(", ")
    }
}

/// Whether the peer answered the handshake with something that is not TLS at
/// all (OpenSSL's "wrong version number" or "packet length too long": a plain
/// POP3 greeting read as a record header).
fn not_tls(e: &openssl::ssl::Error) -> bool {
    e.ssl_error().is_some_and(|stack| {
        stack.errors().iter().any(|e| {
            matches!(
                e.reason(),
                Some("wrong version number" | "packet length too long" | "record layer failure")
            )
        })
    })
}

/// What is wrong with a certificate, in a few words, from OpenSSL's verification
/// result (`X509_V_ERR_*`, x509_vfy.h).
pub fn certificate_problem(verdict: X509VerifyResult) -> CertificateProblem {
    match verdict.as_raw() {
        10 => CertificateProblem::Expired,
        9 => CertificateProblem::NotYetValid,
        18 | 19 => CertificateProblem::SelfSigned,
        2 | 20 | 21 => CertificateProblem::UnknownIssuer,
        62 | 64 => CertificateProblem::WrongName,
        _ => CertificateProblem::Other(verdict.error_string().to_string()),
    }
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
    context: SslContext,
    /// Check the host name (not for a pin or an insecure skip).
    check_host: bool,
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
    Setup(#[from] openssl::error::ErrorStack),
}

/// The cipher suites of TLS 1.2 and below that are never acceptable, as the
/// `openssl` crate's own connector excludes them.
const CIPHERS: &str = "DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK";

impl TlsConfig {
    /// Verifies as `options` say: the chain and the host name, or the pin, or
    /// (tls_insecure_skip_verify) nothing.
    pub fn new(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
        let verify = !options.skip_verify && options.fingerprint.is_none();
        TlsConfig::build(options, verify, verify)
    }

    /// Verifies the chain and the host name but lets the handshake go on whatever
    /// the verdict, which the session's `verify_result` then tells: for `probe`.
    pub fn report(options: &TlsOptions) -> Result<TlsConfig, TlsConfigError> {
        TlsConfig::build(options, false, true)
    }

    fn build(
        options: &TlsOptions,
        insist: bool,
        check_host: bool,
    ) -> Result<TlsConfig, TlsConfigError> {
        let mut builder = context(options.min_version)?;
        builder.set_verify(if insist {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        let mut store = X509StoreBuilder::new()?;
        if check_host {
            system_roots(&mut store)?;
        }
        if let Some(path) = &options.ca_file {
            for cert in read_ca_file(path)? {
                store.add_cert(cert)?;
            }
        }
        builder.set_cert_store(store.build());
        Ok(TlsConfig {
            context: builder.build(),
            check_host,
            fingerprint: options.fingerprint,
        })
    }

    /// One connection's TLS session: SNI (RFC 6066 §3) and the host name to check
    /// (RFC 6125), by name or by address.
    fn session(&self, host: &str) -> Result<Ssl, openssl::error::ErrorStack> {
        let mut ssl = Ssl::new(&self.context)?;
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_none() {
            ssl.set_hostname(host)?;
        }
        if self.check_host {
            let param = ssl.param_mut();
            param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match ip {
                Some(ip) => param.set_ip(ip)?,
                None => param.set_host(host)?,
            }
        }
        Ok(ssl)
    }

    /// With a pinned fingerprint, the certificate must match it before a single byte
    /// of POP3 is read or sent.
    fn check_pin(&self, ssl: &SslRef, host: &str) -> Result<(), Error> {
        let Some(expected) = self.fingerprint else {
            return Ok(());
        };
        let failed = |reason: String| Error::Tls {
            host: host.to_string(),
            reason,
        };
        let der = ssl
            .peer_certificate()
            .and_then(|cert| cert.to_der().ok())
            .ok_or_else(|| failed("the server sent no certificate".into()))?;
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
}

/// A client context with the `openssl` crate's safe defaults, less
/// `SSL_MODE_RELEASE_BUFFERS`, which would free and reallocate the record
/// buffers for every record of a long download.
fn context(min: TlsVersion) -> Result<SslContextBuilder, openssl::error::ErrorStack> {
    let mut builder = SslContextBuilder::new(SslMethod::tls_client())?;
    let options =
        SslOptions::ALL | SslOptions::NO_COMPRESSION | SslOptions::NO_SSLV2 | SslOptions::NO_SSLV3;
    builder.set_options(options & !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS);
    builder.set_mode(
        SslMode::AUTO_RETRY | SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE,
    );
    builder.set_cipher_list(CIPHERS)?;
    builder.set_min_proto_version(Some(match min {
        TlsVersion::V1_0 => SslVersion::TLS1,
        TlsVersion::V1_1 => SslVersion::TLS1_1,
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }))?;
    Ok(builder)
}

/// The system's trusted roots, as OpenSSL would find them, but lazily where that is
/// possible: a hashed certificate directory (c_rehash, update-ca-certificates) is
/// consulted for the one root a chain needs, where loading the bundle file would
/// parse every root there is (some 20 ms with OpenSSL 3). `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured as OpenSSL honours them.
fn system_roots(store: &mut X509StoreBuilder) -> Result<(), openssl::error::ErrorStack> {
    let env = |name| std::env::var_os(name).map(PathBuf::from);
    let (env_file, env_dir) = (env("SSL_CERT_FILE"), env("SSL_CERT_DIR"));
    if env_file.is_some() || env_dir.is_some() {
        if let Some(file) = env_file.filter(|f| f.is_file()) {
            let lookup = store.add_lookup(X509Lookup::file())?;
            // An unreadable bundle leaves no roots: verification then fails, loudly.
            let _ = lookup.load_cert_file(&file, SslFiletype::PEM);
        }
        if let Some(dir) = env_dir {
            store
                .add_lookup(X509Lookup::hash_dir())?
                .add_dir(&dir.to_string_lossy(), SslFiletype::PEM)?;
        }
        return Ok(());
    }
    let probed = openssl_probe::probe();
    let hashed: Vec<&PathBuf> = probed.cert_dir.iter().filter(|d| is_hashed(d)).collect();
    if !hashed.is_empty() {
        let lookup = store.add_lookup(X509Lookup::hash_dir())?;
        for dir in hashed {
            lookup.add_dir(&dir.to_string_lossy(), SslFiletype::PEM)?;
        }
    } else if let Some(file) = &probed.cert_file {
        let _ = store
            .add_lookup(X509Lookup::file())?
            .load_cert_file(file, SslFiletype::PEM);
    } else {
        store.set_default_paths()?;
    }
    Ok(())
}

/// Whether `dir` holds OpenSSL's subject-hash links (`5ad8a5d6.0`).
fn is_hashed(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        name.len() >= 10
            && name[..8].iter().all(u8::is_ascii_hexdigit)
            && name[8] == b'.'
            && name[9..].iter().all(u8::is_ascii_digit)
    })
}

/// The certificates of a `tls_ca_file`, PEM.
fn read_ca_file(path: &Path) -> Result<Vec<X509>, TlsConfigError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCa {
        path: shown.clone(),
        source,
    })?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| TlsConfigError::BadCa {
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

    /// A self-signed certificate for "localhost" and its key.
    fn self_signed() -> (openssl::pkey::PKey<openssl::pkey::Private>, X509) {
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
        (key, cert.build())
    }

    #[test]
    fn under_tls_what_is_due_reaches_the_socket_and_batches_the_records() {
        use openssl::ssl::{SslAcceptor, SslMethod as Method};
        let (key, cert) = self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut acceptor = SslAcceptor::mozilla_intermediate_v5(Method::tls()).unwrap();
            acceptor.set_private_key(&key).unwrap();
            acceptor.set_certificate(&cert).unwrap();
            let acceptor = acceptor.build();
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
        stream.tcp().patience = Duration::from_secs(10);
        Wire::due(&mut stream, 64 * 4096);
        assert_eq!(stream.tcp().due, 64 * 4096);
        // What the socket brought per read, not what OpenSSL hands up per record.
        let sizes = reads(&mut stream, 64 * 4096);
        drop(server.join().unwrap());
        assert!(batched(&sizes), "{sizes:?}");
    }

    #[test]
    fn a_hashed_directory_is_recognised_by_its_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca-certificates.crt"), "").unwrap();
        assert!(!is_hashed(dir.path()));
        std::fs::write(dir.path().join("5ad8a5d6.0"), "").unwrap();
        assert!(is_hashed(dir.path()));
        assert!(!is_hashed(&dir.path().join("missing")));
    }
}
