//! Choosing how to log in: the configured method, or with `auth = "auto"` the
//! strongest one the server offers that does not expose the password on a cleartext
//! connection, a SCRAM -PLUS one first inside TLS. A configured method is never
//! swapped for another.

use crate::config::AuthMethod;
use crate::pop3::{Capabilities, Mechanism};

/// How a session will log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    User,
    Apop,
    Sasl(Mechanism),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChoiceError {
    #[error("the connection is not encrypted and auth = \"auto\" never sends a password in cleartext, but the server offers no challenge-response login (SCRAM, CRAM-MD5, APOP); use tls = \"implicit\" or \"starttls\", or set auth = \"user\" to allow it")]
    NoSafeMethod,
    #[error("auth = \"{wanted}\", but the server does not offer it (it offers: {offered}); set auth to one it offers")]
    NotOffered { wanted: String, offered: String },
    #[error("the account logs in with an OAuth token, but the server offers neither XOAUTH2 nor OAUTHBEARER (it offers: {offered}); check host and port, or log in with a password instead of OAuth")]
    NoOAuth { offered: String },
    #[error("the connection is not encrypted and auth = \"auto\" never sends an OAuth token in cleartext; use tls = \"implicit\" or \"starttls\" (for a server on this machine, auth = \"xoauth2\" or \"oauthbearer\" allows it)")]
    TokenInCleartext,
    #[error("auth = \"{wanted}\" binds the login to the TLS session, and this connection has no TLS; use tls = \"implicit\" or \"starttls\"")]
    BindingWithoutTls { wanted: String },
}

/// What the server offers, as far as choosing a login goes.
pub(crate) struct Offer<'a> {
    pub caps: &'a Capabilities,
    /// The greeting holds a valid APOP timestamp.
    pub apop: bool,
    /// The connection is inside TLS.
    pub encrypted: bool,
    /// The connection is inside TLS and its certificate gives `tls-server-end-point`
    /// binding data (RFC 5929 §4.1), so a -PLUS mechanism can be used.
    pub bindable: bool,
    /// The secret is an OAuth access token, not a password.
    pub token: bool,
}

/// SASL mechanisms for `auto`, strongest first. SCRAM-SHA-256 leads: it is the one
/// RFC 7677 makes mandatory, and the longer hashes add nothing a password adds.
const SCRAM: [Mechanism; 5] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha512,
    Mechanism::ScramSha384,
    Mechanism::ScramSha224,
    Mechanism::ScramSha1,
];
/// The same bound to the TLS session, for `auto` inside TLS before all others:
/// channel binding (RFC 5802 §6) also defeats a man in the middle who holds a
/// certificate this machine trusts.
const SCRAM_PLUS: [Mechanism; 5] = [
    Mechanism::ScramSha256Plus,
    Mechanism::ScramSha512Plus,
    Mechanism::ScramSha384Plus,
    Mechanism::ScramSha224Plus,
    Mechanism::ScramSha1Plus,
];
/// OAuth mechanisms for `auto`: XOAUTH2 first, the one Google and Microsoft
/// document for POP; OAUTHBEARER (RFC 7628) where only it is offered.
const OAUTH: [Mechanism; 2] = [Mechanism::XOAuth2, Mechanism::OAuthBearer];
const OVER_TLS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];
const IN_CLEARTEXT: [Mechanism; 3] = [
    Mechanism::CramSha256,
    Mechanism::CramSha1,
    Mechanism::CramMd5,
];

