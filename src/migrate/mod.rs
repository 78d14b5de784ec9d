//! Another fetcher's configuration turned into popfetch's: the three parsers
//! (`fetchmail`, `mpop`, `getmail`, each pure: text in, [`Draft`] out), the shell
//! commands they name made fit to run without a shell (`command`), and the TOML
//! written from a draft (`render`). `popfetch import-config` is its one user.

pub(crate) mod command;
pub(crate) mod fetchmail;
pub(crate) mod getmail;
mod ini;
pub(crate) mod mpop;
pub(crate) mod render;

use std::path::PathBuf;

/// Which tool wrote a file: its configuration, or its list of seen messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Tool {
    Fetchmail,
    Mpop,
    Getmail,
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Tool::Fetchmail => "fetchmail",
            Tool::Mpop => "mpop",
            Tool::Getmail => "getmail",
        })
    }
}

/// A configuration that could not be read at all (a single option that does not
/// map is a note in the draft, never an error).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MigrateError {
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("it names no POP3 mailbox popfetch can fetch from{}", .0.iter().map(|n| format!("; {n}")).collect::<String>())]
    Empty(Vec<String>),
    #[error("{0}")]
    Other(String),
}

/// What the parsers need to know of the machine: no parser reads the
/// environment itself.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The user running the conversion: fetchmail's default local recipient.
    pub local_user: String,
    /// The directory of the file converted: getmail keeps its oldmail files there.
    pub rc_dir: PathBuf,
}

/// A value of a popfetch key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// Where the other tool keeps the seen UIDs of one mailbox: the first of
/// `candidates` (paths, `~` for the home directory) that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenFile {
    pub candidates: Vec<String>,
}

/// One converted mailbox: a popfetch account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Mailbox {
    pub name: String,
    /// Where it came from, for the comment above it ("poll pop.example.com").
    pub origin: String,
    /// popfetch keys in the order written.
    pub keys: Vec<(&'static str, Value)>,
    /// A literal password: written only to a file readable by its owner alone.
    pub password: Option<String>,
    /// What did not map, and why: one comment each.
    pub notes: Vec<String>,
    pub seen: Option<SeenFile>,
}

impl Mailbox {
    /// Sets `key` (replacing an earlier value).
    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let value = value.into();
        match self.keys.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.keys.push((key, value)),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.keys.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }
}

/// A whole converted configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Draft {
    pub tool: Option<Tool>,
    pub accounts: Vec<Mailbox>,
    /// Notes about the file as a whole (global options).
    pub notes: Vec<String>,
}

/// Converts a configuration written for `tool`.
pub(crate) fn convert(tool: Tool, text: &str, context: &Context) -> Result<Draft, MigrateError> {
    let mut draft = match tool {
        Tool::Fetchmail => fetchmail::convert(text, context)?,
        Tool::Mpop => mpop::convert(text)?,
        Tool::Getmail => getmail::convert(text, context)?,
    };
    draft.tool = Some(tool);
    if draft.accounts.is_empty() {
        return Err(MigrateError::Empty(draft.notes));
    }
    unique_names(&mut draft.accounts);
    Ok(draft)
}

/// An account name popfetch accepts (letters, digits and `. _ - @ +`, not
/// starting with a dot) made from any text.
pub(crate) fn account_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.').to_string();
    if name.is_empty() {
        "account".to_string()
    } else {
        name
    }
}

/// Makes the names distinct: a second `x` becomes `x-2`.
fn unique_names(accounts: &mut [Mailbox]) {
    let mut seen: Vec<String> = Vec::new();
    for account in accounts.iter_mut() {
        let base = account_name(&account.name);
        let mut name = base.clone();
        let mut n = 2;
        while seen.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        seen.push(name.clone());
        account.name = name;
    }
}

/// A size as popfetch reads it, from a number with an optional `k`/`m` (KiB, MiB)
/// suffix (mpop's form); `None` when it is not one.
pub(crate) fn size(text: &str) -> Option<Value> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: i64 = digits.parse().ok()?;
    match unit.to_ascii_lowercase().as_str() {
        "" => Some(Value::Int(n)),
        "k" => Some(Value::Str(format!("{n}K"))),
        "m" => Some(Value::Str(format!("{n}M"))),
        _ => None,
    }
}

/// `sha256:` and the hex of a SHA-256 fingerprint given with or without colons;
/// `None` for any other hash (MD5, SHA-1), which popfetch cannot pin.
pub(crate) fn sha256_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid_and_unique() {
        assert_eq!(account_name("me@pop.example.com"), "me@pop.example.com");
        assert_eq!(account_name("a b/c"), "a_b_c");
        assert_eq!(account_name(".x"), "x");
        let mut accounts = vec![
            Mailbox {
                name: "a".into(),
                ..Default::default()
            },
            Mailbox {
                name: "a".into(),
                ..Default::default()
            },
        ];
        unique_names(&mut accounts);
        assert_eq!(accounts[1].name, "a-2");
    }

    #[test]
    fn sizes_and_fingerprints() {
        assert_eq!(size("1000"), Some(Value::Int(1000)));
        assert_eq!(size("10k"), Some(Value::Str("10K".into())));
        assert_eq!(size("2M"), Some(Value::Str("2M".into())));
        assert_eq!(size("x"), None);
        let hex = "AB".repeat(32);
        assert_eq!(
            sha256_fingerprint(&hex),
            Some(format!("sha256:{}", "ab".repeat(32)))
        );
        assert_eq!(sha256_fingerprint("00:11:22"), None);
    }
}
