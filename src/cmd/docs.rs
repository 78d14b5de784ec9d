//! The generated documentation: shell completions (bash, zsh, fish), the man page
//! and the README's table of configuration keys, rendered from the command-line
//! definition and the key declarations (`config::keys`) so they never drift from
//! them. `cargo run --example gen-docs` writes them; a test checks the committed
//! copies.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::config::keys::{self, DefaultValue};

/// The README's key table lies between these lines; the rest is hand-written.
const README_KEYS_START: &str =
    "<!-- keys:start: generated from src/config/keys.rs by `cargo run --example gen-docs` -->\n";
const README_KEYS_END: &str = "<!-- keys:end -->\n";

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has no generated section between {start:?} and {end:?}", .path.display())]
    NoMarkers {
        path: PathBuf,
        start: &'static str,
        end: &'static str,
    },
}

/// The man page's hand-written introduction to the configuration, in roff; the
/// list of keys after it is generated from their declaration.
const MAN_CONFIGURATION: &str = r#".SH CONFIGURATION
The configuration file is TOML, by default
\fI$XDG_CONFIG_HOME/popfetch/config.toml\fR.
A \fB[defaults]\fR table holds keys shared by every account; each
\fB[accounts.\fINAME\fB]\fR table describes one account.
Unknown keys are an error.
In every path (\fBdeliver\fR targets, \fBstate_dir\fR, \fBtls_ca_file\fR) a leading \fB~\fR or
\fB~\fIuser\fR and \fB$NAME\fR or \fB${NAME}\fR expand; an unset variable or a relative path
is an error. Commands run without a shell; a leading \fB~\fR in each argument expands.
Without \fBpassword\fR or \fBpassword_command\fR, the keyring entry USER@HOST is used, else
a prompt on a terminal.
"#;

/// The man page's other hand-written sections, in roff.
const MAN_SECTIONS: &str = r#".SH FILES
.TP
.I $XDG_CONFIG_HOME/popfetch/config.toml
The configuration.
.TP
.I $XDG_STATE_HOME/popfetch/
The UIDL state of each mailbox (an append-only journal of checksummed records) and
the lock held while it syncs; \fBstate_dir\fR moves them. README.md says how a
mailbox's state is found.
.SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 64
Usage error.
.TP
.B 69
Server unavailable: connect, DNS, TLS handshake or certificate failure.
.TP
.B 70
Internal error: a bug in popfetch; please report it.
.TP
.B 74
Local I/O error: delivery or state.
.TP
.B 75
Temporary failure: timeout, dropped connection, [IN-USE], [LOGIN-DELAY], [SYS/TEMP], lock held.
.TP
.B 76
Protocol error.
.TP
.B 77
Authentication rejected.
.TP
.B 78
Configuration error.
.TP
.B 130
Interrupted (Ctrl-C): nothing was lost; run sync again.
.PP
With several accounts the highest code is returned.
.SH EXAMPLES
.TP
.B popfetch sync
Fetch new mail for every account; silent unless something fails (for cron).
.TP
.B popfetch sync --dry-run work
Show what would be fetched, skipped and deleted.
.TP
.B popfetch list --json
The messages on each server, for scripts.
.TP
.B popfetch probe --host pop.example.com
Show a server's greeting, capabilities and certificate.
.SH SECURITY
Certificates are always verified unless pinned or explicitly disabled.
STLS is never downgraded. auth = "auto" never sends a password in cleartext outside TLS.
Passwords never appear in traces, errors or command lines.
A message is deleted from the server only after its delivery and its state record are
durable on disk, and deletions take effect only at QUIT.
"#;

/// Bash: account names, read from the configuration when completing, after the
/// subcommands that take an account. The generated completion does the rest.
const BASH_ACCOUNTS: &str = r#"
# Account names come from the configuration, read when completing
# (`popfetch complete-accounts` is a hidden subcommand that prints them).
_popfetch_with_accounts() {
    _popfetch "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    [[ "$cur" == -* ]] && return 0
    case "$prev" in
        -c|--config|--from|--key|--host|--port|--tls|-j|--jobs|--user|--deliver) return 0 ;;
    esac
    local sub="" config=() i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -c|--config) config=(-c "${COMP_WORDS[i+1]}"); ((i++)) ;;
            -*) ;;
            *) [[ -z "$sub" ]] && sub="${COMP_WORDS[i]}" ;;
        esac
    done
    case "$sub" in
        sync|list|probe|import-state) ;;
        password) [[ "$prev" == set || "$prev" == delete ]] || return 0 ;;
        *) return 0 ;;
    esac
    local IFS=$'\n'
    COMPREPLY+=($(compgen -W "$(popfetch "${config[@]}" complete-accounts 2>/dev/null)" -- "$cur"))
}
complete -F _popfetch_with_accounts -o bashdefault -o default popfetch
"#;

