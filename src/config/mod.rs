//! The configuration file (TOML) and its resolution into [`Account`] values that the
//! rest of popfetch trusts: `[defaults]` merged in, paths expanded, every key checked,
//! unknown keys refused. The keys themselves are declared once, in [`keys`]; paths
//! and commands are expanded in [`expand`]; `deliver` is read by [`crate::deliver`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::secret::{PasswordSource, SecretCommand, SecretError};
use crate::deliver::{self, Delivery};
use crate::net::{TlsOptions, TlsVersion};
use crate::oauth;
use crate::secret::Secret;
use policy::{Policy, SizeAction};

pub(crate) mod keys;
pub(crate) mod policy;
pub(crate) mod secret;

use crate::sys::expand::{expand_path, split_command, toml_string};
use keys::{name as key, RawAccount, Settings};

/// How the connection is secured: the config key `tls` and the `--tls` flag, whose
/// help the variants' docs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TlsMode {
    /// TLS from the first byte, port 995 by default
    Implicit,
    /// plain POP3 upgraded with STLS, never falling back, port 110 by default
    Starttls,
    /// no TLS at all
    None,
}

impl TlsMode {
    /// The port when none is given: 995 for implicit TLS (RFC 8314), else 110
    /// (RFC 1939; STLS, RFC 2595).
    pub(crate) fn default_port(self) -> u16 {
        match self {
            TlsMode::Implicit => 995,
            TlsMode::Starttls | TlsMode::None => 110,
        }
    }
}

/// How to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum AuthMethod {
    /// The strongest the server offers; never a cleartext password outside TLS.
    Auto,
    /// USER and PASS (RFC 1939 §7).
    User,
    /// APOP (RFC 1939 §7).
    Apop,
    Plain,
    Login,
    CramMd5,
    #[serde(rename = "cram-sha1")]
    CramSha1,
    #[serde(rename = "cram-sha256")]
    CramSha256,
    #[serde(rename = "scram-sha-1")]
    ScramSha1,
    #[serde(rename = "scram-sha-224")]
    ScramSha224,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-384")]
    ScramSha384,
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// The SCRAM mechanisms bound to the TLS session (RFC 5802 §6, RFC 5929 §4.1).
    #[serde(rename = "scram-sha-1-plus")]
    ScramSha1Plus,
    #[serde(rename = "scram-sha-224-plus")]
    ScramSha224Plus,
    #[serde(rename = "scram-sha-256-plus")]
    ScramSha256Plus,
    #[serde(rename = "scram-sha-384-plus")]
    ScramSha384Plus,
    #[serde(rename = "scram-sha-512-plus")]
    ScramSha512Plus,
    Xoauth2,
    Oauthbearer,
}

/// `oauth_provider`: whose endpoints and scope a built-in OAuth login uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OAuthProvider {
    Google,
    Microsoft,
    Custom,
}

/// `oauth_token_store`: where the OAuth tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenStore {
    Auto,
    Keyring,
    File,
}

/// A built-in OAuth login (issue 18): the provider, the app registration and
/// where the tokens are kept.
#[derive(Debug, Clone)]
pub(crate) struct OAuth {
    /// `oauth_provider`, as written, for messages.
    pub provider_name: &'static str,
    pub provider: oauth::provider::Provider,
    pub client_id: String,
    /// `oauth_client_secret` or its command; `Missing` for a public client.
    pub client_secret: PasswordSource,
    pub store: TokenStore,
    /// The login's name in the store (`oauth_token_name`, else the account's).
    pub token_name: String,
    /// Bounds each request to the provider.
    pub timeout: Duration,
}

impl OAuth {
    /// The store of this login's tokens, under the account's state directory.
    pub(crate) fn store(&self, state_dir: &Path) -> oauth::store::Store {
        use oauth::store::Store;
        match self.store {
            TokenStore::Auto => Store::auto(state_dir, &self.token_name),
            TokenStore::Keyring => Store::keyring(state_dir, &self.token_name),
            TokenStore::File => Store::file(state_dir, &self.token_name),
        }
    }

    /// Every place this login's tokens may be: the one `oauth_token_store`
    /// names, or with `auto` the file and the keyring entry (the chosen one
    /// first).
    pub(crate) fn stores(&self, state_dir: &Path) -> Vec<oauth::store::Store> {
        use oauth::store::Store;
        let chosen = self.store(state_dir);
        if self.store != TokenStore::Auto {
            return vec![chosen];
        }
        let other = match chosen {
            Store::File { .. } => Store::keyring(state_dir, &self.token_name),
            Store::Keyring { .. } => Store::file(state_dir, &self.token_name),
        };
        vec![chosen, other]
    }

    /// The HTTP client of the app registration, its secret resolved.
    pub(crate) fn client(&self) -> Result<oauth::http::Client, SecretError> {
        let secret = match &self.client_secret {
            PasswordSource::Missing => None,
            source => Some(source.resolve()?),
        };
        Ok(oauth::http::Client::new(
            &self.client_id,
            secret,
            self.timeout,
        ))
    }
}

/// The token endpoint of the login, its client secret (a command, perhaps) resolved
/// only when a refresh is due.
impl oauth::store::TokenEndpoint for OAuth {
    fn refresh(&self, refresh_token: &Secret) -> Result<oauth::grant::Tokens, oauth::grant::Error> {
        let client = self
            .client()
            .map_err(|e| oauth::grant::Error::ClientSecret {
                temporary: e.is_temporary(),
                message: e.to_string(),
            })?;
        client.refresh(&self.provider.token_url, refresh_token)
    }
}

impl AuthMethod {
    /// XOAUTH2 and OAUTHBEARER log in with a token instead of a password.
    pub(crate) fn uses_token(self) -> bool {
        matches!(self, AuthMethod::Xoauth2 | AuthMethod::Oauthbearer)
    }

    /// The SCRAM -PLUS methods bind the login to the TLS session, so need TLS.
    pub(crate) fn binds_channel(self) -> bool {
        matches!(
            self,
            AuthMethod::ScramSha1Plus
                | AuthMethod::ScramSha224Plus
                | AuthMethod::ScramSha256Plus
                | AuthMethod::ScramSha384Plus
                | AuthMethod::ScramSha512Plus
        )
    }
}

