//! The commands other fetchers run through a shell (fetchmail's `mda`, mpop's
//! `passwordeval`, `delivery mda` and `filter`), written so that popfetch, which
//! runs commands without one, runs them the same: as they are when a shell would
//! only have split them, else in `sh -c '…'`.

use crate::config::secret::looks_like_shell;
use crate::sys::expand::sh_c;

/// Whether `text` needs a shell to mean what it says.
pub(crate) fn needs_shell(text: &str) -> bool {
    match shell_words::split(text) {
        Ok(argv) => argv.is_empty() || looks_like_shell(&argv),
        Err(_) => true,
    }
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
    let mut script = text.to_string();
    let mut args = Vec::new();
    for code in ["%F", "%T"] {
        if !script.contains(code) {
            continue;
        }
        args.push(code);
        let var = format!("\"${}\"", args.len());
        for quoted in [format!("'{code}'"), format!("\"{code}\"")] {
            script = script.replace(&quoted, &var);
        }
        script = script.replace(code, &var);
    }
    let mut out = sh_c(&script);
    if !args.is_empty() {
        out.push_str(" sh");
        for arg in args {
            out.push(' ');
            out.push_str(arg);
        }
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
    }
}
