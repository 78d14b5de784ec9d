//! The network under every protocol popfetch speaks (POP3, and SMTP, LMTP and IMAP
//! for delivery): the byte stream (`Stream`), a TCP connection plain or
//! inside TLS; reads that wait for what is due in batches (`batch`); TLS trust,
//! pinning and what a handshake negotiated (`tls`, `hello`); what a certificate
//! says of itself (`certificate`); where the system's roots are found (`roots`);
//! the SOCKS5 proxy a connection may go through (`proxy`).
//! It knows nothing of the protocols above it nor of the configuration: its errors speak of
//! the network only.

mod batch;
mod certificate;
mod hello;
#[cfg(test)]
pub(crate) mod mock;
mod proxy;
mod roots;
mod tls;

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use batch::Tcp;
pub(crate) use certificate::CertificateDetails;
pub(crate) use hello::Negotiated;
pub(crate) use proxy::Proxy;
pub(crate) use roots::{found_env, prefer_lazy_roots};
pub(crate) use tls::{
    fingerprint_text, CertificateProblem, ClientCert, Secured, TlsConfig, TlsConfigError,
    TlsOptions, TlsVersion,
};

/// The byte stream a session runs over. Besides reading and writing, it may be
/// told how many bytes are surely on their way, so as to wait for many at a time
/// (the TCP stream does, see `batch`); by default it lets that pass.
pub(crate) trait Wire: Read + Write {
    /// `bytes` more bytes will arrive: the listed size of a message asked for,
    /// which its reply usually exceeds.
    fn due(&mut self, bytes: u64) {
        let _ = bytes;
    }

    /// Nothing more is owed, or what was said may not all come (the server
    /// refused a message).
    fn clear_due(&mut self) {}
}

/// What can go wrong in reaching and securing the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot resolve {host}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot connect to {addr}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("the certificate of {host} {problem}")]
    Certificate {
        host: String,
        problem: CertificateProblem,
    },
    #[error("the certificate of {host} is {actual}, expected {expected}")]
    PinMismatch {
        host: String,
        actual: String,
        expected: String,
    },
    #[error("{host} did not answer the TLS handshake with TLS")]
    NotTls { host: String },
    #[error("timed out waiting for the server during {0}")]
    Timeout(&'static str),
    #[error("cannot connect to the SOCKS5 proxy {proxy}: {reason}")]
    ProxyUnreachable { proxy: String, reason: String },
    #[error("the SOCKS5 proxy {proxy} {reason}")]
    Proxy { proxy: String, reason: String },
    #[error("the SOCKS5 proxy {proxy} {}", if *given { "refused the user name and password" } else { "asks for a user name and password" })]
    ProxyLogin { proxy: String, given: bool },
}

