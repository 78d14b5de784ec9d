//! A scripted POP3 server on a loopback port, for what a real server will not do:
//! injected bytes, cut connections, duplicate unique-ids, silence; and for what no
//! server in the interop matrix does, SCRAM-SHA-256-PLUS with tls-server-end-point. It serves the
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
    /// Verify an `AUTH SCRAM-SHA-256-PLUS` login as a server does (RFC 5802 §5-7,
    /// RFC 7677): the channel binding must be tls-server-end-point over the
    /// certificate of the `Tls` step before (RFC 5929 §4.1), the proof that of
    /// this password. Success sends v= and +OK, and the script goes on; a wrong
    /// binding gets `e=channel-bindings-dont-match`, any other fault -ERR, and
    /// the script ends. The outcome is logged as a line "scram-plus: ...".
    ScramPlus(&'static str),
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
        plain_config(self.port, &home.maildir(), extra)
    }

    /// The same for a script speaking implicit TLS, trusting the test CA.
    pub fn tls_config(&self, home: &super::Home, extra: &str) -> String {
        self.config(home, extra)
            .replace("tls = \"none\"", "tls = \"implicit\"")
            .replace(
                "auth = \"user\"",
                &format!(
                    "auth = \"user\"\ntls_ca_file = \"{}\"",
                    super::dovecot::certs().ca.display()
                ),
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
    // The DER certificate the TLS step served, for channel binding.
    let mut certificate = Vec::new();
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
            Step::ScramPlus(password) => {
                let outcome = scram_plus(&mut conn, log, password, &certificate);
                let ok = outcome.is_ok();
                log.lock()
                    .unwrap()
                    .push(format!("scram-plus: {}", outcome.unwrap_or_else(|e| e)));
                if !ok {
                    return;
                }
            }
            Step::Sleep(d) => std::thread::sleep(d),
            Step::Close => return,
            Step::Tls(cert, key) => {
                let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else {
                    return;
                };
                let identity = native_tls::Identity::from_pkcs8(
                    &std::fs::read(&cert).unwrap(),
                    &std::fs::read(key).unwrap(),
                )
                .unwrap();
                certificate = pem_der(&std::fs::read_to_string(&cert).unwrap());
                let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
                match acceptor.accept(tcp) {
                    Ok(tls) => conn = Conn::Tls(Box::new(tls)),
                    Err(_) => return,
                }
            }
        }
    }
}

/// The DER of the first certificate in a PEM text.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// The server side of SCRAM-SHA-256-PLUS (RFC 5802 §5, §7), with a salt and a
/// nonce of its own. The certificate is the test CA's, signed with ECDSA and
/// SHA-256, so its tls-server-end-point data is its SHA-256 (RFC 5929 §4.1).
fn scram_plus(
    conn: &mut Conn,
    log: &Mutex<Vec<String>>,
    password: &str,
    certificate: &[u8],
) -> Result<&'static str, &'static str> {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let refuse = |conn: &mut Conn, why: &'static str| {
        conn.write(b"-ERR [AUTH] authentication failed\r\n");
        Err(why)
    };
    let line = conn.read_line(log).ok_or("no AUTH")?;
    let Some(rest) = line.strip_prefix("AUTH SCRAM-SHA-256-PLUS") else {
        return refuse(conn, "not AUTH SCRAM-SHA-256-PLUS");
    };
    let initial = match rest.trim() {
        "" => {
            conn.write(b"+ \r\n");
            conn.read_line(log).ok_or("no initial response")?
        }
        ir => ir.to_string(),
    };
    let decode =
        |b64: &str| String::from_utf8(B64.decode(b64).unwrap_or_default()).unwrap_or_default();
    let client_first = decode(&initial);
    let header = "p=tls-server-end-point,,";
    let Some(bare) = client_first.strip_prefix(header) else {
        return refuse(conn, "gs2 header is not p=tls-server-end-point,,");
    };
    let Some(client_nonce) = bare.split(',').find_map(|f| f.strip_prefix("r=")) else {
        return refuse(conn, "no client nonce");
    };
    let salt = b"scripted-salt-16";
    let nonce = format!("{client_nonce}scripted-server-nonce");
    let server_first = format!("r={nonce},s={},i=4096", B64.encode(salt));
    conn.write(format!("+ {}\r\n", B64.encode(&server_first)).as_bytes());
    let client_final = decode(&conn.read_line(log).ok_or("no client-final")?);
    let Some((without_proof, proof)) = client_final.rsplit_once(",p=") else {
        return refuse(conn, "no proof");
    };
    // RFC 5802 §7: c= is the GS2 header and the binding data, in base64.
    let mut binding = header.as_bytes().to_vec();
    binding.extend_from_slice(&Sha256::digest(certificate));
    if without_proof != format!("c={},r={nonce}", B64.encode(&binding)) {
        if without_proof.starts_with(&format!("c={}", B64.encode(&binding))) {
            return refuse(conn, "wrong nonce");
        }
        conn.write(format!("+ {}\r\n", B64.encode("e=channel-bindings-dont-match")).as_bytes());
        conn.read_line(log);
        conn.write(b"-ERR [AUTH] channel bindings don't match\r\n");
        return Err("channel bindings don't match");
    }
    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, 4096);
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key")).to_vec();
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof = B64.decode(proof).unwrap_or_default();
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    if proof.len() != 32 || Sha256::digest(&client_key).to_vec() != stored_key {
        return refuse(conn, "wrong proof");
    }
    let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
    let verifier = format!("v={}", B64.encode(server_signature));
    conn.write(format!("+ {}\r\n", B64.encode(verifier)).as_bytes());
    conn.read_line(log);
    conn.write(b"+OK logged in, bound to this TLS session\r\n");
    Ok("ok")
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

