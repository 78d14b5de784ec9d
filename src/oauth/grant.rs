//! What the authorization server answers: a token response (RFC 6749 §5.1), an
//! error response (§5.2), a device authorization response (RFC 8628 §3.2) and
//! the device polling errors (§3.5), parsed into types; and the error a failed
//! request becomes, which says what the user should do. No token value ever
//! reaches an error message or a `Debug` form.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// Tokens from the token endpoint (RFC 6749 §5.1).
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    pub access_token: Secret,
    /// The access token's lifetime; `None` when the server did not say (§5.1
    /// only recommends it), in which case it is not cached.
    pub expires_in: Option<Duration>,
    /// A new refresh token: rotation (§6, §10.4), or the first one of a login.
    pub refresh_token: Option<Secret>,
}

/// The device authorization response (RFC 8628 §3.2).
#[derive(Debug, Clone)]
pub(crate) struct DeviceAuthorization {
    /// Secret between popfetch and the server; never shown to the user.
    pub device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    /// How long to wait between polls: 5 s when the server does not say (§3.2).
    pub interval: Duration,
}

/// One poll of the token endpoint in the device flow (RFC 8628 §3.4, §3.5).
#[derive(Debug)]
pub(crate) enum Poll {
    /// `authorization_pending`: ask again after the interval.
    Pending,
    /// `slow_down`: ask again after the interval grown by [`SLOW_DOWN`].
    SlowDown,
    Done(Tokens),
}

/// The longest a device code is waited for: providers give 15 to 30 minutes.
pub(crate) const DEVICE_LIFETIME_MAX: Duration = Duration::from_secs(60 * 60);

/// The polling interval's bounds, whatever the server asks.
pub(crate) const POLL_INTERVAL_MIN: Duration = Duration::from_secs(1);
pub(crate) const POLL_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// What `slow_down` adds to the polling interval, for this and every later poll
/// (RFC 8628 §3.5).
pub(crate) const SLOW_DOWN: Duration = Duration::from_secs(5);

/// The `error` codes of RFC 6749 §5.2 and RFC 8628 §3.5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AuthorizationPending,
    SlowDown,
    AccessDenied,
    ExpiredToken,
    /// RFC 6749 §4.1.2.1's two server-side codes, which some servers also use
    /// at the token endpoint.
    ServerError,
    TemporarilyUnavailable,
    Other(String),
}

impl ErrorCode {
    fn parse(code: &str) -> ErrorCode {
        match code {
            "invalid_request" => ErrorCode::InvalidRequest,
            "invalid_client" => ErrorCode::InvalidClient,
            "invalid_grant" => ErrorCode::InvalidGrant,
            "unauthorized_client" => ErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => ErrorCode::UnsupportedGrantType,
            "invalid_scope" => ErrorCode::InvalidScope,
            "authorization_pending" => ErrorCode::AuthorizationPending,
            "slow_down" => ErrorCode::SlowDown,
            "access_denied" => ErrorCode::AccessDenied,
            "expired_token" => ErrorCode::ExpiredToken,
            "server_error" => ErrorCode::ServerError,
            "temporarily_unavailable" => ErrorCode::TemporarilyUnavailable,
            other => ErrorCode::Other(clean(other, 40)),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::Other(code) => code,
        }
    }
}

/// What the user should do about a failed request; the caller maps it to an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The grant is gone (revoked, expired, refused): log in again.
    NeedsLogin,
    /// The network or the server is down: try again later.
    Temporary,
    /// The client id, secret, scope or endpoint is wrong.
    Config,
    /// The server's answer makes no sense.
    Protocol,
    /// The token store could not be read or written.
    Local,
}

/// A request to the authorization server that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("the authorization server refused: {}{}", code.as_str(), describe(description))]
    Refused {
        code: ErrorCode,
        /// The server's `error_description`, cleaned and shortened.
        description: Option<String>,
    },
    #[error("the authorization server answered HTTP {status}")]
    Server { status: u16 },
    #[error("cannot reach the authorization server: {0}")]
    Network(String),
    #[error("the authorization server's answer (HTTP {status}) is not understood: {reason}")]
    Malformed { status: u16, reason: String },
    #[error("the authorization server's answer is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The client secret could not be had (its command failed).
    #[error("{message}")]
    ClientSecret { message: String, temporary: bool },
}

impl Error {
    pub(crate) fn class(&self) -> Class {
        match self {
            Error::Refused { code, .. } => match code {
                ErrorCode::InvalidGrant | ErrorCode::AccessDenied | ErrorCode::ExpiredToken => {
                    Class::NeedsLogin
                }
                ErrorCode::ServerError
                | ErrorCode::TemporarilyUnavailable
                | ErrorCode::AuthorizationPending
                | ErrorCode::SlowDown => Class::Temporary,
                ErrorCode::InvalidClient
                | ErrorCode::UnauthorizedClient
                | ErrorCode::UnsupportedGrantType
                | ErrorCode::InvalidScope
                | ErrorCode::InvalidRequest
                | ErrorCode::Other(_) => Class::Config,
            },
            Error::Server { .. } | Error::Network(_) => Class::Temporary,
            Error::Malformed { .. } | Error::TooLarge { .. } => Class::Protocol,
            Error::ClientSecret {
                temporary: true, ..
            } => Class::Temporary,
            Error::ClientSecret { .. } => Class::Config,
        }
    }

