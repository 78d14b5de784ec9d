//! Helper commands that read a message or its headers (MDAs, filters): run without
//! a shell, fed on stdin, with their stdout sent to our stderr, since our stdout
//! belongs to popfetch's own reports (`--json`, `list`).

use std::io;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};

/// Starts `argv` with a pipe on its stdin.
pub fn spawn_fed(argv: &[String]) -> io::Result<Child> {
    let stdout = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
}
