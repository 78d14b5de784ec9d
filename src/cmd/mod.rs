//! The command line: what the user typed, parsed and checked by clap, then run over
//! the configured accounts. Errors are printed here, once, one line per account.
//! The `sync` subcommand's parallel runs and reports are in `sync.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::exit::{classify, Exit};
use crate::cmd::ui::Loudness;
use crate::config::secret;
use crate::config::TlsMode;
use crate::config::{Account, Config, Paths};
use crate::sync::preview;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

pub(crate) mod adopt;
mod daemon;
pub(crate) mod docs;
pub(crate) mod exit;
mod hooks;
pub(crate) mod import;
mod import_config;
pub(crate) mod init;
pub(crate) mod log;
mod oauth;
pub(crate) mod probe;
mod status;
mod sync;
pub(crate) mod ui;

#[derive(Debug, Parser)]
#[command(
    name = "popfetch",
    version,
    about = "Fetch mail from POP3 servers, safely"
)]
pub(crate) struct Cli {
    /// Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How -v, warnings and errors are written: text, or one JSON object a line
    /// (for log collectors); the daemon's log too
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = crate::cmd::log::Format::Text
    )]
    log_format: crate::cmd::log::Format,
    /// -v and -q before the subcommand; they are also accepted after the
    /// subcommands they mean something to, and only those advertise them.
    #[command(flatten)]
    loud: Loud,
    #[command(subcommand)]
    command: Command,
}

