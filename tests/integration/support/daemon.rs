//! Starting a real server for a test: a few attempts (a free port handed to it may
//! be taken by another test in the meantime), and waiting until it listens.

use std::process::Child;
use std::time::{Duration, Instant};

/// Runs `attempt` up to three times; panics with what each attempt said.
pub fn started<T>(what: &str, attempt: impl Fn() -> Result<T, String>) -> T {
    let mut failures = String::new();
    for _ in 0..3 {
        match attempt() {
            Ok(server) => return server,
            Err(why) => failures.push_str(&why),
        }
    }
    panic!("{what} did not start:\n{failures}");
}

/// Waits up to 20 s until `ready` says the server listens. If `child` exits first,
/// or the time runs out, the error is its exit status and `logs`.
pub fn wait_until(
    child: &mut Child,
    ready: impl Fn() -> bool,
    logs: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            return Err(format!("exit {exited:?}; {}\n", logs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether each port on 127.0.0.1 accepts a connection.
pub fn listening(ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|&port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// What a Dovecot wrote to its log and to stderr (in `dir`), for a start failure.
pub fn dovecot_logs(dir: &std::path::Path) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "log:\n{}\nstderr:\n{}",
        read("dovecot.log"),
        read("dovecot.stderr")
    )
}