/// One account, fully resolved.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_min_version: TlsVersion,
    pub tls_insecure_skip_verify: bool,
    pub tls_fingerprint: Option<[u8; 32]>,
    /// `tls_cert_file` and `tls_key_file`: our certificate, for a server that asks.
    pub tls_client: Option<crate::net::ClientCert>,
    /// `tls_host_override`: the name the certificate must carry, if not `host`.
    pub tls_host_override: Option<String>,
    /// `source_ip`, `ip_version` and `proxy` (with the password in its URL, if
    /// any; see [`Account::route`]).
    pub route: crate::net::Route,
    /// `proxy_password_command`.
    pub proxy_password: Option<SecretCommand>,
    /// `proxy_targets`: the network targets take `route` too.
    pub proxy_targets: bool,
    pub timeout: Duration,
    pub user: String,
    pub password: PasswordSource,
    /// `oauth_token_command`, for XOAUTH2 and OAUTHBEARER.
    pub oauth_token: PasswordSource,
    /// `oauth_provider` and its keys: the tokens popfetch gets and refreshes.
    pub oauth: Option<OAuth>,
    pub auth: AuthMethod,
    pub deliver: Delivery,
    /// `recipient`: RCPT TO for LMTP and SMTP, `%T` for an MDA.
    pub recipient: String,
    /// How long one MDA call may take.
    pub mda_timeout: Duration,
    /// What to fetch and what to leave on the server.
    pub policy: Policy,
    /// `filter`: a command judging each new message by its headers.
    pub filter: Option<Vec<String>>,
    /// Add a Received: trace header to each message.
    pub received_header: bool,
    /// `poll_interval`: how often the daemon polls.
    pub poll_interval: Duration,
    /// `on_new_mail` and `on_error`: commands run after a sync.
    pub on_new_mail: Option<Vec<String>>,
    pub on_error: Option<Vec<String>>,
    pub state_dir: PathBuf,
    /// The SMTP target's TLS, login and password.
    pub smtp: deliver::Remote,
    pub smtp_user: Option<String>,
    pub smtp_password: PasswordSource,
    /// The IMAP target's TLS and password.
    pub imap: deliver::Remote,
    pub imap_password: PasswordSource,
}

impl Account {
    /// The name the server's certificate must carry.
    pub(crate) fn tls_name(&self) -> &str {
        self.tls_host_override.as_deref().unwrap_or(&self.host)
    }

    /// The account logs in with an OAuth access token, not a password.
    pub(crate) fn uses_token(&self) -> bool {
        self.oauth.is_some() || !matches!(self.oauth_token, PasswordSource::Missing)
    }

    pub(crate) fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.tls_ca_file.clone(),
            min_version: self.tls_min_version,
            skip_verify: self.tls_insecure_skip_verify,
            fingerprint: self.tls_fingerprint,
            client: self.tls_client.clone(),
        }
    }

    /// The route to the server, the proxy's password read from
    /// `proxy_password_command` if that is where it comes from.
    pub(crate) fn route(&self) -> Result<crate::net::Route, SecretError> {
        let mut route = self.route.clone();
        if let (Some(proxy), Some(command)) = (&mut route.proxy, &self.proxy_password) {
            proxy.password = Some(command.run()?);
        }
        Ok(route)
    }

    /// What opening its delivery target takes from the account.
    pub(crate) fn target_context(&self) -> deliver::Context<'_> {
        deliver::Context {
            timeout: self.timeout,
            recipient: &self.recipient,
            mda_timeout: self.mda_timeout,
            smtp: self.smtp.clone(),
            smtp_user: self.smtp_user.as_deref(),
            imap: self.imap.clone(),
            secrets: self,
        }
    }
}

/// The passwords of a delivery target's login: `imap_password` or
/// `smtp_password`, else its command, else the keyring entry the target names,
/// else a prompt at a terminal.
impl deliver::Secrets for Account {
    fn password(&self, service: &'static str, entry: &str) -> Result<String, deliver::NoSecret> {
        let source = match service {
            "smtp" => &self.smtp_password,
            _ => &self.imap_password,
        };
        let resolved = match source {
            PasswordSource::Keyring(_) | PasswordSource::Missing => {
                PasswordSource::Keyring(entry.to_string()).resolve()
            }
            other => other.resolve(),
        };
        resolved
            .map(|secret| secret.expose().to_string())
            .map_err(|e| deliver::NoSecret {
                temporary: e.is_temporary(),
                message: match e {
                    SecretError::NotStored { .. } | SecretError::NoSecretService { .. } => format!(
                        "no password is configured for the {service} login {entry}, and the keyring holds none or cannot be reached; set {service}_password_command, or run `popfetch password set --target {}`",
                        self.name
                    ),
                    other => format!("the {service} login {entry}: {other}"),
                },
            })
    }

    fn route(&self) -> Result<crate::net::Route, deliver::NoSecret> {
        if !self.proxy_targets {
            return Ok(crate::net::Route::default());
        }
        Account::route(self).map_err(|e| deliver::NoSecret {
            temporary: e.is_temporary(),
            message: format!("the proxy's password: {e}"),
        })
    }
}

impl From<TlsMode> for deliver::Security {
    fn from(mode: TlsMode) -> deliver::Security {
        match mode {
            TlsMode::Implicit => deliver::Security::Implicit,
            TlsMode::Starttls => deliver::Security::Starttls,
            TlsMode::None => deliver::Security::Plain,
        }
    }
}

impl RawAccount {
    fn has_password(&self) -> bool {
        self.password.is_some()
            || self.smtp_password.is_some()
            || self.imap_password.is_some()
            || self.oauth_client_secret.is_some()
            || self.proxy.as_deref().is_some_and(url_has_password)
    }
}

/// `keep`: `true`, `false`, or `"until-deleted-locally"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum KeepValue {
    Bool(bool),
    Text(String),
}

/// `max_size`: a TOML integer counts bytes (as fetchmail's `limit`), a string may
/// carry a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawAccount,
    #[serde(default)]
    accounts: BTreeMap<String, RawAccount>,
}

/// Config text in messages is passed through [`shown`]: it is the user's, but may
/// hold escape sequences or NULs that must not drive the terminal (as server text
/// is escaped by `pop3::proto::response::escape`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("no configuration file at {}; run `popfetch init` to write one, or name one with -c FILE", shown_path(.path))]
    Missing { path: PathBuf },
    #[error("cannot read the configuration file {}", shown_path(.path))]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {}", shown_path(.path), shown(.message))]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: account \"{}\": {}", shown_path(.path), shown(.account), shown(.message))]
    Invalid {
        path: PathBuf,
        account: String,
        message: String,
    },
    #[error("{0} holds a password but can be read by group or others; run chmod 600 {0}", shown_path(.path))]
    Insecure { path: PathBuf },
    #[error("{} defines no accounts; add an [accounts.NAME] table", shown_path(.path))]
    NoAccounts { path: PathBuf },
    #[error("no account named \"{}\" in {}; its accounts: {}", shown(.name), shown_path(.path), .known.join(", "))]
    UnknownAccount {
        name: String,
        path: PathBuf,
        /// The accounts the file does define.
        known: Vec<String>,
    },
    #[error("cannot find the home directory; set HOME")]
    NoHome,
}

