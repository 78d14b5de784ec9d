//! Where an account's OAuth tokens live between runs — the refresh token, and
//! the access token cached with its expiry — in the system keyring or in a file
//! only the user can read; and the refresh rule every sync follows: a rotated
//! refresh token is stored durably before the new access token is handed out,
//! so a kill at any instant leaves a refresh token that works (RFC 6749 §6,
//! §10.4; providers such as Microsoft rotate it on every use).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::grant::{self, Class, Tokens};
use crate::secret::{Secret, KEYRING_SERVICE};
use crate::sys::durable;

/// A cached access token is used while it has more than this left, so that it
/// does not expire between the check and the login.
pub(crate) const EXPIRY_MARGIN_SECS: i64 = 60;

/// An account's tokens.
#[derive(Debug, Clone)]
pub(crate) struct TokenSet {
    pub refresh_token: Secret,
    pub access: Option<CachedAccess>,
}

/// An access token and when it expires (Unix seconds).
#[derive(Debug, Clone)]
pub(crate) struct CachedAccess {
    pub token: Secret,
    pub expires_at: i64,
}

/// The stored form, in the file or the keyring entry. No `Debug`: it holds the
/// tokens in the clear.
#[derive(Serialize, Deserialize)]
struct Stored {
    refresh_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("cannot {action} the OAuth token file {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the OAuth token store of {account} is damaged; run popfetch oauth login {account}")]
    Damaged { account: String },
    #[error("the OAuth tokens are kept in the keyring, which cannot be reached ({0}), as in cron or over ssh; set oauth_token_store = \"file\" and run popfetch oauth login again")]
    Keyring(String),
}

impl StoreError {
    pub(crate) fn class(&self) -> Class {
        match self {
            StoreError::Damaged { .. } => Class::NeedsLogin,
            // The store chosen cannot work here: a setting to change.
            StoreError::Keyring(_) => Class::Config,
            StoreError::Io { .. } => Class::Local,
        }
    }
}

/// Where the tokens of one login are kept. `account` names the login: the
/// account's name, or the `oauth_token_name` that accounts sharing it set.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// `DIR/NAME.oauth.json`, mode 0600, replaced atomically.
    File {
        account: String,
        path: PathBuf,
        lock: PathBuf,
        /// Chosen by `auto` because no keyring answered.
        fallback: bool,
    },
    /// The keyring entry `oauth:NAME` of the service `popfetch`.
    Keyring { account: String, lock: PathBuf },
}

/// Held while a login's tokens are read, refreshed and written back, so that
/// accounts sharing one login never refresh it at once: with a rotating refresh
/// token, the loser of that race would store a token already used.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: fs::File,
}

impl Store {
    pub(crate) fn file(dir: &Path, account: &str) -> Store {
        Store::File {
            account: account.to_string(),
            path: dir.join(format!("{}.oauth.json", file_name(account))),
            lock: lock_path(dir, account),
            fallback: false,
        }
    }

    pub(crate) fn keyring(dir: &Path, account: &str) -> Store {
        Store::Keyring {
            account: account.to_string(),
            lock: lock_path(dir, account),
        }
    }

    /// `oauth_token_store = "auto"`: a token file already there (a login made
    /// where no keyring answered stays where cron can read it), else the keyring
    /// where one answers, else the file (cron usually has no session bus).
    pub(crate) fn auto(dir: &Path, account: &str) -> Store {
        let file = Store::file(dir, account);
        if let Store::File { path, .. } = &file {
            if path.exists() {
                return file;
            }
        }
        let reachable =
            keyring::Entry::new(KEYRING_SERVICE, &keyring_entry(account)).is_ok_and(|entry| {
                match entry.get_password() {
                    Ok(_) | Err(keyring::Error::NoEntry) => true,
                    Err(_) => false,
                }
            });
        match file {
            _ if reachable => Store::keyring(dir, account),
            Store::File {
                account,
                path,
                lock,
                ..
            } => Store::File {
                account,
                path,
                lock,
                fallback: true,
            },
            keyring => keyring,
        }
    }

    pub(crate) fn account(&self) -> &str {
        match self {
            Store::File { account, .. } | Store::Keyring { account, .. } => account,
        }
    }