    /// The server refused with this code.
    pub(crate) fn is(&self, wanted: &ErrorCode) -> bool {
        matches!(self, Error::Refused { code, .. } if code == wanted)
    }
}

fn describe(description: &Option<String>) -> String {
    description
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// Server text for a one-line message: printable ASCII only, at most `max` chars.
pub(super) fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: String,
    user_code: String,
    // Google's device endpoint says `verification_url`, after an RFC 8628 draft.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: serde_json::Value,
    #[serde(default)]
    interval: Option<serde_json::Value>,
}

/// Seconds as a JSON number or, as some servers send it, a string of digits.
fn seconds(value: &serde_json::Value) -> Option<Duration> {
    match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs)
}

fn malformed(status: u16, reason: impl Into<String>) -> Error {
    Error::Malformed {
        status,
        reason: reason.into(),
    }
}

/// The error an unsuccessful answer means: the §5.2 JSON where there is one;
/// else by status, a 5xx or 429 being temporary.
fn failure(status: u16, body: &str) -> Error {
    if status >= 500 || status == 429 {
        return Error::Server { status };
    }
    match serde_json::from_str::<RawError>(body) {
        Ok(raw) => Error::Refused {
            code: ErrorCode::parse(&raw.error),
            description: raw
                .error_description
                .map(|d| clean(&d, 200))
                .filter(|d| !d.is_empty()),
        },
        Err(_) => malformed(status, "no OAuth error object"),
    }
}

/// A token endpoint's answer (RFC 6749 §5.1, §5.2).
pub(crate) fn token_response(status: u16, body: &str) -> Result<Tokens, Error> {
    if !(200..300).contains(&status) {
        return Err(failure(status, body));
    }
    // serde's message may quote the input; keep only where it failed.
    let raw: RawTokens = serde_json::from_str(body)
        .map_err(|e| malformed(status, format!("not a token response ({:?})", e.classify())))?;
    // Bearer is what XOAUTH2 and OAUTHBEARER carry (RFC 6750); the type is
    // case-insensitive (RFC 6749 §5.1).
    if !raw.token_type.eq_ignore_ascii_case("bearer") {
        return Err(malformed(
            status,
            format!("token_type \"{}\", not Bearer", clean(&raw.token_type, 20)),
        ));
    }
    if raw.access_token.is_empty() {
        return Err(malformed(status, "an empty access_token"));
    }
    Ok(Tokens {
        access_token: Secret::new(raw.access_token),
        expires_in: raw.expires_in.as_ref().and_then(seconds),
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(Secret::new),
    })
}

/// The device authorization endpoint's answer (RFC 8628 §3.2).
pub(crate) fn device_response(status: u16, body: &str) -> Result<DeviceAuthorization, Error> {
    if !(200..300).contains(&status) {
        return Err(failure(status, body));
    }
    let raw: RawDevice = serde_json::from_str(body).map_err(|e| {
        malformed(
            status,
            format!("not a device authorization response ({:?})", e.classify()),
        )
    })?;
    let expires_in =
        seconds(&raw.expires_in).ok_or_else(|| malformed(status, "expires_in is not seconds"))?;
    Ok(DeviceAuthorization {
        device_code: Secret::new(raw.device_code),
        user_code: clean(&raw.user_code, 64),
        verification_uri: clean(&raw.verification_uri, 2000),
        verification_uri_complete: raw.verification_uri_complete.map(|u| clean(&u, 2000)),
        // Bounded, so that a server's numbers can neither overflow a deadline
        // nor make the wait endless or the polling a flood.
        expires_in: expires_in.min(DEVICE_LIFETIME_MAX),
        interval: raw
            .interval
            .as_ref()
            .and_then(seconds)
            .unwrap_or(Duration::from_secs(5))
            .clamp(POLL_INTERVAL_MIN, POLL_INTERVAL_MAX),
    })
}

