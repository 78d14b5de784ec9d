//! Where an account's tokens come from: the Google and Microsoft presets, or
//! endpoints given one by one, each checked to be `https://` (or `http://` to a
//! loopback address, as RFC 8252 §8.3 allows for redirects: local token proxies
//! and tests).

use std::net::IpAddr;

/// An authorization server: its endpoints and the scope that grants POP3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Provider {
    /// The authorization endpoint (RFC 6749 §3.1), for the code flow with PKCE.
    pub auth_url: Option<String>,
    /// The token endpoint (RFC 6749 §3.2).
    pub token_url: String,
    /// The device authorization endpoint (RFC 8628 §3.1).
    pub device_url: Option<String>,
    /// The revocation endpoint (RFC 7009 §2), where the provider has one.
    pub revoke_url: Option<String>,
    /// Space-separated scopes (RFC 6749 §3.3).
    pub scope: String,
}

/// The config keys of custom endpoints, each as written (unchecked).
#[derive(Debug, Clone, Default)]
pub(crate) struct CustomEndpoints<'a> {
    pub auth_url: Option<&'a str>,
    pub token_url: Option<&'a str>,
    pub device_url: Option<&'a str>,
    pub revoke_url: Option<&'a str>,
    pub scope: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EndpointError {
    #[error("{key} = \"{url}\" must be an https:// URL (http:// only to a loopback address such as 127.0.0.1 or [::1])")]
    NotHttps { key: &'static str, url: String },
    #[error("{key} = \"{url}\" is not a URL with a host")]
    Malformed { key: &'static str, url: String },
    #[error("{key} is required with oauth_provider = \"custom\"")]
    Missing { key: &'static str },
    #[error(
        "oauth_provider = \"custom\" needs oauth_device_url or oauth_auth_url, to log in with"
    )]
    NoLoginEndpoint,
}

impl Provider {
    /// Google: the scope `https://mail.google.com/` is the only one that grants POP.
    pub(crate) fn google() -> Provider {
        Provider {
            auth_url: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            token_url: "https://oauth2.googleapis.com/token".into(),
            device_url: Some("https://oauth2.googleapis.com/device/code".into()),
            revoke_url: Some("https://oauth2.googleapis.com/revoke".into()),
            scope: "https://mail.google.com/".into(),
        }
    }

    /// Microsoft identity platform (Entra ID), any tenant. `offline_access` is what
    /// makes it return a refresh token; it has no revocation endpoint.
    pub(crate) fn microsoft() -> Provider {
        const BASE: &str = "https://login.microsoftonline.com/common/oauth2/v2.0";
        Provider {
            auth_url: Some(format!("{BASE}/authorize")),
            token_url: format!("{BASE}/token"),
            device_url: Some(format!("{BASE}/devicecode")),
            revoke_url: None,
            scope: "https://outlook.office.com/POP.AccessAsUser.All offline_access".into(),
        }
    }

    /// Endpoints given one by one, each checked; the error names the config key.
    pub(crate) fn custom(given: &CustomEndpoints) -> Result<Provider, EndpointError> {
        let optional = |key, url: Option<&str>| {
            url.map(|url| checked_url(key, url).map(str::to_string))
                .transpose()
        };
        let token_url = given
            .token_url
            .ok_or(EndpointError::Missing {
                key: "oauth_token_url",
            })
            .and_then(|url| checked_url("oauth_token_url", url))?
            .to_string();
        let scope = given
            .scope
            .filter(|s| !s.trim().is_empty())
            .ok_or(EndpointError::Missing { key: "oauth_scope" })?
            .to_string();
        let provider = Provider {
            auth_url: optional("oauth_auth_url", given.auth_url)?,
            token_url,
            device_url: optional("oauth_device_url", given.device_url)?,
            revoke_url: optional("oauth_revoke_url", given.revoke_url)?,
            scope,
        };
        if provider.auth_url.is_none() && provider.device_url.is_none() {
            return Err(EndpointError::NoLoginEndpoint);
        }
        Ok(provider)
    }
}

/// `url` if it is `https://HOST…`, or `http://` to a loopback address; the error
/// names `key`. Loopback is decided on the literal address, never a name:
/// `localhost` could resolve elsewhere (RFC 8252 §8.3).
pub(crate) fn checked_url<'a>(key: &'static str, url: &'a str) -> Result<&'a str, EndpointError> {
    let malformed = || EndpointError::Malformed {
        key,
        url: url.to_string(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(malformed)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // No user-info: a password in the URL would end up in messages.
    if authority.contains('@') || authority.is_empty() {
        return Err(malformed());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').ok_or_else(malformed)?.0,
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return Err(malformed());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(url),
        "http" if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) => Ok(url),
        _ => Err(EndpointError::NotHttps {
            key,
            url: url.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_https() {
        for p in [Provider::google(), Provider::microsoft()] {
            for url in [&p.auth_url, &Some(p.token_url.clone()), &p.device_url]
                .into_iter()
                .flatten()
            {
                assert!(checked_url("k", url).is_ok(), "{url}");
            }
        }
        assert!(Provider::microsoft().revoke_url.is_none());
        assert!(Provider::microsoft().scope.contains("offline_access"));
    }

    #[test]
    fn https_or_loopback_http_only() {
        for ok in [
            "https://example.com/token",
            "https://example.com:8443",
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://[::1]:9/token",
        ] {
            assert_eq!(checked_url("oauth_token_url", ok), Ok(ok));
        }
        for bad in [
            "http://example.com/token",
            "http://localhost/token",
            "http://10.0.0.1/token",
            "http://[::2]/token",
            "ftp://127.0.0.1/",
        ] {
            let err = checked_url("oauth_token_url", bad).unwrap_err();
            assert!(matches!(err, EndpointError::NotHttps { .. }), "{bad}");
            let text = err.to_string();
            assert!(text.starts_with("oauth_token_url = ") && !text.contains('\n'));
        }
        for bad in [
            "example.com",
            "https://",
            "https:///x",
            "https://u:p@h/",
            "http://[::1/",
        ] {
            assert!(
                matches!(checked_url("k", bad), Err(EndpointError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn custom_needs_token_url_scope_and_a_login_endpoint() {
        let mut given = CustomEndpoints {
            token_url: Some("http://127.0.0.1:1/token"),
            device_url: Some("http://127.0.0.1:1/device/auth"),
            scope: Some("openid offline_access pop3"),
            ..Default::default()
        };
        let p = Provider::custom(&given).unwrap();
        assert_eq!(p.token_url, "http://127.0.0.1:1/token");
        assert!(p.auth_url.is_none() && p.revoke_url.is_none());
        given.device_url = None;
        assert_eq!(
            Provider::custom(&given),
            Err(EndpointError::NoLoginEndpoint)
        );
        given.auth_url = Some("http://example.org/auth");
        let err = Provider::custom(&given).unwrap_err();
        assert!(err.to_string().starts_with("oauth_auth_url"), "{err}");
        given.token_url = None;
        assert_eq!(
            Provider::custom(&given),
            Err(EndpointError::Missing {
                key: "oauth_token_url"
            })
        );
    }
}
