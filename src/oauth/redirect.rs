//! The browser half of the authorization code flow: the authorization URL with
//! its PKCE challenge and `state` (RFC 6749 §4.1.1, RFC 7636 §4.3), and the
//! loopback listener the browser is redirected to (RFC 8252 §7.3), which takes
//! the code only when `state` matches (RFC 6749 §10.12). Where the browser runs
//! on another machine (over ssh), the address it was sent to may be pasted
//! instead.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use super::grant::clean;
use super::pkce::Verifier;
use crate::secret::Secret;

/// The most read of the browser's request: its request line and headers.
const REQUEST_MAX: usize = 16 * 1024;

/// How long one browser connection may take to send its whole request, so that
/// a client trickling bytes cannot hold the listener.
const REQUEST_PATIENCE: Duration = Duration::from_secs(5);

/// How often the listener looks for a connection or a pasted address.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedirectError {
    #[error("the sign-in was refused: {error}{}", describe(.description))]
    Refused {
        error: String,
        description: Option<String>,
    },
    #[error("no sign-in arrived within {} minutes", .0.as_secs() / 60)]
    Timeout(Duration),
    #[error("cannot listen for the browser on 127.0.0.1")]
    Listen(#[source] io::Error),
    #[error("the pasted address holds no code= and state= of this login")]
    Pasted,
}

fn describe(description: &Option<String>) -> String {
    description
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// A listener on a free port of 127.0.0.1, and the redirect URI that names it.
pub(crate) struct Redirect {
    listener: TcpListener,
    pub uri: String,
}

/// What one request to the listener (or one pasted address) carried.
#[derive(Debug, PartialEq, Eq)]
enum Callback {
    Code(String),
    Refused {
        error: String,
        description: Option<String>,
    },
    /// Not this login's: another path, or a `state` that does not match.
    Stray,
}

impl Redirect {
    /// Listens on 127.0.0.1 (the literal, never a name: RFC 8252 §8.3); `host`
    /// is how the URI names it, `127.0.0.1` or `localhost`.
    pub(crate) fn bind(host: &str) -> Result<Redirect, RedirectError> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(RedirectError::Listen)?;
        listener
            .set_nonblocking(true)
            .map_err(RedirectError::Listen)?;
        let port = listener.local_addr().map_err(RedirectError::Listen)?.port();
        Ok(Redirect {
            listener,
            uri: format!("http://{host}:{port}/"),
        })
    }

    /// Waits until the browser comes back with this login's `state`, or an
    /// address is pasted, or `patience` runs out. A request with the wrong
    /// `state` is answered and ignored: it is not this login's.
    pub(crate) fn wait(
        &self,
        state: &str,
        patience: Duration,
        pasted: &Receiver<String>,
    ) -> Result<Secret, RedirectError> {
        let deadline = Instant::now() + patience;
        let mut pasting = true;
        loop {
            let mut idle = false;
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(done) = answer(stream, state) {
                        return done;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => idle = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RedirectError::Listen(e)),
            }
            if pasting {
                match pasted.try_recv() {
                    Ok(line) => match query_of(line.trim()).map(|q| callback(q, state)) {
                        Some(Callback::Code(code)) => return Ok(Secret::new(code)),
                        Some(Callback::Refused { error, description }) => {
                            return Err(RedirectError::Refused { error, description })
                        }
                        Some(Callback::Stray) | None => return Err(RedirectError::Pasted),
                    },
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => pasting = false,
                }
            }
            if Instant::now() >= deadline {
                return Err(RedirectError::Timeout(patience));
            }
            if idle {
                std::thread::sleep(TICK);
            }
        }
    }
}

/// The authorization request (RFC 6749 §4.1.1) with PKCE S256 (RFC 7636 §4.3).
pub(crate) fn authorization_url(
    auth_url: &str,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    verifier: &Verifier,
    state: &str,
) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("code_challenge", &verifier.challenge())
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state)
        .finish();
    let joint = if auth_url.contains('?') { '&' } else { '?' };
    format!("{auth_url}{joint}{query}")
}

/// Reads one request and answers it; `Some` when it ends the wait.
fn answer(mut stream: TcpStream, state: &str) -> Option<Result<Secret, RedirectError>> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(REQUEST_PATIENCE));
    let head = read_head(&mut stream, Instant::now() + REQUEST_PATIENCE)?;
    let target = request_target(&head);
    let outcome = match target.and_then(|t| t.strip_prefix('/')) {
        Some(rest) if rest.is_empty() || rest.starts_with('?') => {
            callback(rest.trim_start_matches('?'), state)
        }
        _ => Callback::Stray,
    };
    let (status, text) = match &outcome {
        Callback::Code(_) => (
            "200 OK",
            "popfetch is logged in. You can close this tab.".to_string(),
        ),
        Callback::Refused { error, .. } => (
            "200 OK",
            format!(
                "The sign-in was refused ({}). popfetch stopped.",
                html(error)
            ),
        ),
        Callback::Stray => ("404 Not Found", "Not this login's address.".to_string()),
    };
    let page = format!("<!doctype html><title>popfetch</title><p>{text}</p>\n");
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{page}",
        page.len()
    );
    let _ = stream.flush();
    match outcome {
        Callback::Code(code) => Some(Ok(Secret::new(code))),
        Callback::Refused { error, description } => {
            Some(Err(RedirectError::Refused { error, description }))
        }
        Callback::Stray => None,
    }
}

/// The request line and headers, up to the blank line; `None` when the browser
/// sent something else, too much, or not all of it by `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() + n > REQUEST_MAX {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

/// The target of `GET TARGET HTTP/1.1`.
fn request_target(head: &str) -> Option<&str> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    (parts.next()? == "GET").then_some(())?;
    parts.next()
}

