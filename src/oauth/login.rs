//! Logging in once: the device authorization grant (RFC 8628), which needs only
//! a browser anywhere, and the authorization code with PKCE through a loopback
//! redirect (RFC 7636, RFC 8252). Both end with the first tokens; what is shown
//! to the user is the caller's.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::grant::{self, Class, DeviceAuthorization, Poll, Tokens, POLL_INTERVAL_MAX, SLOW_DOWN};
use super::http::Client;
use super::pkce::Verifier;
use super::provider::Provider;
use super::redirect::{authorization_url, Redirect, RedirectError};

/// How long the browser login waits for the user.
const BROWSER_PATIENCE: Duration = Duration::from_secs(10 * 60);

/// What the user must see to go on.
pub(crate) enum Prompt<'a> {
    /// Open this page anywhere and enter the code.
    Device(&'a DeviceAuthorization),
    /// Open this address in a browser on this machine (or paste where it led).
    Browser(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    #[error(transparent)]
    Grant(#[from] grant::Error),
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    #[error("the code was not approved within {} minutes; run the login again", .0.as_secs() / 60)]
    Expired(Duration),
    #[error("this provider has no device login (oauth_device_url); log in with --browser")]
    NoDevice,
    #[error("this provider has no authorization endpoint (oauth_auth_url) for --browser; log in without it")]
    NoBrowser,
    #[error("cannot draw random numbers for the login: {0}")]
    Random(getrandom::Error),
    #[error("the provider gave no refresh token, so every sync would need a new login; the scope must allow offline access (Microsoft: offline_access) and the app must be allowed refresh tokens")]
    NoRefreshToken,
    /// What `--import` read is not a refresh token.
    #[error("{0}")]
    NotAToken(&'static str),
}

impl LoginError {
    pub(crate) fn class(&self) -> Class {
        match self {
            LoginError::Grant(e) => e.class(),
            LoginError::Redirect(RedirectError::Listen(_)) | LoginError::Random(_) => Class::Local,
            // Nobody approved in time: run it again when someone can.
            LoginError::Redirect(RedirectError::Timeout(_)) | LoginError::Expired(_) => {
                Class::Temporary
            }
            LoginError::Redirect(_) => Class::NeedsLogin,
            LoginError::NoDevice
            | LoginError::NoBrowser
            | LoginError::NoRefreshToken
            | LoginError::NotAToken(_) => Class::Config,
        }
    }
}

/// The device flow: asks for a code, shows it, and polls at the server's pace
/// (RFC 8628 §3.4, §3.5) until it is approved, refused or expired.
pub(crate) fn device(
    client: &Client,
    provider: &Provider,
    show: &mut dyn FnMut(Prompt),
) -> Result<Tokens, LoginError> {
    let url = provider.device_url.as_deref().ok_or(LoginError::NoDevice)?;
    let authorization = client.device_authorization(url, &provider.scope)?;
    show(Prompt::Device(&authorization));
    let deadline = Instant::now() + authorization.expires_in;
    let mut interval = authorization.interval;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LoginError::Expired(authorization.expires_in));
        }
        std::thread::sleep(interval.min(left));
        match client.poll_device(&provider.token_url, &authorization.device_code) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Done(tokens)) => return Ok(tokens),
            // slow_down, and (RFC 8628 §3.5) a connection that failed: back off
            // and keep polling, the user may have entered the code already.
            Ok(Poll::SlowDown) => interval = (interval + SLOW_DOWN).min(POLL_INTERVAL_MAX),
            Err(e) if e.class() == Class::Temporary => {
                interval = (interval + SLOW_DOWN).min(POLL_INTERVAL_MAX)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The code flow: listens on the loopback, shows the authorization URL, takes
/// the code from the redirect (or from an address `pasted` on stdin) and trades
/// it with the PKCE verifier.
pub(crate) fn browser(
    client: &Client,
    provider: &Provider,
    pasted: &Receiver<String>,
    show: &mut dyn FnMut(Prompt),
) -> Result<Tokens, LoginError> {
    let auth_url = provider.auth_url.as_deref().ok_or(LoginError::NoBrowser)?;
    let redirect = Redirect::bind(provider.redirect_host)?;
    let verifier = Verifier::new().map_err(LoginError::Random)?;
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(LoginError::Random)?;
    let state = URL_SAFE_NO_PAD.encode(nonce);
    let url = authorization_url(
        auth_url,
        client.client_id(),
        &redirect.uri,
        &provider.scope,
        &verifier,
        &state,
    );
    show(Prompt::Browser(&url));
    let code = redirect.wait(&state, BROWSER_PATIENCE, pasted)?;
    Ok(client.exchange_code(&provider.token_url, &code, &redirect.uri, &verifier)?)
}
