//! A fresh home directory to run the real binary in, with the environment scrubbed
//! and XDG paths pointing inside it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Home {
    pub dir: tempfile::TempDir,
}

/// The result of one run of popfetch, with everything needed to explain a failure.
pub struct Run {
    pub command: String,
    pub output: Output,
    pub listing: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Asserts the exit code; on failure shows the command, its output and the files.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "\ncommand: {}\nstdout:\n{}\nstderr:\n{}\nfiles:\n{}",
            self.command,
            self.stdout(),
            self.stderr(),
            self.listing
        );
        self
    }
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::Builder::new()
                .prefix("popfetch-home")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join(".config/popfetch/config.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".local/state/popfetch")
    }

    pub fn maildir(&self) -> PathBuf {
        self.path().join("Mail")
    }

    /// The one state file in the state directory (its name is popfetch's business).
    #[track_caller]
    pub fn state_file(&self) -> PathBuf {
        let files: Vec<PathBuf> = fs::read_dir(self.state_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "state"))
            .collect();
        assert_eq!(files.len(), 1, "one state file: {files:?}");
        files.into_iter().next().unwrap()
    }

    /// Writes the default config file, owner-only.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.config_path();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_popfetch"));
        cmd.env_clear()
            .env("HOME", self.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env("XDG_STATE_HOME", self.path().join(".local/state"))
            .stdin(Stdio::null())
            .current_dir(self.path());
        cmd
    }

    /// `popfetch sync` on a pseudo-terminal, through script(1), in this home's
    /// environment; stdin and stdout are left for the caller to set.
    pub fn sync_on_pty(&self) -> Command {
        self.on_pty("sync")
    }

    /// `popfetch ARGS` on a pseudo-terminal, `answer` typed once its prompt
    /// is there; what the terminal showed, and how it ended.
    pub fn answer_on_pty(&self, args: &str, answer: &str) -> (String, std::process::ExitStatus) {
        use std::io::Write;
        let mut child = self
            .on_pty(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script(1) is needed: apt-get install bsdutils");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            output.status,
        )
    }

    /// `popfetch ARGS` on a pseudo-terminal, as [`Home::sync_on_pty`].
    pub fn on_pty(&self, args: &str) -> Command {
        let mut cmd = Command::new("script");
        cmd.args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_popfetch")),
            "/dev/null",
        ])
        .env_clear()
        .envs(
            self.command()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .env("TERM", "xterm")
        .current_dir(self.path());
        cmd
    }

    /// Runs `script` (bash) in this home's environment inside a D-Bus session
    /// with an unlocked gnome-keyring, a real Secret Service; `$POPFETCH` is the
    /// binary. A missing tool fails the test and names its package.
    pub fn in_keyring_session(&self, script: &str, env: &[(&str, &str)]) -> Output {
        for tool in ["/usr/bin/dbus-run-session", "/usr/bin/gnome-keyring-daemon"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: apt-get install dbus-daemon dbus-bin gnome-keyring"
            );
        }
        let script = format!(
            "set -u\nprintf '%s' keyring-unlock | gnome-keyring-daemon --unlock --components=secrets >/dev/null\n{script}"
        );
        Command::new("dbus-run-session")
            .args(["--", "bash", "-c", &script])
            .env_clear()
            .envs(
                self.command()
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
            )
            .env("XDG_DATA_HOME", self.path().join(".local/share"))
            .env("POPFETCH", env!("CARGO_BIN_EXE_popfetch"))
            .envs(env.iter().copied())
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command().args(args).output().unwrap();
        if std::env::var_os("POPFETCH_TEST_SHOW").is_some() {
            eprintln!(
                "PEEK {args:?} -> {:?}: {}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Run {
            command: format!("popfetch {}", args.join(" ")),
            output,
            listing: listing(self.path()),
        }
    }

    /// Messages delivered into the Maildir (new/ and cur/), sorted.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        maildir_messages(&self.maildir())
    }

    pub fn tmp_is_empty(&self) -> bool {
        fs::read_dir(self.maildir().join("tmp"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }
}

/// The contents of every message in a Maildir's new/ and cur/, sorted. A server may
/// be moving a file from new/ to cur/ (or expunging it) while we look: then look
/// again.
pub fn maildir_messages(root: &Path) -> Vec<Vec<u8>> {
    'scan: for _ in 0..50 {
        let mut messages = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(root.join(sub)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                match fs::read(&path) {
                    Ok(bytes) => messages.push(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue 'scan;
                    }
                    Err(e) => panic!("{}: {e}", path.display()),
                }
            }
        }
        messages.sort();
        return messages;
    }
    panic!("{} kept changing under us", root.display());
}

fn listing(root: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = entry.metadata().unwrap();
            out.push_str(&format!(
                "  {} ({} bytes)\n",
                path.strip_prefix(root).unwrap().display(),
                meta.len()
            ));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}
