//! The SOCKS5 proxy a connection may go through (`socks5://` or `socks5h://`):
//! its URL, and the CONNECT through it (RFC 1928 §3–§6, with the user name and
//! password of RFC 1929) on a socket popfetch opened itself, so that the source
//! address and the timeout hold for the proxy as for a server.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use io_proxy::client::{connect_socks5, ProxyClientError};
use io_proxy::socks::v5::address::Socks5Address;
use io_proxy::socks::v5::auth::Socks5Credentials;
use io_proxy::socks::v5::connect::Socks5ConnectError;
use io_proxy::socks::v5::message::Socks5Reply;
use percent_encoding::percent_decode_str;

use super::{Error, Route};
use crate::secret::Secret;

/// The port of a proxy URL without one (RFC 1928 §3).
const SOCKS_PORT: u16 = 1080;

/// A SOCKS5 proxy.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub host: String,
    pub port: u16,
    /// `socks5h`: the proxy resolves the server's name, so that no DNS query
    /// leaves this machine (Tor needs it, and .onion names resolve nowhere else).
    pub remote_dns: bool,
    /// The RFC 1929 login: a user name, and its password once known.
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// Why a proxy URL is not one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("is not socks5://HOST:PORT or socks5h://HOST:PORT")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
    #[error(
        "has a path, query or fragment; a proxy URL is socks5://[USER[:PASSWORD]@]HOST[:PORT]"
    )]
    Path,
    #[error("has a user name or password that is not UTF-8 or longer than 255 bytes")]
    Login,
}

