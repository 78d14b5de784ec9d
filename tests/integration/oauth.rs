//! OAuth2 built in, end to end: `popfetch oauth login` (device flow and browser
//! with PKCE) against a real authorization server (oidc-provider), then syncs
//! from the test Dovecot, whose oauth2 passdb checks the tokens it issued; the
//! refresh rule, rotation, revocation, an unreachable server, SIGKILL during a
//! refresh, a login shared by two accounts, and probe with the Microsoft preset.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::dovecot::{self, numbered};
use crate::support::oauth::OAuthServer;
use crate::support::{Dovecot, Home};

const SCOPE: &str = "openid offline_access pop3";

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// The custom-provider keys pointing at `auth`.
fn oauth_keys(auth: &OAuthServer) -> String {
    let i = auth.issuer();
    format!(
        "oauth_provider = \"custom\"\noauth_client_id = \"popfetch\"\noauth_token_url = \"{i}/token\"\noauth_device_url = \"{i}/device/auth\"\noauth_auth_url = \"{i}/auth\"\noauth_revoke_url = \"{i}/token/revocation\"\noauth_scope = \"{SCOPE}\"\n"
    )
}

fn setup(server: &Dovecot, auth: &OAuthServer, extra: &str) -> Home {
    let home = Home::new();
    home.write_config(&server.config_without_password(
        &home,
        "implicit",
        &format!("{}{extra}", oauth_keys(auth)),
    ));
    home
}

fn token_file(home: &Home, name: &str) -> PathBuf {
    home.state_dir().join(format!("{name}.oauth.json"))
}

/// The stored tokens, as JSON.
fn stored(home: &Home, name: &str) -> serde_json::Value {
    let text = fs::read_to_string(token_file(home, name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn refresh_token(home: &Home) -> String {
    stored(home, "test")["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn refreshes(auth: &OAuthServer) -> u64 {
    auth.counts()["refresh_token"].as_u64().unwrap()
}

/// Starts `popfetch oauth login ACCOUNT [args]` with stdout piped, reads it up to
/// the first line holding `marker`, and returns the child, that line and all
/// lines read.
fn start_login(home: &Home, args: &[&str], marker: &str) -> (Child, String, Vec<String>) {
    let mut child = home
        .command()
        .args(["oauth", "login"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no line with {marker}; so far: {seen:?}");
        };
        seen.push(line.clone());
        if line.contains(marker) {
            // The rest is drained so the child never blocks writing it.
            std::thread::spawn(move || rx.into_iter().count());
            return (child, line, seen);
        }
    }
}

/// The first word of `line` that starts with `prefix`.
fn url_in(line: &str, prefix: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}… in {line}"))
        .trim_end_matches(')')
        .to_string()
}

/// A device-flow login of account "test", approved as the Dovecot user.
fn device_login(home: &Home, auth: &OAuthServer) -> Vec<String> {
    let (mut child, line, seen) = start_login(home, &["test"], "user_code=");
    let complete = url_in(&line, "http://");
    auth.approve_device(&complete, dovecot::USER);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "login: {seen:?} {err}");
    seen
}

#[test]
fn device_login_then_syncs_use_the_cached_token_until_a_refresh_is_due() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let auth = OAuthServer::start();
    let home = setup(&server, &auth, "keep = true\n");

    let shown = device_login(&home, &auth);
    assert!(
        shown.iter().any(|l| l.contains("enter the code")),
        "{shown:?}"
    );
    // The file store (no keyring in the test's environment), owner-only.
    let file = token_file(&home, "test");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let tokens = stored(&home, "test");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = refresh_token(&home);

    // A fresh cached token: used as it is, no refresh.
    let run = home.run(&["-v", "sync"]);
    run.expect(0);
    assert_eq!(home.delivered(), sorted(numbered(2)));
    assert_eq!(refreshes(&auth), 0);
    let trace = run.stderr();
    assert!(trace.contains("> AUTH XOAUTH2"), "{trace}");
    for secret in [&access, &refresh] {
        assert!(!trace.contains(&secret[..16]), "a token leaked: {trace}");
    }

    let status = home.run(&["oauth", "status"]);
    status.expect(0);
    assert!(
        status.stdout().contains("test: logged in with custom")
            && status.stdout().contains("the access token expires"),
        "{}",
        status.stdout()
    );
    assert!(!status.stdout().contains(&refresh[..16]));

    // The cached token one minute from its end: refreshed before the login,
    // and the new tokens stored.
    let mut near = tokens.clone();
    near["access_expires_at"] = serde_json::json!(chrono_now() + 59);
    fs::write(&file, near.to_string()).unwrap();
    server.add_messages(&numbered(3)[2..]);
    home.run(&["sync"]).expect(0);
    assert_eq!(refreshes(&auth), 1);
    assert_eq!(home.delivered(), sorted(numbered(3)));
    let after = stored(&home, "test");
    assert_ne!(after["refresh_token"], tokens["refresh_token"]);
    assert_ne!(after["access_token"], tokens["access_token"]);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn every_refresh_rotates_and_the_old_refresh_token_is_refused_afterwards() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    // Access tokens shorter than the 60 s margin: every sync refreshes.
    let auth = OAuthServer::start_with(&[("OAUTH_AT_TTL", "30")]);
    let home = setup(
        &server,
        &auth,
        "keep = true\noauth_token_store = \"file\"\n",
    );
    device_login(&home, &auth);
    let first = refresh_token(&home);
    home.run(&["sync"]).expect(0);
    let second = refresh_token(&home);
    assert_ne!(first, second, "the refresh token did not rotate");
    home.run(&["sync"]).expect(0);
    let third = refresh_token(&home);
    assert_ne!(second, third);
    assert_eq!(refreshes(&auth), 2);
    // The first one's successor has been used: the server refuses it now.
    let refused = auth.refresh(&first).unwrap_err();
    assert_eq!(refused["error"], "invalid_grant", "{refused}");
    // The stored one still works.
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), numbered(1));
}