/// One device-flow poll's answer (RFC 8628 §3.5): pending and slow_down are not
/// failures; access_denied and expired_token are.
pub(crate) fn poll_response(status: u16, body: &str) -> Result<Poll, Error> {
    match token_response(status, body) {
        Ok(tokens) => Ok(Poll::Done(tokens)),
        Err(e) if e.is(&ErrorCode::AuthorizationPending) => Ok(Poll::Pending),
        Err(e) if e.is(&ErrorCode::SlowDown) => Ok(Poll::SlowDown),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "eyJhbGciOiJIUzI1NiJ9.secret-access";
    const RT: &str = "FCzmDgqU304v8uAw8KYeZ8clmM1QenBCVqBllu2P7lM";

    #[test]
    fn a_token_response_as_oidc_provider_sends_it() {
        let body = format!(
            r#"{{"access_token":"{AT}","expires_in":3600,"id_token":"x","refresh_token":"{RT}","scope":"pop3","token_type":"Bearer"}}"#
        );
        let t = token_response(200, &body).unwrap();
        assert_eq!(t.access_token.expose(), AT);
        assert_eq!(t.refresh_token.as_ref().unwrap().expose(), RT);
        assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
        let debug = format!("{t:?}");
        assert!(!debug.contains(AT) && !debug.contains(RT), "{debug}");
    }

    #[test]
    fn optional_fields_and_string_seconds() {
        let t = token_response(
            200,
            r#"{"access_token":"a","token_type":"bearer","expires_in":"3599"}"#,
        )
        .unwrap();
        assert!(t.refresh_token.is_none());
        assert_eq!(t.expires_in, Some(Duration::from_secs(3599)));
        let t = token_response(200, r#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.expires_in, None);
    }

    #[test]
    fn not_bearer_or_not_json_is_a_protocol_error() {
        let e = token_response(
            200,
            &format!(r#"{{"access_token":"{AT}","token_type":"mac"}}"#),
        )
        .unwrap_err();
        assert_eq!(e.class(), Class::Protocol);
        assert!(!e.to_string().contains(AT));
        let e = token_response(200, &format!(r#"{{"access_token":"{AT}""#)).unwrap_err();
        assert_eq!(e.class(), Class::Protocol);
        assert!(!e.to_string().contains(AT), "{e}");
        let e = token_response(400, "<html>Bad Request</html>").unwrap_err();
        assert_eq!(e.class(), Class::Protocol);
    }

    #[test]
    fn error_responses_say_what_to_do() {
        let cases = [
            (400, "invalid_grant", Class::NeedsLogin),
            (401, "invalid_client", Class::Config),
            (400, "invalid_scope", Class::Config),
            (400, "unauthorized_client", Class::Config),
            (400, "unsupported_grant_type", Class::Config),
            (400, "access_denied", Class::NeedsLogin),
            (400, "expired_token", Class::NeedsLogin),
            (400, "temporarily_unavailable", Class::Temporary),
            (400, "made_up", Class::Config),
        ];
        for (status, code, class) in cases {
            let body =
                format!(r#"{{"error":"{code}","error_description":"grant request is invalid"}}"#);
            let e = token_response(status, &body).unwrap_err();
            assert_eq!(e.class(), class, "{code}");
            assert_eq!(
                e.to_string(),
                format!("the authorization server refused: {code} (grant request is invalid)")
            );
        }
        for status in [500, 502, 503, 429] {
            let e = token_response(status, r#"{"error":"invalid_grant"}"#).unwrap_err();
            assert_eq!(e.class(), Class::Temporary, "{status}");
        }
    }

    #[test]
    fn server_text_is_kept_to_one_short_line() {
        let long = "x".repeat(1000);
        let body = format!(r#"{{"error":"invalid_grant\n","error_description":"a\nb{long}"}}"#);
        let text = token_response(400, &body).unwrap_err().to_string();
        assert!(!text.contains('\n') && text.len() < 300, "{text}");
    }

    #[test]
    fn device_authorization_response() {
        let body = r#"{"device_code":"tWBMH-zhtOCw","user_code":"PSGX-PXNX","verification_uri":"http://127.0.0.1:18443/device","verification_uri_complete":"http://127.0.0.1:18443/device?user_code=PSGX-PXNX","expires_in":600,"interval":1}"#;
        let d = device_response(200, body).unwrap();
        assert_eq!(d.user_code, "PSGX-PXNX");
        assert_eq!(d.interval, Duration::from_secs(1));
        assert_eq!(d.expires_in, Duration::from_secs(600));
        assert!(!format!("{d:?}").contains("tWBMH"));
        // Google's spelling, and no interval: 5 s (RFC 8628 §3.2).
        let google = r#"{"device_code":"d","user_code":"ABC-DEF","verification_url":"https://www.google.com/device","expires_in":1800}"#;
        let d = device_response(200, google).unwrap();
        assert_eq!(d.verification_uri, "https://www.google.com/device");
        assert_eq!(d.interval, Duration::from_secs(5));
    }

    #[test]
    fn device_polling() {
        let pending = r#"{"error":"authorization_pending","error_description":"pending"}"#;
        assert!(matches!(poll_response(400, pending), Ok(Poll::Pending)));
        assert!(matches!(
            poll_response(400, r#"{"error":"slow_down"}"#),
            Ok(Poll::SlowDown)
        ));
        assert_eq!(SLOW_DOWN, Duration::from_secs(5));
        let denied = r#"{"error":"access_denied","error_description":"user denied"}"#;
        let e = poll_response(400, denied).unwrap_err();
        assert!(e.is(&ErrorCode::AccessDenied));
        assert!(poll_response(400, r#"{"error":"expired_token"}"#)
            .unwrap_err()
            .is(&ErrorCode::ExpiredToken));
        let done = poll_response(200, r#"{"access_token":"a","token_type":"Bearer"}"#);
        assert!(matches!(done, Ok(Poll::Done(_))));
    }
}