/// -v and -q, for the commands that talk to a server.
#[derive(Debug, Default, clap::Args)]
struct Loud {
    /// Print the protocol steps (never passwords) and a summary per account
    #[arg(short, long)]
    verbose: bool,
    /// Print nothing but errors
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

/// -q alone, for the commands that print a confirmation and nothing else.
#[derive(Debug, Default, clap::Args)]
struct Quiet {
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch new mail for the named accounts, or for all of them
    Sync {
        /// Accounts to sync, as named in the configuration file [default: all]
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
        #[command(flatten)]
        flags: SyncFlags,
        #[command(flatten)]
        loud: Loud,
    },
    /// List the messages on the server with what a sync would do with each
    List {
        /// Accounts to list, as named in the configuration file [default: all]
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
        /// Print JSON instead of a table (dates in RFC 3339, sizes in server octets)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        loud: Loud,
    },
    /// List the configured accounts
    Accounts,
    /// Record the messages on the server as delivered without downloading them,
    /// to start from now on a mailbox already read elsewhere
    Adopt {
        /// The account, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// Every message on the server now
        #[arg(long, required_unless_present = "before", conflicts_with = "before")]
        all: bool,
        /// Only those whose Date: is before DATE (2024-06-01, midnight UTC, or an
        /// RFC 3339 time); read with TOP n 0, pipelined
        #[arg(long, value_name = "DATE", value_parser = adopt::parse_before)]
        before: Option<i64>,
        /// Record without asking (needed where there is no terminal)
        #[arg(long, short = 'y')]
        yes: bool,
        /// Show what would be recorded, and record nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
        #[command(flatten)]
        loud: Loud,
    },
    /// Record the messages another fetcher already delivered, so switching tools
    /// does not fetch a mailbox again
    ImportState {
        /// The account to record them for, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// The tool that wrote the file
        #[arg(long = "from", value_enum, value_name = "TOOL")]
        tool: crate::cmd::import::Tool,
        /// Take the messages the file holds for this mailbox instead of the
        /// account's own user@host (fetchmail and mpop files hold several)
        #[arg(long, value_name = "USER@HOST")]
        key: Option<String>,
        /// fetchmail's .fetchids, mpop's uidls file, or getmail's oldmail-* file
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
        #[command(flatten)]
        quiet: Quiet,
    },
    /// Convert fetchmail's, mpop's or getmail's configuration into popfetch's:
    /// printed, or with --write written to the configuration file (mode 0600,
    /// never over an existing one); what does not map is kept as comments
    ImportConfig {
        /// The tool that wrote the file
        #[arg(long = "from", value_enum, value_name = "TOOL")]
        tool: crate::cmd::import::Tool,
        /// .fetchmailrc, mpoprc (~/.mpoprc or ~/.config/mpop/config) or getmailrc
        #[arg(value_name = "FILE")]
        path: std::path::PathBuf,
        /// Write it to the configuration file (-c FILE, or the default path),
        /// passwords included, instead of printing it without them
        #[arg(long)]
        write: bool,
        /// Then record each account's seen messages from the tool's UID file
        /// (.fetchids or idfile, mpop's uidls_file, getmail's oldmail-*), so the
        /// first sync fetches nothing again; the accounts must be in the
        /// configuration (--write, or already there)
        #[arg(long)]
        import_state: bool,
        #[command(flatten)]
        quiet: Quiet,
    },
    /// Write a commented configuration file (asks for what is not given, at a
    /// terminal; never overwrites)
    Init {
        #[command(flatten)]
        answers: crate::cmd::init::Given,
        #[command(flatten)]
        quiet: Quiet,
    },
    /// Connect to a server and show what it offers: greeting, capabilities, TLS,
    /// certificate (with its fingerprint) and login methods
    Probe {
        /// A configured account (also logs in and shows the mailbox size)
        #[arg(
            value_name = "ACCOUNT",
            required_unless_present = "host",
            conflicts_with = "host"
        )]
        account: Option<String>,
        /// A server to probe without an account
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// The port [default: 995 with implicit TLS, else 110]
        #[arg(long, value_name = "PORT", requires = "host")]
        port: Option<u16>,
        /// How to secure the connection
        #[arg(
            long,
            value_enum,
            value_name = "MODE",
            default_value_t = TlsMode::Implicit,
            requires = "host"
        )]
        tls: TlsMode,
        /// Also trust the CA certificates in FILE (PEM), as tls_ca_file does
        #[arg(long, value_name = "FILE", requires = "host")]
        tls_ca_file: Option<PathBuf>,
        #[command(flatten)]
        loud: Loud,
    },
    /// Manage an account's password in the system keyring (service "popfetch",
    /// entry USER@HOST)
    Password {
        #[command(subcommand)]
        action: PasswordAction,
        #[command(flatten)]
        quiet: Quiet,
    },
    /// Poll the named accounts, or all of them, every poll_interval until stopped:
    /// SIGUSR1 polls now, SIGHUP reloads the configuration, SIGTERM stops
    Daemon {
        /// Accounts to poll, as named in the configuration file [default: all]
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
        /// Stay in the foreground and log to stderr (for systemd and containers);
        /// otherwise detach and log to $XDG_STATE_HOME/popfetch/daemon.log
        #[arg(long)]
        foreground: bool,
        /// How many accounts to sync at once [default: four per CPU, at least 8, at
        /// most 32]
        #[arg(short, long, value_name = "N")]
        jobs: Option<usize>,
        #[command(flatten)]
        loud: Loud,
    },
    /// What each account's last run did (from cron, by hand or the daemon): its
    /// time, result and exit code, the last success, the messages delivered and
    /// known, and the daemon's next poll
    Status {
        /// Accounts to show [default: all]
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
        /// Print JSON instead of a line per account
        #[arg(long)]
        json: bool,
    },
    /// Log an account in to its OAuth provider once, show its tokens' state, or
    /// log it out (oauth_provider in the configuration)
    #[command(name = "oauth")]
    OAuth {
        #[command(subcommand)]
        action: OAuthAction,
        #[command(flatten)]
        quiet: Quiet,
    },
    /// Account names, one a line, for the shell completions.
    #[command(name = "complete-accounts", hide = true)]
    CompleteAccounts,
}

#[derive(Debug, clap::Args)]
struct SyncFlags {
    /// Print what would be fetched, skipped and deleted, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary of each account on stdout (with --dry-run, the plan too)
    #[arg(long)]
    json: bool,
    /// How many accounts to sync at once [default: four per CPU, at least 8, at
    /// most 32]
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
}

/// How many accounts `sync` and `daemon` take on at once unless --jobs says: an
/// account mostly waits for its server (the login, each round trip, the server's
/// disk), so far more run at once than there are CPUs: four per CPU, never fewer
/// than 8 (on two CPUs, 50 accounts on one Dovecot took 2.4 s with 4 at once and
/// 1.4 s with 8) nor more than 32 (past that a big machine only opens more
/// connections at once, to what is often one provider that limits them).
pub(crate) fn default_jobs() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    jobs_for(cpus)
}

