//! `popfetch oauth login|status|logout`: logging an account in once (the device
//! flow, or the browser with PKCE), showing what its token store holds, and
//! logging out (revoking where the provider can). Tokens are never printed.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;

use anyhow::Context;

use crate::cmd::exit::Exit;
use crate::config::{Account, Config, ConfigError, OAuth};
use crate::oauth::grant::Tokens;
use crate::oauth::login::{self, LoginError, Prompt};
use crate::oauth::store::{CachedAccess, Store, StoreError, TokenSet};

/// The account NAME, or the first whose `oauth_token_name` is NAME (a login
/// shared by several accounts), with its OAuth settings.
pub(crate) fn find<'a>(config: &'a Config, name: &str) -> anyhow::Result<(&'a Account, &'a OAuth)> {
    let account = config
        .accounts
        .iter()
        .find(|a| a.name == name)
        .or_else(|| {
            config
                .accounts
                .iter()
                .find(|a| a.oauth.as_ref().is_some_and(|o| o.token_name == name))
        })
        .ok_or_else(|| ConfigError::UnknownAccount {
            name: name.to_string(),
            path: config.path.clone(),
            known: config.accounts.iter().map(|a| a.name.clone()).collect(),
        })?;
    let oauth = account.oauth.as_ref().ok_or_else(|| {
        anyhow::Error::from(ConfigError::Invalid {
            path: config.path.clone(),
            account: account.name.clone(),
            message:
                "it does not use OAuth; set oauth_provider and oauth_client_id (README: OAuth2)"
                    .into(),
        })
    })?;
    Ok((account, oauth))
}

/// How `oauth login` gets the first tokens.
pub(crate) enum How {
    /// The device flow, or the browser where the provider has no device flow.
    Default,
    Browser,
    /// A refresh token from stdin, tried once.
    Import,
}

/// Logs in once and stores the tokens; the device flow unless the browser is
/// asked for or the provider has no device endpoint (Google).
pub(crate) fn login(account: &Account, oauth: &OAuth, how: How, quiet: bool) -> anyhow::Result<()> {
    let client = oauth.client()?;
    let provider = &oauth.provider;
    let name = &account.name;
    let mut out = std::io::stdout();
    let mut show = |prompt: Prompt| {
        let _ = match prompt {
            Prompt::Device(device) => {
                let complete = device
                    .verification_uri_complete
                    .as_ref()
                    .map(|uri| format!("(or open {uri} directly)\n"))
                    .unwrap_or_default();
                write!(
                    out,
                    "To log in account \"{name}\", open\n  {}\nin a browser on any device and enter the code {}\n{complete}Waiting for the approval; the code expires in {} minutes.\n",
                    device.verification_uri,
                    device.user_code,
                    device.expires_in.as_secs().div_ceil(60)
                )
            }
            Prompt::Browser(url) => {
                let paste = if std::io::stdin().is_terminal() {
                    "If the browser runs on another machine, sign in there, then paste here the address it ends on (it starts with http://127.0.0.1 or http://localhost and fails to load).\n"
                } else {
                    ""
                };
                let opened = has_display() && open::that_detached(url).is_ok();
                let how = if opened {
                    "a browser window opens it; if none does, open"
                } else {
                    "open"
                };
                write!(
                    out,
                    "To log in account \"{name}\", {how} this address in a browser on this machine:\n  {url}\n{paste}Waiting for the sign-in…\n"
                )
            }
        };
        let _ = out.flush();
    };
    let tokens = match how {
        How::Import => {
            let refresh_token = imported_refresh_token()?;
            let mut tokens = client
                .refresh(&provider.token_url, &refresh_token)
                .with_context(|| {
                    format!(
                        "the imported refresh token was not taken (it works only with the client id it was issued to); to log in anew, run popfetch oauth login {name}"
                    )
                })?;
            // No rotation: the imported token stays the one to keep.
            tokens.refresh_token.get_or_insert(refresh_token);
            tokens
        }
        How::Default if provider.device_url.is_some() => {
            login::device(&client, provider, &mut show)?
        }
        How::Default | How::Browser => {
            login::browser(&client, provider, &pasted_lines(), &mut show)?
        }
    };
    let store = oauth.store(&account.state_dir);
    keep(&store, tokens)?;
    // auto: a login left in the other place would only confuse a later logout.
    for other in oauth.stores(&account.state_dir) {
        if other.describe() != store.describe() {
            let _ = other.forget();
        }
    }
    if !quiet {
        println!(
            "Logged in: the tokens of \"{}\" are in {}; every sync refreshes them.",
            account.name,
            store.describe()
        );
    }
    Ok(())
}

