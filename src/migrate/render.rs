//! A [`Draft`] written as popfetch's TOML: one `[accounts.NAME]` table per
//! mailbox, what did not map as comments saying why, and a literal password only
//! when the text goes to a file readable by its owner alone.

use std::fmt::Write;

use super::{Draft, Mailbox, Value};
use crate::sys::expand::toml_string;

/// Where the text is going, which decides what may be in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// A terminal or a pipe: no secret is written.
    Stdout,
    /// A new file of mode 0600.
    PrivateFile,
}

/// The configuration file for `draft`; `source` names the file converted.
pub(crate) fn render(draft: &Draft, source: &str, sink: Sink) -> String {
    let tool = draft
        .tool
        .map_or_else(|| "another tool".to_string(), |t| t.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# popfetch configuration converted from {tool}'s {} by `popfetch import-config`.",
        one_line(source)
    );
    let _ = writeln!(
        out,
        "# Check each account with `popfetch probe ACCOUNT`, then `popfetch sync --dry-run`."
    );
    for note in &draft.notes {
        comment(&mut out, "", note);
    }
    for account in &draft.accounts {
        out.push('\n');
        account_table(&mut out, account, sink);
    }
    out
}

fn account_table(out: &mut String, account: &Mailbox, sink: Sink) {
    let _ = writeln!(out, "[accounts.{}]", key(&account.name));
    if !account.origin.is_empty() {
        comment(out, "", &format!("from {}", account.origin));
    }
    for (name, value) in &account.keys {
        let _ = writeln!(out, "{name} = {}", value_text(value));
        if *name == "user" {
            password(out, account, sink);
        }
    }
    if account.get("user").is_none() {
        password(out, account, sink);
    }
    for note in &account.notes {
        // A note that opens with an option quoted is about that option, which
        // was left out; the others explain what was converted.
        let prefix = if note.starts_with(['`', '[']) {
            "not converted: "
        } else {
            ""
        };
        comment(out, prefix, note);
    }
}

fn password(out: &mut String, account: &Mailbox, sink: Sink) {
    let Some(secret) = &account.password else {
        return;
    };
    match sink {
        Sink::PrivateFile => {
            let _ = writeln!(out, "password = {}", toml_string(secret));
        }
        Sink::Stdout => comment(
            out,
            "",
            &format!(
                "the password is not shown here: store it with `popfetch password set {}`, or set password_command (import-config --write puts it in a file of mode 0600)",
                account.name
            ),
        ),
    }
}

/// `# PREFIXTEXT`, a line each, control characters made visible.
fn comment(out: &mut String, prefix: &str, text: &str) {
    let _ = writeln!(out, "# {prefix}{}", one_line(text));
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Str(s) => toml_string(s),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

/// A table key: bare where TOML allows it, else quoted.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        toml_string(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::Tool;

    fn draft() -> Draft {
        let mut account = Mailbox {
            name: "me@example.com".into(),
            origin: "poll pop.example.com".into(),
            password: Some("s3cr\"et".into()),
            ..Default::default()
        };
        account.set("host", "pop.example.com");
        account.set("user", "me");
        account.set("keep", true);
        account.set("max_size", 1000i64);
        account.note("`mimedecode`: popfetch never rewrites a message");
        Draft {
            tool: Some(Tool::Fetchmail),
            accounts: vec![account],
            notes: vec![],
        }
    }

    #[test]
    fn stdout_never_holds_the_password() {
        let text = render(&draft(), "~/.fetchmailrc", Sink::Stdout);
        assert!(!text.contains("s3cr"), "{text}");
        assert!(text.contains("popfetch password set me@example.com"));
        assert!(text.contains("[accounts.\"me@example.com\"]"));
        assert!(text.contains("# not converted: `mimedecode`"));
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["accounts"]["me@example.com"]["max_size"], 1000.into());
    }

    #[test]
    fn a_private_file_holds_it_escaped() {
        let text = render(&draft(), "rc", Sink::PrivateFile);
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            value["accounts"]["me@example.com"]["password"],
            "s3cr\"et".into()
        );
    }
}