fn jobs_for(cpus: usize) -> usize {
    (4 * cpus).clamp(8, 32)
}

#[derive(Debug, Subcommand)]
enum PasswordAction {
    /// Store the password: prompted for on a terminal, else read from stdin
    Set {
        /// The account, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// The password of the delivery target's login instead (an IMAP server, or
        /// an SMTP server with smtp_user), entry USER@HOST of that server
        #[arg(long)]
        target: bool,
    },
    /// Remove the stored password
    Delete {
        /// The account, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// The delivery target's password instead
        #[arg(long)]
        target: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OAuthAction {
    /// Log in once: shows a code to enter at the provider's page (the device
    /// flow), or with --browser signs in through a browser on this machine
    Login {
        /// The account, as named in the configuration file (or its oauth_token_name)
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// Sign in through a browser and a redirect to this machine (the
        /// authorization code with PKCE) instead of entering a code
        #[arg(long, conflicts_with = "import")]
        browser: bool,
        /// Take over a refresh token another tool holds instead of logging in: read
        /// from stdin, the token alone on a line or a JSON object with
        /// "refresh_token" (getmail's token file, mutt_oauth2.py's decrypted one);
        /// it is tried once, then stored
        #[arg(long)]
        import: bool,
    },
    /// Show whether a refresh token is stored and when the access token expires;
    /// exits 77 when an account needs a login
    Status {
        /// Accounts to show [default: every account with oauth_provider]
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
    },
    /// Revoke the grant where the provider can, and forget the tokens
    Logout {
        /// The account, as named in the configuration file (or its oauth_token_name)
        #[arg(value_name = "ACCOUNT")]
        account: String,
    },
}

impl Cli {
    /// -v and -q, given before the subcommand or after it.
    fn loudness(&self) -> Loudness {
        let (verbose, quiet) = match &self.command {
            Command::Sync { loud, .. }
            | Command::List { loud, .. }
            | Command::Probe { loud, .. }
            | Command::Adopt { loud, .. }
            | Command::Daemon { loud, .. } => (loud.verbose, loud.quiet),
            Command::ImportState { quiet, .. }
            | Command::ImportConfig { quiet, .. }
            | Command::Init { quiet, .. }
            | Command::Password { quiet, .. }
            | Command::OAuth { quiet, .. } => (false, quiet.quiet),
            Command::Accounts | Command::CompleteAccounts | Command::Status { .. } => {
                (false, false)
            }
        };
        let quiet = self.loud.quiet || quiet;
        Loudness {
            verbose: (self.loud.verbose || verbose) && !quiet,
            quiet,
        }
    }
}

/// The command-line definition, for the generated completions and man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs popfetch and returns its exit status. Call it from `main` before starting
/// any thread: it sets the process's TLS environment first (see `net::roots`).
pub fn run() -> ExitCode {
    // First, while this is the only thread (it sets the environment).
    crate::net::prefer_lazy_roots();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    match &cli.command {
        Command::Sync {
            accounts, flags, ..
        } => sync::sync(&cli, accounts, flags).into(),
        Command::List { accounts, json, .. } => list(&cli, accounts, *json).into(),
        Command::Password { action, .. } => password(&cli, action).into(),
        Command::OAuth { action, .. } => oauth_command(&cli, action).into(),
        Command::Daemon {
            accounts,
            foreground,
            jobs,
            ..
        } => daemon::daemon(daemon::Settings {
            config: cli.config.as_deref(),
            names: accounts,
            foreground: *foreground,
            verbose: cli.loudness().verbose,
            jobs: jobs.unwrap_or_else(default_jobs),
            log_format: cli.log_format,
        })
        .into(),
        Command::Status { accounts, json } => {
            over_accounts(&cli, accounts, |accounts| status::show(&accounts, *json)).into()
        }
        Command::Accounts => accounts(&cli).into(),
        Command::CompleteAccounts => {
            // Quiet on any error: a completion must never print into the command line.
            if let Ok(config) = load(&cli) {
                for account in &config.accounts {
                    println!("{}", account.name);
                }
            }
            Exit::Ok.into()
        }
        Command::ImportState {
            account,
            tool,
            key,
            path,
            ..
        } => import_state(&cli, account, *tool, key.as_deref(), path).into(),
        Command::ImportConfig {
            tool,
            path,
            write,
            import_state,
            ..
        } => import_config(&cli, *tool, path, *write, *import_state).into(),
        Command::Init { answers, .. } => init(&cli, answers).into(),
        Command::Adopt {
            account,
            before,
            yes,
            dry_run,
            ..
        } => {
            let which = before.map_or(adopt::Which::All, adopt::Which::Before);
            let asked = adopt::Asked {
                which,
                yes: *yes,
                dry_run: *dry_run,
            };
            adopt(&cli, account, asked).into()
        }
        Command::Probe {
            account,
            host,
            port,
            tls,
            tls_ca_file,
            ..
        } => probe(
            &cli,
            account.as_deref(),
            host.as_deref(),
            *port,
            *tls,
            tls_ca_file.clone(),
        )
        .into(),
    }
}

fn import_state(
    cli: &Cli,
    name: &str,
    tool: crate::cmd::import::Tool,
    key: Option<&str>,
    path: &std::path::Path,
) -> Exit {
    with_account(cli, name, |account| {
        match crate::cmd::import::import(account, tool, key, path) {
            Ok(added) => {
                if !cli.loudness().quiet {
                    eprintln!(
                    "popfetch: account \"{name}\": recorded {added} message(s) from {tool} as delivered"
                );
                }
                Exit::Ok
            }
            Err(e) => {
                // A held lock is temporary; a file that cannot be read or understood is
                // a local input problem.
                let code = match classify(&e) {
                    Exit::Software => Exit::IoError,
                    other => other,
                };
                eprintln!("popfetch: account \"{name}\": {e:#}");
                code
            }
        }
    })
}

/// Runs `then` on the account `name` of the config, or fails in one line.
fn with_account(cli: &Cli, name: &str, then: impl FnOnce(&Account) -> Exit) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    match config.select(&[name.to_string()]) {
        Ok(accounts) => then(accounts[0]),
        Err(e) => fail(None, e.into()),
    }
}

fn adopt(cli: &Cli, name: &str, asked: adopt::Asked) -> Exit {
    with_account(cli, name, |account| adopt_one(cli, name, account, asked))
}

fn adopt_one(cli: &Cli, name: &str, account: &Account, asked: adopt::Asked) -> Exit {
    let mut out = std::io::stdout().lock();
    match adopt::adopt(account, asked, trace(cli, name), &mut out) {
        Ok(_) => Exit::Ok,
        Err(e) => {
            let _ = out.flush();
            fail(Some(name), e)
        }
    }
}

fn import_config(
    cli: &Cli,
    tool: crate::cmd::import::Tool,
    path: &std::path::Path,
    write: bool,
    import_state: bool,
) -> Exit {
    let write_to = if write {
        match &cli.config {
            Some(path) => Some(path.clone()),
            None => match Paths::discover() {
                Ok(paths) => Some(paths.config_file),
                Err(e) => return fail(None, e.into()),
            },
        }
    } else {
        None
    };
    let request = import_config::Request {
        tool,
        path,
        write_to,
        import_state,
        quiet: cli.loudness().quiet,
    };
    import_config::run(&request, &|| load(cli))
}

fn accounts(cli: &Cli) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let mut out = std::io::stdout().lock();
    for a in &config.accounts {
        let tls = match a.tls {
            TlsMode::Implicit => "tls",
            TlsMode::Starttls => "starttls",
            TlsMode::None => "plain",
        };
        let _ = writeln!(
            out,
            "{:<16} {}@{}:{} ({tls}) -> {}",
            a.name, a.user, a.host, a.port, a.deliver
        );
    }
    Exit::Ok
}

