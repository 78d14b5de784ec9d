//! Reading mbox files back the way their users do: Python's `mailbox` module, and
//! undoing the mboxrd quoting.

use std::path::Path;
use std::process::Command;

/// Undoes mboxrd quoting: one `>` less on every `^>+From ` line.
pub fn unquote(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Reads an mbox with Python's `mailbox.mbox`; returns each message's From_ line
/// sender and its bytes.
pub fn python_mbox(path: &Path) -> Vec<(String, Vec<u8>)> {
    let script = r#"
import mailbox, sys
box = mailbox.mbox(sys.argv[1], create=False)
out = sys.stdout.buffer
for key in box.keys():
    msg = box.get_message(key)
    data = box.get_bytes(key)
    out.write(msg.get_from().split(' ')[0].encode() + b'\0' + str(len(data)).encode() + b'\0' + data)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 is needed to read mbox files back: apt-get install python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = &out.stdout[..];
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let nul = rest.iter().position(|&b| b == 0).unwrap();
        let sender = String::from_utf8_lossy(&rest[..nul]).into_owned();
        rest = &rest[nul + 1..];
        let nul = rest.iter().position(|&b| b == 0).unwrap();
        let len: usize = std::str::from_utf8(&rest[..nul]).unwrap().parse().unwrap();
        rest = &rest[nul + 1..];
        messages.push((sender, rest[..len].to_vec()));
        rest = &rest[len..];
    }
    messages
}

/// The messages of an mbox as Python reads them, quoting undone.
pub fn messages(path: &Path) -> Vec<Vec<u8>> {
    python_mbox(path)
        .into_iter()
        .map(|(_, m)| unquote(&m))
        .collect()
}

/// How many messages mutt sees in an mbox: mutt runs read-only in a detached tmux
/// session, and its status line is read off the screen.
pub fn mutt_count(path: &Path) -> usize {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("Mail")).unwrap();
    let session = format!("popfetch-mutt-{}", std::process::id());
    let mutt = format!(
        "mutt -n -F /dev/null -e 'set folder={}' -R -f {}",
        home.path().display(),
        path.display()
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "200",
            "-y",
            "40",
            &mutt,
        ])
        .env("HOME", home.path())
        .env("TERM", "xterm")
        .status()
        .expect("tmux is needed to drive mutt: apt-get install tmux mutt");
    assert!(
        started.success(),
        "tmux could not start mutt: apt-get install tmux mutt"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let count = loop {
        let screen = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&screen.stdout).into_owned();
        if let Some(at) = screen.find("[Msgs:") {
            let digits: String = screen[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            break digits.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mutt did not open the mbox:\n{screen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    count
}