/// Stores the first tokens of a login, replacing any earlier ones.
fn keep(store: &Store, tokens: Tokens) -> anyhow::Result<()> {
    let refresh_token = tokens.refresh_token.ok_or(LoginError::NoRefreshToken)?;
    let now = chrono::Utc::now().timestamp();
    let set = TokenSet {
        refresh_token,
        access: tokens.expires_in.map(|lifetime| CachedAccess {
            token: tokens.access_token,
            expires_at: now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
        }),
    };
    let _turn = store.lock()?;
    store.save(&set)?;
    Ok(())
}

/// The refresh token on stdin: alone on its first line, or the `refresh_token`
/// of a JSON object (getmail's token file, mutt_oauth2.py's decrypted one).
fn imported_refresh_token() -> anyhow::Result<crate::secret::Secret> {
    use std::io::Read;
    let mut text = String::new();
    if std::io::stdin().is_terminal() {
        // Typed or pasted at a terminal: one line, not echoed.
        text = rpassword::prompt_password("Refresh token (not shown): ")
            .context("cannot read the refresh token from the terminal")?;
    } else {
        std::io::stdin()
            .take(1 << 20)
            .read_to_string(&mut text)
            .context("cannot read the refresh token from stdin")?;
    }
    let text = text.trim();
    let token = if text.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("refresh_token")?.as_str().map(str::to_string))
            .ok_or(LoginError::NotAToken(
                "the JSON on stdin holds no \"refresh_token\" string",
            ))?
    } else {
        text.lines().next().unwrap_or("").trim().to_string()
    };
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LoginError::NotAToken(
            "stdin holds no refresh token: give the token alone on a line, or a JSON object with \"refresh_token\"",
        )
        .into());
    }
    Ok(crate::secret::Secret::new(token))
}

/// Lines typed on stdin, when it is a terminal: an address pasted from a
/// browser on another machine.
fn pasted_lines() -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    if std::io::stdin().is_terminal() {
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() && send.send(line).is_err() {
                    break;
                }
            }
        });
    }
    receive
}

/// Whether a browser can be opened here: a graphical session on Linux and the
/// BSDs, always on macOS. Without one, xdg-open might start a text browser in
/// this very terminal.
fn has_display() -> bool {
    cfg!(target_vendor = "apple")
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
}

/// One line on what an account's store holds; `Exit::NoPerm` when it needs a
/// login.
pub(crate) fn status(account: &Account, oauth: &OAuth) -> anyhow::Result<Exit> {
    let store = oauth.store(&account.state_dir);
    let name = &account.name;
    let shared = if oauth.token_name != account.name {
        format!(" (login \"{}\")", oauth.token_name)
    } else {
        String::new()
    };
    let Some(set) = store.load()? else {
        println!(
            "{name}{shared}: not logged in ({} holds no tokens); run popfetch oauth login {name}",
            store.describe()
        );
        return Ok(Exit::NoPerm);
    };
    let now = chrono::Utc::now().timestamp();
    let access = match &set.access {
        None => "no access token cached; the next sync gets one".to_string(),
        Some(cached) if cached.expires_at > now => format!(
            "the access token expires {} ({})",
            local_time(cached.expires_at),
            span(cached.expires_at.saturating_sub(now), "in ", "")
        ),
        Some(cached) => format!(
            "the access token expired {} ({}); the next sync refreshes it",
            local_time(cached.expires_at),
            span(now.saturating_sub(cached.expires_at), "", " ago")
        ),
    };
    println!(
        "{name}{shared}: logged in with {}; refresh token stored in {}; {access}",
        oauth.provider_name,
        store.describe()
    );
    Ok(Exit::Ok)
}