    /// Where the tokens are, for messages: the file's path or the keyring entry.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::File { path, .. } => format!("the file {}", path.display()),
            Store::Keyring { account, .. } => {
                format!("the keyring entry {}", keyring_entry(account))
            }
        }
    }

    /// Waits for, then holds, the login's lock (flock(2): a killed holder's
    /// lock goes with it).
    pub(crate) fn lock(&self) -> Result<StoreLock, StoreError> {
        let path = match self {
            Store::File { lock, .. } | Store::Keyring { lock, .. } => lock,
        };
        let io_error = |source| StoreError::Io {
            action: "lock",
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            durable::create_dir_all(dir).map_err(io_error)?;
        }
        let file = durable::open_private(path).map_err(io_error)?;
        file.lock().map_err(io_error)?;
        Ok(StoreLock { _file: file })
    }

    /// The stored tokens; `None` when there are none (never logged in, or logged out).
    pub(crate) fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        let text = match self {
            Store::File { path, .. } => match fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "read",
                        path: path.clone(),
                        source,
                    })
                }
            },
            Store::Keyring { account, .. } => match keyring_item(account)?.get_password() {
                Ok(text) => text,
                Err(keyring::Error::NoEntry) => return Ok(None),
                Err(e) => return Err(StoreError::Keyring(e.to_string())),
            },
        };
        decode(&text).map(Some).ok_or_else(|| StoreError::Damaged {
            account: self.account().to_string(),
        })
    }

    /// Replaces the stored tokens. The file is complete and durable when this
    /// returns: temporary file, fsync, rename, fsync of the directory.
    pub(crate) fn save(&self, set: &TokenSet) -> Result<(), StoreError> {
        let text = encode(set);
        match self {
            Store::File { path, .. } => {
                write_file(path, &text).map_err(|(action, source)| StoreError::Io {
                    action,
                    path: path.clone(),
                    source,
                })
            }
            Store::Keyring { account, .. } => keyring_item(account)?
                .set_password(&text)
                .map_err(|e| StoreError::Keyring(e.to_string())),
        }
    }

    /// Forgets the tokens; `false` if there were none.
    pub(crate) fn forget(&self) -> Result<bool, StoreError> {
        match self {
            Store::File { path, .. } => match fs::remove_file(path) {
                Ok(()) => {
                    durable::sync_parent(path)
                        .map(|()| true)
                        .map_err(|source| StoreError::Io {
                            action: "remove",
                            path: path.clone(),
                            source,
                        })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(StoreError::Io {
                    action: "remove",
                    path: path.clone(),
                    source,
                }),
            },
            Store::Keyring { account, .. } => match keyring_item(account)?.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring::Error::NoEntry) => Ok(false),
                Err(e) => Err(StoreError::Keyring(e.to_string())),
            },
        }
    }
}

fn lock_path(dir: &Path, account: &str) -> PathBuf {
    dir.join(format!("{}.oauth.lock", file_name(account)))
}

/// The keyring entry of an account's tokens, beside the `USER@HOST` passwords.
pub(crate) fn keyring_entry(account: &str) -> String {
    format!("oauth:{account}")
}

fn keyring_item(account: &str) -> Result<keyring::Entry, StoreError> {
    keyring::Entry::new(KEYRING_SERVICE, &keyring_entry(account))
        .map_err(|e| StoreError::Keyring(e.to_string()))
}

