//! Every configuration key, declared once: its name, the shape of its value, its
//! default and a one-line doc. The table serde reads (unknown keys refused), the
//! merge of `[defaults]` and the plain defaults are generated from the declaration,
//! and so are the README's key table, the man page's key list and the comments of
//! the `init` template (see `docs` and `init`). Resolution, in the parent module,
//! reads the merged [`Settings`] and never restates a name's default.

use serde::Deserialize;

use super::{AuthMethod, KeepValue, OAuthProvider, SizeValue, TlsMode, TokenStore};

/// One key as the documentation shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub name: &'static str,
    /// The kind of value: "string", "integer", "boolean", "path", "command", …
    pub shape: &'static str,
    /// `None` when an unset key means nothing is done.
    pub default: Option<DefaultValue>,
    /// One line, Markdown: `code` in backticks, nothing else.
    pub doc: &'static str,
    /// A value for a commented-out line in the `init` template, as TOML.
    pub example: Option<&'static str>,
}

/// What an unset key means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DefaultValue {
    /// A plain value, as TOML: `60`, `"implicit"`.
    Toml(String),
    /// Words, Markdown, for a default computed from other keys or the system.
    Words(&'static str),
}

/// An account's setting type: a key with a plain default is always set after the
/// merge; the others stay optional.
macro_rules! setting_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

macro_rules! setting_value {
    ($value:expr) => {
        $value
    };
    ($value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
}

/// A plain default rendered as TOML, or the words for one that depends on others.
macro_rules! default_text {
    (; ) => {
        None
    };
    ($default:expr; ) => {
        Some(DefaultValue::Toml(
            toml::Value::try_from($default)
                .expect("a default is a TOML value")
                .to_string(),
        ))
    };
    (; $words:literal) => {
        Some(DefaultValue::Words($words))
    };
}

macro_rules! example {
    () => {
        None
    };
    ($example:literal) => {
        Some($example)
    };
}

/// The declaration: `/// doc` then `name: RawType [= plain default], "shape"`, then
/// optionally `default "words"` (a default computed from other keys) and
/// `example "TOML"`.
macro_rules! keys {
    ($(
        #[doc = $doc:literal]
        $name:ident: $ty:ty $(= $default:expr)?, $shape:literal
            $(, default $words:literal)? $(, example $example:literal)?;
    )+) => {
        /// Keys allowed in `[defaults]` and in each `[accounts.NAME]`, as written.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawAccount {
            $(pub(super) $name: Option<$ty>,)+
        }

        /// One account's keys with `[defaults]` merged in and plain defaults applied.
        #[derive(Debug)]
        pub(super) struct Settings {
            $(pub(super) $name: setting_type!($ty $(, $default)?),)+
        }

        impl RawAccount {
            /// Fills every key this account leaves unset from `defaults`, then from
            /// the declared default.
            pub(super) fn merge(self, defaults: &RawAccount) -> Settings {
                Settings {
                    $($name: setting_value!(
                        self.$name.or_else(|| defaults.$name.clone()) $(, $default)?
                    ),)+
                }
            }
        }

        /// Every key, in the order the documentation lists them.
        pub(crate) fn all() -> Vec<Key> {
            vec![$(Key {
                name: stringify!($name),
                shape: $shape,
                default: default_text!($($default)?; $($words)?),
                doc: $doc.trim_ascii(),
                example: example!($($example)?),
            },)+]
        }

        /// Each key's name, checked by the compiler where code names a key; not
        /// every key is named outside its declaration.
        #[allow(non_upper_case_globals, dead_code)]
        pub(crate) mod name {
            $(pub(crate) const $name: &str = stringify!($name);)+
        }
    };
}