fn init(cli: &Cli, given: &crate::cmd::init::Given) -> Exit {
    let path = match &cli.config {
        Some(path) => path.clone(),
        None => match Paths::discover() {
            Ok(paths) => paths.config_file,
            Err(e) => return fail(None, e.into()),
        },
    };
    if path.exists() {
        eprintln!(
            "popfetch: {} already exists; popfetch init never overwrites it",
            path.display()
        );
        return Exit::Config;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let answers = match crate::cmd::init::answers(given, &home) {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("popfetch: init: {e}");
            return Exit::Usage;
        }
    };
    let text = crate::cmd::init::render(&answers);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        })
        .and_then(|mut file| file.write_all(text.as_bytes()));
    match written {
        Ok(()) => {
            if !cli.loudness().quiet {
                eprintln!(
                    "popfetch: wrote {}\n{}",
                    path.display(),
                    crate::cmd::init::next_steps(cli.config.as_deref())
                );
            }
            Exit::Ok
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "popfetch: {} already exists; popfetch init never overwrites it",
                path.display()
            );
            Exit::Config
        }
        Err(e) => {
            eprintln!("popfetch: cannot write {}: {e}", path.display());
            Exit::IoError
        }
    }
}

fn probe(
    cli: &Cli,
    account: Option<&str>,
    host: Option<&str>,
    port: Option<u16>,
    tls: TlsMode,
    tls_ca_file: Option<PathBuf>,
) -> Exit {
    let config;
    let (target, login) = match (account, host) {
        (Some(name), _) => {
            config = match load(cli) {
                Ok(config) => config,
                Err(e) => return fail(None, e),
            };
            match config.select(&[name.to_string()]) {
                Ok(accounts) => match crate::cmd::probe::Target::of(accounts[0]) {
                    Ok(target) => (target, Some(accounts[0])),
                    Err(e) => return fail(Some(name), e.into()),
                },
                Err(e) => return fail(None, e.into()),
            }
        }
        (None, Some(host)) => {
            let port = port.unwrap_or(tls.default_port());
            let target = crate::cmd::probe::Target::host(host, port, tls, tls_ca_file);
            (target, None)
        }
        (None, None) => unreachable!("clap requires one of them"),
    };
    // Errors name the account probed (or, without one, the server).
    let name = match login {
        Some(account) => account.name.clone(),
        None => format!("{}:{}", target.host, target.port),
    };
    let mut out = std::io::stdout().lock();
    match crate::cmd::probe::probe(&target, login, trace(cli, &name), &mut out) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            let _ = out.flush();
            fail(Some(&name), e)
        }
    }
}