/// Where popfetch looks for things when not told otherwise (XDG on Linux).
pub(crate) struct Paths {
    pub home: PathBuf,
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
}

impl Paths {
    pub(crate) fn discover() -> Result<Paths, ConfigError> {
        let base = directories::BaseDirs::new().ok_or(ConfigError::NoHome)?;
        let project =
            directories::ProjectDirs::from("", "", "popfetch").ok_or(ConfigError::NoHome)?;
        let state_dir = project
            .state_dir()
            .unwrap_or_else(|| project.data_local_dir())
            .to_path_buf();
        Ok(Paths {
            home: base.home_dir().to_path_buf(),
            config_file: project.config_dir().join("config.toml"),
            state_dir,
        })
    }
}

/// The loaded configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub path: PathBuf,
    pub accounts: Vec<Account>,
}

impl Config {
    /// Loads `file`, or the default config file when `None`.
    pub(crate) fn load(file: Option<&Path>, paths: &Paths) -> Result<Config, ConfigError> {
        let path = file.unwrap_or(&paths.config_file).to_path_buf();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing { path })
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let raw: RawFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            line: e
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
            // toml's message may run over lines; a message is one line.
            message: e.message().trim().replace('\n', "; "),
            path: path.clone(),
        })?;
        let holds_password =
            raw.defaults.has_password() || raw.accounts.values().any(RawAccount::has_password);
        if holds_password && group_or_world_readable(&path)? {
            return Err(ConfigError::Insecure { path });
        }
        if raw.accounts.is_empty() {
            return Err(ConfigError::NoAccounts { path });
        }
        let accounts = raw
            .accounts
            .into_iter()
            .map(|(name, account)| resolve(&path, paths, name, account.merge(&raw.defaults)))
            .collect::<Result<Vec<_>, _>>()?;
        shared_logins_agree(&path, &accounts)?;
        Ok(Config { path, accounts })
    }

    /// The named accounts, in the order given, or all of them when none are named.
    pub(crate) fn select(&self, names: &[String]) -> Result<Vec<&Account>, ConfigError> {
        if names.is_empty() {
            return Ok(self.accounts.iter().collect());
        }
        names
            .iter()
            .map(|name| {
                self.accounts
                    .iter()
                    .find(|a| &a.name == name)
                    .ok_or_else(|| ConfigError::UnknownAccount {
                        name: name.clone(),
                        path: self.path.clone(),
                        known: self.accounts.iter().map(|a| a.name.clone()).collect(),
                    })
            })
            .collect()
    }
}

/// Accounts that share an OAuth login (`oauth_token_name`) must find it in one
/// place, under one lock, and refresh it with one client at one endpoint: else
/// each would rotate the other's refresh token away.
fn shared_logins_agree(path: &Path, accounts: &[Account]) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, (&Account, &OAuth)> = BTreeMap::new();
    for account in accounts {
        let Some(oauth) = &account.oauth else {
            continue;
        };
        let Some((first, theirs)) = seen.get(oauth.token_name.as_str()) else {
            seen.insert(&oauth.token_name, (account, oauth));
            continue;
        };
        let differ = [
            ("state_dir", first.state_dir != account.state_dir),
            ("oauth_token_store", theirs.store != oauth.store),
            ("oauth_client_id", theirs.client_id != oauth.client_id),
            (
                "the token endpoint",
                theirs.provider.token_url != oauth.provider.token_url,
            ),
        ];
        if let Some((what, _)) = differ.iter().find(|(_, differs)| *differs) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                account: account.name.clone(),
                message: format!(
                    "it shares the OAuth login \"{}\" with account \"{}\" but not its {what}; accounts sharing a login must agree on state_dir, oauth_token_store, oauth_client_id and the provider",
                    oauth.token_name, first.name
                ),
            });
        }
    }
    Ok(())
}

fn group_or_world_readable(path: &Path) -> Result<bool, ConfigError> {
    let meta = fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(meta.permissions().mode() & 0o077 != 0)
}

