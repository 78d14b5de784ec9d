//! Tests of the OAuth2 test harness itself (support/oauth.rs): its real authorization
//! server issues tokens the test Dovecot accepts, through the device and PKCE flows,
//! and rotates refresh tokens as the OAuth2 tests rely on.

use crate::support::oauth::{encode, jwt_claims, jwt_header, pkce_pair, OAuthServer};
use crate::support::Dovecot;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

const POP3_SCOPE: &str = "openid offline_access pop3";
/// What popfetch's Microsoft preset asks for.
const MICROSOFT_SCOPE: &str = "https://outlook.office.com/POP.AccessAsUser.All offline_access";

/// Logs in to Dovecot's plain POP3 port with AUTH XOAUTH2; the server's last line.
fn pop3_xoauth2(port: u16, user: &str, token: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "greeting: {line}");
    let ir = BASE64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"));
    write!(writer, "AUTH XOAUTH2 {ir}\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    // A refusal comes as a challenge with the error JSON first; an empty answer ends it.
    if line.starts_with("+ ") {
        writer.write_all(b"\r\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let _ = writer.write_all(b"QUIT\r\n");
    line.trim_end().to_string()
}

fn access_token(tokens: &serde_json::Value) -> &str {
    tokens["access_token"].as_str().expect("an access token")
}

fn refresh_token(tokens: &serde_json::Value) -> String {
    tokens["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string()
}

#[test]
fn device_flow_tokens_log_in_to_dovecot() {
    let dovecot = Dovecot::start();
    let oauth = OAuthServer::start();
    let tokens = oauth.device_tokens(POP3_SCOPE, "alice").unwrap();
    let token = access_token(&tokens);
    // What Dovecot's local validation needs: typ JWT, no kid, the user in "sub".
    assert_eq!(
        jwt_header(token),
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    );
    assert_eq!(jwt_claims(token)["sub"], "alice");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let answer = pop3_xoauth2(dovecot.port, "alice", token);
    assert!(answer.starts_with("+OK"), "{answer}\n{}", dovecot.log());

    // Microsoft's scope, without openid, as the preset asks.
    let tokens = oauth.device_tokens(MICROSOFT_SCOPE, "alice").unwrap();
    let token = access_token(&tokens);
    assert_eq!(
        jwt_claims(token)["scope"],
        "https://outlook.office.com/POP.AccessAsUser.All"
    );
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let answer = pop3_xoauth2(dovecot.port, "alice", token);
    assert!(answer.starts_with("+OK"), "{answer}\n{}", dovecot.log());

    // Dovecot really checks: another user's token does not open alice's mailbox.
    let bobs = oauth.device_tokens(POP3_SCOPE, "bob").unwrap();
    let answer = pop3_xoauth2(dovecot.port, "alice", access_token(&bobs));
    assert!(answer.starts_with("-ERR"), "{answer}");

    let refused = oauth.device_tokens(POP3_SCOPE, "deny").unwrap_err();
    assert_eq!(refused["error"], "access_denied", "{refused}");
    assert_eq!(oauth.counts()["device_code"], 3, "{}", oauth.counts());
}

#[test]
fn refresh_tokens_rotate_and_the_old_one_dies_once_its_successor_is_used() {
    let oauth = OAuthServer::start();
    let rt1 = refresh_token(&oauth.device_tokens(POP3_SCOPE, "alice").unwrap());
    let rt2 = refresh_token(&oauth.refresh(&rt1).unwrap());
    assert_ne!(rt1, rt2);
    // The client may have crashed before storing rt2: rt1 still works.
    let rt2_again = refresh_token(&oauth.refresh(&rt1).unwrap());
    assert_ne!(rt2_again, rt2);
    let rt3 = refresh_token(&oauth.refresh(&rt2).unwrap());
    let refused = oauth.refresh(&rt1).unwrap_err();
    assert_eq!(refused["error"], "invalid_grant", "{refused}");
    // No reuse detection: the grant lives on.
    let rt4 = refresh_token(&oauth.refresh(&rt3).unwrap());
    let refused = oauth.refresh(&rt2).unwrap_err();
    assert_eq!(refused["error"], "invalid_grant", "{refused}");
    oauth.revoke(&rt4);
    let refused = oauth.refresh(&rt4).unwrap_err();
    assert_eq!(refused["error"], "invalid_grant", "{refused}");
    assert_eq!(
        oauth.counts(),
        serde_json::json!({"refresh_token": 4, "device_code": 1, "authorization_code": 0, "revocation": 1})
    );

    // The delay comes after the rotation; short-lived access tokens say so.
    let mut slow =
        OAuthServer::start_with(&[("OAUTH_TOKEN_DELAY_MS", "1500"), ("OAUTH_AT_TTL", "7")]);
    let rt = refresh_token(&slow.device_tokens(POP3_SCOPE, "alice").unwrap());
    let start = Instant::now();
    let tokens = slow.refresh(&rt).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1500));
    assert_eq!(tokens["expires_in"], 7, "{tokens}");
    let port: u16 = slow.issuer().rsplit(':').next().unwrap().parse().unwrap();
    slow.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// A client's loopback redirect: answers one request with a small page and hands
/// back its request line.
fn loopback_client() -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the browser hung up");
            request.extend_from_slice(&buf[..n]);
        }
        let body = "<html><body>popfetch: signed in</body></html>";
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let text = String::from_utf8_lossy(&request).into_owned();
        text.lines().next().unwrap().to_string()
    });
    (port, handle)
}

#[test]
fn browsing_the_authorization_url_lands_a_code_on_the_loopback_redirect() {
    let dovecot = Dovecot::start();
    let oauth = OAuthServer::start();
    for (host, scope) in [("127.0.0.1", POP3_SCOPE), ("localhost", MICROSOFT_SCOPE)] {
        let (port, client) = loopback_client();
        let redirect = format!("http://{host}:{port}/");
        let (verifier, challenge) = pkce_pair();
        let url = format!(
            "{}?client_id=popfetch&response_type=code&redirect_uri={}&scope={}&code_challenge={challenge}&code_challenge_method=S256&state=st42",
            oauth.authorization_endpoint(),
            encode(&redirect),
            encode(scope),
        );
        let page = oauth.browse(&url);
        assert!(page.contains("popfetch: signed in"), "{page}");
        let request = client.join().unwrap();
        let query = request
            .strip_prefix("GET /?")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("{request}"));
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {request}"))
                .to_string()
        };
        assert_eq!(param("state"), "st42");
        let code = param("code");
        let tokens = oauth.exchange_code(&code, &redirect, &verifier).unwrap();
        assert!(tokens["refresh_token"].is_string(), "{tokens}");
        let answer = pop3_xoauth2(dovecot.port, "alice", access_token(&tokens));
        assert!(answer.starts_with("+OK"), "{answer}\n{}", dovecot.log());
        let refused = oauth
            .exchange_code(&code, &redirect, &verifier)
            .unwrap_err();
        assert_eq!(refused["error"], "invalid_grant", "{refused}");
    }
    assert_eq!(oauth.counts()["authorization_code"], 2);
}