#[test]
fn browser_login_with_pkce_then_sync() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let auth = OAuthServer::start();
    let home = setup(&server, &auth, "");
    let (mut child, line, seen) = start_login(&home, &["--browser", "test"], "/auth?");
    let url = url_in(&line, auth.issuer());
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    let page = auth.browse(&url);
    assert!(page.contains("popfetch is logged in"), "{page}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen:?}");
    assert_eq!(auth.counts()["authorization_code"], 1);
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), sorted(numbered(2)));
    assert!(server.messages().is_empty(), "delivered mail is deleted");
}

#[test]
fn a_revoked_grant_exits_77_with_one_line_of_advice_and_keeps_the_mail() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let auth = OAuthServer::start_with(&[("OAUTH_AT_TTL", "30")]);
    let home = setup(&server, &auth, "");
    device_login(&home, &auth);
    auth.revoke(&refresh_token(&home));
    let run = home.run(&["sync"]);
    run.expect(77);
    let err = run.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("popfetch: account \"test\": ")
            && err.contains("invalid_grant")
            && err.trim_end().ends_with("run popfetch oauth login test"),
        "{err}"
    );
    assert_eq!(server.messages().len(), 2, "mail stays on the server");
    assert!(home.delivered().is_empty());

    // Logging out forgets the tokens; status then asks for a login.
    home.run(&["oauth", "logout", "test"]).expect(0);
    assert!(!token_file(&home, "test").exists());
    let status = home.run(&["oauth", "status", "test"]);
    status.expect(77);
    assert!(status.stdout().contains("run popfetch oauth login test"));
}

#[test]
fn logout_revokes_at_the_provider() {
    let server = Dovecot::start();
    let auth = OAuthServer::start();
    let home = setup(&server, &auth, "");
    device_login(&home, &auth);
    let refresh = refresh_token(&home);
    let run = home.run(&["oauth", "logout", "test"]);
    run.expect(0);
    assert!(
        run.stdout().contains("revoked the grant"),
        "{}",
        run.stdout()
    );
    assert_eq!(auth.counts()["revocation"], 1);
    assert_eq!(
        auth.refresh(&refresh).unwrap_err()["error"],
        "invalid_grant"
    );
}

#[test]
fn the_authorization_server_down_exits_75_and_keeps_the_mail() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let mut auth = OAuthServer::start_with(&[("OAUTH_AT_TTL", "30")]);
    let home = setup(&server, &auth, "");
    device_login(&home, &auth);
    let before = refresh_token(&home);
    auth.stop();
    let run = home.run(&["sync"]);
    run.expect(75);
    assert!(
        run.stderr()
            .contains("cannot reach the authorization server"),
        "{}",
        run.stderr()
    );
    assert_eq!(server.messages().len(), 2);
    assert_eq!(refresh_token(&home), before, "the stored login is kept");
}