fn resolve(
    path: &Path,
    paths: &Paths,
    name: String,
    set: Settings,
) -> Result<Account, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        account: name.clone(),
        message,
    };
    if !valid_name(&name) {
        return Err(invalid(
            "account names may hold only letters, digits and . _ - @ + (and not start with a dot)"
                .into(),
        ));
    }
    let command = |cmd: &str, key: &str| split_command(cmd, key, "", &paths.home).map_err(&invalid);
    let required = |value: Option<String>, key: &str| {
        let value = value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| invalid(format!("\"{key}\" is required")))?;
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "{key} = \"{value}\" holds a control character"
            )));
        }
        Ok(value)
    };
    // `written` is the whole setting as the file has it, for the message.
    let path = |value: &str, key: &str, written: &str| {
        expand_path(value, &paths.home)
            .map_err(|e| invalid(format!("{key} = {}: {e}", toml_string(written))))
    };
    let host = required(set.host, key::host)?;
    let user = required(set.user, key::user)?;
    let tls = set.tls;
    let port = set.port.unwrap_or(tls.default_port());
    // Bounded so that no deadline computed from them can overflow the clock.
    let seconds = |value: u64, key: &str| match value {
        secs @ 1..=MAX_SECONDS => Ok(Duration::from_secs(secs)),
        secs => Err(invalid(format!(
            "{key} = {secs} is out of range; use 1 to {MAX_SECONDS} seconds"
        ))),
    };
    let timeout = seconds(set.timeout, key::timeout)?;
    let mda_timeout = seconds(set.mda_timeout, key::mda_timeout)?;
    // A password inline (the file is then checked to be yours alone), or a
    // command, or (when neither is set) the keyring entry.
    let secret = |inline: Option<String>,
                  cmd: Option<String>,
                  (inline_key, cmd_key): (&'static str, &'static str),
                  entry: String| {
        Ok(match (inline, cmd) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "set either \"{inline_key}\" or \"{cmd_key}\", not both"
                )))
            }
            (Some(p), None) => PasswordSource::Inline(Secret::new(p)),
            (None, Some(cmd)) => PasswordSource::Command(SecretCommand {
                key: cmd_key,
                argv: command(&cmd, cmd_key)?,
                text: cmd,
                timeout,
            }),
            (None, None) => PasswordSource::Keyring(entry),
        })
    };
    let password = secret(
        set.password,
        set.password_command,
        (key::password, key::password_command),
        format!("{user}@{host}"),
    )?;
    let smtp_password = secret(
        set.smtp_password,
        set.smtp_password_command,
        (key::smtp_password, key::smtp_password_command),
        String::new(),
    )?;
    let imap_password = secret(
        set.imap_password,
        set.imap_password_command,
        (key::imap_password, key::imap_password_command),
        String::new(),
    )?;
    let smtp_user = set.smtp_user.filter(|u| !u.is_empty());
    if smtp_user.is_none() && !matches!(smtp_password, PasswordSource::Keyring(_)) {
        return Err(invalid(
            "smtp_password and smtp_password_command need smtp_user, the name to log in to the SMTP server with".into(),
        ));
    }
    let auth = set.auth;
    let oauth = match set.oauth_provider {
        None => {
            let stray = [
                (key::oauth_client_id, set.oauth_client_id.is_some()),
                (key::oauth_client_secret, set.oauth_client_secret.is_some()),
                (
                    key::oauth_client_secret_command,
                    set.oauth_client_secret_command.is_some(),
                ),
                (key::oauth_auth_url, set.oauth_auth_url.is_some()),
                (key::oauth_token_url, set.oauth_token_url.is_some()),
                (key::oauth_device_url, set.oauth_device_url.is_some()),
                (key::oauth_revoke_url, set.oauth_revoke_url.is_some()),
                (key::oauth_scope, set.oauth_scope.is_some()),
                (key::oauth_token_name, set.oauth_token_name.is_some()),
                (key::oauth_tenant, set.oauth_tenant.is_some()),
                (key::oauth_token_store, set.oauth_token_store.is_some()),
            ];
            if let Some((stray, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(invalid(format!(
                    "{stray} is set but oauth_provider is not; set oauth_provider = \"google\", \"microsoft\" or \"custom\""
                )));
            }
            None
        }
        Some(kind) => {
            if set.oauth_token_command.is_some() {
                return Err(invalid(
                    "set either oauth_provider (popfetch gets and refreshes the token) or oauth_token_command, not both".into(),
                ));
            }
            let (preset, provider_name) = match kind {
                OAuthProvider::Google => (oauth::provider::Preset::Google, "google"),
                OAuthProvider::Microsoft => (oauth::provider::Preset::Microsoft, "microsoft"),
                OAuthProvider::Custom => (oauth::provider::Preset::Custom, "custom"),
            };
            if set.oauth_tenant.is_some() && preset != oauth::provider::Preset::Microsoft {
                return Err(invalid(format!(
                    "oauth_tenant is Microsoft's; oauth_provider = \"{provider_name}\" has none"
                )));
            }
            let provider = oauth::provider::Provider::configured(
                preset,
                set.oauth_tenant.as_deref().unwrap_or("common"),
                &oauth::provider::CustomEndpoints {
                    auth_url: set.oauth_auth_url.as_deref(),
                    token_url: set.oauth_token_url.as_deref(),
                    device_url: set.oauth_device_url.as_deref(),
                    revoke_url: set.oauth_revoke_url.as_deref(),
                    scope: set.oauth_scope.as_deref(),
                },
            )
            .map_err(|e| invalid(e.to_string()))?;
            let client_id = set
                .oauth_client_id
                .filter(|id| !id.trim().is_empty())
                .ok_or_else(|| {
                    invalid(format!(
                        "oauth_provider = \"{provider_name}\" needs oauth_client_id, the client id of your app registration (README: OAuth2)"
                    ))
                })?;
            let client_secret = match secret(
                set.oauth_client_secret,
                set.oauth_client_secret_command,
                (key::oauth_client_secret, key::oauth_client_secret_command),
                String::new(),
            )? {
                PasswordSource::Keyring(_) => PasswordSource::Missing,
                source => source,
            };
            let token_name = set.oauth_token_name.unwrap_or_else(|| name.clone());
            if !valid_name(&token_name) {
                return Err(invalid(format!(
                    "oauth_token_name = {} may hold only letters, digits and . _ - @ + (and not start with a dot)",
                    toml_string(&token_name)
                )));
            }
            Some(OAuth {
                provider_name,
                provider,
                client_id,
                client_secret,
                store: set.oauth_token_store.unwrap_or(TokenStore::Auto),
                token_name,
                timeout,
            })
        }
    };
    if auth.binds_channel() && tls == TlsMode::None {
        return Err(invalid(
            "a SCRAM -PLUS auth binds the login to the TLS session and needs tls = \"implicit\" or \"starttls\" (or an auth without -PLUS)".into(),
        ));
    }
    let token_source = oauth.is_some() || set.oauth_token_command.is_some();
    // A bearer token is as good as a password to whoever reads it (RFC 6750 §5.3).
    // Through a proxy, a loopback name is the proxy's machine, not ours.
    let here = crate::net::names_loopback(&host) && set.proxy.is_none();
    if token_source && tls == TlsMode::None && !here {
        return Err(invalid(
            "an OAuth token would cross the network in cleartext with tls = \"none\"; use tls = \"implicit\" or \"starttls\"".into(),
        ));
    }
    if token_source && !matches!(auth, AuthMethod::Auto) && !auth.uses_token() {
        return Err(invalid(
            "an OAuth token logs in with XOAUTH2 or OAUTHBEARER; set auth = \"auto\", \"xoauth2\" or \"oauthbearer\"".into(),
        ));
    }
    let oauth_token = match set.oauth_token_command {
        Some(cmd) => PasswordSource::Command(SecretCommand {
            key: key::oauth_token_command,
            argv: command(&cmd, key::oauth_token_command)?,
            text: cmd,
            timeout,
        }),
        None if auth.uses_token() && oauth.is_none() => {
            return Err(invalid(
                "XOAUTH2 and OAUTHBEARER need oauth_provider (popfetch gets and refreshes the token; README: OAuth2) or oauth_token_command, a command that prints an access token".into(),
            ))
        }
        None => PasswordSource::Missing,
    };
    let deliver = set
        .deliver
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid("\"deliver\" is required".into()))?;
    let deliver = Delivery::parse(&deliver, &paths.home).map_err(&invalid)?;
    let recipient = match (set.recipient, set.mda_recipient) {
        (Some(new), Some(old)) if new != old => {
            return Err(invalid(format!(
                "recipient = \"{new}\" and its old name mda_recipient = \"{old}\" disagree; keep recipient only"
            )))
        }
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) => user.clone(),
    };
    if recipient.is_empty()
        || recipient
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err(invalid(format!(
            "recipient = {} is not a mail address or local user name",
            toml_string(&recipient)
        )));
    }
    let (keep, until_deleted_locally) = match set.keep {
        None | Some(KeepValue::Bool(false)) => (false, false),
        Some(KeepValue::Bool(true)) => (true, false),
        Some(KeepValue::Text(text)) if text == "until-deleted-locally" => (true, true),
        Some(KeepValue::Text(text)) => {
            return Err(invalid(format!(
                "keep = {} is not true, false or \"until-deleted-locally\"",
                toml_string(&text)
            )))
        }
    };
    // Fetched again, a message would have two files: deleting the newer would
    // delete it on the server while the older is still here.
    if until_deleted_locally && set.fetch_all {
        return Err(invalid(
            "keep = \"until-deleted-locally\" and fetch_all = true do not go together: a message fetched again would have two files here".into(),
        ));
    }
    if until_deleted_locally && !deliver.tells_deletion() {
        return Err(invalid(format!(
            "keep = \"until-deleted-locally\" needs a Maildir target, where popfetch can see a message deleted; deliver = \"{deliver}\" is not one"
        )));
    }
    let delete_after = match set.delete_after {
        None => None,
        Some(text) => Some(policy::parse_duration(&text).ok_or_else(|| {
            invalid(format!(
                "delete_after = \"{text}\" is not a duration with a unit, such as \"30d\" (units s, m, h, d, w)"
            ))
        })?),
    };
    if delete_after.is_some() && !keep {
        return Err(invalid(
            "delete_after needs keep = true: without it every delivered message is deleted at once"
                .into(),
        ));
    }
    let max_size = match set.max_size {
        None => None,
        Some(SizeValue::Bytes(bytes)) => Some(u64::try_from(bytes).map_err(|_| {
            invalid(format!(
                "max_size = {bytes} is negative; give bytes, or a size such as \"10M\""
            ))
        })?),
        Some(SizeValue::Text(text)) => Some(policy::parse_size(&text).ok_or_else(|| {
            invalid(format!(
                "max_size = \"{text}\" is not a size such as \"10M\" (units K, M, G) or a number of bytes"
            ))
        })?),
    };
    let max_size_action = match set.max_size_action.as_str() {
        "skip" => SizeAction::Skip,
        "delete" => SizeAction::Delete,
        other => {
            return Err(invalid(format!(
                "max_size_action = \"{other}\" is not \"skip\" or \"delete\""
            )))
        }
    };
    if set.max_messages == Some(0) {
        return Err(invalid("max_messages must be at least 1".into()));
    }
    let full_listing = policy::parse_duration(&set.full_listing_interval)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(format!(
                "full_listing_interval = {} is not a duration such as \"24h\" (units s, m, h, d, w)",
                toml_string(&set.full_listing_interval)
            ))
        })?;
    let policy = Policy {
        keep,
        until_deleted_locally,
        full_listing,
        delete_after,
        fetch_all: set.fetch_all,
        max_size,
        max_size_action,
        max_messages: set.max_messages,
    };
    let filter = match set.filter {
        Some(cmd) => Some(command(&cmd, key::filter)?),
        None => None,
    };
    let on_new_mail = match set.on_new_mail {
        Some(cmd) => Some(command(&cmd, key::on_new_mail)?),
        None => None,
    };
    let on_error = match set.on_error {
        Some(cmd) => Some(command(&cmd, key::on_error)?),
        None => None,
    };
    // Milliseconds too, for tests and benchmarks that poll fast.
    let poll_interval = match set.poll_interval.trim().strip_suffix("ms") {
        Some(ms) => ms.trim().parse().ok().map(Duration::from_millis),
        None => policy::parse_duration(&set.poll_interval),
    }
    .filter(|d| *d >= Duration::from_millis(10) && d.as_secs() <= 7 * MAX_SECONDS)
    .ok_or_else(|| {
        invalid(format!(
            "poll_interval = \"{}\" is not a duration such as \"5m\" (units ms, s, m, h, d), from 10 ms to a week",
            set.poll_interval
        ))
    })?;
    let tls_min_version = match set.tls_min_version.as_str() {
        "1.0" => TlsVersion::V1_0,
        "1.1" => TlsVersion::V1_1,
        "1.2" => TlsVersion::V1_2,
        "1.3" => TlsVersion::V1_3,
        other => {
            return Err(invalid(format!(
                "tls_min_version = \"{other}\" is not one of \"1.0\", \"1.1\", \"1.2\", \"1.3\""
            )))
        }
    };
    let tls_client = match (set.tls_cert_file, set.tls_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert = path(&cert, key::tls_cert_file, &cert)?;
            let key_path = path(&key, key::tls_key_file, &key)?;
            // A private key is a secret: the password's rule.
            if let Ok(meta) = fs::metadata(&key_path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(invalid(format!(
                        "tls_key_file {} can be read by group or others; run chmod 600 {}",
                        key_path.display(),
                        key_path.display()
                    )));
                }
            }
            Some(crate::net::ClientCert {
                cert,
                key: key_path,
            })
        }
        _ => {
            return Err(invalid(
                "tls_cert_file and tls_key_file go together: set both, or neither".into(),
            ))
        }
    };
    let tls_host_override = match set.tls_host_override {
        None => None,
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c));
            if !valid {
                return Err(invalid(format!(
                    "tls_host_override = {} is not a host name or address",
                    toml_string(&name)
                )));
            }
            Some(name)
        }
    };
    let source = match set.source_ip {
        None => None,
        Some(text) => Some(text.trim().parse::<std::net::IpAddr>().map_err(|_| {
            invalid(format!(
                "source_ip = {} is not an IPv4 or IPv6 address",
                toml_string(&text)
            ))
        })?),
    };
    let family = match set.ip_version.as_str() {
        "any" => crate::net::Family::Any,
        "4" => crate::net::Family::V4,
        "6" => crate::net::Family::V6,
        other => {
            return Err(invalid(format!(
                "ip_version = {} is not \"4\", \"6\" or \"any\"",
                toml_string(other)
            )))
        }
    };
    if let Some(source) = source {
        let clash = match family {
            crate::net::Family::V4 => source.is_ipv6(),
            crate::net::Family::V6 => source.is_ipv4(),
            crate::net::Family::Any => false,
        };
        if clash {
            return Err(invalid(format!(
                "source_ip = \"{source}\" is not of ip_version = \"{}\"",
                set.ip_version
            )));
        }
    }
    let proxy = match set.proxy {
        None => None,
        Some(url) => Some(crate::net::Proxy::parse(&url).map_err(|e| {
            invalid(format!(
                "proxy = {} {e}",
                toml_string(&redact_url_password(&url))
            ))
        })?),
    };
    let proxy_password = match set.proxy_password_command {
        None => None,
        Some(text) => {
            let Some(proxy) = &proxy else {
                return Err(invalid(
                    "proxy_password_command is set but proxy is not".into(),
                ));
            };
            if proxy.user.is_none() {
                return Err(invalid(
                    "proxy_password_command needs the user name in proxy: \"socks5://USER@HOST:PORT\"".into(),
                ));
            }
            if proxy.password.is_some() {
                return Err(invalid(
                    "set the proxy's password either in the proxy URL or in proxy_password_command, not both".into(),
                ));
            }
            Some(SecretCommand {
                key: key::proxy_password_command,
                argv: command(&text, key::proxy_password_command)?,
                text,
                timeout,
            })
        }
    };
    if proxy.as_ref().is_some_and(|p| p.remote_dns) && family != crate::net::Family::Any {
        return Err(invalid(format!(
            "ip_version = \"{}\" cannot hold with a socks5h proxy, which resolves the server's name itself; use socks5:// (names resolved here) or drop ip_version",
            set.ip_version
        )));
    }
    if set.proxy_targets && proxy.is_none() {
        return Err(invalid("proxy_targets = true needs a proxy".into()));
    }
    let route = crate::net::Route {
        source,
        family,
        proxy,
    };
    let tls_fingerprint = match set.tls_fingerprint {
        None => None,
        Some(text) => Some(parse_fingerprint(&text).ok_or_else(|| {
            invalid(format!(
                "tls_fingerprint = \"{text}\" is not \"sha256:\" and 64 hex digits (popfetch probe prints it)"
            ))
        })?),
    };
    // A delivery target's TLS is verified as the POP3 server's is: the system's
    // roots and the CA file, the minimum version; never skipped, never pinned.
    let remote =
        |mode: Option<TlsMode>, default: TlsMode, ca_file: Option<String>, ca_key: &str| {
            Ok::<_, ConfigError>(deliver::Remote {
                security: mode.unwrap_or(default).into(),
                chosen: mode.is_some(),
                tls: TlsOptions {
                    ca_file: ca_file.map(|f| path(&f, ca_key, &f)).transpose()?,
                    min_version: tls_min_version,
                    skip_verify: false,
                    fingerprint: None,
                    client: None,
                },
            })
        };
    Ok(Account {
        host,
        port,
        tls,
        tls_ca_file: set
            .tls_ca_file
            .map(|f| path(&f, key::tls_ca_file, &f))
            .transpose()?,
        tls_min_version,
        tls_insecure_skip_verify: set.tls_insecure_skip_verify,
        tls_fingerprint,
        tls_client,
        tls_host_override,
        route,
        proxy_password,
        proxy_targets: set.proxy_targets,
        timeout,
        user,
        password,
        oauth_token,
        oauth,
        auth,
        deliver,
        recipient,
        mda_timeout,
        policy,
        filter,
        received_header: set.received_header,
        poll_interval,
        on_new_mail,
        on_error,
        state_dir: match set.state_dir {
            None => paths.state_dir.clone(),
            Some(dir) => path(&dir, key::state_dir, &dir)?,
        },
        smtp: remote(
            set.smtp_tls,
            TlsMode::Starttls,
            set.smtp_tls_ca_file,
            key::smtp_tls_ca_file,
        )?,
        smtp_user,
        smtp_password,
        imap: remote(
            Some(set.imap_tls),
            TlsMode::Implicit,
            set.imap_tls_ca_file,
            key::imap_tls_ca_file,
        )?,
        imap_password,
        name,
    })
}

