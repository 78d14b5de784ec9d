//! Server text made safe to show: the one escaping of what a server chose to send
//! (replies, capability lines, certificate names) before it reaches a terminal or
//! a log.

/// How much server text we repeat in an error message.
const MAX_SHOWN: usize = 200;

/// Makes server text safe to print: printable ASCII passes, everything else (terminal
/// escape sequences, control characters, 8-bit bytes) becomes `\xNN`, and the result is
/// cut at a fixed length. A hostile server must not be able to drive the user's terminal
/// or forge lines in a log.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if out.len() >= MAX_SHOWN {
            out.push_str("...");
            break;
        }
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_cut() {
        assert_eq!(escape(b"hi\x1b[31m\xff\\"), "hi\\x1b[31m\\xff\\\\");
        assert!(escape(&[b'a'; 1000]).len() < 210);
    }
}
