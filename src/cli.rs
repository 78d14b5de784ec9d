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
    /// Print the protocol steps (never passwords) and a summary per account
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch new mail for the named accounts, or for all of them
    Sync {
        /// Accounts to sync, as named in the configuration file
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
        #[command(flatten)]
        flags: SyncFlags,
    },
    /// List the messages on the server with what a sync would do with each
    List {
        /// Accounts to list [default: all]
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// List the configured accounts
    Accounts,
    /// Record the messages another fetcher already delivered, so switching tools
    /// does not fetch a mailbox again
    ImportState {
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// The tool that wrote the file
        #[arg(long = "from", value_enum, value_name = "TOOL")]
        tool: crate::import::Tool,
        /// fetchmail's .fetchids, mpop's uidls file, or getmail's oldmail-* file
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
    },
    /// Write a commented configuration file (asks for the basics at a terminal)
    Init,
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
        /// implicit, starttls or none
        #[arg(
            long,
            value_name = "MODE",
            default_value = "implicit",
            requires = "host"
        )]
        tls: String,
    },
    /// Manage an account's password in the system keyring (service "popfetch",
    /// entry USER@HOST)
    Password {
        #[command(subcommand)]
        action: PasswordAction,
    },
}

#[derive(Debug, clap::Args)]
struct SyncFlags {
    /// Print what would be fetched, skipped and deleted, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary of each account on stdout
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
        #[arg(value_name = "ACCOUNT")]
        account: String,
    },
    /// Remove the stored password
    Delete {
        #[arg(value_name = "ACCOUNT")]
        account: String,
    },
}

/// The command-line definition, for the generated completions and man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs popfetch and returns its exit status.
pub fn run() -> ExitCode {
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
        Command::Sync { accounts, flags } => sync(&cli, accounts, flags).into(),
        Command::List { accounts, json } => list(&cli, accounts, *json).into(),
        Command::Password { action } => password(&cli, action).into(),
        Command::Accounts => accounts(&cli).into(),
        Command::ImportState {
            account,
            tool,
            path,
        } => import_state(&cli, account, *tool, path).into(),
        Command::Init => init(&cli).into(),
        Command::Probe {
            account,
            host,
            port,
            tls,
        } => probe(&cli, account.as_deref(), host.as_deref(), *port, tls).into(),
    }
}

fn import_state(cli: &Cli, name: &str, tool: crate::import::Tool, path: &std::path::Path) -> Exit {
    let config = match load(cli) {
        Ok(config) => config,
        Err(e) => return fail(None, e),
    };
    let account = match config.select(&[name.to_string()]) {
        Ok(accounts) => accounts[0],
        Err(e) => return fail(None, e.into()),
    };
    match crate::import::import(account, tool, path) {
        Ok(added) => {
            if !cli.quiet {
                eprintln!("popfetch: account \"{name}\": recorded {added} message(s) as delivered");
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

fn init(cli: &Cli) -> Exit {
    let path = match &cli.config {
        Some(path) => path.clone(),
        None => match Paths::discover() {
            Ok(paths) => paths.config_file,
            Err(e) => return fail(None, e.into()),
        },
    };
    let ask = |question: &str, default: &str| -> String {
        if !std::io::stdin().is_terminal() {
            return default.to_string();
        }
        eprint!("{question} [{default}]: ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        let answer = answer.trim();
        if answer.is_empty() {
            default.to_string()
        } else {
            answer.to_string()
        }
    };
    let host = ask("POP3 server", "pop.example.com");
    let user = ask("User name", "me@example.com");
    let deliver = ask("Deliver to", "maildir:~/Mail/inbox");
    let text = crate::config::template(&host, &user, &deliver);
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
            if !cli.quiet {
                eprintln!(
                    "popfetch: wrote {}; edit it, then run `popfetch sync`",
                    path.display()
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
    tls: &str,
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
            let tls = match tls {
                "implicit" => TlsMode::Implicit,
                "starttls" => TlsMode::Starttls,
                "none" => TlsMode::None,
                other => {
                    eprintln!("popfetch: --tls {other}: use implicit, starttls or none");
                    return Exit::Usage;
                }
            };
            let target = crate::probe::Target {
                host: host.to_string(),
                port: port.unwrap_or(if tls == TlsMode::Implicit { 995 } else { 110 }),
                tls,
                ca_file: None,
                timeout: std::time::Duration::from_secs(30),
            };
            (target, None)
        }
        (None, None) => unreachable!("clap requires one of them"),
    };
    let mut out = std::io::stdout().lock();
    match crate::probe::probe(&target, login, &mut out) {
        Ok(()) => Exit::Ok,
        Err(e) => fail(Some(&format!("{}:{}", target.host, target.port)), e),
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
            if !cli.quiet {
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
    cli.verbose.then(|| {
        let name = account.to_string();
        Box::new(move |line: &str| eprintln!("{name}: {line}")) as crate::pop3::Trace
    })
}

/// Warnings that are not errors: printed unless -q.
fn warner(cli: &Cli, account: &str) -> crate::sync::Warn {
    let quiet = cli.quiet;
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
                let _ = write!(out, "{}", preview::table(&entries));
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
    let ui = Ui::new(Loudness {
        verbose: cli.verbose,
        quiet: cli.quiet,
    });
    let queue = Mutex::new(accounts.iter().enumerate());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..flags.jobs.clamp(1, accounts.len().max(1)) {
            scope.spawn(|| loop {
                let Some((index, account)) = queue.lock().unwrap().next() else {
                    break;
                };
                let outcome = sync_one(&ui, account, flags.dry_run);
                results.lock().unwrap().push((index, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
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

/// What `sync --json` says of one account.
struct Outcome {
    exit: Exit,
    json: serde_json::Value,
}

/// Syncs one account, gathering its output and printing it in one piece.
fn sync_one(ui: &Ui, account: &crate::config::Account, dry_run: bool) -> Outcome {
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
        dry_run,
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
    if let (true, Some(plan)) = (dry_run, &report.plan) {
        out.print(format!(
            "{}: would fetch {} message(s) ({} bytes), delete {}, skip {}",
            account.name, report.fetched, report.bytes, report.deleted, report.skipped
        ));
        if let Ok(state) = crate::state::UidlState::peek(&account.state_place()) {
            out.print(
                preview::table(&preview::entries(plan, &state))
                    .trim_end()
                    .to_string(),
            );
        }
    } else if error.is_none() {
        out.summary(summary(&report));
    }
    out.finish();
    Outcome {
        exit,
        json: serde_json::json!({
            "account": account.name,
            "fetched": report.fetched,
            "bytes": report.bytes,
            "deleted": report.deleted,
            "skipped": report.skipped,
            "errors": error.into_iter().collect::<Vec<_>>(),
            "exit_code": exit as u8,
        }),
    }
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

fn summary(report: &Report) -> String {
    format!(
        "{} message(s) fetched ({} bytes), {} deleted, {} skipped",
        report.fetched, report.bytes, report.deleted, report.skipped
    )
}