fn load(cli: &Cli) -> Result<Config, anyhow::Error> {
    Ok(Paths::discover().and_then(|paths| Config::load(cli.config.as_deref(), &paths))?)
}

fn password(cli: &Cli, action: &PasswordAction) -> Exit {
    let (PasswordAction::Set { account, target } | PasswordAction::Delete { account, target }) =
        action;
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let account = match config.select(std::slice::from_ref(account)) {
        Ok(accounts) => accounts[0],
        Err(e) => return fail(None, e.into()),
    };
    let entry = if *target {
        match account.deliver.keyring_entry(&account.target_context()) {
            Some(entry) => entry,
            None => {
                eprintln!(
                    "popfetch: account \"{}\": deliver = \"{}\" logs in nowhere (only an imap: target, or an smtp: target with smtp_user, does)",
                    account.name, account.deliver
                );
                return Exit::Usage;
            }
        }
    } else {
        format!("{}@{}", account.user, account.host)
    };
    let result = match action {
        PasswordAction::Set { .. } => secret::read_new_password(&entry)
            .map_err(|e| anyhow::anyhow!("cannot read the password: {e}"))
            .and_then(|password| {
                secret::keyring_set(&entry, &password)
                    .map_err(|e| anyhow::anyhow!("cannot store the password in the keyring: {e}"))
            })
            .map(|()| format!("stored the password for {entry} in the keyring")),
        PasswordAction::Delete { .. } => match secret::keyring_delete(&entry) {
            Ok(true) => Ok(format!("removed the password for {entry} from the keyring")),
            Ok(false) => Ok(format!("the keyring holds no password for {entry}")),
            Err(e) => Err(anyhow::anyhow!("cannot reach the keyring: {e}")),
        },
    };
    match result {
        Ok(message) => {
            if !cli.loudness().quiet {
                eprintln!("popfetch: {message}");
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("popfetch: account \"{}\": {e:#}", account.name);
            Exit::Unavailable
        }
    }
}

fn oauth_command(cli: &Cli, action: &OAuthAction) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let quiet = cli.loudness().quiet;
    let one =
        |name: &str, run: &dyn Fn(&Account, &crate::config::OAuth) -> anyhow::Result<Exit>| {
            match oauth::find(&config, name) {
                Ok((account, settings)) => {
                    run(account, settings).unwrap_or_else(|e| fail(Some(&account.name), e))
                }
                Err(e) => fail(None, e),
            }
        };
    match action {
        OAuthAction::Login {
            account,
            browser,
            import,
        } => one(account, &|account, settings| {
            let how = match (*import, *browser) {
                (true, _) => oauth::How::Import,
                (false, true) => oauth::How::Browser,
                (false, false) => oauth::How::Default,
            };
            oauth::login(account, settings, how, quiet).map(|()| Exit::Ok)
        }),
        OAuthAction::Logout { account } => one(account, &|account, settings| {
            oauth::logout(account, settings, quiet)
        }),
        OAuthAction::Status { accounts } if accounts.is_empty() => {
            let with_oauth: Vec<_> = config
                .accounts
                .iter()
                .filter(|a| a.oauth.is_some())
                .collect();
            if with_oauth.is_empty() {
                eprintln!(
                    "popfetch: no account in {} uses OAuth (oauth_provider)",
                    crate::config::shown_path(&config.path)
                );
                return Exit::Config;
            }
            with_oauth
                .into_iter()
                .map(|a| one(&a.name, &oauth::status))
                .max()
                .unwrap_or(Exit::Ok)
        }
        OAuthAction::Status { accounts } => accounts
            .iter()
            .map(|name| one(name, &oauth::status))
            .max()
            .unwrap_or(Exit::Ok),
    }
}