/// The account name as a file name: letters, digits and `-_.@+` as they are,
/// anything else (a `/`, a leading dot) as `%XX`.
fn file_name(account: &str) -> String {
    let mut name = String::new();
    for (i, b) in account.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || (b"-_@+".contains(&b) || (b == b'.' && i > 0));
        if plain {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

fn encode(set: &TokenSet) -> String {
    let stored = Stored {
        refresh_token: set.refresh_token.expose().to_string(),
        access_token: set.access.as_ref().map(|a| a.token.expose().to_string()),
        access_expires_at: set.access.as_ref().map(|a| a.expires_at),
    };
    serde_json::to_string(&stored).expect("strings and numbers serialize")
}

/// The tokens in `text`; `None` when it is not what [`encode`] writes. The
/// parser's message is dropped: it could quote a token.
fn decode(text: &str) -> Option<TokenSet> {
    let stored: Stored = serde_json::from_str(text).ok()?;
    if stored.refresh_token.is_empty() {
        return None;
    }
    let access = match (stored.access_token, stored.access_expires_at) {
        (Some(token), Some(expires_at)) => Some(CachedAccess {
            token: Secret::new(token),
            expires_at,
        }),
        _ => None,
    };
    Some(TokenSet {
        refresh_token: Secret::new(stored.refresh_token),
        access,
    })
}

/// Writes `text` to `path` atomically and durably, owner-only; on failure, what
/// was being done.
fn write_file(path: &Path, text: &str) -> Result<(), (&'static str, io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    durable::create_dir_all(dir).map_err(|e| ("create the directory of", e))?;
    durable::replace(path, text.as_bytes()).map_err(|e| ("write", e))
}

/// What [`refresh`] reads and writes the tokens with: a [`Store`], or a test's
/// stand-in.
pub(crate) trait TokenStore {
    fn account(&self) -> &str;
    /// Where the tokens are, for messages.
    fn describe(&self) -> String;
    /// What to add when no tokens are found there.
    fn not_found_hint(&self) -> &'static str {
        ""
    }
    fn load(&self) -> Result<Option<TokenSet>, StoreError>;
    fn save(&self, set: &TokenSet) -> Result<(), StoreError>;
}

impl TokenStore for Store {
    fn account(&self) -> &str {
        Store::account(self)
    }

    fn describe(&self) -> String {
        Store::describe(self)
    }

    fn not_found_hint(&self) -> &'static str {
        match self {
            Store::File { fallback: true, .. } => " (a login made in a desktop session went to its keyring, which this run cannot reach: set oauth_token_store = \"file\" and log in again)",
            _ => "",
        }
    }

    fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        Store::load(self)
    }

    fn save(&self, set: &TokenSet) -> Result<(), StoreError> {
        Store::save(self, set)
    }
}

