//! POP3 commands as small values that render their own wire form (RFC 1939 §5-7,
//! RFC 2449 §5, RFC 2595 §4), and a redacted form for traces.

use super::Error;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Command<'a> {
    Capa,
    Stls,
    /// RFC 6856 §2: lets the server send UTF-8 headers as they are.
    Utf8,
    User(&'a str),
    Pass(&'a str),
    Apop(&'a str, &'a str),
    /// AUTH with an optional base64 initial response (RFC 5034 §4).
    Auth(&'a str, Option<&'a str>),
    /// A base64 response to a SASL challenge, or "*" to cancel.
    SaslResponse(&'a str),
    Stat,
    List,
    /// LIST with a message number: that message's size only.
    ListOne(u32),
    Uidl,
    /// UIDL with a message number: that message's unique-id only.
    UidlOne(u32),
    Retr(u32),
    Top(u32, u32),
    Dele(u32),
    Quit,
}

impl Command<'_> {
    /// The command keyword, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Utf8 => "UTF8",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop(..) => "APOP",
            Command::Auth(..) => "AUTH",
            Command::SaslResponse(_) => "AUTH",
            Command::Stat => "STAT",
            Command::List | Command::ListOne(_) => "LIST",
            Command::Uidl | Command::UidlOne(_) => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Quit => "QUIT",
        }
    }

    /// Appends the command and its CRLF to `out`. Arguments holding CR, LF or NUL are
    /// refused: they would let a user name smuggle a second command onto the wire.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let line = match *self {
            Command::User(user) => format!("USER {}", checked(user, "user name")?),
            Command::Pass(pass) => format!("PASS {}", checked(pass, "password")?),
            Command::Apop(user, digest) => format!("APOP {} {digest}", checked(user, "user name")?),
            Command::Auth(mechanism, None) => format!("AUTH {mechanism}"),
            Command::Auth(mechanism, Some(initial)) => format!("AUTH {mechanism} {initial}"),
            Command::SaslResponse(response) => response.to_string(),
            Command::ListOne(n) => format!("LIST {n}"),
            Command::UidlOne(n) => format!("UIDL {n}"),
            Command::Retr(n) => format!("RETR {n}"),
            Command::Top(n, lines) => format!("TOP {n} {lines}"),
            Command::Dele(n) => format!("DELE {n}"),
            other => other.name().to_string(),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The command as it may appear in a trace: secrets are never shown.
    pub(crate) fn redacted(&self) -> String {
        match *self {
            Command::Pass(_) => "PASS ********".into(),
            Command::Apop(user, _) => format!("APOP {user} ********"),
            Command::Auth(mechanism, None) => format!("AUTH {mechanism}"),
            Command::Auth(mechanism, Some(_)) => format!("AUTH {mechanism} ********"),
            Command::SaslResponse("*") => "*".into(),
            Command::SaslResponse(_) => "********".into(),
            Command::User(user) => format!("USER {user}"),
            Command::ListOne(n) => format!("LIST {n}"),
            Command::UidlOne(n) => format!("UIDL {n}"),
            Command::Retr(n) => format!("RETR {n}"),
            Command::Top(n, l) => format!("TOP {n} {l}"),
            Command::Dele(n) => format!("DELE {n}"),
            other => other.name().into(),
        }
    }
}

fn checked<'a>(arg: &'a str, what: &str) -> Result<&'a str, Error> {
    if arg.is_empty() || arg.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Error::Refused(format!(
            "the {what} is empty or holds a line break, which POP3 cannot carry"
        )));
    }
    Ok(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let mut out = Vec::new();
        Command::Retr(7).encode(&mut out).unwrap();
        Command::User("bob").encode(&mut out).unwrap();
        Command::Quit.encode(&mut out).unwrap();
        assert_eq!(out, b"RETR 7\r\nUSER bob\r\nQUIT\r\n");
    }

    #[test]
    fn injection_is_refused() {
        let mut out = Vec::new();
        assert!(Command::User("bob\r\nDELE 1").encode(&mut out).is_err());
        assert!(Command::Pass("x\ny").encode(&mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(Command::Pass("hunter2").redacted(), "PASS ********");
        assert!(!Command::Apop("u", "abcdef").redacted().contains("abcdef"));
    }
}
