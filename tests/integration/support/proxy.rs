//! A loopback TCP proxy between popfetch and a real server that cuts the connection
//! at a chosen moment: after so many bytes from the server (mid-RETR), or when the
//! client has sent so many lines starting with a given command (mid-DELE).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Cut once the server has sent this many bytes.
    AfterServerBytes(usize),
    /// Cut once the client has sent this many lines starting with the command,
    /// without forwarding the last one.
    AtClientCommand(&'static str, usize),
}

pub struct Proxy {
    pub port: u16,
}

impl Proxy {
    /// Proxies one connection to `127.0.0.1:target`, cutting it as told.
    pub fn start(target: u16, cut: Cut) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            let downstream = {
                let (mut from, mut to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
                thread::spawn(move || {
                    let limit = match cut {
                        Cut::AfterServerBytes(n) => n,
                        Cut::AtClientCommand(..) => usize::MAX,
                    };
                    let mut sent = 0;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        let n = n.min(limit - sent);
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    cut_both(&from, &to);
                })
            };
            let mut lines = BufReader::new(client.try_clone().unwrap());
            let mut to = server.try_clone().unwrap();
            let mut seen = 0;
            loop {
                let mut line = Vec::new();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Cut::AtClientCommand(command, count) = cut {
                    if line.starts_with(command.as_bytes()) {
                        seen += 1;
                        if seen == count {
                            break;
                        }
                    }
                }
                if to.write_all(&line).is_err() {
                    break;
                }
            }
            cut_both(&client, &server);
            let _ = downstream.join();
        });
        Proxy { port }
    }
}

fn cut_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}