keys! {
    /// server name or address (required)
    host: String, "string";
    /// server port
    port: u16, "integer", default "995 with `tls = \"implicit\"`, else 110";
    /// `"implicit"` (TLS from the first byte), `"starttls"` (STLS, required, never a cleartext fallback), or `"none"`
    tls: TlsMode = TlsMode::Implicit, "string";
    /// extra trusted CA certificates, PEM
    tls_ca_file: String, "path", default "the system store only";
    /// `"sha256:…"`, the SHA-256 of the server certificate (DER, as `popfetch probe` prints it); pins it instead of trusting CAs
    tls_fingerprint: String, "string";
    /// the lowest TLS version: `"1.0"`, `"1.1"`, `"1.2"` or `"1.3"`
    tls_min_version: String = "1.2".to_string(), "string";
    /// the name the server's certificate must carry, when `host` is an address or a tunnel's end (mpop `tls_host_override`, fetchmail `sslcommonname`); also sent as SNI
    tls_host_override: String, "string", default "`host`";
    /// a client certificate (PEM) for servers that ask for one; with `tls_key_file`
    tls_cert_file: String, "path";
    /// the client certificate's private key (PEM, PKCS#8); refused unless readable by you alone
    tls_key_file: String, "path";
    /// the local address to connect from, IPv4 or IPv6 (it must be one of this machine's)
    source_ip: String, "string";
    /// `"4"` or `"6"` to use only the server's IPv4 or IPv6 addresses; `"any"` tries them all
    ip_version: String = "any".to_string(), "string";
    /// a SOCKS5 proxy to reach the server through: `"socks5://HOST:PORT"`, or `"socks5h://HOST:PORT"` to have the proxy resolve the server's name (Tor needs it); `socks5://USER:PASSWORD@HOST:PORT` logs in to the proxy (the password only in a config file readable by you alone)
    proxy: String, "string", example "\"socks5h://127.0.0.1:9050\"";
    /// a command, run without a shell, whose first line of output is the proxy's password (for the user name in `proxy`)
    proxy_password_command: String, "command";
    /// `true` sends the SMTP, LMTP and IMAP targets' TCP connections through `proxy` too, from `source_ip` over `ip_version`; otherwise they connect directly, and a target on this machine always does
    proxy_targets: bool = false, "boolean";
    /// `true` accepts any certificate, with a warning on every run
    tls_insecure_skip_verify: bool = false, "boolean";
    /// seconds, 1 to 86400; bounds connecting, the TLS handshake, every read, mbox locking, each OAuth request, `password_command` and `oauth_token_command`
    timeout: u64 = 60, "integer";
    /// login name (required)
    user: String, "string";
    /// the password; refused unless the config file is readable by you alone (`chmod 600`)
    password: String, "string";
    /// a command, run without a shell, whose first line of output is the password
    password_command: String, "command", example "\"pass show mail/main\"";
    /// `"auto"` (the strongest offered, a -PLUS one first over TLS, never a cleartext password outside TLS; with OAuth, `xoauth2` or `oauthbearer`, whichever the server offers), `"user"`, `"apop"`, `"plain"`, `"login"`, `"cram-md5"`, `"cram-sha1"`, `"cram-sha256"`, `"scram-sha-1"`, `"scram-sha-224"`, `"scram-sha-256"`, `"scram-sha-384"`, `"scram-sha-512"`, the same bound to the TLS session (`"scram-sha-1-plus"`, `"scram-sha-224-plus"`, `"scram-sha-256-plus"`, `"scram-sha-384-plus"`, `"scram-sha-512-plus"`: TLS only), `"xoauth2"` or `"oauthbearer"`
    auth: AuthMethod = AuthMethod::Auto, "string";
    /// OAuth 2.0 built in: `"google"`, `"microsoft"` or `"custom"`; log in once with `popfetch oauth login ACCOUNT`, then every sync refreshes its own token
    oauth_provider: OAuthProvider, "string", example "\"microsoft\"";
    /// the OAuth client id of your app registration (required with `oauth_provider`)
    oauth_client_id: String, "string";
    /// the OAuth client secret, where the provider gives one (Google's desktop apps); refused unless the config file is readable by you alone
    oauth_client_secret: String, "string";
    /// a command, run without a shell, whose first line of output is the OAuth client secret
    oauth_client_secret_command: String, "command";
    /// Microsoft's tenant: `"common"`, your domain or the tenant id
    oauth_tenant: String, "string", default "`\"common\"`";
    /// the authorization endpoint (for `oauth login --browser`)
    oauth_auth_url: String, "string", default "the provider's";
    /// the token endpoint (required with `"custom"`)
    oauth_token_url: String, "string", default "the provider's";
    /// the device authorization endpoint (RFC 8628, the default login)
    oauth_device_url: String, "string", default "the provider's (Microsoft only)";
    /// the token revocation endpoint (RFC 7009), used by `oauth logout`
    oauth_revoke_url: String, "string", default "the provider's (Google only)";
    /// the scopes to ask for, space-separated (required with `"custom"`)
    oauth_scope: String, "string", default "the provider's POP scope";
    /// where the refresh token and the cached access token live: `"auto"` (a token file already there, else the keyring when one answers, else the file), `"keyring"` or `"file"` (`STATE_DIR/NAME.oauth.json`, mode 0600)
    oauth_token_store: TokenStore, "string", default "`\"auto\"`";
    /// the name the OAuth login is stored under; accounts that set the same name share one login (and refresh it in turn)
    oauth_token_name: String, "string", default "the account's name";
    /// a command whose first line of output is an access token, run as `password_command` is: for tokens popfetch does not manage (use `oauth_provider` otherwise)
    oauth_token_command: String, "command";
    /// where messages go (required): `"maildir:PATH"`, `"mbox:PATH"`, `"mda:COMMAND ARGS"` (`%F` sender, `%T` recipient), `"lmtp:/SOCKET"` or `"lmtp:HOST:PORT"`, `"smtp:HOST[:PORT]"`, or `"imap://USER@HOST[:PORT]/FOLDER"`; paths absolute or under `~/`
    deliver: String, "string";
    /// the RCPT TO of the LMTP and SMTP targets, and what `%T` stands for in an MDA command
    recipient: String, "string", default "the account's `user`";
    /// the old name of `recipient`, still accepted
    mda_recipient: String, "string", default "`recipient`";
    /// seconds, 1 to 86400, one MDA or filter call may take before it is killed
    mda_timeout: u64 = 300, "integer";
    /// the SMTP and LMTP targets: `"starttls"` (required when set, or when the server is not on this machine; else used when offered), `"implicit"` (TLS from the first byte, SMTP port 465) or `"none"` (for SMTP only to this machine)
    smtp_tls: TlsMode, "string", default "`\"starttls\"` for `smtp:`; for `lmtp:`, no TLS unless set";
    /// extra trusted CA certificates for the SMTP target, PEM
    smtp_tls_ca_file: String, "path", default "the system store only";
    /// log in to the SMTP target with AUTH as this user
    smtp_user: String, "string";
    /// the password of `smtp_user`; refused unless the config file is readable by you alone
    smtp_password: String, "string", default "`smtp_password_command`, else the keyring entry `smtp_user@HOST`, else a prompt";
    /// a command, run without a shell, whose first line of output is the password of `smtp_user`
    smtp_password_command: String, "command";
    /// the IMAP target: `"implicit"` (TLS from the first byte, port 993), `"starttls"` (port 143, required, never a cleartext fallback) or `"none"`
    imap_tls: TlsMode = TlsMode::Implicit, "string";
    /// extra trusted CA certificates for the IMAP target, PEM
    imap_tls_ca_file: String, "path", default "the system store only";
    /// the IMAP target's password; refused unless the config file is readable by you alone
    imap_password: String, "string", default "`imap_password_command`, else the keyring entry `USER@HOST`, else a prompt";
    /// a command, run without a shell, whose first line of output is the IMAP target's password
    imap_password_command: String, "command", example "\"pass show mail/imap\"";
    /// `true` leaves messages on the server after delivery; `"until-deleted-locally"` (Maildir only) leaves each one there until its file is gone from the Maildir (from new/ and cur/, whatever its flags), as Thunderbird's "until I delete it" does; with `delete_after`, whichever comes first
    keep: KeepValue, "boolean or string", default "`false`";
    /// with `keep = true`: delete messages first seen longer ago than this (`"30d"`; units `s m h d w`, required: getmail counts a bare number in days, so popfetch refuses one). POP3 has no arrival date, so age counts from the first-seen time in the state
    delete_after: String, "duration", example "\"30d\"";
    /// `true` fetches messages already delivered too, to re-archive a mailbox
    fetch_all: bool = false, "boolean";
    /// messages larger than this (`"10M"`, units `K M G`; or a number of bytes, `1000000`, as fetchmail's `limit`; as LIST counts) are not fetched
    max_size: SizeValue, "size", example "\"10M\"";
    /// `"skip"` leaves messages over `max_size` on the server; `"delete"` deletes them unfetched
    max_size_action: String = "skip".to_string(), "string";
    /// at most this many messages per run, oldest first
    max_messages: usize, "integer";
    /// a command, run without a shell on each new message's headers (from `TOP n 0`) before fetching: exit 0 fetch, 1 delete without fetching, 2 skip this time
    filter: String, "command";
    /// `true` adds a `Received:` trace header naming popfetch, the server and the time
    received_header: bool = false, "boolean";
    /// with `keep`: a session that finds the mailbox as the last one left it (the same STAT, and the same unique-ids first and last) lists nothing more; at least this often it lists every message anyway (`"24h"`; units `s m h d w`)
    full_listing_interval: String = "24h".to_string(), "duration";
    /// where the UIDL state and lock files live
    state_dir: String, "path", default "`$XDG_STATE_HOME/popfetch`";
    /// how often `popfetch daemon` polls the account, a duration such as `"5m"` (units ms, s, m, h, d), with a little jitter; never sooner than the server's LOGIN-DELAY
    poll_interval: String = "5m".to_string(), "duration", example "\"10m\"";
    /// a command, run without a shell after a sync that delivered mail, with a JSON array on stdin (account, unique_id, size, from, subject, date, location of each message): for notifications
    on_new_mail: String, "command", example "\"notify-send-mail\"";
    /// a command, run without a shell after a failed sync, with a JSON object on stdin (account, error, exit_code)
    on_error: String, "command";
}