/// Whether a host name or address names this machine: `localhost`, or a
/// loopback address (127.0.0.0/8, ::1). A connection to it is checked again by
/// [`Stream::reaches_loopback`].
pub(crate) fn names_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Which addresses of a name to try (`ip_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Family {
    #[default]
    Any,
    V4,
    V6,
}

/// How to reach a server: from which local address, over which family,
/// through which proxy. The default is the system's choice of both, direct.
#[derive(Debug, Clone, Default)]
pub(crate) struct Route {
    /// Bound before connecting (`source_ip`); through a proxy, the local end
    /// of the connection to the proxy.
    pub source: Option<std::net::IpAddr>,
    pub family: Family,
    pub proxy: Option<Proxy>,
}

impl Route {
    /// Whether `addr` may be tried on this route: of the family asked for, and
    /// of the source address's own family.
    fn admits(&self, addr: &std::net::SocketAddr) -> bool {
        let family = match self.family {
            Family::Any => true,
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        };
        family
            && self
                .source
                .is_none_or(|source| source.is_ipv4() == addr.is_ipv4())
    }

    /// For `probe`: "direct, from 127.0.0.2, IPv4 only", or "through
    /// socks5h://127.0.0.1:9050".
    pub(crate) fn describe(&self) -> String {
        let mut parts = vec![match &self.proxy {
            None => "direct".to_string(),
            Some(proxy) => format!("through {}", proxy.describe()),
        }];
        if let Some(source) = self.source {
            parts.push(format!("from {source}"));
        }
        match self.family {
            Family::Any => {}
            Family::V4 => parts.push("IPv4 only".into()),
            Family::V6 => parts.push("IPv6 only".into()),
        }
        parts.join(", ")
    }
}

/// The addresses of `host:port`, by the system's resolver.
fn resolve(host: &str, port: u16) -> Result<std::vec::IntoIter<std::net::SocketAddr>, Error> {
    (host, port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            host: host.to_string(),
            source,
        })
}

/// A TCP connection to `addr`, from `source` when one is given (bound first,
/// port chosen by the system).
fn connect_from(
    addr: &std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(addr, timeout);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(*addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket
        .bind(&std::net::SocketAddr::new(source, 0).into())
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("source_ip {source} is not an address of this machine ({e})"),
            )
        })?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

/// A connection to the server, secured or not.
pub(crate) enum Stream {
    Plain(Tcp),
    Tls(Box<Secured>),
}

impl Stream {
    /// Connects to `host:port` directly, by the system's choice of route.
    #[cfg(test)]
    pub(crate) fn connect(host: &str, port: u16, timeout: Duration) -> Result<Stream, Error> {
        Stream::connect_by(host, port, timeout, &Route::default())
    }

    /// Connects to `host:port` on `route`: through its proxy, or trying each
    /// address of its family in turn from its source address. Each attempt is
    /// bounded by `timeout`, which then also bounds every read and write.
    pub(crate) fn connect_by(
        host: &str,
        port: u16,
        timeout: Duration,
        route: &Route,
    ) -> Result<Stream, Error> {
        if let Some(proxy) = &route.proxy {
            let tcp = proxy::connect(proxy, host, port, timeout, route)?;
            let mut tcp = Tcp::new(tcp, timeout);
            tcp.proxied = true;
            return Ok(Stream::Plain(tcp));
        }
        let addrs = resolve(host, port)?;
        let mut last = None;
        let mut tried = false;
        for addr in addrs.filter(|addr| route.admits(addr)) {
            tried = true;
            match connect_from(&addr, route.source, timeout) {
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
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    if tried || (route.source.is_none() && route.family == Family::Any) {
                        "no address found".to_string()
                    } else {
                        format!("no address for the route asked ({})", route.describe())
                    },
                ),
            },
        })
    }

    /// Whether the connection reached this machine: its peer is a loopback
    /// address, whatever the name that led there. Never through a proxy: the
    /// proxy may be here, the server it reached is not known to be.
    pub(crate) fn reaches_loopback(&self) -> bool {
        !self.tcp().proxied && self.peer().is_some_and(|peer| peer.ip().is_loopback())
    }

    /// The TCP connection, under TLS or not.
    fn tcp(&self) -> &Tcp {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => s.tcp(),
        }
    }

    /// The address connected to (through a proxy, the proxy's).
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.tcp().peer()
    }

    /// Our end of the connection.
    pub(crate) fn local(&self) -> Option<std::net::SocketAddr> {
        self.tcp().local()
    }

    /// The TCP connection, under TLS or not.
    fn tcp_mut(&mut self) -> &mut Tcp {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => s.tcp_mut(),
        }
    }

    /// Waits up to `timeout` for each read from now on (a mail server's reply to
    /// the end of a message may take minutes).
    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let tcp = self.tcp_mut();
        tcp.timeout = timeout;
        tcp.socket.set_read_timeout(Some(timeout))
    }

    /// The TLS session, for a report of what was negotiated.
    pub(crate) fn tls(&self) -> Option<&Secured> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(s),
        }
    }
}

impl Wire for Stream {
    fn due(&mut self, bytes: u64) {
        self.tcp_mut().due(bytes);
    }

    fn clear_due(&mut self) {
        self.tcp_mut().clear_due();
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

#[cfg(test)]
mod tests {
    use super::batch::BATCH;
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
    pub(super) fn reads(stream: &mut Stream, total: usize) -> Vec<(u64, u64)> {
        let mut buf = vec![0; 1 << 16];
        let (mut got, mut sizes) = (0, Vec::new());
        while got < total {
            let before = stream.tcp_mut().due;
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the connection closed after {got} bytes");
            got += n;
            let after = stream.tcp_mut().due;
            if after != before {
                sizes.push((before, before - after));
            }
        }
        sizes
    }

    /// The reads made while a full batch was due brought 16 KiB or more on
    /// average, and at least one a whole batch: without the low-water mark, a read
    /// brings about one 4 KiB write. (Not every read a whole batch: Linux reports
    /// the socket readable early when the receive window runs low, so that the
    /// sender is not left waiting for it — tcp_epollin_ready.)
    pub(super) fn batched(sizes: &[(u64, u64)]) -> bool {
        let batch = u64::try_from(BATCH).unwrap();
        let full: Vec<u64> = sizes
            .iter()
            .filter(|(due, _)| *due >= batch)
            .map(|(_, n)| *n)
            .collect();
        let total: u64 = full.iter().sum();
        !full.is_empty()
            && full.iter().any(|n| *n >= batch)
            && total / u64::try_from(full.len()).unwrap() >= 16 * 1024
    }

    /// Writes `total` bytes 4 KiB at a time, a millisecond apart.
    pub(super) fn trickle(server: &mut impl Write, total: usize) {
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
        assert_eq!(stream.tcp_mut().due, 64 * 4096);
        let sizes = reads(&mut stream, 64 * 4096);
        writer.join().unwrap();
        assert!(batched(&sizes), "{sizes:?}");
        assert!(stream.tcp_mut().batching);
        assert_eq!(stream.tcp_mut().due, 0);
        Wire::due(&mut stream, 100);
        Wire::clear_due(&mut stream);
        assert_eq!(stream.tcp_mut().due, 0);
    }

    #[test]
    fn a_server_sending_less_than_due_costs_patience_not_the_timeout() {
        let (mut stream, mut server) = connected(Duration::from_millis(100));
        server.write_all(&[b'x'; 10_000]).unwrap();
        Wire::due(&mut stream, 1 << 20);
        let start = Instant::now();
        let mut buf = [0; 1 << 16];
        // Less than a batch within the patience: the read takes it, and batching
        // goes on (a batch may come slowly).
        assert_eq!(stream.read(&mut buf).unwrap(), 10_000);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(stream.tcp_mut().batching);
        // Nothing at all within the patience: the read takes what comes first,
        // within the account's timeout, and batching goes on.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            server.write_all(b"more").unwrap();
            server
        });
        assert_eq!(stream.read(&mut buf).unwrap(), 4);
        let tcp = stream.tcp_mut();
        assert!(tcp.batching);
        assert_eq!(tcp.low_water, 1);
        assert_eq!(tcp.socket.read_timeout().unwrap(), Some(tcp.timeout));
        let mut server = writer.join().unwrap();
        Wire::due(&mut stream, 1 << 20);
        server.write_all(b"again").unwrap();
        assert_eq!(stream.read(&mut buf).unwrap(), 5);
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
        let tcp = stream.tcp_mut();
        assert!(tcp.batching);
        assert_eq!(tcp.socket.read_timeout().unwrap(), Some(tcp.timeout));
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_round_trip_longer_than_patience_does_not_end_batching() {
        // The first byte of a reply comes a round trip after its command: on a
        // path slower than the patience, the first read waits for it as any
        // read, and the batch that follows is still read in batches.
        let (mut stream, mut server) = connected(Duration::from_millis(50));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            trickle(&mut server, 64 * 4096);
        });
        Wire::due(&mut stream, 64 * 4096);
        let sizes = reads(&mut stream, 64 * 4096);
        writer.join().unwrap();
        assert!(stream.tcp_mut().batching);
        assert!(batched(&sizes), "{sizes:?}");
    }
}
