//! A secret value — a password, a token — that never shows in `Debug` output,
//! logs or messages; only [`Secret::expose`] reveals it. Also the keyring service
//! every stored secret lives under.

use std::fmt;

/// The keyring service name: passwords are entries `USER@HOST`, OAuth tokens
/// `oauth:NAME`.
pub(crate) const KEYRING_SERVICE: &str = "popfetch";

/// A password or token. Its `Debug` form is redacted.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}