/// The key of this name.
pub(crate) fn get(name: &str) -> Key {
    all()
        .into_iter()
        .find(|key| key.name == name)
        .expect("a declared key")
}

/// A doc's Markdown as plain text, for TOML comments.
pub(crate) fn plain(doc: &str) -> String {
    doc.replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_doc_is_one_table_cell() {
        for key in all() {
            assert!(!key.doc.is_empty(), "{}", key.name);
            assert!(!key.doc.contains(['|', '\n']), "{}", key.name);
            assert_eq!(key.doc.matches('`').count() % 2, 0, "{}", key.name);
        }
    }

    /// A plain default and an example read back as the key they belong to, so the
    /// documentation never shows a value the parser refuses.
    #[test]
    fn defaults_and_examples_parse() {
        for key in all() {
            let default = match &key.default {
                Some(DefaultValue::Toml(value)) => Some(value.as_str()),
                _ => None,
            };
            for value in [default, key.example].into_iter().flatten() {
                let text = format!("{} = {value}", key.name);
                toml::from_str::<RawAccount>(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            }
        }
        for name in [name::timeout, name::mda_timeout] {
            let doc = get(name).doc;
            assert!(
                doc.contains(&super::super::MAX_SECONDS.to_string()),
                "{doc}"
            );
        }
        let merged = RawAccount::default().merge(&RawAccount::default());
        assert_eq!(merged.timeout, 60);
        assert_eq!(merged.tls, TlsMode::Implicit);
        assert_eq!(merged.max_size_action, "skip");
    }
}
