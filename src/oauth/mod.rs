//! OAuth 2.0 for the XOAUTH2 and OAUTHBEARER logins: the provider presets and
//! their endpoints (`provider`), PKCE (`pkce`), the token endpoint's answers
//! (`grant`), the form POSTs that ask for them (`http`), the two ways to log in
//! once (`login`, with the browser's loopback redirect in `redirect`), and the
//! store of refresh and access tokens with the refresh rule (`store`). Nothing
//! here reads the config or prints; the callers do.

pub(crate) mod grant;
pub(crate) mod http;
pub(crate) mod login;
pub(crate) mod pkce;
pub(crate) mod provider;
pub(crate) mod redirect;
pub(crate) mod store;
