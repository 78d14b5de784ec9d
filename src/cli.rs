//! The command line: what the user typed, parsed and checked by clap, then run over
//! the configured accounts. Errors are printed here, once, one line per account.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Paths};
use crate::config::{Delivery, TlsMode};
use crate::exit::{classify, Exit};
use crate::preview;
use crate::secret;
use crate::sync::{sync_account, Options, Report};
use crate::ui::{Loudness, Ui};
use std::io::IsTerminal;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

#[derive(Debug, Parser)]
#[command(
    name = "popfetch",
    version,
    about = "Fetch mail from POP3 servers, safely"
)]
pub struct Cli {
    /// Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Record the messages another fetcher already delivered, so switching tools
    /// does not fetch a mailbox again
    ImportState {
        /// The account to record them for, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// The tool that wrote the file
        #[arg(long = "from", value_enum, value_name = "TOOL")]
        tool: crate::import::Tool,
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
    /// Write a commented configuration file (asks for what is not given, at a
    /// terminal; never overwrites)
    Init {
        #[command(flatten)]
        answers: crate::init::Given,
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
            default_value_t = TlsArg::Implicit,
            requires = "host"
        )]
        tls: TlsArg,
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
    /// Account names, one a line, for the shell completions.
    #[command(name = "complete-accounts", hide = true)]
    CompleteAccounts,
}

/// `--tls`: the values of the config key `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsArg {
    /// TLS from the first byte, usually port 995
    Implicit,
    /// plain POP3 upgraded with STLS, never falling back, usually port 110
    Starttls,
    /// no TLS at all
    None,
}

impl From<TlsArg> for TlsMode {
    fn from(tls: TlsArg) -> TlsMode {
        match tls {
            TlsArg::Implicit => TlsMode::Implicit,
            TlsArg::Starttls => TlsMode::Starttls,
            TlsArg::None => TlsMode::None,
        }
    }
}

#[derive(Debug, clap::Args)]
struct SyncFlags {
    /// Print what would be fetched, skipped and deleted, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary of each account on stdout (with --dry-run, the plan too)
    #[arg(long)]
    json: bool,
    /// How many accounts to sync at once
    #[arg(short, long, default_value_t = 4, value_name = "N")]
    jobs: usize,
}

#[derive(Debug, Subcommand)]
enum PasswordAction {
    /// Store the password: prompted for on a terminal, else read from stdin
    Set {
        /// The account, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        account: String,
    },
    /// Remove the stored password
    Delete {
        /// The account, as named in the configuration file
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
            | Command::Probe { loud, .. } => (loud.verbose, loud.quiet),
            Command::ImportState { quiet, .. }
            | Command::Init { quiet, .. }
            | Command::Password { quiet, .. } => (false, quiet.quiet),
            Command::Accounts | Command::CompleteAccounts => (false, false),
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

/// Runs popfetch and returns its exit status.
pub fn run() -> ExitCode {
    // First, while this is the only thread (it sets the environment).
    crate::pop3::net::prefer_lazy_roots();
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
        } => sync(&cli, accounts, flags).into(),
        Command::List { accounts, json, .. } => list(&cli, accounts, *json).into(),
        Command::Password { action, .. } => password(&cli, action).into(),
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
        Command::Init { answers, .. } => init(&cli, answers).into(),
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
    tool: crate::import::Tool,
    key: Option<&str>,
    path: &std::path::Path,
) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let account = match config.select(&[name.to_string()]) {
        Ok(accounts) => accounts[0],
        Err(e) => return fail(None, e.into()),
    };
    match crate::import::import(account, tool, key, path) {
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
        let deliver = match &a.deliver {
            Delivery::Maildir(p) => format!("maildir:{}", p.display()),
            Delivery::Mbox(p) => format!("mbox:{}", p.display()),
            Delivery::Mda(argv) => format!("mda:{}", argv.join(" ")),
        };
        let _ = writeln!(
            out,
            "{:<16} {}@{}:{} ({tls}) -> {deliver}",
            a.name, a.user, a.host, a.port
        );
    }
    Exit::Ok
}

