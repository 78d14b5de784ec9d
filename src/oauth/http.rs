//! The form POSTs of OAuth 2.0 (`application/x-www-form-urlencoded`, RFC 6749
//! §3.2 and appendix B) to the token, device authorization and revocation
//! endpoints, over the platform's TLS, each bounded in time and in the size of
//! the answer. Tokens travel in request bodies only, never in a URL.

use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

use super::grant::{self, DeviceAuthorization, Error, Poll, Tokens};
use super::pkce::Verifier;
use crate::secret::Secret;

/// The most read of an answer: a token response is a few KiB.
pub(crate) const BODY_MAX: u64 = 1 << 20;

/// The grant type of the device flow (RFC 8628 §3.4).
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A client of one authorization server, as the registered application
/// `client_id` (a public client without a secret, or a confidential one).
pub(crate) struct Client {
    /// Through the proxy the environment names (HTTPS_PROXY and the like), if
    /// any: over TLS a proxy sees nothing of the tokens.
    agent: ureq::Agent,
    /// Never through a proxy: for `http://` to a loopback address, which a
    /// proxy would reach as its own loopback, reading the tokens on the way.
    direct: ureq::Agent,
    client_id: String,
    client_secret: Option<Secret>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client whose every request (connect, send, answer) ends within `timeout`.
    pub(crate) fn new(client_id: &str, client_secret: Option<Secret>, timeout: Duration) -> Client {
        let agent = |proxy: Option<ureq::Proxy>| -> ureq::Agent {
            // native-tls with the system's roots, as the POP3 connection trusts.
            let tls = TlsConfig::builder()
                .provider(TlsProvider::NativeTls)
                .root_certs(RootCerts::PlatformVerifier)
                .build();
            ureq::Agent::config_builder()
                .tls_config(tls)
                .proxy(proxy)
                .timeout_global(Some(timeout))
                // 4xx carry the §5.2 error object: read them, not fail on them.
                .http_status_as_error(false)
                // A redirect of a POST could carry the refresh token elsewhere.
                .max_redirects(0)
                .user_agent(concat!("popfetch/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Client {
            agent: agent(ureq::Proxy::try_from_env()),
            direct: agent(None),
            client_id: client_id.to_string(),
            client_secret,
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// POSTs `params` plus the client's credentials in the body (RFC 6749 §2.3.1,
    /// which Google and Microsoft accept for installed apps); the status and the
    /// body, at most [`BODY_MAX`] bytes.
    fn post(&self, url: &str, params: &[(&str, &str)]) -> Result<(u16, String), Error> {
        let mut form: Vec<(&str, &str)> = vec![("client_id", &self.client_id)];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.expose()));
        }
        form.extend_from_slice(params);
        // The endpoints were checked: `http://` only to a loopback address.
        let agent = if url.starts_with("https://") {
            &self.agent
        } else {
            &self.direct
        };
        let mut response = agent
            .post(url)
            .header("Accept", "application/json")
            .send_form(form)
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_MAX)
            .read_to_string()
            .map_err(transport)?;
        Ok((status, body))
    }

    /// Refreshes the access token (RFC 6749 §6). The answer may carry a new
    /// refresh token that replaces this one (rotation).
    pub(crate) fn refresh(&self, token_url: &str, refresh_token: &Secret) -> Result<Tokens, Error> {
        let (status, body) = self.post(
            token_url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
            ],
        )?;
        grant::token_response(status, &body)
    }

    /// Starts the device flow (RFC 8628 §3.1).
    pub(crate) fn device_authorization(
        &self,
        device_url: &str,
        scope: &str,
    ) -> Result<DeviceAuthorization, Error> {
        let (status, body) = self.post(device_url, &[("scope", scope)])?;
        grant::device_response(status, &body)
    }

    /// One poll of the device flow (RFC 8628 §3.4); the caller waits the interval.
    pub(crate) fn poll_device(&self, token_url: &str, device_code: &Secret) -> Result<Poll, Error> {
        let (status, body) = self.post(
            token_url,
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device_code.expose()),
            ],
        )?;
        grant::poll_response(status, &body)
    }

    /// Trades an authorization code for tokens (RFC 6749 §4.1.3) with the PKCE
    /// verifier (RFC 7636 §4.5).
    pub(crate) fn exchange_code(
        &self,
        token_url: &str,
        code: &Secret,
        redirect_uri: &str,
        verifier: &Verifier,
    ) -> Result<Tokens, Error> {
        let (status, body) = self.post(
            token_url,
            &[
                ("grant_type", "authorization_code"),
                ("code", code.expose()),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.expose()),
            ],
        )?;
        grant::token_response(status, &body)
    }

    /// Revokes a token (RFC 7009 §2.1): 200 whether or not it was still valid
    /// (§2.2).
    pub(crate) fn revoke(&self, revoke_url: &str, refresh_token: &Secret) -> Result<(), Error> {
        let (status, body) = self.post(
            revoke_url,
            &[
                ("token", refresh_token.expose()),
                ("token_type_hint", "refresh_token"),
            ],
        )?;
        if status == 200 {
            return Ok(());
        }
        Err(grant::token_response(status, &body)
            .err()
            .unwrap_or(Error::Malformed {
                status,
                reason: "a revocation answer other than 200".into(),
            }))
    }
}