pub(crate) fn choose(method: AuthMethod, offer: &Offer) -> Result<Login, ChoiceError> {
    let sasl = |m: Mechanism| offer.caps.sasl.iter().any(|s| s == m.name());
    let wanted = match method {
        AuthMethod::Auto if offer.token => return choose_oauth(offer, &sasl),
        AuthMethod::Auto => return choose_auto(offer, &sasl),
        AuthMethod::User => return Ok(Login::User),
        AuthMethod::Apop if offer.apop => return Ok(Login::Apop),
        AuthMethod::Apop => {
            return Err(ChoiceError::NotOffered {
                wanted: "apop".into(),
                offered: offered(offer),
            })
        }
        AuthMethod::Plain => Mechanism::Plain,
        AuthMethod::Login => Mechanism::Login,
        AuthMethod::CramMd5 => Mechanism::CramMd5,
        AuthMethod::CramSha1 => Mechanism::CramSha1,
        AuthMethod::CramSha256 => Mechanism::CramSha256,
        AuthMethod::ScramSha1 => Mechanism::ScramSha1,
        AuthMethod::ScramSha224 => Mechanism::ScramSha224,
        AuthMethod::ScramSha256 => Mechanism::ScramSha256,
        AuthMethod::ScramSha384 => Mechanism::ScramSha384,
        AuthMethod::ScramSha512 => Mechanism::ScramSha512,
        AuthMethod::ScramSha1Plus => Mechanism::ScramSha1Plus,
        AuthMethod::ScramSha224Plus => Mechanism::ScramSha224Plus,
        AuthMethod::ScramSha256Plus => Mechanism::ScramSha256Plus,
        AuthMethod::ScramSha384Plus => Mechanism::ScramSha384Plus,
        AuthMethod::ScramSha512Plus => Mechanism::ScramSha512Plus,
        AuthMethod::Xoauth2 => Mechanism::XOAuth2,
        AuthMethod::Oauthbearer => Mechanism::OAuthBearer,
    };
    // Never outside TLS, whatever the server says (the config refuses it too).
    if wanted.binds_channel() && !offer.encrypted {
        return Err(ChoiceError::BindingWithoutTls {
            wanted: wanted.name().to_ascii_lowercase(),
        });
    }
    // Without CAPA we cannot know; try it, and the server's -ERR will tell.
    if offer.caps.known && !sasl(wanted) {
        return Err(ChoiceError::NotOffered {
            wanted: wanted.name().to_ascii_lowercase(),
            offered: offered(offer),
        });
    }
    Ok(Login::Sasl(wanted))
}

fn choose_oauth(offer: &Offer, sasl: &dyn Fn(Mechanism) -> bool) -> Result<Login, ChoiceError> {
    if !offer.encrypted {
        return Err(ChoiceError::TokenInCleartext);
    }
    // Without CAPA we cannot know; XOAUTH2 is what the big providers speak.
    if !offer.caps.known {
        return Ok(Login::Sasl(Mechanism::XOAuth2));
    }
    OAUTH
        .iter()
        .copied()
        .find(|&m| sasl(m))
        .map(Login::Sasl)
        .ok_or_else(|| ChoiceError::NoOAuth {
            offered: offered(offer),
        })
}

fn choose_auto(offer: &Offer, sasl: &dyn Fn(Mechanism) -> bool) -> Result<Login, ChoiceError> {
    if offer.encrypted && offer.bindable {
        if let Some(m) = SCRAM_PLUS.iter().copied().find(|&m| sasl(m)) {
            return Ok(Login::Sasl(m));
        }
    }
    if let Some(m) = SCRAM.iter().copied().find(|&m| sasl(m)) {
        return Ok(Login::Sasl(m));
    }
    if offer.encrypted {
        if let Some(m) = OVER_TLS.iter().copied().find(|&m| sasl(m)) {
            return Ok(Login::Sasl(m));
        }
        return Ok(Login::User);
    }
    if let Some(m) = IN_CLEARTEXT.iter().copied().find(|&m| sasl(m)) {
        return Ok(Login::Sasl(m));
    }
    if offer.apop {
        return Ok(Login::Apop);
    }
    Err(ChoiceError::NoSafeMethod)
}

