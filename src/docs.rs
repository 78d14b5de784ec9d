//! The generated documentation: shell completions (bash, zsh, fish) and the man
//! page, rendered from the command-line definition so they never drift from it.
//! `cargo run --example gen-docs` writes them; a test checks the committed copies.

use std::path::PathBuf;

use clap_complete::Shell;

/// The man page's hand-written sections, in roff.
const MAN_SECTIONS: &str = r#".SH CONFIGURATION
The configuration file is TOML, by default
\fI$XDG_CONFIG_HOME/popfetch/config.toml\fR.
A \fB[defaults]\fR table holds keys shared by every account; each
\fB[accounts.\fINAME\fB]\fR table describes one account.
Unknown keys are an error.
.TP
.B host, port, tls
The server, its port (995 with \fBtls = "implicit"\fR, else 110) and
\fB"implicit"\fR, \fB"starttls"\fR (required, never a cleartext fallback) or \fB"none"\fR.
.TP
.B tls_ca_file, tls_fingerprint, tls_min_version, tls_insecure_skip_verify
Extra trusted CAs; a pinned \fBsha256:\fR certificate fingerprint (see \fBpopfetch probe\fR);
the lowest TLS version (default "1.2"); turning verification off (warned about on every run).
.TP
.B user, password, password_command, oauth_token_command, auth
The login. \fBpassword\fR is refused in a file readable by others.
Without either, the keyring entry USER@HOST is used, else a prompt on a terminal.
\fBauth\fR is auto, user, apop, plain, login, cram-md5, cram-sha1, cram-sha256,
scram-sha-1, scram-sha-224, scram-sha-256, scram-sha-384, scram-sha-512, xoauth2 or
oauthbearer.
.TP
.B deliver
\fBmaildir:\fIPATH\fR, \fBmbox:\fIPATH\fR or \fBmda:\fICOMMAND ARGS\fR (%F sender, %T recipient).
In every path (and \fBstate_dir\fR, \fBtls_ca_file\fR) a leading \fB~\fR or \fB~\fIuser\fR and
\fB$NAME\fR or \fB${NAME}\fR expand; an unset variable or a relative path is an error.
Commands run without a shell; a leading \fB~\fR in each argument expands.
.TP
.B keep, delete_after, fetch_all, max_size, max_size_action, max_messages, filter, received_header
What to fetch and what stays on the server.
.TP
.B timeout, mda_timeout, mda_recipient, state_dir
Bounds on waiting (seconds, 1 to 86400), and where the UIDL state lives.
.SH FILES
.TP
.I $XDG_CONFIG_HOME/popfetch/config.toml
The configuration.
.TP
.I $XDG_STATE_HOME/popfetch/ACCOUNT.state
The UIDL state: an append-only journal of checksummed records.
.TP
.I $XDG_STATE_HOME/popfetch/ACCOUNT.lock
Held while the account syncs.
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

/// Every generated file: its path in the repository and its contents.
pub fn render() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "completions/popfetch.bash"),
        (Shell::Zsh, "completions/_popfetch"),
        (Shell::Fish, "completions/popfetch.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut crate::cli::command(), "popfetch", &mut out);
        files.push((PathBuf::from(name), out));
    }
    let mut man = Vec::new();
    clap_mangen::Man::new(crate::cli::command())
        .render(&mut man)
        .expect("rendering to memory cannot fail");
    man.extend_from_slice(MAN_SECTIONS.as_bytes());
    files.push((PathBuf::from("man/popfetch.1"), man));
    files
}
