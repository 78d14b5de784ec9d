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
    /// The host of the loopback redirect (RFC 8252 §7.3): `127.0.0.1`, or
    /// `localhost` where the provider only registers that (Microsoft Entra).
    pub redirect_host: &'static str,
    /// Where a user removes the app's access when there is no revocation endpoint.
    pub manage_url: Option<&'static str>,
}

/// Which preset, the config key `oauth_provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preset {
    Google,
    Microsoft,
    /// Every endpoint from the config.
    Custom,
}

/// The endpoint keys of the config, each as written (unchecked): all of a
/// custom provider's, or a preset's overrides (a token proxy, a test server).
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
    #[error(
        "oauth_tenant = \"{0}\" is not a tenant name, domain or id (letters, digits, . and -)"
    )]
    Tenant(String),
}

impl Provider {
    /// Google. The scope `https://mail.google.com/` is the only one that grants
    /// POP, and Google's device flow does not allow it: logins use the browser.
    pub(crate) fn google() -> Provider {
        Provider {
            auth_url: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            token_url: "https://oauth2.googleapis.com/token".into(),
            device_url: None,
            revoke_url: Some("https://oauth2.googleapis.com/revoke".into()),
            scope: "https://mail.google.com/".into(),
            redirect_host: "127.0.0.1",
            manage_url: Some("https://myaccount.google.com/connections"),
        }
    }

    /// Microsoft identity platform (Entra ID), `tenant` being `common`, a domain
    /// or a tenant id. `offline_access` is what makes it return a refresh token;
    /// it has no revocation endpoint.
    pub(crate) fn microsoft(tenant: &str) -> Result<Provider, EndpointError> {
        let valid = !tenant.is_empty()
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid {
            return Err(EndpointError::Tenant(tenant.to_string()));
        }
        let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
        Ok(Provider {
            auth_url: Some(format!("{base}/authorize")),
            token_url: format!("{base}/token"),
            device_url: Some(format!("{base}/devicecode")),
            revoke_url: None,
            scope: "https://outlook.office.com/POP.AccessAsUser.All offline_access".into(),
            redirect_host: "localhost",
            manage_url: Some("https://myapplications.microsoft.com/"),
        })
    }

    /// The preset with the config's endpoint keys over it, each checked; the
    /// error names the key.
    pub(crate) fn configured(
        preset: Preset,
        tenant: &str,
        given: &CustomEndpoints,
    ) -> Result<Provider, EndpointError> {
        let mut provider = match preset {
            Preset::Google => Provider::google(),
            Preset::Microsoft => Provider::microsoft(tenant)?,
            Preset::Custom => return Provider::custom(given),
        };
        if let Some(url) = checked_opt("oauth_token_url", given.token_url)? {
            provider.token_url = url;
        }
        for (key, url, slot) in [
            ("oauth_auth_url", given.auth_url, &mut provider.auth_url),
            (
                "oauth_device_url",
                given.device_url,
                &mut provider.device_url,
            ),
            (
                "oauth_revoke_url",
                given.revoke_url,
                &mut provider.revoke_url,
            ),
        ] {
            if let Some(url) = checked_opt(key, url)? {
                *slot = Some(url);
            }
        }
        if let Some(scope) = given.scope.filter(|s| !s.trim().is_empty()) {
            provider.scope = scope.to_string();
        }
        Ok(provider)
    }

    /// Endpoints given one by one, each checked; the error names the config key.
    fn custom(given: &CustomEndpoints) -> Result<Provider, EndpointError> {
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
            auth_url: checked_opt("oauth_auth_url", given.auth_url)?,
            token_url,
            device_url: checked_opt("oauth_device_url", given.device_url)?,
            revoke_url: checked_opt("oauth_revoke_url", given.revoke_url)?,
            scope,
            redirect_host: "127.0.0.1",
            manage_url: None,
        };
        if provider.auth_url.is_none() && provider.device_url.is_none() {
            return Err(EndpointError::NoLoginEndpoint);
        }
        Ok(provider)
    }
}

/// [`checked_url`] for a key that may be unset.
fn checked_opt(key: &'static str, url: Option<&str>) -> Result<Option<String>, EndpointError> {
    url.map(|url| checked_url(key, url).map(str::to_string))
        .transpose()
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
        for p in [Provider::google(), Provider::microsoft("common").unwrap()] {
            for url in [&p.auth_url, &Some(p.token_url.clone()), &p.device_url]
                .into_iter()
                .flatten()
            {
                assert!(checked_url("k", url).is_ok(), "{url}");
            }
        }
        let microsoft = Provider::microsoft("contoso.onmicrosoft.com").unwrap();
        assert!(microsoft.revoke_url.is_none());
        assert!(microsoft.scope.contains("offline_access"));
        assert!(microsoft.token_url.contains("/contoso.onmicrosoft.com/"));
        assert!(Provider::microsoft("a/b").is_err());
        assert!(Provider::google().device_url.is_none());
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
    fn a_preset_takes_the_endpoints_it_is_given() {
        let given = CustomEndpoints {
            token_url: Some("http://127.0.0.1:9/token"),
            device_url: Some("http://127.0.0.1:9/device/auth"),
            ..Default::default()
        };
        let p = Provider::configured(Preset::Microsoft, "common", &given).unwrap();
        assert_eq!(p.token_url, "http://127.0.0.1:9/token");
        assert_eq!(
            p.device_url.as_deref(),
            Some("http://127.0.0.1:9/device/auth")
        );
        assert!(p
            .scope
            .starts_with("https://outlook.office.com/POP.AccessAsUser.All"));
        let bad = CustomEndpoints {
            revoke_url: Some("http://example.org/revoke"),
            ..Default::default()
        };
        let err = Provider::configured(Preset::Google, "common", &bad).unwrap_err();
        assert!(err.to_string().starts_with("oauth_revoke_url"), "{err}");
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