/// What asks the token endpoint for a new access token: the HTTP client, or a
/// test's stand-in.
pub(crate) trait TokenEndpoint {
    fn refresh(&self, refresh_token: &Secret) -> Result<Tokens, grant::Error>;
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    #[error("no OAuth tokens are stored for {account} ({place} holds none); run popfetch oauth login {account}{hint}")]
    NotLoggedIn {
        account: String,
        place: String,
        hint: &'static str,
    },
    /// `why` is not a `#[source]`: the message already says it, once.
    #[error("{why}; run popfetch oauth login {account}")]
    NeedsLogin { account: String, why: grant::Error },
    #[error(transparent)]
    Grant(grant::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server may have rotated the refresh token already: the stored one
    /// may no longer work.
    #[error("the refreshed OAuth tokens of {account} could not be stored, so they are not used")]
    NotStored { account: String, source: StoreError },
}

impl RefreshError {
    pub(crate) fn class(&self) -> Class {
        match self {
            RefreshError::NotLoggedIn { .. } | RefreshError::NeedsLogin { .. } => Class::NeedsLogin,
            RefreshError::Grant(e) => e.class(),
            RefreshError::Store(e) => e.class(),
            RefreshError::NotStored { .. } => Class::Local,
        }
    }
}

/// The access token to log in with at `now` (Unix seconds): the cached one while
/// it has more than [`EXPIRY_MARGIN_SECS`] left; else a new one from the token
/// endpoint, returned only once it and the refresh token that came with it (or
/// the old one, when none came) are stored.
pub(crate) fn refresh(
    store: &dyn TokenStore,
    endpoint: &dyn TokenEndpoint,
    now: i64,
) -> Result<Secret, RefreshError> {
    let account = store.account();
    let set = store.load()?.ok_or_else(|| RefreshError::NotLoggedIn {
        account: account.to_string(),
        place: store.describe(),
        hint: store.not_found_hint(),
    })?;
    if let Some(cached) = &set.access {
        // Saturating: the file is the user's, and may hold any number.
        if cached.expires_at.saturating_sub(now) > EXPIRY_MARGIN_SECS {
            return Ok(cached.token.clone());
        }
    }
    let tokens = endpoint
        .refresh(&set.refresh_token)
        .map_err(|source| match source.class() {
            Class::NeedsLogin => RefreshError::NeedsLogin {
                account: account.to_string(),
                why: source,
            },
            _ => RefreshError::Grant(source),
        })?;
    let renewed = TokenSet {
        // No refresh token in the answer: the old one stays valid (RFC 6749 §6).
        refresh_token: tokens.refresh_token.unwrap_or(set.refresh_token),
        // Without a lifetime the token is used once, not cached.
        access: tokens.expires_in.map(|lifetime| CachedAccess {
            token: tokens.access_token.clone(),
            expires_at: now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
        }),
    };
    store
        .save(&renewed)
        .map_err(|source| RefreshError::NotStored {
            account: account.to_string(),
            source,
        })?;
    Ok(tokens.access_token)
}

/// Forgets the cached access token if it is still `refused`, which the mail
/// server turned down (revoked early, or its scope changed): the next login
/// refreshes instead of offering it again until it expires.
pub(crate) fn drop_access(store: &Store, refused: &Secret) -> Result<(), StoreError> {
    let _turn = store.lock()?;
    let Some(mut set) = store.load()? else {
        return Ok(());
    };
    if set
        .access
        .as_ref()
        .is_some_and(|cached| cached.token.expose() == refused.expose())
    {
        set.access = None;
        store.save(&set)?;
    }
    Ok(())
}

/// The access token for a login now: [`refresh`] under the store's lock, so
/// that accounts sharing the login take turns.
pub(crate) fn access_token(
    store: &Store,
    endpoint: &dyn TokenEndpoint,
) -> Result<Secret, RefreshError> {
    let _turn = store.lock()?;
    refresh(store, endpoint, chrono::Utc::now().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000;

    /// A token endpoint that answers from a script and counts the calls.
    struct Scripted {
        answers: RefCell<Vec<Result<Tokens, grant::Error>>>,
        asked_with: RefCell<Vec<String>>,
        calls: Cell<usize>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Tokens, grant::Error>>) -> Scripted {
            Scripted {
                answers: RefCell::new(answers),
                asked_with: RefCell::new(Vec::new()),
                calls: Cell::new(0),
            }
        }
    }

    impl TokenEndpoint for Scripted {
        fn refresh(&self, refresh_token: &Secret) -> Result<Tokens, grant::Error> {
            self.calls.set(self.calls.get() + 1);
            self.asked_with
                .borrow_mut()
                .push(refresh_token.expose().to_string());
            self.answers.borrow_mut().remove(0)
        }
    }

    fn tokens(access: &str, refresh: Option<&str>, lifetime: Option<u64>) -> Tokens {
        Tokens {
            access_token: Secret::new(access.into()),
            expires_in: lifetime.map(Duration::from_secs),
            refresh_token: refresh.map(|r| Secret::new(r.into())),
        }
    }

    fn stored(dir: &Path, refresh: &str, access: Option<(&str, i64)>) -> Store {
        let store = Store::file(dir, "alice");
        store
            .save(&TokenSet {
                refresh_token: Secret::new(refresh.into()),
                access: access.map(|(token, expires_at)| CachedAccess {
                    token: Secret::new(token.into()),
                    expires_at,
                }),
            })
            .unwrap();
        store
    }

    #[test]
    fn the_file_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = stored(&state, "rt1", Some(("at1", NOW + 100)));
        let Store::File { path, .. } = &store else {
            unreachable!()
        };
        assert_eq!(path, &state.join("alice.oauth.json"));
        let mode = fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let set = store.load().unwrap().unwrap();
        assert_eq!(set.refresh_token.expose(), "rt1");
        let access = set.access.unwrap();
        assert_eq!(
            (access.token.expose(), access.expires_at),
            ("at1", NOW + 100)
        );
        let again = stored(&state, "rt2", None);
        assert_eq!(again.load().unwrap().unwrap().refresh_token.expose(), "rt2");
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(&state).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert!(again.forget().unwrap());
        assert!(!again.forget().unwrap());
        assert!(again.load().unwrap().is_none());
    }