/// Zsh: the same, as an action for the ACCOUNT arguments.
const ZSH_ACCOUNTS: &str = r#"
# Account names come from the configuration, read when completing
# (`popfetch complete-accounts` is a hidden subcommand that prints them).
(( $+functions[_popfetch_account_names] )) ||
_popfetch_account_names() {
    local -a names
    names=(${(f)"$(popfetch complete-accounts 2>/dev/null)"})
    _describe -t accounts 'account' names
}
"#;

/// Fish: the same.
const FISH_ACCOUNTS: &str = r#"
# Account names come from the configuration, read when completing
# (`popfetch complete-accounts` is a hidden subcommand that prints them).
complete -c popfetch -n "__fish_seen_subcommand_from sync list probe import-state" -f -a "(popfetch complete-accounts 2>/dev/null)"
complete -c popfetch -n "__fish_seen_subcommand_from set delete" -f -a "(popfetch complete-accounts 2>/dev/null)"
"#;

/// The completion for one shell: clap_complete's, with account names added.
fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::cmd::command(), "popfetch", &mut out);
    let text = String::from_utf8(out).expect("completions are UTF-8");
    let text = match shell {
        Shell::Bash => text + BASH_ACCOUNTS,
        Shell::Zsh => {
            let text = text.replacen(
                "autoload -U is-at-least\n",
                &format!("autoload -U is-at-least\n{ZSH_ACCOUNTS}"),
                1,
            );
            text.lines()
                .map(|line| {
                    let account =
                        line.starts_with("':account -- ") || line.starts_with("'*::accounts -- ");
                    if account {
                        line.replace(":_default'", ":_popfetch_account_names'")
                    } else {
                        line.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        Shell::Fish => text + FISH_ACCOUNTS,
        _ => text,
    };
    text.into_bytes()
}

/// Roff text: backslashes and hyphens escaped, and no line that starts with a dot
/// or a quote (they would be read as requests).
fn roff(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|line| {
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The usage line of a subcommand: popfetch NAME [OPTIONS] ARGS.
fn usage(path: &str, cmd: &clap::Command) -> String {
    let mut words = vec![path.to_string()];
    let args: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    if args.iter().any(|a| !a.is_positional()) {
        words.push("[OPTIONS]".into());
    }
    for arg in args.iter().filter(|a| a.is_positional()) {
        let name = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or(arg.get_id().to_string(), |v| v.to_string());
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let name = if many { format!("{name}...") } else { name };
        words.push(if arg.is_required_set() {
            name
        } else {
            format!("[{name}]")
        });
    }
    if cmd.has_subcommands() {
        words.push("COMMAND".into());
    }
    words.join(" ")
}

/// One subcommand and its options, and its own subcommands after it.
fn render_command(path: &str, cmd: &clap::Command, out: &mut String) {
    let path = format!("{path} {}", cmd.get_name());
    out.push_str(&format!(".SS \"{}\"\n", roff(&usage(&path, cmd))));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&roff(&about.to_string()));
        out.push('\n');
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string());
        let mut names = Vec::new();
        if let Some(short) = arg.get_short() {
            names.push(format!("\\fB\\-{short}\\fR"));
        }
        if let Some(long) = arg.get_long() {
            names.push(format!("\\fB\\-\\-{}\\fR", roff(long)));
        }
        let mut head = names.join(", ");
        match (arg.is_positional(), value) {
            (true, Some(value)) => head = format!("\\fI{}\\fR", roff(&value)),
            (false, Some(value)) if arg.get_action().takes_values() => {
                head.push_str(&format!(" \\fI{}\\fR", roff(&value)))
            }
            _ => {}
        }
        out.push_str(&format!(".TP\n{head}\n"));
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            out.push_str(&roff(&help.to_string()));
            out.push('\n');
        }
        let values: Vec<_> = arg
            .get_possible_values()
            .into_iter()
            .filter(|v| !v.is_hide_set() && arg.get_action().takes_values())
            .collect();
        if !values.is_empty() {
            let listed: Vec<String> = values
                .iter()
                .map(|v| match v.get_help() {
                    Some(help) => format!(
                        "\\fB{}\\fR ({})",
                        roff(v.get_name()),
                        roff(&help.to_string())
                    ),
                    None => format!("\\fB{}\\fR", roff(v.get_name())),
                })
                .collect();
            out.push_str(&format!(".br\nOne of: {}.\n", listed.join("; ")));
        }
        let defaults = arg.get_default_values();
        if arg.get_action().takes_values() && !defaults.is_empty() {
            let shown: Vec<String> = defaults
                .iter()
                .map(|d| roff(&d.to_string_lossy()))
                .collect();
            out.push_str(&format!(".br\n[default: {}]\n", shown.join(", ")));
        }
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command(&path, sub, out);
    }
}

/// The one man page: clap_mangen's header, synopsis and global options, then every
/// subcommand with all its options (there are no separate popfetch-sync(1) pages),
/// then the hand-written sections.
fn man_page() -> Vec<u8> {
    let command = crate::cmd::command();
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    man.render_title(&mut out).expect("rendering to memory");
    man.render_name_section(&mut out)
        .expect("rendering to memory");
    man.render_synopsis_section(&mut out)
        .expect("rendering to memory");
    man.render_description_section(&mut out)
        .expect("rendering to memory");
    man.render_options_section(&mut out)
        .expect("rendering to memory");
    let mut commands = String::from(".SH COMMANDS\n");
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command("popfetch", sub, &mut commands);
    }
    out.extend_from_slice(commands.as_bytes());
    out.extend_from_slice(MAN_CONFIGURATION.as_bytes());
    out.extend_from_slice(man_keys().as_bytes());
    out.extend_from_slice(MAN_SECTIONS.as_bytes());
    man.render_version_section(&mut out)
        .expect("rendering to memory");
    out
}