/// The query of a pasted address: everything after `?`, or the line itself
/// when it is a bare query.
fn query_of(line: &str) -> Option<&str> {
    match line.split_once('?') {
        Some((_, query)) => Some(query.split('#').next().unwrap_or("")),
        None if line.contains("code=") || line.contains("error=") => Some(line),
        None => None,
    }
}

/// What a redirect's query says (RFC 6749 §4.1.2, §4.1.2.1), for this `state`.
fn callback(query: &str, state: &str) -> Callback {
    let mut code = None;
    let mut error = None;
    let mut description = None;
    let mut matches = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "code" => code = Some(value.into_owned()),
            "state" => matches = value == state,
            "error" => error = Some(clean(&value, 200)),
            "error_description" => description = Some(clean(&value, 200)),
            _ => {}
        }
    }
    if !matches {
        return Callback::Stray;
    }
    match (code, error) {
        (_, Some(error)) => Callback::Refused { error, description },
        (Some(code), None) if !code.is_empty() => Callback::Code(code),
        _ => Callback::Stray,
    }
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn the_code_counts_only_with_this_logins_state() {
        assert_eq!(
            callback("code=abc&state=s1&iss=x", "s1"),
            Callback::Code("abc".into())
        );
        assert_eq!(callback("code=abc&state=s2", "s1"), Callback::Stray);
        assert_eq!(callback("code=abc", "s1"), Callback::Stray);
        assert_eq!(
            callback(
                "error=access_denied&error_description=user+denied&state=s1",
                "s1"
            ),
            Callback::Refused {
                error: "access_denied".into(),
                description: Some("user denied".into())
            }
        );
    }

    #[test]
    fn the_url_carries_the_challenge_and_state_encoded() {
        let verifier = Verifier::new().unwrap();
        let url = authorization_url(
            "https://example.org/auth",
            "id 1",
            "http://127.0.0.1:5/",
            "a b",
            &verifier,
            "st",
        );
        assert!(url.starts_with("https://example.org/auth?response_type=code&client_id=id+1&redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2F&scope=a+b&code_challenge="), "{url}");
        assert!(url.ends_with("&code_challenge_method=S256&state=st"));
        assert!(!url.contains(verifier.expose()));
    }

    /// A listener, and the address a browser reaches it at.
    fn listening() -> (Redirect, String) {
        let redirect = Redirect::bind("127.0.0.1").unwrap();
        let port = redirect.listener.local_addr().unwrap().port();
        (redirect, format!("127.0.0.1:{port}"))
    }

    #[test]
    fn the_listener_ignores_strays_and_answers_the_browser() {
        let (redirect, addr) = listening();
        let browser = std::thread::spawn(move || {
            let get = |target: &str| {
                let mut s = TcpStream::connect(&addr).unwrap();
                write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut page = String::new();
                s.read_to_string(&mut page).unwrap();
                page
            };
            let stray = get("/favicon.ico");
            let forged = get("/?code=evil&state=other");
            let real = get("/?code=good&state=s1");
            (stray, forged, real)
        });
        let (_keep, pasted) = mpsc::channel::<String>();
        let code = redirect
            .wait("s1", Duration::from_secs(20), &pasted)
            .unwrap();
        assert_eq!(code.expose(), "good");
        let (stray, forged, real) = browser.join().unwrap();
        assert!(stray.starts_with("HTTP/1.1 404"), "{stray}");
        assert!(forged.starts_with("HTTP/1.1 404"), "{forged}");
        assert!(
            real.starts_with("HTTP/1.1 200") && real.contains("logged in"),
            "{real}"
        );
    }

    #[test]
    fn a_trickling_client_is_dropped_and_the_browser_still_gets_through() {
        let (redirect, addr) = listening();
        let browser = std::thread::spawn(move || {
            // A byte every half second, never ending its request.
            let mut slow = TcpStream::connect(&addr).unwrap();
            let trickle = std::thread::spawn(move || {
                for _ in 0..30 {
                    if slow.write_all(b"G").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
            std::thread::sleep(Duration::from_millis(200));
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(s, "GET /?code=ok&state=s1 HTTP/1.1\r\n\r\n").unwrap();
            let mut page = String::new();
            s.read_to_string(&mut page).unwrap();
            drop(trickle);
            page
        });
        let (_keep, pasted) = mpsc::channel::<String>();
        let started = Instant::now();
        let code = redirect
            .wait("s1", Duration::from_secs(30), &pasted)
            .unwrap();
        assert_eq!(code.expose(), "ok");
        assert!(started.elapsed() < REQUEST_PATIENCE + Duration::from_secs(3));
        assert!(browser.join().unwrap().contains("logged in"));
    }

    #[test]
    fn a_pasted_address_ends_the_wait_and_nothing_arriving_times_out() {
        let redirect = Redirect::bind("localhost").unwrap();
        assert!(redirect.uri.starts_with("http://localhost:"));
        let (paste, pasted) = mpsc::channel();
        paste
            .send("http://localhost:1/?code=c2&state=s9\n".to_string())
            .unwrap();
        let code = redirect
            .wait("s9", Duration::from_secs(5), &pasted)
            .unwrap();
        assert_eq!(code.expose(), "c2");
        paste.send("nonsense".to_string()).unwrap();
        assert!(matches!(
            redirect.wait("s9", Duration::from_secs(5), &pasted),
            Err(RedirectError::Pasted)
        ));
        drop(paste);
        assert!(matches!(
            redirect.wait("s9", Duration::from_millis(100), &pasted),
            Err(RedirectError::Timeout(_))
        ));
    }
}