/// A request that got no complete answer: the network's trouble, temporary,
/// unless the answer was too large.
fn transport(e: ureq::Error) -> Error {
    match e {
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge { limit },
        other => Error::Network(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant::Class;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// A one-request HTTP server on 127.0.0.1 that answers `status` with `body`
    /// and hands back the request it got (head and body).
    fn serve(status: u16, body: Vec<u8>) -> (String, mpsc::Receiver<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|n| n.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            let mut request_body = vec![0; length];
            reader.read_exact(&mut request_body).unwrap();
            let _ = tx.send((head, String::from_utf8(request_body).unwrap()));
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        });
        (url, rx)
    }

    fn client() -> Client {
        Client::new(
            "popfetch",
            Some(Secret::new("s3cret&=".into())),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn refresh_posts_a_form_and_reads_the_tokens() {
        let (url, rx) = serve(
            200,
            br#"{"access_token":"at","expires_in":3600,"refresh_token":"rt2","token_type":"Bearer"}"#
                .to_vec(),
        );
        let tokens = client()
            .refresh(&url, &Secret::new("rt 1/+".into()))
            .unwrap();
        assert_eq!(tokens.access_token.expose(), "at");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "rt2");
        let (head, body) = rx.recv().unwrap();
        assert!(head.starts_with("POST /token HTTP/1.1\r\n"), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/x-www-form-urlencoded"));
        assert_eq!(
            body,
            "client_id=popfetch&client_secret=s3cret%26%3D&grant_type=refresh_token&refresh_token=rt+1%2F%2B"
        );
    }

    #[test]
    fn an_error_object_is_a_refusal() {
        let (url, _rx) = serve(
            400,
            br#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#.to_vec(),
        );
        let e = client()
            .refresh(&url, &Secret::new("rt".into()))
            .unwrap_err();
        assert!(e.is(&grant::ErrorCode::InvalidGrant), "{e}");
        assert_eq!(e.class(), Class::NeedsLogin);
    }

    #[test]
    fn a_5xx_or_no_server_is_temporary() {
        let (url, _rx) = serve(503, b"<html>down</html>".to_vec());
        let e = client()
            .refresh(&url, &Secret::new("rt".into()))
            .unwrap_err();
        assert!(matches!(e, Error::Server { status: 503 }), "{e}");
        assert_eq!(e.class(), Class::Temporary);
        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client()
            .refresh(
                &format!("http://127.0.0.1:{port}/token"),
                &Secret::new("rt".into()),
            )
            .unwrap_err();
        assert_eq!(e.class(), Class::Temporary, "{e}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let client = Client::new("popfetch", None, Duration::from_millis(300));
        let start = std::time::Instant::now();
        let e = client.refresh(&url, &Secret::new("rt".into())).unwrap_err();
        assert_eq!(e.class(), Class::Temporary, "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(listener);
    }

    #[test]
    fn an_oversized_answer_is_cut_short() {
        let mut body = br#"{"access_token":""#.to_vec();
        body.resize(2 * BODY_MAX as usize, b'a');
        let (url, _rx) = serve(200, body);
        let e = client()
            .refresh(&url, &Secret::new("rt".into()))
            .unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        assert_eq!(e.class(), Class::Protocol);
    }

    #[test]
    fn device_authorization_and_revocation() {
        let (url, rx) = serve(
            200,
            br#"{"device_code":"dc","user_code":"AB-CD","verification_uri":"http://127.0.0.1/device","expires_in":600}"#
                .to_vec(),
        );
        let client = Client::new("popfetch", None, Duration::from_secs(5));
        let d = client
            .device_authorization(&url, "openid offline_access pop3")
            .unwrap();
        assert_eq!(d.user_code, "AB-CD");
        assert_eq!(
            rx.recv().unwrap().1,
            "client_id=popfetch&scope=openid+offline_access+pop3"
        );
        let (url, rx) = serve(200, Vec::new());
        client.revoke(&url, &Secret::new("rt".into())).unwrap();
        assert_eq!(
            rx.recv().unwrap().1,
            "client_id=popfetch&token=rt&token_type_hint=refresh_token"
        );
    }

    #[test]
    fn device_polls_and_code_exchange_send_their_grants() {
        let client = Client::new("popfetch", None, Duration::from_secs(5));
        let (url, rx) = serve(400, br#"{"error":"authorization_pending"}"#.to_vec());
        let poll = client.poll_device(&url, &Secret::new("dc".into())).unwrap();
        assert!(matches!(poll, Poll::Pending));
        assert_eq!(
            rx.recv().unwrap().1,
            "client_id=popfetch&grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=dc"
        );
        let (url, rx) = serve(
            200,
            br#"{"access_token":"at","token_type":"Bearer","refresh_token":"rt"}"#.to_vec(),
        );
        let verifier = Verifier::new().unwrap();
        let tokens = client
            .exchange_code(
                &url,
                &Secret::new("c0de".into()),
                "http://127.0.0.1:54321/callback",
                &verifier,
            )
            .unwrap();
        assert_eq!(tokens.refresh_token.unwrap().expose(), "rt");
        assert_eq!(
            rx.recv().unwrap().1,
            format!(
                "client_id=popfetch&grant_type=authorization_code&code=c0de&redirect_uri=http%3A%2F%2F127.0.0.1%3A54321%2Fcallback&code_verifier={}",
                verifier.expose()
            )
        );
    }

    #[test]
    fn the_secret_is_not_in_debug() {
        assert!(!format!("{:?}", client()).contains("s3cret"));
    }
}