fn offered(offer: &Offer) -> String {
    let mut all: Vec<String> = offer
        .caps
        .sasl
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if offer.caps.user || !offer.caps.known {
        all.push("user".into());
    }
    if offer.apop {
        all.push("apop".into());
    }
    if all.is_empty() {
        "nothing".into()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(sasl: &[&str]) -> Capabilities {
        Capabilities {
            known: true,
            user: true,
            sasl: sasl.iter().map(|s| s.to_string()).collect(),
            ..Capabilities::default()
        }
    }

    fn pick(
        method: AuthMethod,
        sasl: &[&str],
        apop: bool,
        encrypted: bool,
    ) -> Result<Login, ChoiceError> {
        choose(
            method,
            &Offer {
                caps: &caps(sasl),
                apop,
                encrypted,
                bindable: encrypted,
                token: false,
            },
        )
    }

    fn pick_token(sasl: &[&str], encrypted: bool) -> Result<Login, ChoiceError> {
        choose(
            AuthMethod::Auto,
            &Offer {
                caps: &caps(sasl),
                apop: true,
                encrypted,
                bindable: encrypted,
                token: true,
            },
        )
    }

    #[test]
    fn auto_with_a_token_picks_an_oauth_mechanism_and_nothing_else() {
        assert_eq!(
            pick_token(&["PLAIN", "OAUTHBEARER", "XOAUTH2"], true),
            Ok(Login::Sasl(Mechanism::XOAuth2))
        );
        assert_eq!(
            pick_token(&["SCRAM-SHA-256", "OAUTHBEARER"], true),
            Ok(Login::Sasl(Mechanism::OAuthBearer))
        );
        let none = pick_token(&["SCRAM-SHA-256", "PLAIN"], true).unwrap_err();
        assert!(
            none.to_string()
                .contains("offers: scram-sha-256, plain, user, apop"),
            "{none}"
        );
        assert_eq!(
            pick_token(&["XOAUTH2"], false),
            Err(ChoiceError::TokenInCleartext)
        );
    }

    #[test]
    fn auto_prefers_scram_then_plain_over_tls() {
        let all = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"];
        assert_eq!(
            pick(AuthMethod::Auto, &all, true, true),
            Ok(Login::Sasl(Mechanism::ScramSha256))
        );
        assert_eq!(
            pick(AuthMethod::Auto, &["PLAIN", "LOGIN"], false, true),
            Ok(Login::Sasl(Mechanism::Plain))
        );
        assert_eq!(pick(AuthMethod::Auto, &[], false, true), Ok(Login::User));
    }

    #[test]
    fn auto_binds_to_tls_where_it_can_and_never_outside_it() {
        let all = [
            "SCRAM-SHA-1",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-512-PLUS",
            "SCRAM-SHA-256-PLUS",
        ];
        assert_eq!(
            pick(AuthMethod::Auto, &all, false, true),
            Ok(Login::Sasl(Mechanism::ScramSha256Plus))
        );
        assert_eq!(
            pick(AuthMethod::Auto, &all[..4], false, true),
            Ok(Login::Sasl(Mechanism::ScramSha512Plus))
        );
        // Without TLS, or with a certificate that gives no binding data: no -PLUS.
        assert_eq!(
            pick(AuthMethod::Auto, &all, false, false),
            Ok(Login::Sasl(Mechanism::ScramSha256))
        );
        let unbindable = choose(
            AuthMethod::Auto,
            &Offer {
                caps: &caps(&all),
                apop: false,
                encrypted: true,
                bindable: false,
                token: false,
            },
        );
        assert_eq!(unbindable, Ok(Login::Sasl(Mechanism::ScramSha256)));
        let err = pick(AuthMethod::ScramSha256Plus, &all, false, false).unwrap_err();
        assert_eq!(
            err,
            ChoiceError::BindingWithoutTls {
                wanted: "scram-sha-256-plus".into()
            }
        );
        assert_eq!(
            pick(AuthMethod::ScramSha1Plus, &all, false, true),
            Ok(Login::Sasl(Mechanism::ScramSha1Plus))
        );
        assert!(pick(AuthMethod::ScramSha384Plus, &all, false, true).is_err());
    }

    #[test]
    fn auto_never_exposes_the_password_in_cleartext() {
        assert_eq!(
            pick(AuthMethod::Auto, &["PLAIN", "CRAM-MD5"], false, false),
            Ok(Login::Sasl(Mechanism::CramMd5))
        );
        assert_eq!(
            pick(AuthMethod::Auto, &["PLAIN", "LOGIN"], true, false),
            Ok(Login::Apop)
        );
        assert_eq!(
            pick(AuthMethod::Auto, &["PLAIN", "LOGIN"], false, false),
            Err(ChoiceError::NoSafeMethod)
        );
    }

    #[test]
    fn configured_method_is_never_swapped() {
        let err = pick(AuthMethod::ScramSha256, &["PLAIN"], true, true).unwrap_err();
        assert!(
            err.to_string().contains("offers: plain, user, apop"),
            "{err}"
        );
        assert!(pick(AuthMethod::Apop, &["PLAIN"], false, true).is_err());
        assert_eq!(
            pick(AuthMethod::Plain, &["PLAIN"], false, false),
            Ok(Login::Sasl(Mechanism::Plain))
        );
        assert_eq!(pick(AuthMethod::User, &[], false, false), Ok(Login::User));
    }
}