/// A trace for -v: each line names the account.
fn trace(cli: &Cli, account: &str) -> Option<crate::pop3::Trace> {
    cli.loudness().verbose.then(|| {
        let name = account.to_string();
        Box::new(move |line: &str| eprintln!("{name}: {line}")) as crate::pop3::Trace
    })
}

/// Warnings that are not errors: printed unless -q.
fn warner(cli: &Cli, account: &str) -> crate::sync::Warn {
    let quiet = cli.loudness().quiet;
    let name = account.to_string();
    Box::new(move |text: &str| {
        if !quiet {
            eprintln!("popfetch: warning: account \"{name}\": {text}");
        }
    })
}

/// Runs `run` over the accounts named (all when none are); a config that cannot be
/// loaded, or a name it lacks, is printed instead.
fn over_accounts(cli: &Cli, names: &[String], run: impl FnOnce(Vec<&Account>) -> Exit) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    match config.select(names) {
        Ok(accounts) => run(accounts),
        Err(e) => fail(None, e.into()),
    }
}

fn list(cli: &Cli, names: &[String], json: bool) -> Exit {
    over_accounts(cli, names, |accounts| list_accounts(cli, accounts, json))
}

fn list_accounts(cli: &Cli, accounts: Vec<&Account>, json: bool) -> Exit {
    let mut worst = Exit::Ok;
    let mut all = serde_json::Map::new();
    for account in accounts {
        let warn = warner(cli, &account.name);
        match preview::list_account(account, trace(cli, &account.name), &*warn) {
            Ok(entries) if json => {
                all.insert(account.name.clone(), serde_json::json!(entries));
            }
            Ok(entries) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}: {} message(s)", account.name, entries.len());
                let _ = write!(
                    out,
                    "{}",
                    preview::table(&entries, crate::cmd::ui::stdout_width())
                );
            }
            Err(e) => worst = worst.max(fail(Some(&account.name), e)),
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(all));
    }
    worst
}

/// Prints an error as one line, naming the account, and returns its exit code.
fn fail(account: Option<&str>, err: anyhow::Error) -> Exit {
    let code = classify(&err);
    match account {
        Some(name) => eprintln!("popfetch: account \"{name}\": {err:#}"),
        None => eprintln!("popfetch: {err:#}"),
    }
    code
}