fn init(cli: &Cli, given: &crate::init::Given) -> Exit {
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
    let answers = match crate::init::answers(given, &home) {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("popfetch: init: {e}");
            return Exit::Usage;
        }
    };
    let text = crate::init::render(&answers);
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
                    crate::init::next_steps(cli.config.as_deref())
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
    tls: TlsArg,
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
                Ok(accounts) => (crate::probe::Target::of(accounts[0]), Some(accounts[0])),
                Err(e) => return fail(None, e.into()),
            }
        }
        (None, Some(host)) => {
            let tls = TlsMode::from(tls);
            let port = port.unwrap_or(if tls == TlsMode::Implicit { 995 } else { 110 });
            let target = crate::probe::Target::host(host, port, tls, tls_ca_file);
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
    match crate::probe::probe(&target, login, trace(cli, &name), &mut out) {
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
    let (PasswordAction::Set { account } | PasswordAction::Delete { account }) = action;
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let account = match config.select(std::slice::from_ref(account)) {
        Ok(accounts) => accounts[0],
        Err(e) => return fail(None, e.into()),
    };
    let entry = format!("{}@{}", account.user, account.host);
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

fn list(cli: &Cli, names: &[String], json: bool) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let accounts = match config.select(names) {
        Ok(accounts) => accounts,
        Err(e) => return fail(None, e.into()),
    };
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
                    preview::table(&entries, crate::ui::stdout_width())
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

fn sync(cli: &Cli, names: &[String], flags: &SyncFlags) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let accounts = match config.select(names) {
        Ok(accounts) => accounts,
        Err(e) => return fail(None, e.into()),
    };
    let ui = Ui::new(cli.loudness());
    let (accounts, mut results) = prompt_first(&ui, accounts);
    // From here a Ctrl-C clears the bars and says what it means; see crate::interrupt.
    let _interrupt = crate::interrupt::install(ui.bars());
    let queue = Mutex::new(accounts.iter());
    let outcomes = Mutex::new(Vec::new());
    let width = if flags.json {
        None
    } else {
        crate::ui::stdout_width()
    };
    std::thread::scope(|scope| {
        for _ in 0..flags.jobs.clamp(1, accounts.len().max(1)) {
            scope.spawn(|| loop {
                let Some((index, account)) = queue.lock().unwrap().next() else {
                    break;
                };
                let outcome = sync_one(&ui, account, flags, width);
                outcomes.lock().unwrap().push((*index, outcome));
            });
        }
    });
    results.extend(outcomes.into_inner().unwrap());
    results.sort_by_key(|(index, _)| *index);
    let worst = results
        .iter()
        .map(|(_, o)| o.exit)
        .max()
        .unwrap_or(Exit::Ok);
    if flags.json {
        let accounts: Vec<_> = results.iter().map(|(_, o)| &o.json).collect();
        println!(
            "{}",
            serde_json::json!({ "accounts": accounts, "exit_code": worst as u8 })
        );
    }
    worst
}

/// Items with their place among the accounts named, so output keeps that order.
type Numbered<T> = Vec<(usize, T)>;

/// At a terminal, asks for the passwords that only a person can give before any
/// progress bar is drawn, one prompt a line, so no prompt shares a line with a bar.
/// An account whose password cannot be had is reported here and not synced.
fn prompt_first(
    ui: &Ui,
    accounts: Vec<&crate::config::Account>,
) -> (Numbered<crate::config::Account>, Numbered<Outcome>) {
    let asks = ui.interactive() && std::io::stdin().is_terminal();
    let mut ready = Vec::new();
    let mut failed = Vec::new();
    for (index, account) in accounts.into_iter().enumerate() {
        let mut account = account.clone();
        let source = if account.auth.uses_token() {
            &mut account.oauth_token
        } else {
            &mut account.password
        };
        if asks && matches!(source, secret::PasswordSource::Keyring(_)) {
            match source.resolve() {
                Ok(secret) => *source = secret::PasswordSource::Inline(secret),
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    let exit = classify(&e);
                    let line = format!("{e:#}");
                    eprintln!("popfetch: account \"{}\": {line}", account.name);
                    failed.push((
                        index,
                        Outcome {
                            exit,
                            json: outcome_json(&account, &Report::default(), Some(line), exit),
                        },
                    ));
                    continue;
                }
            }
        }
        ready.push((index, account));
    }
    (ready, failed)
}

/// What `sync --json` says of one account.
struct Outcome {
    exit: Exit,
    json: serde_json::Value,
}

fn outcome_json(
    account: &crate::config::Account,
    report: &Report,
    error: Option<String>,
    exit: Exit,
) -> serde_json::Value {
    serde_json::json!({
        "account": account.name,
        "fetched": report.fetched,
        "bytes": report.bytes,
        "octets": report.octets,
        "deleted": report.deleted,
        "skipped": report.skipped,
        "errors": error.into_iter().collect::<Vec<_>>(),
        "exit_code": exit as u8,
    })
}

/// Syncs one account, gathering its output and printing it in one piece.
fn sync_one(
    ui: &Ui,
    account: &crate::config::Account,
    flags: &SyncFlags,
    width: Option<usize>,
) -> Outcome {
    let mut out = ui.account(&account.name);
    if account.tls_insecure_skip_verify {
        // Shown on every run, even with -q: this must never be forgotten.
        out.error(format!(
            "popfetch: warning: account \"{}\": tls_insecure_skip_verify = true, the server's certificate is not checked and anyone on the path can read the mail and the password",
            account.name
        ));
    }
    let options = Options {
        trace: out.trace(),
        dry_run: flags.dry_run,
        warn: Some(out.warn()),
        progress: out.progress(),
    };
    let result = sync_account(account, options);
    let (exit, report, error) = match result {
        Ok(report) => (Exit::Ok, report, None),
        Err(e) => {
            let exit = classify(&e);
            let line = format!("{e:#}");
            out.error(format!("popfetch: account \"{}\": {line}", account.name));
            (exit, Report::default(), Some(line))
        }
    };
    let mut plan = None;
    if let (true, Some(planned)) = (flags.dry_run, &report.plan) {
        // The plan as `list` shows it: date, sender and subject from the headers
        // the dry run read.
        let mut entries = match crate::state::UidlState::peek(&account.state_place()) {
            Ok(state) => preview::entries(planned, &state),
            Err(_) => Vec::new(),
        };
        for entry in &mut entries {
            if let Some((_, head)) = report.heads.iter().find(|(n, _)| *n == entry.number) {
                preview::describe_headers(entry, head);
            }
        }
        if flags.json {
            plan = Some(serde_json::json!(entries));
        } else {
            out.print(format!(
                "{}: would fetch {} message(s) ({} octets on the server), delete {}, skip {}",
                account.name, report.fetched, report.octets, report.deleted, report.skipped
            ));
            out.print(preview::table(&entries, width).trim_end().to_string());
        }
    } else if error.is_none() {
        out.summary(summary(&report));
    }
    out.finish();
    let mut json = outcome_json(account, &report, error, exit);
    if let Some(plan) = plan {
        json["plan"] = plan;
    }
    Outcome { exit, json }
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

/// Bytes here are what was written to disk (after CRLF→LF), not the server's octets.
fn summary(report: &Report) -> String {
    format!(
        "{} message(s) fetched ({} bytes written), {} deleted, {} skipped",
        report.fetched, report.bytes, report.deleted, report.skipped
    )
}