/// A name that becomes part of file names (an account's, a shared OAuth
/// login's): letters, digits and `. _ - @ +`, not starting with a dot.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c))
}

/// `sha256:` and the SHA-256 in hex, with or without colons, in either case.
fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))?
        .chars()
        .filter(|&c| c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The largest `timeout` or `mda_timeout`: a day.
pub(crate) const MAX_SECONDS: u64 = 86_400;

/// Makes config text safe to print: control characters (escape sequences, NUL, line
/// ends) become `\xNN` or `\u{NNNN}`; everything else, non-ASCII included, stays.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if (c as u32) < 0x100 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// [`shown`] for a path, which need not be UTF-8.
pub(crate) fn shown_path(path: &Path) -> String {
    shown(&path.to_string_lossy())
}

/// A proxy URL for a message: any password in it replaced by asterisks.
/// Whatever stands between the user name and the last `@` is taken for a
/// password, with or without a scheme before it: a URL that does not parse
/// may still hold one (`user:secret@host`, `socks5:/user:secret@host`).
fn redact_url_password(url: &str) -> String {
    let Some((login, address)) = url.rsplit_once('@') else {
        return url.to_string();
    };
    let (scheme, login) = match login.split_once("://") {
        Some((scheme, login)) => (format!("{scheme}://"), login),
        None => (String::new(), login),
    };
    match login.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:********@{address}"),
        None => url.to_string(),
    }
}