#[test]
fn sigkill_during_refreshes_never_costs_the_login() {
    let server = Dovecot::start();
    server.add_messages(&numbered(3));
    // Every sync refreshes, and the server answers 300 ms after it rotated:
    // the window where the new refresh token exists only on the wire.
    let auth = OAuthServer::start_with(&[("OAUTH_AT_TTL", "30"), ("OAUTH_TOKEN_DELAY_MS", "300")]);
    let home = setup(&server, &auth, "keep = true\n");
    device_login(&home, &auth);
    for round in 0..10u64 {
        let mut child = home
            .command()
            .arg("sync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 + round * 45));
        let _ = child.kill();
        let _ = child.wait();
    }
    let issued = refreshes(&auth);
    assert!(issued >= 3, "few kills landed after a refresh: {issued}");
    let run = home.run(&["sync"]);
    run.expect(0);
    assert_eq!(
        home.delivered(),
        sorted(numbered(3)),
        "no loss, no duplicate"
    );
    home.run(&["sync"]).expect(0);
}

#[test]
fn accounts_sharing_a_login_take_turns_to_refresh_it() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let auth = OAuthServer::start_with(&[("OAUTH_TOKEN_DELAY_MS", "500")]);
    let home = Home::new();
    let one = server.config_without_password(
        &home,
        "implicit",
        &format!(
            "{}keep = true\noauth_token_name = \"shared\"\noauth_token_store = \"file\"\n",
            oauth_keys(&auth)
        ),
    );
    // The same mailbox through the STARTTLS port: another account lock.
    let two = one
        .replace("[accounts.test]", "[accounts.second]")
        .replace(
            &format!("port = {}\ntls = \"implicit\"", server.tls_port),
            &format!("port = {}\ntls = \"starttls\"", server.port),
        )
        .replace(
            &format!("maildir:{}", home.maildir().display()),
            &format!("maildir:{}/second", home.path().display()),
        );
    assert!(two.contains("starttls"), "{two}");
    home.write_config(&format!("{one}\n{two}"));
    let (mut child, line, _) = start_login(&home, &["shared"], "user_code=");
    auth.approve_device(&url_in(&line, "http://"), dovecot::USER);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(token_file(&home, "shared").exists());
    // Make the refresh due, then sync both accounts at once.
    let mut tokens = stored(&home, "shared");
    tokens["access_expires_at"] = serde_json::json!(chrono_now() - 1);
    fs::write(token_file(&home, "shared"), tokens.to_string()).unwrap();
    let run = home.run(&["sync", "--jobs", "2"]);
    run.expect(0);
    // One refreshed; the other waited and found the fresh token.
    assert_eq!(refreshes(&auth), 1);
    assert_eq!(home.delivered(), numbered(1));
    assert_eq!(
        crate::support::home::maildir_messages(&home.path().join("second")),
        numbered(1)
    );
}

#[test]
fn probe_logs_in_with_the_microsoft_preset() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let auth = OAuthServer::start();
    let home = Home::new();
    let i = auth.issuer();
    // The preset's scope and flow, its endpoints pointed at the test server.
    home.write_config(&server.config_without_password(
        &home,
        "implicit",
        &format!(
            "oauth_provider = \"microsoft\"\noauth_client_id = \"popfetch\"\noauth_token_url = \"{i}/token\"\noauth_device_url = \"{i}/device/auth\"\n"
        ),
    ));
    device_login(&home, &auth);
    let run = home.run(&["probe", "test"]);
    run.expect(0);
    let out = run.stdout();
    assert!(
        out.contains("logged in:     as ") && out.contains("(microsoft, stored in the file"),
        "{out}"
    );
    assert!(out.contains("mailbox:       2 message(s)"), "{out}");
}

