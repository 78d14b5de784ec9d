//! `popfetch import-config`: another fetcher's configuration converted (see
//! `migrate`), printed, or written to popfetch's config file (mode 0600, never
//! over an existing one), and with `--import-state` each account's seen messages
//! recorded from that tool's UID file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cmd::exit::Exit;
use crate::cmd::import;
use crate::config::Config;
use crate::migrate::render::{render, Sink};
use crate::migrate::{self, Context, Draft, Tool};

/// What the command was asked.
pub(crate) struct Request<'a> {
    pub tool: Tool,
    pub path: &'a Path,
    /// Where `--write` writes; `None` prints.
    pub write_to: Option<PathBuf>,
    pub import_state: bool,
    pub quiet: bool,
}

/// Runs it; `load` reads popfetch's configuration (for `--import-state`).
pub(crate) fn run(request: &Request, load: &dyn Fn() -> anyhow::Result<Config>) -> Exit {
    let text = match std::fs::read(request.path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("popfetch: cannot read {}: {e}", request.path.display());
            return Exit::IoError;
        }
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let context = Context {
        local_user: local_user(&home),
        rc_dir: std::path::absolute(request.path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default(),
    };
    let draft = match migrate::convert(request.tool, &text, &context) {
        Ok(draft) => draft,
        Err(e) => {
            eprintln!(
                "popfetch: {} is not a {} configuration popfetch can read: {e}",
                request.path.display(),
                request.tool
            );
            return Exit::Config;
        }
    };
    let source = request.path.display().to_string();
    match &request.write_to {
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(render(&draft, &source, Sink::Stdout).as_bytes());
            let _ = out.flush();
        }
        Some(target) => {
            let written = write_new(target, &render(&draft, &source, Sink::PrivateFile));
            match written {
                Ok(()) => {
                    if !request.quiet {
                        let names: Vec<_> =
                            draft.accounts.iter().map(|a| a.name.as_str()).collect();
                        eprintln!(
                            "popfetch: wrote {} with {} account(s): {}\npopfetch: next: `popfetch probe ACCOUNT`, then `popfetch sync --dry-run`",
                            target.display(),
                            names.len(),
                            names.join(", ")
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    eprintln!(
                        "popfetch: {} already exists; import-config never overwrites it (without --write it prints the configuration, to merge by hand)",
                        target.display()
                    );
                    return Exit::Config;
                }
                Err(e) => {
                    eprintln!("popfetch: cannot write {}: {e}", target.display());
                    return Exit::IoError;
                }
            }
        }
    }
    if !request.import_state {
        return Exit::Ok;
    }
    match load() {
        Ok(config) => import_states(&draft, request.tool, &config, &home, request.quiet),
        Err(e) => {
            eprintln!("popfetch: --import-state: {e:#}");
            crate::cmd::exit::classify(&e)
        }
    }
}

/// Records each account's seen messages from the other tool's file.
fn import_states(draft: &Draft, tool: Tool, config: &Config, home: &Path, quiet: bool) -> Exit {
    let mut worst = Exit::Ok;
    for mailbox in &draft.accounts {
        let name = &mailbox.name;
        let Some(account) = config.accounts.iter().find(|a| &a.name == name) else {
            eprintln!(
                "popfetch: account \"{name}\" is not in {}: write it first (import-config --write), or add it",
                crate::config::shown_path(&config.path)
            );
            worst = worst.max(Exit::Config);
            continue;
        };
        let candidates: Vec<PathBuf> = mailbox
            .seen
            .iter()
            .flat_map(|s| s.candidates.iter())
            .map(|c| tilde(c, home))
            .collect();
        let Some(file) = candidates.iter().find(|p| p.is_file()) else {
            if !quiet {
                eprintln!(
                    "popfetch: warning: account \"{name}\": no {tool} UID file found (looked for {}); nothing imported",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            continue;
        };
        match import::import(account, tool, None, file)
            .with_context(|| format!("from {}", file.display()))
        {
            Ok(added) => {
                if !quiet {
                    eprintln!(
                        "popfetch: account \"{name}\": recorded {added} message(s) from {tool}'s {} as delivered",
                        file.display()
                    );
                }
            }
            Err(e) => {
                eprintln!("popfetch: account \"{name}\": {e:#}");
                let code = match crate::cmd::exit::classify(&e) {
                    Exit::Software => Exit::IoError,
                    other => other,
                };
                worst = worst.max(code);
            }
        }
    }
    worst
}

/// Creates `path` (and its directory) with mode 0600; never replaces a file.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// `~/x` under `home`.
fn tilde(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_path_buf(),
        None => PathBuf::from(path),
    }
}

/// The user running popfetch: fetchmail's default local recipient.
fn local_user(home: &Path) -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
        .or_else(|| home.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "root".to_string())
}
