//! The INI dialect of Python's `RawConfigParser`, which getmail reads its rc
//! files with: `[section]`, `key = value` or `key: value` (keys in any case),
//! `#` and `;` comment lines, indented continuation lines, and `[DEFAULT]`
//! values shared by every section; no interpolation.

use super::MigrateError;

/// The sections in file order, each with its keys (lowercased) in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ini {
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl Ini {
    /// The value of `key` in `section`, else in `[DEFAULT]`.
    pub(crate) fn get(&self, section: &str, key: &str) -> Option<&str> {
        let find = |name: &str| {
            self.sections
                .iter()
                .find(|(s, _)| s == name)
                .and_then(|(_, keys)| keys.iter().rev().find(|(k, _)| k == key))
                .map(|(_, v)| v.as_str())
        };
        find(section).or_else(|| find("DEFAULT"))
    }

    /// The keys of `section`.
    pub(crate) fn keys(&self, section: &str) -> Vec<&str> {
        self.sections
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, keys)| keys.iter().map(|(k, _)| k.as_str()))
            .collect()
    }
}

pub(crate) fn parse(text: &str) -> Result<Ini, MigrateError> {
    let mut ini = Ini::default();
    // The indentation of the line that started the current value.
    let mut value_indent: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        let indent = raw.len() - raw.trim_start().len();
        if trimmed.is_empty() {
            value_indent = None;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(start) = value_indent.filter(|&s| indent > s) {
            let _ = start;
            let (_, keys) = ini.sections.last_mut().expect("a value is in a section");
            let (_, value) = keys.last_mut().expect("a continued value");
            value.push('\n');
            value.push_str(trimmed);
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            ini.sections.push((name.trim().to_string(), Vec::new()));
            value_indent = None;
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err(MigrateError::Syntax {
                line,
                what: format!("expected `key = value`, found {trimmed:?}"),
            });
        };
        let Some((_, keys)) = ini.sections.last_mut() else {
            return Err(MigrateError::Syntax {
                line,
                what: "a value before any [section]".into(),
            });
        };
        let key = trimmed[..at].trim().to_ascii_lowercase();
        let value = trimmed[at + 1..].trim().to_string();
        keys.push((key, value));
        value_indent = Some(indent);
    }
    Ok(ini)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_continuations_and_defaults() {
        let ini = parse("[DEFAULT]\nport = 995\n# c\n[retriever]\nType = SimplePOP3Retriever\nserver: pop.example.com\narguments = (\"-f\",\n    \"%(sender)\")\n\n[options]\n; c\n").unwrap();
        assert_eq!(ini.get("retriever", "type"), Some("SimplePOP3Retriever"));
        assert_eq!(ini.get("retriever", "server"), Some("pop.example.com"));
        assert_eq!(
            ini.get("retriever", "arguments"),
            Some("(\"-f\",\n\"%(sender)\")")
        );
        assert_eq!(ini.get("options", "port"), Some("995"));
        assert_eq!(ini.keys("retriever"), ["type", "server", "arguments"]);
        assert!(parse("x = 1\n").is_err());
        assert!(parse("[a]\njunk\n").is_err());
    }
}
