//! A scripted POP3 server on a loopback port, for what a real server will not do:
//! injected bytes, cut connections, duplicate unique-ids, silence. It serves the
//! scripts given, one connection each, and records every line the client sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Step {
    /// Send these bytes as they are.
    Send(Vec<u8>),
    /// Read one line from the client; it must start with this text.
    Expect(&'static str),
    /// Read one command and answer it in the usual way for a small mailbox.
    /// Loops until QUIT, serving `messages` (unique-id, content with CRLF).
    Serve(Vec<(String, Vec<u8>)>),
    /// Like `Serve`, with the faults given.
    ServeWith(Vec<(String, Vec<u8>)>, Faults),
    /// Stay silent for this long.
    Sleep(Duration),
    /// Start TLS as the server with this certificate and key (PEM files); the
    /// handshake may fail, which ends the script.
    Tls(std::path::PathBuf, std::path::PathBuf),
    /// Close the connection.
    Close,
}

/// Faults of a served mailbox.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// DELE of these message numbers is answered with `dele_reply`.
    pub refuse_dele: Vec<usize>,
    pub dele_reply: &'static str,
    /// The connection is closed, unanswered, at the first command starting so.
    pub close_at: Option<&'static str>,
}

pub struct Scripted {
    pub port: u16,
    received: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

pub fn send(text: &str) -> Step {
    Step::Send(text.as_bytes().to_vec())
}

/// The usual greeting and a CAPA reply without STLS.
pub fn greeting_and_capa() -> Vec<Step> {
    vec![
        send("+OK scripted ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nUIDL\r\nTOP\r\nPIPELINING\r\n.\r\n"),
    ]
}

/// Greeting, CAPA, and a USER/PASS login that succeeds.
pub fn logged_in() -> Vec<Step> {
    let mut steps = greeting_and_capa();
    steps.extend([
        Step::Expect("USER"),
        send("+OK\r\n"),
        Step::Expect("PASS"),
        send("+OK logged in\r\n"),
    ]);
    steps
}

/// A message in wire form: CRLF line endings and dot-stuffing.
pub fn wire(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Scripted {
    /// Serves each script to one connection, in order.
    pub fn start(scripts: Vec<Vec<Step>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let thread = std::thread::spawn(move || {
            for script in scripts {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                run_script(stream, script, &log);
            }
        });
        Scripted {
            port,
            received,
            thread: Some(thread),
        }
    }

    /// Every line the client sent so far, across connections.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for the scripts to finish and returns what the client sent.
    pub fn finish(mut self) -> Vec<String> {
        if let Some(t) = self.thread.take() {
            t.join().expect("scripted server panicked");
        }
        self.received()
    }

    /// A config for this server over plain TCP with USER/PASS.
    pub fn config(&self, home: &super::Home, extra: &str) -> String {
        format!(
            r#"[accounts.test]
host = "127.0.0.1"
port = {port}
tls = "none"
auth = "user"
timeout = 5
user = "alice"
password = "hunter2-secret"
deliver = "maildir:{maildir}"
{extra}
"#,
            port = self.port,
            maildir = home.maildir().display(),
        )
    }
}

/// The server side of one connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
    Gone,
}

impl Conn {
    fn io(&mut self) -> Option<&mut dyn ReadWrite> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(s.as_mut()),
            Conn::Gone => None,
        }
    }

    /// One line, read a byte at a time so nothing after it is consumed.
    fn read_line(&mut self, log: &Mutex<Vec<String>>) -> Option<String> {
        let io = self.io()?;
        let mut line = Vec::new();
        let mut byte = [0u8];
        loop {
            match io.read(&mut byte) {
                Ok(1) => {
                    line.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                }
                _ => return None,
            }
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        log.lock().unwrap().push(line.clone());
        Some(line)
    }

    fn write(&mut self, bytes: &[u8]) -> bool {
        self.io()
            .is_some_and(|io| io.write_all(bytes).and_then(|()| io.flush()).is_ok())
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn run_script(stream: TcpStream, script: Vec<Step>, log: &Mutex<Vec<String>>) {
    let mut conn = Conn::Plain(stream);
    for step in script {
        match step {
            Step::Send(bytes) => {
                if !conn.write(&bytes) {
                    return;
                }
            }
            Step::Expect(prefix) => match conn.read_line(log) {
                Some(line) if line.starts_with(prefix) => {}
                _ => return,
            },
            Step::Serve(messages) => {
                while let Some(line) = conn.read_line(log) {
                    let reply = serve(&line, &messages);
                    if !conn.write(&reply) || line.starts_with("QUIT") {
                        return;
                    }
                }
                return;
            }
            Step::ServeWith(messages, faults) => {
                while let Some(line) = conn.read_line(log) {
                    if faults.close_at.is_some_and(|c| line.starts_with(c)) {
                        return;
                    }
                    let num: usize = line
                        .strip_prefix("DELE ")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let reply = if faults.refuse_dele.contains(&num) {
                        format!("{}\r\n", faults.dele_reply).into_bytes()
                    } else {
                        serve(&line, &messages)
                    };
                    if !conn.write(&reply) || line.starts_with("QUIT") {
                        return;
                    }
                }
                return;
            }
            Step::Sleep(d) => std::thread::sleep(d),
            Step::Close => return,
            Step::Tls(cert, key) => {
                let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else {
                    return;
                };
                let identity = native_tls::Identity::from_pkcs8(
                    &std::fs::read(cert).unwrap(),
                    &std::fs::read(key).unwrap(),
                )
                .unwrap();
                let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
                match acceptor.accept(tcp) {
                    Ok(tls) => conn = Conn::Tls(Box::new(tls)),
                    Err(_) => return,
                }
            }
        }
    }
}

fn serve(line: &str, messages: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut words = line.split(' ');
    let command = words.next().unwrap_or("").to_ascii_uppercase();
    let argument = words.next();
    let num: usize = argument.and_then(|n| n.parse().ok()).unwrap_or(0);
    let message = num.checked_sub(1).and_then(|i| messages.get(i));
    let mut out = Vec::new();
    match (command.as_str(), message) {
        ("UIDL", _) => {
            out.extend_from_slice(b"+OK\r\n");
            for (i, (uid, _)) in messages.iter().enumerate() {
                out.extend_from_slice(format!("{} {uid}\r\n", i + 1).as_bytes());
            }
            out.extend_from_slice(b".\r\n");
        }
        ("LIST", Some((_, body))) => {
            out.extend_from_slice(format!("+OK {num} {}\r\n", wire(body).len()).as_bytes());
        }
        ("LIST", None) if argument.is_none() => {
            out.extend_from_slice(b"+OK\r\n");
            for (i, (_, body)) in messages.iter().enumerate() {
                out.extend_from_slice(format!("{} {}\r\n", i + 1, wire(body).len()).as_bytes());
            }
            out.extend_from_slice(b".\r\n");
        }
        ("TOP", Some((_, body))) if words.next() == Some("0") => {
            // The header section and the empty line after it (RFC 1939 §7).
            let whole = wire(body);
            let head = match whole.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => &whole[..end + 4],
                None => &whole[..],
            };
            out.extend_from_slice(b"+OK\r\n");
            out.extend_from_slice(head);
            out.extend_from_slice(b".\r\n");
        }
        ("RETR", Some((_, body))) => {
            out.extend_from_slice(b"+OK\r\n");
            out.extend_from_slice(&wire(body));
            out.extend_from_slice(b".\r\n");
        }
        ("DELE", Some(_)) | ("NOOP", _) | ("RSET", _) => out.extend_from_slice(b"+OK\r\n"),
        ("QUIT", _) => out.extend_from_slice(b"+OK bye\r\n"),
        _ => out.extend_from_slice(b"-ERR no such thing\r\n"),
    }
    out
}
