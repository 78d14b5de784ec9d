//! A real OAuth 2.0 authorization server for one test (tests/oauth-server, npm's
//! oidc-provider under Node.js) on loopback, and the scripted user and browser that
//! approve its device and PKCE flows through curl. Stopped when dropped.
//!
//! The server signs access tokens as HS256 JWTs with the key [`super::Dovecot`]
//! checks them with, so its tokens log in to the test Dovecot. Refresh tokens rotate
//! on every use; the old one keeps working until its successor is used once.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The public client the server knows, as popfetch registers itself.
pub const CLIENT_ID: &str = "popfetch";
const INSTALL: &str = "install Node.js >= 20 (Debian package nodejs from NodeSource) and run \
    npm ci --prefix tests/oauth-server, as scripts/test-deps.sh does";

pub struct OAuthServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    issuer: String,
    jars: AtomicU32,
}

/// What a curl request answered: the status, the body and where it redirects (or "").
struct Reply {
    status: u16,
    body: String,
    redirect: String,
}

impl OAuthServer {
    /// Starts the server with its defaults (access tokens valid for an hour, no delay).
    pub fn start() -> OAuthServer {
        OAuthServer::start_with(&[])
    }

    /// Starts the server with extra environment, e.g. `OAUTH_AT_TTL` (seconds) or
    /// `OAUTH_TOKEN_DELAY_MS` (the delay of a refresh's answer, after it rotated).
    pub fn start_with(env: &[(&str, &str)]) -> OAuthServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth-server");
        let version = Command::new("node").arg("--version").output();
        let major = version
            .as_ref()
            .ok()
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout);
                text.trim()
                    .strip_prefix('v')?
                    .split('.')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("node is missing: {INSTALL}"));
        assert!(major >= 20, "node is v{major}, too old: {INSTALL}");
        assert!(
            root.join("node_modules/oidc-provider").is_dir(),
            "{} is missing: {INSTALL}",
            root.join("node_modules/oidc-provider").display()
        );
        curl_installed();
        super::daemon::started("the OAuth server", || OAuthServer::try_start(&root, env))
    }

    fn try_start(root: &Path, env: &[(&str, &str)]) -> Result<OAuthServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("popfetch-oauth")
            .tempdir()
            .unwrap();
        let stderr = fs::File::create(dir.path().join("server.stderr")).unwrap();
        let mut child = Command::new("node")
            .arg(root.join("server.mjs"))
            .env("OAUTH_PORT", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("node: {e}: {INSTALL}"));
        // A thread reads stdout to its end, so the server never blocks writing to it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = OAuthServer {
            dir,
            child: Some(child),
            issuer: String::new(),
            jars: AtomicU32::new(0),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("READY http://127.0.0.1:") => {
                server.issuer = line["READY ".len()..].trim().to_string();
                Ok(server)
            }
            other => {
                server.stop();
                Err(format!("stdout {other:?}; stderr:\n{}\n", server.stderr()))
            }
        }
    }

    /// `http://127.0.0.1:PORT`, the base of every endpoint.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn device_endpoint(&self) -> String {
        format!("{}/device/auth", self.issuer)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    /// What the server wrote to stderr, for failure messages.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.stderr")).unwrap_or_default()
    }

    /// Stops the server (a test's "the server is down"); the port stays closed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The scripted user approving a device login as `account` ("deny" refuses), in a
    /// fresh browser (cookie jar): open the verification page, submit the code,
    /// confirm, then log in and consent on the interaction page.
    pub fn approve_device(&self, verification_uri_complete: &str, account: &str) {
        let jar = self.jar();
        let (form, query) = verification_uri_complete
            .split_once('?')
            .unwrap_or_else(|| panic!("no user_code in {verification_uri_complete}"));
        let user_code = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("user_code="))
            .unwrap_or_else(|| panic!("no user_code in {verification_uri_complete}"));
        let page = self.curl(&jar, &[verification_uri_complete]);
        let xsrf = between(&page.body, "name=\"xsrf\" value=\"", "\"")
            .unwrap_or_else(|| panic!("no xsrf field in the device page: {}", page.body));
        let fields = [
            "--data-urlencode",
            &format!("xsrf={xsrf}"),
            "--data-urlencode",
            &format!("user_code={user_code}"),
        ];
        let confirm_page = self.curl(&jar, &[&[form][..], &fields[..]].concat());
        assert!(
            confirm_page.body.contains("Confirm"),
            "device code {user_code} not accepted: {}",
            confirm_page.body
        );
        let confirmed = self.curl(
            &jar,
            &[&[form][..], &fields[..], &["-d", "confirm=yes"]].concat(),
        );
        assert!(
            confirmed.redirect.contains("/interaction/"),
            "confirming {user_code}: {} {}",
            confirmed.status,
            confirmed.body
        );
        let mut url = format!("{}?account={account}", confirmed.redirect);
        let done = loop {
            let reply = self.curl(&jar, &[&url]);
            if reply.redirect.is_empty() {
                break reply;
            }
            url = reply.redirect;
        };
        let expected = if account == "deny" {
            "request was interrupted"
        } else {
            "Sign-in Success"
        };
        assert!(
            done.body.contains(expected),
            "approving {user_code} as {account}: {} {}\nserver stderr:\n{}",
            done.status,
            done.body,
            self.stderr()
        );
    }

    /// The browser of an authorization-code flow: opens `authorize_url` in a fresh
    /// cookie jar and follows every redirect, the last one to the client's loopback
    /// redirect URI included; returns the body of the last page (the client's).
    pub fn browse(&self, authorize_url: &str) -> String {
        self.browse_as(authorize_url, None)
    }

    /// [`OAuthServer::browse`], logging in as `account` ("deny" refuses) rather than
    /// the authorization request's `login_hint` or the default "alice".
    pub fn browse_as(&self, authorize_url: &str, account: Option<&str>) -> String {
        let jar = self.jar();
        let mut url = authorize_url.to_string();
        for _ in 0..10 {
            let reply = self.curl(&jar, &[&url]);
            if reply.redirect.is_empty() {
                return reply.body;
            }
            url = reply.redirect;
            if let (Some(account), true) = (account, url.contains("/interaction/")) {
                url = format!("{url}?account={account}");
            }
        }
        panic!("more than 10 redirects from {authorize_url}; now at {url}");
    }

    /// The client side of a whole device login approved by `account`: the token
    /// response (or the error of a refused one).
    pub fn device_tokens(&self, scope: &str, account: &str) -> Result<Value, Value> {
        let (status, device) = self.post("/device/auth", &[("scope", scope)]);
        assert_eq!(status, 200, "device authorization: {device}");
        self.approve_device(
            device["verification_uri_complete"].as_str().unwrap(),
            account,
        );
        let code = device["device_code"].as_str().unwrap();
        self.token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", code),
        ])
    }

    /// Exchanges an authorization code, as the client does after the redirect.
    pub fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Value, Value> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
    }

    /// A refresh, as a client makes it: the token response, or the error's JSON.
    pub fn refresh(&self, refresh_token: &str) -> Result<Value, Value> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
    }

    /// Revokes a refresh token (and with it the grant it belongs to).
    pub fn revoke(&self, refresh_token: &str) {
        let (status, body) = self.post(
            "/token/revocation",
            &[
                ("token", refresh_token),
                ("token_type_hint", "refresh_token"),
            ],
        );
        assert_eq!(status, 200, "revocation: {body}");
    }

    /// Successful grants at the token endpoint so far, by type, and revocations:
    /// `{"refresh_token": N, "device_code": N, "authorization_code": N, "revocation": N}`.
    pub fn counts(&self) -> Value {
        let reply = self.curl(&self.jar(), &[&format!("{}/_test/counts", self.issuer)]);
        serde_json::from_str(&reply.body).unwrap()
    }

    fn token(&self, fields: &[(&str, &str)]) -> Result<Value, Value> {
        let (status, body) = self.post("/token", fields);
        if status == 200 {
            Ok(body)
        } else {
            Err(body)
        }
    }

    /// A form POST as the public client; the status and the JSON answered (Null if none).
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, Value) {
        let mut args = vec![format!("{}{path}", self.issuer)];
        for (name, value) in [("client_id", CLIENT_ID)].iter().chain(fields) {
            args.push("--data-urlencode".into());
            args.push(format!("{name}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self.curl(&self.jar(), &args);
        let json = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        (reply.status, json)
    }

    /// A fresh cookie jar: each approval is a new browser, as oidc-provider wants.
    fn jar(&self) -> PathBuf {
        let n = self.jars.fetch_add(1, Ordering::SeqCst);
        self.dir.path().join(format!("cookies-{n}"))
    }

    /// One request, no redirect followed.
    fn curl(&self, jar: &Path, args: &[&str]) -> Reply {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-c"])
            .arg(jar)
            .arg("-b")
            .arg(jar)
            .args(["-w", "\n%{http_code} %{redirect_url}"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}: apt-get install curl"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {args:?}: {}\nserver stderr:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.stderr()
        );
        let (body, last) = text.rsplit_once('\n').unwrap();
        let (status, redirect) = last.split_once(' ').unwrap();
        Reply {
            status: status.parse().unwrap(),
            body: body.to_string(),
            redirect: redirect.to_string(),
        }
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::dovecot::stop(&mut child);
        }
    }
}

fn curl_installed() {
    Command::new("curl")
        .arg("--version")
        .output()
        .expect("curl drives the OAuth test server: apt-get install curl");
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A PKCE pair: a random verifier and its S256 challenge (base64url of its SHA-256).
pub fn pkce_pair() -> (String, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The claims of a JWT (its middle part), unchecked.
pub fn jwt_claims(token: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The header of a JWT, unchecked.
pub fn jwt_header(token: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}