impl Proxy {
    /// Reads `socks5://[USER[:PASSWORD]@]HOST[:PORT]` (or `socks5h://`), the
    /// user name and password percent-encoded as in any URL (RFC 3986 §3.2.1).
    pub(crate) fn parse(url: &str) -> Result<Proxy, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::Scheme)?;
        let remote_dns = match scheme.to_ascii_lowercase().as_str() {
            "socks5" => false,
            "socks5h" => true,
            _ => return Err(UrlError::Scheme),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(UrlError::Path);
        }
        let (login, address) = match rest.rsplit_once('@') {
            Some((login, address)) => (Some(login), address),
            None => (None, rest),
        };
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .ok()
                .filter(|s| s.len() <= 255)
                .map(|s| s.into_owned())
                .ok_or(UrlError::Login)
        };
        let (user, password) = match login {
            None => (None, None),
            Some(login) => match login.split_once(':') {
                Some((user, password)) => {
                    (Some(decode(user)?), Some(Secret::new(decode(password)?)))
                }
                None => (Some(decode(login)?), None),
            },
        };
        let (host, port) = split_host_port(address)?;
        Ok(Proxy {
            host,
            port,
            remote_dns,
            user: user.filter(|u| !u.is_empty()),
            password,
        })
    }

    /// The URL without its password, for `probe` and messages.
    pub(crate) fn describe(&self) -> String {
        let scheme = if self.remote_dns { "socks5h" } else { "socks5" };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{user}{host}:{}", self.port)
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
fn split_host_port(address: &str) -> Result<(String, u16), UrlError> {
    let port = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or(UrlError::Port)
    };
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::NoHost)?;
        match after {
            "" => (host, SOCKS_PORT),
            after => (host, port(after.strip_prefix(':').ok_or(UrlError::Port)?)?),
        }
    } else {
        match address.split_once(':') {
            Some((host, p)) => (host, port(p)?),
            None => (address, SOCKS_PORT),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    Ok((host.to_string(), port))
}

/// A TCP connection to `host:port` through the route's proxy: to the proxy
/// from the route's source address, then CONNECT. With `socks5` the name is
/// resolved here and each of its addresses (of the route's family) is asked
/// for in turn; with `socks5h` the proxy gets the name.
pub(super) fn connect(
    proxy: &Proxy,
    host: &str,
    port: u16,
    timeout: Duration,
    route: &Route,
) -> Result<TcpStream, Error> {
    let targets: Vec<Socks5Address> = if proxy.remote_dns {
        vec![Socks5Address::new(host, port).map_err(|e| Error::Proxy {
            proxy: proxy.describe(),
            reason: e.to_string(),
        })?]
    } else {
        let addrs = super::resolve(host, port)?;
        let family = Route {
            source: None,
            ..route.clone()
        };
        addrs
            .filter(|addr| family.admits(addr))
            .map(|addr| match addr {
                SocketAddr::V4(a) => Socks5Address::Ipv4(*a.ip(), port),
                SocketAddr::V6(a) => Socks5Address::Ipv6(*a.ip(), port),
            })
            .collect()
    };
    if targets.is_empty() {
        return Err(Error::Resolve {
            host: host.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address for the route asked"),
        });
    }
    let credentials = match (&proxy.user, &proxy.password) {
        (Some(user), password) => Some(
            Socks5Credentials::new(user, password.as_ref().map_or("", Secret::expose)).map_err(
                |e| Error::Proxy {
                    proxy: proxy.describe(),
                    reason: e.to_string(),
                },
            )?,
        ),
        (None, _) => None,
    };
    let mut last = None;
    for target in targets {
        let mut tcp = to_proxy(proxy, timeout, route)?;
        match connect_socks5(&mut tcp, target, credentials.clone()) {
            Ok(()) => return Ok(tcp),
            // The proxy could not reach this address: another may do.
            Err(ProxyClientError::Socks5(Socks5ConnectError::Reply(reply))) => {
                last = Some(reply);
            }
            Err(e) => return Err(handshake_error(proxy, host, port, e)),
        }
    }
    let reply = last.unwrap_or(Socks5Reply::GeneralFailure);
    Err(Error::Proxy {
        proxy: proxy.describe(),
        reason: format!("could not connect to {host}:{port}: {reply}"),
    })
}

/// The connection to the proxy itself, its reads and writes bounded by
/// `timeout` from the first byte of the handshake.
fn to_proxy(proxy: &Proxy, timeout: Duration, route: &Route) -> Result<TcpStream, Error> {
    let unreachable = |addr: String, e: io::Error| Error::ProxyUnreachable {
        proxy: if proxy.host.parse::<IpAddr>().is_ok() {
            proxy.describe()
        } else {
            format!("{} ({addr})", proxy.describe())
        },
        reason: e.to_string(),
    };
    let addrs = (proxy.host.as_str(), proxy.port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            host: format!("the SOCKS5 proxy {}", proxy.host),
            source,
        })?;
    // The route's family is the server's; the proxy is reached however it can
    // be from the source address.
    let mut last = None;
    for addr in addrs.filter(|addr| {
        route
            .source
            .is_none_or(|source: IpAddr| source.is_ipv4() == addr.is_ipv4())
    }) {
        match super::connect_from(&addr, route.source, timeout) {
            // Silent (packets dropped): the next run may find it answering.
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(Error::Timeout("connecting to the SOCKS5 proxy"));
            }
            Ok(tcp) => {
                tcp.set_read_timeout(Some(timeout))
                    .and_then(|()| tcp.set_write_timeout(Some(timeout)))
                    .and_then(|()| tcp.set_nodelay(true))
                    .map_err(|e| unreachable(addr.to_string(), e))?;
                return Ok(tcp);
            }
            Err(e) => last = Some(unreachable(addr.to_string(), e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Resolve {
        host: format!("the SOCKS5 proxy {}", proxy.host),
        source: io::Error::new(io::ErrorKind::NotFound, "no address of the source's family"),
    }))
}

/// What went wrong in the handshake, as the network's error.
fn handshake_error(proxy: &Proxy, host: &str, port: u16, e: ProxyClientError) -> Error {
    let describe = proxy.describe();
    match e {
        ProxyClientError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Error::Timeout("the SOCKS5 handshake")
        }
        ProxyClientError::Io(e) => Error::Proxy {
            proxy: describe,
            reason: format!("closed the connection during the handshake ({e})"),
        },
        ProxyClientError::Socks5(
            Socks5ConnectError::AuthRejected | Socks5ConnectError::AuthRequired,
        ) => Error::ProxyLogin {
            proxy: describe,
            given: proxy.user.is_some(),
        },
        // RFC 1928 §3: 0xFF, none of the methods offered; offered no login,
        // that is the proxy asking for one.
        ProxyClientError::Socks5(Socks5ConnectError::NoAcceptableAuthMethod)
            if proxy.user.is_none() =>
        {
            Error::ProxyLogin {
                proxy: describe,
                given: false,
            }
        }
        ProxyClientError::Socks5(Socks5ConnectError::NoAcceptableAuthMethod) => Error::Proxy {
            proxy: describe,
            reason: "accepts neither no login nor a user name and password (RFC 1929), the methods popfetch offers".into(),
        },
        ProxyClientError::Socks5(Socks5ConnectError::Reply(reply)) => Error::Proxy {
            proxy: describe,
            reason: format!("could not connect to {host}:{port}: {reply}"),
        },
        ProxyClientError::Socks5(e) => Error::Proxy {
            proxy: describe,
            reason: e
                .to_string()
                .trim_start_matches("SOCKS5 connect failed: ")
                .to_string(),
        },
        #[allow(unreachable_patterns)]
        e => Error::Proxy {
            proxy: describe,
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_their_defaults_and_login() {
        let p = Proxy::parse("socks5h://127.0.0.1:9050").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.remote_dns),
            ("127.0.0.1", 9050, true)
        );
        assert!(p.user.is_none() && p.password.is_none());
        let p = Proxy::parse("SOCKS5://proxy.example.org/").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.remote_dns),
            ("proxy.example.org", 1080, false)
        );
        let p = Proxy::parse("socks5://me%40home:p%3Ass@[::1]:1081").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 1081));
        assert_eq!(p.user.as_deref(), Some("me@home"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("p:ss"));
        assert_eq!(p.describe(), "socks5://me@home@[::1]:1081");
        let p = Proxy::parse("socks5://alice@h").unwrap();
        assert_eq!(p.user.as_deref(), Some("alice"));
        assert!(p.password.is_none());
    }

    #[test]
    fn what_is_not_a_proxy_url_is_refused() {
        for (url, want) in [
            ("http://h:1", "socks5://HOST:PORT"),
            ("h:1080", "socks5://HOST:PORT"),
            ("socks5://:1080", "no host"),
            ("socks5://h:0", "port"),
            ("socks5://h:x", "port"),
            ("socks5://[::1", "no host"),
            ("socks5://h:1/path", "path"),
            ("socks5://%ff:p@h", "UTF-8"),
        ] {
            let err = Proxy::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let p = Proxy::parse("socks5://u:hunter2@h").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!p.describe().contains("hunter2"));
    }
}
