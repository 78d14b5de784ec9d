//! How config text becomes paths and commands: `~`, `~user` and `$VAR` expanded,
//! paths required absolute, commands split the way a shell would for running
//! without one; and how a value is written back in a message (`toml_string`,
//! `sh_c`). Shared by the config, its secrets and the delivery targets; it
//! imports nothing else of popfetch.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Splits a command (`password_command`, `filter`, an MDA) the way a shell would,
/// for running without one. A leading `~` or `~user` in each argument is expanded,
/// as in paths; a shell operator such as `|` is refused with the `sh -c` form.
/// `prefix` is what precedes the command in the value of `key` (`mda:`).
pub(crate) fn split_command(
    text: &str,
    key: &str,
    prefix: &str,
    home: &Path,
) -> Result<Vec<String>, String> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("{key} holds a control character"));
    }
    let argv = shell_words::split(text).map_err(|e| format!("cannot split {key}: {e}"))?;
    if argv.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if argv.iter().any(|arg| is_shell_operator(arg)) {
        return Err(format!(
            "{key} holds a shell operator, but the command runs without a shell; write {key} = {}",
            toml_string(&format!("{prefix}{}", sh_c(text)))
        ));
    }
    argv.into_iter()
        .map(|arg| {
            if arg.starts_with('~') {
                Ok(expand_tilde(&arg, home)
                    .map_err(|e| format!("{key}: {e}"))?
                    .to_string_lossy()
                    .into_owned())
            } else {
                Ok(arg)
            }
        })
        .collect()
}

/// A TOML basic string holding `text`, quotes included.
pub(crate) fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `|`, `&&`, `>` and the like as a whole argument: never meant literally.
pub(crate) fn is_shell_operator(arg: &str) -> bool {
    matches!(
        arg,
        "|" | "||" | "&&" | "&" | ";" | ">" | ">>" | "<" | "<<" | "2>" | "2>&1" | "|&"
    )
}

/// `sh -c 'TEXT'`, quoted for a shell.
pub(crate) fn sh_c(text: &str) -> String {
    format!("sh -c '{}'", text.replace('\'', r"'\''"))
}

/// Resolves a path from the config: `~` and `~user` expand to a home directory,
/// `$VAR` and `${VAR}` to the environment; the result must be absolute, so that a
/// run from cron and one by hand deliver to the same place.
pub(crate) fn expand_path(text: &str, home: &Path) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty; give an absolute path or one under ~/".into());
    }
    if text.chars().any(char::is_control) {
        return Err("the path holds a control character (a NUL, an escape, a line end)".into());
    }
    let text = expand_variables(text)?;
    let path = if text.starts_with('~') {
        expand_tilde(&text, home)?
    } else {
        PathBuf::from(&text)
    };
    if !path.is_absolute() {
        return Err("a relative path would depend on the directory popfetch runs in; give an absolute path or one under ~/".into());
    }
    Ok(path)
}

/// `~`, `~/…`, `~user` and `~user/…`.
fn expand_tilde(text: &str, home: &Path) -> Result<PathBuf, String> {
    let rest = &text[1..];
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let base = if user.is_empty() {
        home.to_path_buf()
    } else {
        home_of(user).ok_or_else(|| format!("there is no user \"{user}\" for ~{user}"))?
    };
    Ok(if tail.is_empty() {
        base
    } else {
        base.join(tail)
    })
}

/// `$NAME` and `${NAME}` from the environment; an unset or empty variable is an
/// error rather than an empty string, which would silently move the path. A `$`
/// that starts no name stays as it is.
fn expand_variables(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| "\"${\" has no closing \"}\"".to_string())?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => out.push_str(&value),
            _ => return Err(format!("the variable ${name} is not set")),
        }
        rest = next;
    }
    out.push_str(rest);
    Ok(out)
}

/// A user's home directory from the password database (NSS included).
pub(crate) fn home_of(user: &str) -> Option<PathBuf> {
    let name = CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: every pointer is valid for the call; `pwd` and the strings it
        // points into live in `buf`, read before `buf` changes.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
        return Some(PathBuf::from(OsStr::from_bytes(dir.to_bytes())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_back_quoted() {
        assert_eq!(toml_string("a\"b\\c\n"), r#""a\"b\\c\u000A""#);
        assert_eq!(sh_c("echo 'a'"), r"sh -c 'echo '\''a'\'''");
        assert!(is_shell_operator("2>&1") && !is_shell_operator("a|b"));
    }
}