#[test]
fn oauth_config_mistakes_are_one_line_config_errors() {
    let server = Dovecot::start();
    let home = Home::new();
    for (extra, says) in [
        (
            "oauth_provider = \"custom\"\noauth_client_id = \"x\"\noauth_token_url = \"http://example.org/token\"\noauth_scope = \"s\"\noauth_device_url = \"https://example.org/d\"\n",
            "oauth_token_url = \"http://example.org/token\" must be an https:// URL",
        ),
        ("oauth_provider = \"google\"\n", "needs oauth_client_id"),
        (
            "oauth_provider = \"microsoft\"\noauth_client_id = \"x\"\noauth_token_command = \"true\"\n",
            "set either oauth_provider",
        ),
        (
            "oauth_provider = \"microsoft\"\noauth_client_id = \"x\"\nauth = \"plain\"\n",
            "XOAUTH2 or OAUTHBEARER",
        ),
        ("oauth_client_id = \"x\"\n", "oauth_provider is not"),
    ] {
        home.write_config(&server.config_without_password(&home, "implicit", extra));
        let run = home.run(&["sync"]);
        run.expect(78);
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.stderr());
        assert!(run.stderr().contains(says), "{extra}: {}", run.stderr());
    }
    // Not logged in yet: 77, naming the command.
    home.write_config(&server.config_without_password(
        &home,
        "implicit",
        "oauth_provider = \"microsoft\"\noauth_client_id = \"x\"\n",
    ));
    let run = home.run(&["sync"]);
    run.expect(77);
    assert!(
        run.stderr().contains("run popfetch oauth login test"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_refresh_token_from_another_tool_is_taken_over_with_import() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let auth = OAuthServer::start();
    let home = setup(&server, &auth, "");
    // What getmail's token file holds, from a login made by another tool.
    let theirs = auth.device_tokens(SCOPE, dovecot::USER).unwrap();
    let file = serde_json::json!({
        "client_id": "popfetch",
        "token_uri": auth.token_endpoint(),
        "refresh_token": theirs["refresh_token"],
    });
    let import = |stdin: String| {
        let mut child = home
            .command()
            .args(["oauth", "login", "test", "--import"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let garbage = import("not a token at all\n".into());
    assert_eq!(garbage.status.code(), Some(64), "{garbage:?}");
    let refused = import("no-such-token\n".into());
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    assert!(!token_file(&home, "test").exists());
    let done = import(file.to_string());
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    assert_eq!(refreshes(&auth), 1, "tried once");
    home.run(&["sync"]).expect(0);
    assert_eq!(home.delivered(), numbered(1));
}

#[test]
fn a_cached_token_the_server_refuses_is_dropped_and_the_next_run_refreshes() {
    let server = Dovecot::start();
    server.add_messages(&numbered(1));
    let auth = OAuthServer::start();
    let home = setup(&server, &auth, "");
    device_login(&home, &auth);
    let mut tokens = stored(&home, "test");
    tokens["access_token"] = serde_json::json!(server.oauth_token("mallory"));
    fs::write(token_file(&home, "test"), tokens.to_string()).unwrap();
    let run = home.run(&["sync"]);
    run.expect(77);
    assert!(
        run.stderr()
            .contains("the server refused the OAuth access token (dropped"),
        "{}",
        run.stderr()
    );
    assert!(stored(&home, "test").get("access_token").is_none());
    assert_eq!(server.messages().len(), 1);
    home.run(&["sync"]).expect(0);
    assert_eq!(refreshes(&auth), 1);
    assert_eq!(home.delivered(), numbered(1));
}

#[test]
fn a_token_in_cleartext_and_a_shared_login_that_disagrees_are_refused() {
    let home = Home::new();
    let account = |name: &str, extra: &str| {
        format!(
            "[accounts.{name}]\nhost = \"pop.example.org\"\nuser = \"me\"\ndeliver = \"maildir:~/Mail\"\noauth_provider = \"microsoft\"\noauth_client_id = \"x\"\n{extra}\n"
        )
    };
    home.write_config(&account("plain", "tls = \"none\""));
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(run.stderr().contains("in cleartext"), "{}", run.stderr());

    home.write_config(&format!(
        "{}{}",
        account("one", "oauth_token_name = \"me\""),
        account(
            "two",
            "oauth_token_name = \"me\"\noauth_token_store = \"file\""
        )
    ));
    let run = home.run(&["oauth", "status"]);
    run.expect(78);
    assert!(
        run.stderr().contains(
            "shares the OAuth login \"me\" with account \"one\" but not its oauth_token_store"
        ),
        "{}",
        run.stderr()
    );
}

/// With a Secret Service (gnome-keyring in its own D-Bus session), auto keeps
/// the tokens in the keyring: no token file, and sync, status and logout find them.
#[test]
fn auto_keeps_the_tokens_in_the_keyring_where_one_answers() {
    let server = Dovecot::start();
    server.add_messages(&numbered(2));
    let auth = OAuthServer::start();
    let home = setup(&server, &auth, "");
    let theirs = auth.device_tokens(SCOPE, dovecot::USER).unwrap();
    let script = r#"
        printf '%s\n' "$RT" | "$POPFETCH" oauth login test --import || exit 101
        "$POPFETCH" sync || exit 102
        "$POPFETCH" oauth status test || exit 103
        "$POPFETCH" oauth logout test || exit 104
        "$POPFETCH" oauth status test
    "#;
    let rt = theirs["refresh_token"].as_str().unwrap();
    let output = home.in_keyring_session(script, &[("RT", rt)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The last status runs after the logout: not logged in.
    assert_eq!(output.status.code(), Some(77), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("are in the keyring entry oauth:test"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "test: logged in with custom; refresh token stored in the keyring entry oauth:test"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("revoked the grant"), "{stdout}");
    assert!(
        !token_file(&home, "test").exists(),
        "a token file was written"
    );
    assert_eq!(home.delivered(), sorted(numbered(2)), "{stderr}");
    assert_eq!(auth.counts()["revocation"], 1);
}
