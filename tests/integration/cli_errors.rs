//! Usage and configuration errors: one line, the right exit code, nothing touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::Home;

#[test]
fn missing_config_names_the_path() {
    let home = Home::new();
    let run = home.run(&["sync"]);
    run.expect(78);
    let err = run.stderr();
    assert!(
        err.contains(&home.config_path().display().to_string()),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn unknown_account_is_a_usage_error() {
    let home = Home::new();
    home.write_config(
        "[accounts.a]\nhost = \"h\"\nuser = \"u\"\npassword_command = \"true\"\ndeliver = \"maildir:~/Mail\"\n",
    );
    let run = home.run(&["sync", "nope"]);
    run.expect(64);
    assert!(
        run.stderr().contains("no account named \"nope\""),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("config.toml"), "{}", run.stderr());
}

#[test]
fn unknown_key_names_key_and_file() {
    let home = Home::new();
    let path = home.write_config("[accounts.a]\nhost = \"h\"\nsever = \"x\"\n");
    let run = home.run(&["sync"]);
    run.expect(78);
    let err = run.stderr();
    assert!(
        err.contains("sever") && err.contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn readable_config_with_password_is_refused() {
    let home = Home::new();
    let path = home.write_config(
        "[accounts.a]\nhost = \"h\"\nuser = \"u\"\npassword = \"pw-in-file\"\ndeliver = \"maildir:~/Mail\"\n",
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let run = home.run(&["sync"]);
    run.expect(78);
    assert!(run.stderr().contains("chmod 600"), "{}", run.stderr());
    assert!(!run.stderr().contains("pw-in-file"));
    assert!(!home.maildir().exists(), "nothing may be created");
}

#[test]
fn bad_flag_is_a_usage_error() {
    let home = Home::new();
    home.run(&["sync", "--no-such-flag"]).expect(64);
    home.run(&["frobnicate"]).expect(64);
    home.run(&["--help"]).expect(0);
}

#[test]
fn explicit_config_path_is_used() {
    let home = Home::new();
    let other = home.path().join("elsewhere.toml");
    let run = home.run(&["-c", other.to_str().unwrap(), "sync"]);
    run.expect(78);
    assert!(run.stderr().contains("elsewhere.toml"), "{}", run.stderr());
}

#[test]
fn unreachable_server_is_unavailable_and_other_accounts_still_run() {
    let home = Home::new();
    // Port 1 on loopback: nothing listens there.
    home.write_config(
        r#"
[defaults]
host = "127.0.0.1"
port = 1
tls = "none"
auth = "user"
user = "u"
password_command = "echo pw"
timeout = 5
deliver = "maildir:~/Mail"

[accounts.first]
[accounts.second]
user = "v"
"#,
    );
    let run = home.run(&["sync"]);
    run.expect(69);
    let err = run.stderr();
    assert!(
        err.contains("account \"first\"") && err.contains("account \"second\""),
        "{err}"
    );
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
}
