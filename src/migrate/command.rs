//! The commands other fetchers run through a shell (fetchmail's `mda`, mpop's
//! `passwordeval`, `delivery mda` and `filter`), written so that popfetch, which
//! runs commands without one, runs them the same: as they are when a shell would
//! only have split them, else in `sh -c '…'`.

use crate::config::secret::looks_like_shell;
use crate::sys::expand::sh_c;

/// Whether `text` needs a shell to mean what it says. When in doubt, it
/// does: the old tool ran it through one, so `sh -c` always means the same.
pub(crate) fn needs_shell(text: &str) -> bool {
    let Ok(argv) = shell_words::split(text) else {
        return true;
    };
    // Beyond what `looks_like_shell` sees in the words: escapes, globs,
    // comments, subshells, a background `&`, and `NAME=value` before the command.
    let assignment = argv
        .first()
        .and_then(|w| w.split_once('='))
        .is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    argv.is_empty()
        || looks_like_shell(&argv)
        || assignment
        || text.contains(['\\', '?', '[', '#', '(', ')', '&', '{', '}'])
}

/// A command to run without a shell: `text` itself, or `sh -c 'text'`.
pub(crate) fn without_shell(text: &str) -> String {
    if needs_shell(text) {
        sh_c(text)
    } else {
        text.to_string()
    }
}

/// An MDA command for popfetch's `mda:` target. `%F` (the sender) and `%T` (the
/// recipient) are substituted by popfetch into their own argument; where a shell
/// is needed they are handed to it as `$1` and `$2`, never pasted into its script.
pub(crate) fn mda(text: &str) -> String {
    let text = text.trim();
    if !needs_shell(text) {
        return text.to_string();
    }
    let args: Vec<&str> = ["%F", "%T"]
        .into_iter()
        .filter(|code| text.contains(code))
        .collect();
    let mut out = sh_c(&with_positionals(text, &args));
    if !args.is_empty() {
        out.push_str(" sh");
        for arg in args {
            out.push(' ');
            out.push_str(arg);
        }
    }
    out
}

/// `text` with each of `codes` replaced by the positional parameter of its
/// place (`$1`, `$2`), quoted for where it stands: `"$1"` outside quotes, `$1`
/// inside double quotes, and `'"$1"'` inside single quotes, which must close
/// for the parameter to expand.
fn with_positionals(text: &str, codes: &[&str]) -> String {
    let mut out = String::new();
    let (mut single, mut double) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        // A code quoted alone, '%F' or "%F", is the parameter in double quotes.
        let alone = |code: &&str| {
            !single
                && !double
                && [format!("'{code}'"), format!("\"{code}\"")]
                    .iter()
                    .any(|q| rest.starts_with(q.as_str()))
        };
        if let Some(n) = codes.iter().position(alone) {
            out.push_str(&format!("\"${}\"", n + 1));
            rest = &rest[codes[n].len() + 2..];
            continue;
        }
        if let Some(n) = codes.iter().position(|code| rest.starts_with(code)) {
            let n = n + 1;
            out.push_str(&match (single, double) {
                (true, _) => format!("'\"${n}\"'"),
                (false, true) => format!("${n}"),
                (false, false) => format!("\"${n}\""),
            });
            rest = &rest[codes[n - 1].len()..];
            continue;
        }
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Words joined into one command line, each quoted as a shell would need.
pub(crate) fn join(argv: &[String]) -> String {
    shell_words::join(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_stay_and_shell_ones_get_sh_c() {
        assert_eq!(
            without_shell("gpg2 --no-tty -q -d ~/.mpop-password.gpg"),
            "gpg2 --no-tty -q -d ~/.mpop-password.gpg"
        );
        assert_eq!(without_shell("pass show mail"), "pass show mail");
        assert_eq!(
            without_shell("gpg -dq ~/pw.gpg | head -1"),
            "sh -c 'gpg -dq ~/pw.gpg | head -1'"
        );
        assert_eq!(without_shell("echo $PW"), "sh -c 'echo $PW'");
    }

    #[test]
    fn mda_placeholders_never_enter_a_shell_script() {
        assert_eq!(mda("/usr/bin/procmail -f %F"), "/usr/bin/procmail -f %F");
        assert_eq!(
            mda("/usr/bin/procmail -f '%F' -d $USER"),
            r#"sh -c '/usr/bin/procmail -f "$1" -d $USER' sh %F"#
        );
        assert_eq!(
            mda("/usr/sbin/sendmail -oi -f %F -- %T | cat"),
            r#"sh -c '/usr/sbin/sendmail -oi -f "$1" -- "$2" | cat' sh %F %T"#
        );
        assert_eq!(mda("maildrop > /dev/null"), "sh -c 'maildrop > /dev/null'");
        // Inside quotes, the parameter still expands, as one word.
        assert_eq!(
            with_positionals("procmail '-f %F' \"-a %T\"", &["%F", "%T"]),
            r#"procmail '-f '"$1"'' "-a $2""#
        );
    }

    #[test]
    fn what_only_a_shell_does_gets_sh_c() {
        for text in [
            "LC_ALL=C procmail",
            "procmail # a comment",
            "procmail &",
            "(cd /tmp && procmail)",
            "cat ~/mail/*.gpg",
            "procmail -f a\\ b",
        ] {
            assert!(needs_shell(text), "{text}");
        }
        assert!(!needs_shell("procmail -f --opt=value ~/x"));
    }
}