/// Revokes the refresh token where the provider has an endpoint for it (RFC
/// 7009), then forgets the tokens here whatever the provider said. With
/// `oauth_token_store = "auto"` both places are cleared, so that a login left
/// in the other one cannot take over after the logout.
pub(crate) fn logout(account: &Account, oauth: &OAuth, quiet: bool) -> anyhow::Result<Exit> {
    let name = &account.name;
    let stores = oauth.stores(&account.state_dir);
    let _turn = stores[0].lock()?;
    let mut exit = Exit::Ok;
    let mut said = Vec::new();
    for store in &stores {
        let set = match store.load() {
            Ok(set) => set,
            // A damaged store is forgotten too: it is what logout is for.
            Err(StoreError::Damaged { .. }) => None,
            // auto's other place may be a keyring this session cannot reach.
            Err(StoreError::Keyring(_)) if stores.len() > 1 => continue,
            Err(e) => return Err(e.into()),
        };
        let revoked = match &set {
            Some(set) => {
                let (revoked, failed) = revoke(oauth, &set.refresh_token, name);
                exit = exit.max(failed);
                Some(revoked)
            }
            None => None,
        };
        let had = store.forget().with_context(|| match &revoked {
            Some(revoked) => format!("the grant is {revoked}, but the tokens stay stored"),
            None => "the tokens stay stored".to_string(),
        })?;
        match revoked {
            Some(revoked) => said.push(format!(
                "{revoked}; forgot the tokens in {}",
                store.describe()
            )),
            None if had => said.push(format!(
                "removed the unreadable tokens in {}",
                store.describe()
            )),
            None => {}
        }
    }
    if !quiet {
        if said.is_empty() {
            println!("{name}: no OAuth tokens were stored");
        } else {
            println!("{name}: logged out; {}", said.join("; "));
        }
    }
    Ok(exit)
}

/// Revokes one refresh token: what happened, for the user, and the exit it is
/// worth (a revocation that could not be made is reported, not hidden).
fn revoke(oauth: &OAuth, refresh_token: &crate::secret::Secret, name: &str) -> (String, Exit) {
    let Some(url) = &oauth.provider.revoke_url else {
        let said = match oauth.provider.manage_url {
            Some(url) => format!(
                "{} has no revocation endpoint: remove popfetch's access at {url}",
                oauth.provider_name
            ),
            None => "the provider has no revocation endpoint (oauth_revoke_url)".to_string(),
        };
        return (said, Exit::Ok);
    };
    let result = oauth
        .client()
        .map_err(anyhow::Error::from)
        .and_then(|client| {
            client
                .revoke(url, refresh_token)
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ("revoked the grant at the provider".to_string(), Exit::Ok),
        // RFC 7009 §2.2 answers 200 for a dead token; some servers refuse it.
        Err(e) if crate::cmd::exit::classify(&e) == Exit::NoPerm => (
            "the grant was already revoked or expired".to_string(),
            Exit::Ok,
        ),
        Err(e) => {
            let manage = oauth
                .provider
                .manage_url
                .map(|url| format!("; remove popfetch's access at {url}"))
                .unwrap_or_default();
            eprintln!("popfetch: account \"{name}\": could not revoke the grant: {e:#}{manage}");
            (
                "the grant is not revoked".to_string(),
                crate::cmd::exit::classify(&e),
            )
        }
    }
}

fn local_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %z")
                .to_string()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `seconds` as "3 min" or "2 h 5 min", between `before` and `after`.
fn span(seconds: i64, before: &str, after: &str) -> String {
    let minutes = seconds.max(0) / 60;
    let text = match minutes {
        0 => format!("{} s", seconds.max(0)),
        1..=59 => format!("{minutes} min"),
        _ => format!("{} h {} min", minutes / 60, minutes % 60),
    };
    format!("{before}{text}{after}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(42, "in ", ""), "in 42 s");
        assert_eq!(span(3599, "in ", ""), "in 59 min");
        assert_eq!(span(7500, "", " ago"), "2 h 5 min ago");
    }
}
