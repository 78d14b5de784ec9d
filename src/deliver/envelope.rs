//! The envelope sender of a message, read from its headers: Return-Path, else From,
//! else MAILER-DAEMON. Used for the mbox From_ line, an MDA's `%F` and the MAIL
//! FROM of LMTP and SMTP.

use std::io::{self, Read};

/// How much of a message we hold in memory to find its headers. Longer header blocks
/// are rare and still delivered; the sender then comes from what was read.
const MAX_HEADER: usize = 256 * 1024;

/// Reads the start of `message` up to and including the blank line that ends the
/// headers (or the end, or the bound). The caller passes these bytes on before the
/// rest of the stream.
pub(crate) fn read_head(message: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 8192];
    while head.len() < MAX_HEADER && !ends_headers(&head) {
        let n = match message.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

fn ends_headers(head: &[u8]) -> bool {
    head.starts_with(b"\n") || memchr::memmem::find(head, b"\n\n").is_some()
}

/// The envelope sender, as a single token safe for a From_ line or an argument.
pub(crate) fn sender(head: &[u8]) -> String {
    address(head).unwrap_or_else(|| DAEMON.into())
}

/// The envelope sender's address, if the headers name one: for SMTP's MAIL FROM,
/// which has the null path for none.
pub(crate) fn address(head: &[u8]) -> Option<String> {
    let (headers, _) = mailparse::parse_headers(head).ok()?;
    for header in &headers {
        if header.get_key_ref().eq_ignore_ascii_case("Return-Path") {
            let value = header.get_value();
            let address = value.trim().trim_start_matches('<').trim_end_matches('>');
            if let Some(address) = clean(address) {
                return Some(address);
            }
        }
    }
    for header in &headers {
        if header.get_key_ref().eq_ignore_ascii_case("From") {
            let Ok(list) = mailparse::addrparse_header(header) else {
                continue;
            };
            let first = list.iter().find_map(|addr| match addr {
                mailparse::MailAddr::Single(single) => Some(single.addr.clone()),
                mailparse::MailAddr::Group(group) => group.addrs.first().map(|s| s.addr.clone()),
            });
            if let Some(address) = first.as_deref().and_then(clean) {
                return Some(address);
            }
        }
    }
    None
}

const DAEMON: &str = "MAILER-DAEMON";

/// Keeps an address only if it is one printable token. A leading "-" is refused so
/// that `%F` can never be taken for an option by the MDA (the argument injection of
/// CVE-2016-10033).
fn clean(address: &str) -> Option<String> {
    let ok = !address.is_empty()
        && !address.starts_with('-')
        && address.bytes().all(|b| (0x21..=0x7e).contains(&b));
    ok.then(|| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_path_then_from_then_daemon() {
        assert_eq!(sender(b"Return-Path: <a@x>\nFrom: b@y\n\n"), "a@x");
        assert_eq!(sender(b"Return-Path: <>\nFrom: \"B\" <b@y>\n\n"), "b@y");
        assert_eq!(sender(b"From: Bob <b@y>, c@z\n\n"), "b@y");
        assert_eq!(sender(b"Subject: none\n\n"), "MAILER-DAEMON");
        assert_eq!(sender(b""), "MAILER-DAEMON");
    }

    #[test]
    fn hostile_senders_are_refused() {
        assert_eq!(
            sender(b"Return-Path: <-oQ/tmp/x@evil>\n\n"),
            "MAILER-DAEMON"
        );
        assert_eq!(sender(b"From: \"x\" <a b@c>\n\n"), "MAILER-DAEMON");
    }

    #[test]
    fn head_stops_at_the_blank_line_or_bound() {
        let message = b"A: 1\nB: 2\n\nbody\n".repeat(10_000);
        let head = read_head(&mut &message[..]).unwrap();
        assert!(head.len() < 20_000 && ends_headers(&head));
        let endless = vec![b'x'; 1_000_000];
        let head = read_head(&mut &endless[..]).unwrap();
        assert!(head.len() >= MAX_HEADER && head.len() < MAX_HEADER + 8192);
    }
}