/// Whether a proxy URL, parsed or not, holds a password (see
/// [`redact_url_password`]): the config file must then be yours alone.
fn url_has_password(url: &str) -> bool {
    redact_url_password(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            home: "/home/u".into(),
            config_file: "/nonexistent".into(),
            state_dir: "/state".into(),
        }
    }

    fn load(text: &str, mode: u32) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        fs::write(&file, text).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        Config::load(Some(&file), &paths())
    }

    const BASIC: &str = r#"
[defaults]
keep = true
timeout = 5

[accounts.work]
host = "pop.example.com"
user = "me"
password_command = "pass show 'mail work'"
deliver = "maildir:~/Mail/work"

[accounts.home]
host = "pop.example.net"
tls = "starttls"
user = "me"
keep = false
deliver = "maildir:/var/mail/me"
state_dir = "~/st"
"#;

    #[test]
    fn defaults_merge_and_paths_expand() {
        let config = load(BASIC, 0o644).unwrap();
        let names: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["home", "work"]);
        let work = &config.select(&["work".into()]).unwrap()[0];
        assert_eq!(work.port, 995);
        assert_eq!(work.tls, TlsMode::Implicit);
        assert!(work.policy.keep);
        assert_eq!(work.timeout, Duration::from_secs(5));
        assert_eq!(work.deliver.to_string(), "maildir:/home/u/Mail/work");
        assert_eq!(work.state_dir, PathBuf::from("/state"));
        let PasswordSource::Command(command) = &work.password else {
            panic!()
        };
        assert_eq!(command.argv, ["pass", "show", "mail work"]);
        assert_eq!(command.timeout, Duration::from_secs(5));
        let home = &config.accounts[0];
        assert_eq!(home.port, 110);
        assert!(!home.policy.keep);
        assert_eq!(home.state_dir, PathBuf::from("/home/u/st"));
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let err = load("[accounts.a]\nhots = \"x\"\n", 0o600).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("config.toml:2:"), "{text}");
        assert!(text.contains("hots"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn readable_password_file_is_refused() {
        let text =
            "[accounts.a]\nhost=\"h\"\nuser=\"u\"\npassword=\"pw\"\ndeliver=\"maildir:/m\"\n";
        let err = load(text, 0o644).unwrap_err();
        assert!(err.to_string().contains("chmod 600"));
        assert!(!err.to_string().contains("pw\""));
        assert!(load(text, 0o600).is_ok());
    }

    #[test]
    fn missing_keys_and_bad_values() {
        let err = load("[accounts.a]\nhost=\"h\"\ndeliver=\"maildir:/m\"\n", 0o600).unwrap_err();
        assert!(err.to_string().contains("\"user\" is required"), "{err}");
        let err = load(
            "[accounts.a]\nhost=\"h\"\nuser=\"u\"\ndeliver=\"pigeon:/m\"\n",
            0o600,
        )
        .unwrap_err();
        assert!(err.to_string().contains("maildir:PATH"), "{err}");
        let err = load("[accounts.a]\ntls=\"maybe\"\n", 0o600).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        let err = load(
            "[accounts.\"../x\"]\nhost=\"h\"\nuser=\"u\"\ndeliver=\"maildir:/m\"\n",
            0o600,
        )
        .unwrap_err();
        assert!(err.to_string().contains("account names"), "{err}");
        assert!(matches!(
            load("", 0o600),
            Err(ConfigError::NoAccounts { .. })
        ));
    }

    #[test]
    fn unknown_account_is_named_with_the_accounts_there_are() {
        let config = load(BASIC, 0o600).unwrap();
        let err = config.select(&["nope\x1b".into()]).unwrap_err();
        assert!(err.to_string().contains("\"nope\\x1b\""), "{err}");
        assert!(
            err.to_string().contains("its accounts: home, work"),
            "{err}"
        );
    }

    fn account(extra: &str) -> Result<Account, ConfigError> {
        let text = format!("[accounts.a]\nhost=\"h\"\nuser=\"u\"\n{extra}\n");
        load(&text, 0o600).map(|c| c.accounts.into_iter().next().unwrap())
    }

    #[test]
    fn a_proxy_is_read_and_its_mistakes_are_named_without_its_password() {
        let maildir = "deliver=\"maildir:/m\"\n";
        let proxy = |extra: &str| account(&format!("{maildir}{extra}"));
        let a = proxy("proxy=\"socks5h://u:p%20w@127.0.0.1:9050\"").unwrap();
        let p = a.route.proxy.as_ref().unwrap();
        assert!(p.remote_dns);
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("p w"));
        let a = proxy("proxy=\"socks5://u@h\"\nproxy_password_command=\"printf pw\"").unwrap();
        assert_eq!(
            a.route().unwrap().proxy.unwrap().password.unwrap().expose(),
            "pw"
        );
        for (extra, says) in [
            (
                "proxy=\"http://u:hunter2@h:1\"",
                "proxy = \"http://u:********@h:1\" is not socks5://",
            ),
            (
                "proxy=\"u:hunter2@h:1\"",
                "proxy = \"u:********@h:1\" is not socks5://",
            ),
            ("proxy=\"socks5:/u:hunter2@h\"", "is not socks5://"),
            (
                "proxy_password_command=\"pw\"",
                "proxy_password_command is set but proxy is not",
            ),
            (
                "proxy=\"socks5://h\"\nproxy_password_command=\"pw\"",
                "needs the user name in proxy",
            ),
            (
                "proxy=\"socks5://u:x@h\"\nproxy_password_command=\"pw\"",
                "not both",
            ),
            (
                "proxy=\"socks5h://h\"\nip_version=\"6\"",
                "cannot hold with a socks5h proxy",
            ),
            ("proxy_targets=true", "proxy_targets = true needs a proxy"),
        ] {
            let err = proxy(extra).unwrap_err().to_string();
            assert!(err.contains(says), "{extra}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        // A password in the proxy URL is a password: the file must be yours alone.
        let text = "[accounts.a]\nhost=\"h\"\nuser=\"u\"\ndeliver=\"maildir:/m\"\npassword_command=\"x\"\nproxy=\"socks5://u:p@h\"\n";
        assert!(matches!(
            load(text, 0o644),
            Err(ConfigError::Insecure { .. })
        ));
        let text = text.replace("u:p@", "u@");
        let loaded = load(&text, 0o644);
        assert!(loaded.is_ok(), "{loaded:?}");
    }

    #[test]
    fn recipient_defaults_to_the_user_and_keeps_its_old_name() {
        let recipient = |extra: &str| account(&format!("deliver=\"lmtp:/s\"\n{extra}"));
        assert_eq!(recipient("").unwrap().recipient, "u");
        assert_eq!(recipient("recipient=\"me@x\"").unwrap().recipient, "me@x");
        assert_eq!(recipient("mda_recipient=\"old\"").unwrap().recipient, "old");
        let same = "recipient=\"a\"\nmda_recipient=\"a\"";
        assert_eq!(recipient(same).unwrap().recipient, "a");
        let err = recipient("recipient=\"a\"\nmda_recipient=\"b\"").unwrap_err();
        assert!(err.to_string().contains("keep recipient only"), "{err}");
        let err = recipient("recipient=\"a b\"").unwrap_err();
        assert!(err.to_string().contains("not a mail address"), "{err}");
        let err = recipient("recipient=\"<a>\"").unwrap_err();
        assert!(err.to_string().contains("not a mail address"), "{err}");
    }

    #[test]
    fn target_passwords_are_secrets_of_an_owner_only_file() {
        for key in ["smtp_password", "imap_password"] {
            let text = format!(
                "[accounts.a]\nhost=\"h\"\nuser=\"u\"\nsmtp_user=\"s\"\n{key}=\"pw\"\ndeliver=\"maildir:/m\"\n"
            );
            let err = load(&text, 0o644).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{key}: {err}");
            assert!(load(&text, 0o600).is_ok());
        }
        let err = account("deliver=\"smtp:mx\"\nsmtp_password_command=\"pass x\"").unwrap_err();
        assert!(err.to_string().contains("need smtp_user"), "{err}");
        let err = account("deliver=\"smtp:mx\"\nimap_password=\"a\"\nimap_password_command=\"b\"")
            .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        // TLS for a target: smtp_tls unset is the target's own default.
        let a = account("deliver=\"smtp:mx\"").unwrap();
        assert!(!a.smtp.chosen && a.smtp.security == deliver::Security::Starttls);
        let a = account("deliver=\"smtp:mx\"\nsmtp_tls=\"none\"").unwrap();
        assert!(a.smtp.chosen && a.smtp.security == deliver::Security::Plain);
        assert_eq!(a.imap.security, deliver::Security::Implicit);
    }

    #[test]
    fn durations_are_bounded_and_need_units() {
        for key in ["timeout", "mda_timeout"] {
            let err = account(&format!(
                "deliver=\"maildir:/m\"\n{key} = 18446744073709551615"
            ));
            // TOML integers are i64: the largest is refused by the parser, the
            // largest it takes by the range check.
            assert!(err.is_err(), "{key}");
            let err = account(&format!(
                "deliver=\"maildir:/m\"\n{key} = 9223372036854775807"
            ))
            .unwrap_err();
            assert!(err.to_string().contains("1 to 86400 seconds"), "{err}");
            assert!(account(&format!("deliver=\"maildir:/m\"\n{key} = 86400")).is_ok());
        }
        let err = account("deliver=\"maildir:/m\"\nkeep=true\ndelete_after=\"30\"").unwrap_err();
        assert!(err.to_string().contains("units s, m, h, d, w"), "{err}");
        let a = account("deliver=\"maildir:/m\"\nmax_size = 1000").unwrap();
        assert_eq!(a.policy.max_size, Some(1000));
        let a = account("deliver=\"maildir:/m\"\nmax_size = \"2K\"").unwrap();
        assert_eq!(a.policy.max_size, Some(2048));
        assert!(account("deliver=\"maildir:/m\"\nmax_size = -1").is_err());
    }

    #[test]
    fn paths_expand_or_are_refused() {
        let deliver = |d: &str| account(&format!("deliver = {}", toml_string(d)));
        let shown = |d: &str| deliver(d).unwrap().deliver.to_string();
        let root = crate::sys::expand::home_of("root").expect("root has a home");
        assert_eq!(
            shown("maildir:~root/Mail"),
            format!("maildir:{}", root.join("Mail").display())
        );
        assert_eq!(shown("mbox:~"), "mbox:/home/u");
        let path_var = std::env::var("PATH").unwrap();
        assert_eq!(
            shown("maildir:/x/${PATH}/y"),
            format!("maildir:/x/{path_var}/y")
        );
        assert_eq!(shown("maildir:/cost$/5"), "maildir:/cost$/5");
        for bad in [
            "maildir:relative/inbox",
            "maildir:",
            "mbox:inbox",
            "maildir:$POPFETCH_SURELY_UNSET/x",
            "maildir:${POPFETCH_SURELY_UNSET}/x",
            "maildir:${HOME",
            "maildir:~no-such-user-here/x",
            "maildir:/a\0b",
        ] {
            let err = deliver(bad).unwrap_err().to_string();
            assert!(err.contains("deliver = "), "{bad}: {err}");
            assert!(!err.contains('\0'), "{bad}: {err}");
        }
        for key in ["state_dir", "tls_ca_file"] {
            for bad in ["", "rel", "/a\0b", "/a\x1b[2J"] {
                let err = account(&format!(
                    "deliver=\"maildir:/m\"\n{key} = {}",
                    toml_string(bad)
                ))
                .unwrap_err()
                .to_string();
                assert!(err.contains(key), "{err}");
                assert!(!err.contains(['\0', '\x1b']), "{err}");
            }
        }
    }

    #[test]
    fn command_arguments_expand_a_leading_tilde() {
        let a = account("deliver = \"mda:procmail -m ~/.procmailrc a~b\"").unwrap();
        assert_eq!(
            a.deliver.to_string(),
            "mda:procmail -m /home/u/.procmailrc a~b"
        );
        let a = account("deliver=\"maildir:/m\"\nfilter = \"~/bin/judge\"").unwrap();
        assert_eq!(a.filter.unwrap(), ["/home/u/bin/judge"]);
        let err =
            account("deliver=\"maildir:/m\"\npassword_command = \"gpg -d ~/p.gpg | head -1\"")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains(
                r#"without a shell; write password_command = "sh -c 'gpg -d ~/p.gpg | head -1'""#
            ),
            "{err}"
        );
        let err = account("deliver = \"mda:procmail > /tmp/x\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"write deliver = "mda:sh -c 'procmail > /tmp/x'""#),
            "{err}"
        );
        let err = account("deliver = \"mda:procmail \\u001b[2J\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("control character") && !err.contains('\x1b'),
            "{err}"
        );
    }

    #[test]
    fn config_text_is_shown_escaped() {
        let err = load(
            "[accounts.\"a\\u001b[31m\"]\nhost=\"h\"\nuser=\"u\"\ndeliver=\"maildir:/m\"\n",
            0o600,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a\\x1b[31m"), "{err}");
        assert!(!err.contains('\x1b'), "{err}");
        let err = load(
            "[accounts.a]\nhost=\"h\\u001b\"\nuser=\"u\"\ndeliver=\"maildir:/m\"\n",
            0o600,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("control character") && !err.contains('\x1b'),
            "{err}"
        );
        assert_eq!(shown("ä\0\u{85}"), "ä\\x00\\x85");
    }
}