/// A key's Markdown (`code` only) in roff: code in bold.
fn roff_markdown(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            let part = roff(part);
            if i % 2 == 1 {
                format!("\\fB{part}\\fR")
            } else {
                part
            }
        })
        .collect()
}

/// The man page's list of keys, one tagged paragraph each.
fn man_keys() -> String {
    let mut out = String::new();
    for key in keys::all() {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR \\fI{}\\fR\n{}\n",
            roff(key.name),
            roff(key.shape),
            roff_markdown(key.doc)
        ));
        match key.default {
            Some(DefaultValue::Toml(value)) => {
                out.push_str(&format!(".br\n[default: {}]\n", roff(&value)))
            }
            Some(DefaultValue::Words(words)) => {
                out.push_str(&format!(".br\n[default: {}]\n", roff_markdown(words)))
            }
            None => {}
        }
    }
    out
}

/// The README's table of keys, in Markdown.
pub(crate) fn readme_keys() -> String {
    let mut out = String::from("| key | value | meaning | default |\n|---|---|---|---|\n");
    for key in keys::all() {
        let default = match key.default {
            Some(DefaultValue::Toml(value)) => format!(" `{value}` "),
            Some(DefaultValue::Words(words)) => format!(" {words} "),
            None => " ".to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |{default}|\n",
            key.name, key.shape, key.doc
        ));
    }
    out
}

/// `text` with what lies between the markers replaced by `generated`.
fn splice(
    path: &Path,
    text: &str,
    start: &'static str,
    end: &'static str,
    generated: &str,
) -> Result<String, DocsError> {
    let no_markers = || DocsError::NoMarkers {
        path: path.to_path_buf(),
        start,
        end,
    };
    let from = text.find(start).ok_or_else(no_markers)? + start.len();
    let to = from + text[from..].find(end).ok_or_else(no_markers)?;
    Ok(format!("{}{generated}{}", &text[..from], &text[to..]))
}

/// Every generated file, given the repository's root (whose README is generated
/// in part): its path in the repository and its contents.
pub fn render(root: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, DocsError> {
    let readme = PathBuf::from("README.md");
    let text = std::fs::read_to_string(root.join(&readme)).map_err(|source| DocsError::Read {
        path: readme.clone(),
        source,
    })?;
    let readme_text = splice(
        &readme,
        &text,
        README_KEYS_START,
        README_KEYS_END,
        &readme_keys(),
    )?;
    Ok(vec![
        (readme, readme_text.into_bytes()),
        (
            PathBuf::from("completions/popfetch.bash"),
            completion(Shell::Bash),
        ),
        (
            PathBuf::from("completions/_popfetch"),
            completion(Shell::Zsh),
        ),
        (
            PathBuf::from("completions/popfetch.fish"),
            completion(Shell::Fish),
        ),
        (PathBuf::from("man/popfetch.1"), man_page()),
    ])
}