/// One message of a [`Mailbox`]: its serial (unique in the model, never on the
/// wire), its unique-id as the server lists it, and its content in LF form.
#[derive(Debug, Clone)]
pub struct Message {
    pub serial: usize,
    pub uid: String,
    pub content: Vec<u8>,
}

/// A fault the mailbox server commits in one session. Message indexes count from 0
/// in the session's listing; command indexes count every line the client sends,
/// from its first.
#[derive(Debug, Clone)]
pub enum Fault {
    /// UIDL also lists a message that does not exist.
    UidlGhost,
    /// UIDL leaves this message out.
    UidlMissing(usize),
    /// LIST (and LIST n) report this message's size off by this many octets.
    ListSize(usize, i64),
    /// RETR of this message sends this content instead (extra, missing, garbage or
    /// overlong lines).
    Body(usize, Vec<u8>),
    /// Before the reply to RETR of this message, one reply nobody asked for.
    ExtraReply(usize),
    /// RETR of this message sends half its body, then closes.
    CloseInBody(usize),
    /// Garbage bytes instead of the reply to this command.
    Garbage(usize, Vec<u8>),
    /// A reply whose status line is this long instead of the reply to this command.
    LongLine(usize, usize),
    /// This listing ("CAPA", "UIDL" or "LIST") never ends.
    Endless(&'static str),
    /// Close without a word on reading this command.
    CloseAt(usize),
    /// From this command on, read everything and answer nothing.
    SilentAt(usize),
    /// -ERR to this command ("RETR", "DELE", "UIDL", "TOP") for this message.
    Refuse(&'static str, usize),
}

/// What a [`Mailbox`] server holds and has done, across its sessions.
#[derive(Debug, Default)]
pub struct MailboxModel {
    /// On the server now, in listing order.
    pub messages: Vec<Message>,
    /// Removed by a QUIT after DELE (RFC 1939 §6), in the order committed.
    pub deleted: Vec<Message>,
    /// Every RETR reply sent in full: (serial, content as a correct client decodes it).
    pub sent: Vec<(usize, Vec<u8>)>,
    /// The faults of the next session; taken when it starts.
    pub faults: Vec<Fault>,
    /// Whether CAPA advertises PIPELINING in the next session.
    pub pipelining: bool,
    /// Connections served so far.
    pub sessions: usize,
    /// Every command line clients sent, across sessions.
    pub commands: Vec<String>,
}

/// A POP3 server over a [`MailboxModel`]: it answers whatever the client sends, in
/// any order, commits DELEs only at QUIT, and commits the session's faults. One
/// connection at a time; it stops when dropped.
pub struct Mailbox {
    pub port: u16,
    pub model: Arc<Mutex<MailboxModel>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Mailbox {
    pub fn start(messages: Vec<Message>) -> Mailbox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let model = Arc::new(Mutex::new(MailboxModel {
            messages,
            pipelining: true,
            ..MailboxModel::default()
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, s) = (model.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                serve_mailbox(stream, &m);
            }
        });
        Mailbox {
            port,
            model,
            stop,
            thread: Some(thread),
        }
    }

    pub fn config(&self, maildir: &std::path::Path, extra: &str) -> String {
        plain_config(self.port, maildir, extra)
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The header part of a message and the blank line after it (for TOP n 0).
fn headers(content: &[u8]) -> &[u8] {
    match content.windows(2).position(|w| w == b"\n\n") {
        Some(i) => &content[..i + 2],
        None => content,
    }
}

fn serve_mailbox(stream: TcpStream, model: &Mutex<MailboxModel>) {
    let (listing, faults, pipelining) = {
        let mut m = model.lock().unwrap();
        m.sessions += 1;
        (
            m.messages.clone(),
            std::mem::take(&mut m.faults),
            m.pipelining,
        )
    };
    let log = Mutex::new(Vec::new());
    let mut conn = Conn::Plain(stream);
    let mut pending: Vec<usize> = Vec::new();
    let has = |f: &dyn Fn(&Fault) -> bool| faults.iter().any(f);
    if !conn.write(b"+OK mailbox ready\r\n") {
        return;
    }
    let mut index = 0;
    while let Some(line) = conn.read_line(&log) {
        model
            .lock()
            .unwrap()
            .commands
            .push(line.trim_end().to_string());
        let this = index;
        index += 1;
        if has(&|f| matches!(f, Fault::CloseAt(n) if *n == this)) {
            return;
        }
        if has(&|f| matches!(f, Fault::SilentAt(n) if *n <= this)) {
            // Read and answer nothing until the client goes away.
            while conn.read_line(&log).is_some() {}
            return;
        }
        if let Some(Fault::Garbage(_, bytes)) = faults
            .iter()
            .find(|f| matches!(f, Fault::Garbage(n, _) if *n == this))
        {
            if !conn.write(bytes) {
                return;
            }
            continue;
        }
        if let Some(Fault::LongLine(_, len)) = faults
            .iter()
            .find(|f| matches!(f, Fault::LongLine(n, _) if *n == this))
        {
            let mut reply = b"+OK ".to_vec();
            reply.resize(*len, b'x');
            reply.extend_from_slice(b"\r\n");
            if !conn.write(&reply) {
                return;
            }
            continue;
        }
        let mut words = line.split(' ');
        let command = words.next().unwrap_or("").to_ascii_uppercase();
        let argument = words.next();
        let num: usize = argument.and_then(|n| n.parse().ok()).unwrap_or(0);
        // The message a numbered command names, unless absent or marked deleted.
        let target = num
            .checked_sub(1)
            .filter(|i| *i < listing.len() && !pending.contains(i));
        let refused = |name: &str, i: usize| {
            has(&|f| matches!(f, Fault::Refuse(c, m) if *c == name && *m == i))
        };
        let size_of = |i: usize| {
            let real = wire(&listing[i].content).len() as i64;
            let delta = faults
                .iter()
                .find_map(|f| match f {
                    Fault::ListSize(m, d) if *m == i => Some(*d),
                    _ => None,
                })
                .unwrap_or(0);
            (real + delta).max(0)
        };
        let endless = |name: &str| has(&|f| matches!(f, Fault::Endless(c) if *c == name));
        let mut out = Vec::new();
        match command.as_str() {
            "CAPA" if endless("CAPA") => {
                endless_listing(&mut conn, |n| format!("X-CAPABILITY-{n}\r\n"));
                return;
            }
            "CAPA" => {
                out.extend_from_slice(b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n");
                if pipelining {
                    out.extend_from_slice(b"PIPELINING\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            "USER" | "PASS" | "NOOP" => out.extend_from_slice(b"+OK\r\n"),
            "RSET" => {
                pending.clear();
                out.extend_from_slice(b"+OK\r\n");
            }
            "STAT" => {
                let live: Vec<usize> = (0..listing.len())
                    .filter(|i| !pending.contains(i))
                    .collect();
                let octets: i64 = live.iter().map(|&i| size_of(i)).sum();
                out.extend_from_slice(format!("+OK {} {octets}\r\n", live.len()).as_bytes());
            }
            "UIDL" if endless("UIDL") && argument.is_none() => {
                endless_listing(&mut conn, |n| format!("{n} endless-{n}\r\n"));
                return;
            }
            "LIST" if endless("LIST") && argument.is_none() => {
                endless_listing(&mut conn, |n| format!("{n} 100\r\n"));
                return;
            }
            "UIDL" | "LIST" if argument.is_none() => {
                if command == "UIDL" && refused("UIDL", 0) {
                    out.extend_from_slice(b"-ERR no unique-ids today\r\n");
                } else {
                    out.extend_from_slice(b"+OK\r\n");
                    for (i, m) in listing.iter().enumerate() {
                        if pending.contains(&i) {
                            continue;
                        }
                        if command == "UIDL" {
                            if !has(&|f| matches!(f, Fault::UidlMissing(x) if *x == i)) {
                                out.extend_from_slice(
                                    format!("{} {}\r\n", i + 1, m.uid).as_bytes(),
                                );
                            }
                        } else {
                            out.extend_from_slice(
                                format!("{} {}\r\n", i + 1, size_of(i)).as_bytes(),
                            );
                        }
                    }
                    if has(&|f| matches!(f, Fault::UidlGhost)) {
                        let ghost = listing.len() + 1;
                        out.extend_from_slice(format!("{ghost} ghost-{ghost}\r\n").as_bytes());
                    }
                    out.extend_from_slice(b".\r\n");
                }
            }
            "UIDL" | "LIST" => match target {
                Some(i) if command == "UIDL" => {
                    out.extend_from_slice(format!("+OK {num} {}\r\n", listing[i].uid).as_bytes())
                }
                Some(i) => {
                    out.extend_from_slice(format!("+OK {num} {}\r\n", size_of(i)).as_bytes())
                }
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "TOP" => match target {
                Some(i) if !refused("TOP", i) => {
                    out.extend_from_slice(b"+OK\r\n");
                    out.extend_from_slice(&wire(headers(&listing[i].content)));
                    out.extend_from_slice(b".\r\n");
                }
                _ => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "RETR" => match target {
                Some(i) if !refused("RETR", i) => {
                    if has(&|f| matches!(f, Fault::ExtraReply(x) if *x == i)) {
                        out.extend_from_slice(b"+OK\r\nX-Injected: yes\r\n\r\n.\r\n");
                    }
                    let content = faults
                        .iter()
                        .find_map(|f| match f {
                            Fault::Body(x, c) if *x == i => Some(c.clone()),
                            _ => None,
                        })
                        .unwrap_or_else(|| listing[i].content.clone());
                    out.extend_from_slice(b"+OK\r\n");
                    let body = wire(&content);
                    if has(&|f| matches!(f, Fault::CloseInBody(x) if *x == i)) {
                        out.extend_from_slice(&body[..body.len() / 2]);
                        conn.write(&out);
                        return;
                    }
                    out.extend_from_slice(&body);
                    out.extend_from_slice(b".\r\n");
                    if !conn.write(&out) {
                        return;
                    }
                    model
                        .lock()
                        .unwrap()
                        .sent
                        .push((listing[i].serial, content));
                    continue;
                }
                Some(_) => out.extend_from_slice(b"-ERR cannot read that message now\r\n"),
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "DELE" => match target {
                Some(i) if !refused("DELE", i) => {
                    pending.push(i);
                    out.extend_from_slice(b"+OK marked\r\n");
                }
                Some(_) => out.extend_from_slice(b"-ERR [SYS/PERM] cannot delete that\r\n"),
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "QUIT" => {
                // RFC 1939 §6: the UPDATE state removes what was marked, whether or
                // not the client reads the reply.
                let mut m = model.lock().unwrap();
                pending.sort_unstable();
                for &i in pending.iter().rev() {
                    let serial = listing[i].serial;
                    if let Some(pos) = m.messages.iter().position(|x| x.serial == serial) {
                        let gone = m.messages.remove(pos);
                        m.deleted.push(gone);
                    }
                }
                drop(m);
                conn.write(b"+OK bye\r\n");
                return;
            }
            _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        if !conn.write(&out) {
            return;
        }
    }
}

/// Writes well-formed listing lines until the client stops reading.
fn endless_listing(conn: &mut Conn, line: impl Fn(u64) -> String) {
    if !conn.write(b"+OK\r\n") {
        return;
    }
    let mut n = 1u64;
    loop {
        let mut chunk = String::new();
        for _ in 0..256 {
            chunk.push_str(&line(n));
            n += 1;
        }
        if !conn.write(chunk.as_bytes()) {
            return;
        }
    }
}

/// A config for a scripted server on `port` over plain TCP with USER/PASS.
fn plain_config(port: u16, maildir: &std::path::Path, extra: &str) -> String {
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
        maildir = maildir.display(),
    )
}