    #[test]
    fn a_damaged_file_asks_for_a_login_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::file(dir.path(), "alice");
        let Store::File { path, .. } = &store else {
            unreachable!()
        };
        fs::write(path, r#"{"refresh_token":"rt-secret-1""#).unwrap();
        let err = store.load().unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("rt-secret-1"));
        assert!(text.ends_with("run popfetch oauth login alice"), "{text}");
        let err = refresh(&store, &Scripted::new(vec![]), NOW).unwrap_err();
        assert_eq!(err.class(), Class::NeedsLogin);
    }

    #[test]
    fn account_names_become_safe_file_names() {
        assert_eq!(file_name("alice@example.com"), "alice@example.com");
        assert_eq!(file_name("../x/y"), "%2E.%2Fx%2Fy");
        assert_eq!(file_name(".hidden"), "%2Ehidden");
        assert_eq!(keyring_entry("work"), "oauth:work");
    }

    #[test]
    fn a_fresh_cached_token_is_used_without_asking() {
        let dir = tempfile::tempdir().unwrap();
        let store = stored(dir.path(), "rt1", Some(("at1", NOW + 61)));
        let endpoint = Scripted::new(vec![]);
        let at = refresh(&store, &endpoint, NOW).unwrap();
        assert_eq!(at.expose(), "at1");
        assert_eq!(endpoint.calls.get(), 0);
    }

    #[test]
    fn a_token_with_a_minute_left_is_refreshed_and_the_rotation_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = stored(dir.path(), "rt1", Some(("at1", NOW + 60)));
        let endpoint = Scripted::new(vec![Ok(tokens("at2", Some("rt2"), Some(3600)))]);
        let at = refresh(&store, &endpoint, NOW).unwrap();
        assert_eq!(at.expose(), "at2");
        assert_eq!(*endpoint.asked_with.borrow(), ["rt1"]);
        let set = store.load().unwrap().unwrap();
        assert_eq!(set.refresh_token.expose(), "rt2");
        let access = set.access.unwrap();
        assert_eq!(
            (access.token.expose(), access.expires_at),
            ("at2", NOW + 3600)
        );
        // The next run within the hour uses it.
        assert_eq!(
            refresh(&store, &endpoint, NOW + 1000).unwrap().expose(),
            "at2"
        );
        assert_eq!(endpoint.calls.get(), 1);
    }

    #[test]
    fn without_a_new_refresh_token_the_old_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = stored(dir.path(), "rt1", None);
        let endpoint = Scripted::new(vec![Ok(tokens("at2", None, None))]);
        assert_eq!(refresh(&store, &endpoint, NOW).unwrap().expose(), "at2");
        let set = store.load().unwrap().unwrap();
        assert_eq!(set.refresh_token.expose(), "rt1");
        // No lifetime given: not cached, so the next run refreshes.
        assert!(set.access.is_none());
    }

    /// A store whose writes fail, as on a full disk.
    struct Full(Store);

    impl TokenStore for Full {
        fn account(&self) -> &str {
            self.0.account()
        }

        fn describe(&self) -> String {
            self.0.describe()
        }

        fn load(&self) -> Result<Option<TokenSet>, StoreError> {
            self.0.load()
        }

        fn save(&self, _: &TokenSet) -> Result<(), StoreError> {
            Err(StoreError::Io {
                action: "write",
                path: PathBuf::from("alice.oauth.json"),
                source: io::Error::from_raw_os_error(28),
            })
        }
    }

    #[test]
    fn the_new_access_token_is_not_handed_out_unless_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Full(stored(dir.path(), "rt1", None));
        let endpoint = Scripted::new(vec![Ok(tokens("at2", Some("rt2"), Some(3600)))]);
        let err = refresh(&store, &endpoint, NOW).unwrap_err();
        assert!(matches!(err, RefreshError::NotStored { .. }), "{err}");
        assert_eq!(err.class(), Class::Local);
        let text = err.to_string();
        assert!(!text.contains("at2") && !text.contains("rt2"), "{text}");
        assert_eq!(endpoint.calls.get(), 1);
    }

    #[test]
    fn a_refused_grant_asks_for_a_login_and_trouble_is_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let store = stored(dir.path(), "rt1", None);
        let refused = grant::token_response(400, r#"{"error":"invalid_grant"}"#).unwrap_err();
        let down = grant::Error::Network("connection refused".into());
        let endpoint = Scripted::new(vec![Err(refused), Err(down)]);
        let err = refresh(&store, &endpoint, NOW).unwrap_err();
        assert_eq!(err.class(), Class::NeedsLogin);
        let text = err.to_string();
        assert!(text.ends_with("; run popfetch oauth login alice"), "{text}");
        assert!(!text.contains('\n') && !text.contains("rt1"));
        let err = refresh(&store, &endpoint, NOW).unwrap_err();
        assert_eq!(err.class(), Class::Temporary);
        // Neither touched the stored refresh token.
        assert_eq!(store.load().unwrap().unwrap().refresh_token.expose(), "rt1");
        let never = refresh(&Store::file(dir.path(), "bob"), &endpoint, NOW).unwrap_err();
        assert!(matches!(never, RefreshError::NotLoggedIn { .. }));
        assert_eq!(never.class(), Class::NeedsLogin);
    }

    #[test]
    fn debug_forms_hide_the_tokens() {
        let set = TokenSet {
            refresh_token: Secret::new("rt-secret".into()),
            access: Some(CachedAccess {
                token: Secret::new("at-secret".into()),
                expires_at: NOW,
            }),
        };
        let debug = format!("{set:?}");
        assert!(!debug.contains("rt-secret") && !debug.contains("at-secret"));
    }
}
