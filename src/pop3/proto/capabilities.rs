//! What a server says it can do: the CAPA reply (RFC 2449 §5-6), parsed.

use super::response::escape;

/// CAPA lines at most: real servers send a dozen or two.
pub(crate) const MAX_CAPA_LINES: usize = 256;

/// What the server said it can do (RFC 2449 §6). Empty when CAPA is not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// The server answered CAPA at all.
    pub known: bool,
    pub stls: bool,
    pub pipelining: bool,
    pub uidl: bool,
    pub top: bool,
    pub user: bool,
    pub resp_codes: bool,
    /// RFC 6856: the server can send UTF-8 headers unchanged once asked.
    pub utf8: bool,
    pub sasl: Vec<String>,
    /// LOGIN-DELAY (RFC 2449 §6.5): the fewest seconds the server wants between
    /// logins. A trailing USER says it may differ per user once logged in.
    pub login_delay: Option<u64>,
    /// Every line as the server sent it, escaped, for `probe` to show.
    pub lines: Vec<String>,
}

impl Capabilities {
    /// Whether the SASL line offers a SCRAM -PLUS mechanism: the server binds
    /// logins to the TLS session (RFC 5802 §6), so a SCRAM client that does not
    /// bind must say "n", never "y".
    pub(crate) fn offers_channel_binding(&self) -> bool {
        self.sasl
            .iter()
            .any(|m| m.starts_with("SCRAM-") && m.ends_with("-PLUS"))
    }

    /// The capabilities of a +OK CAPA reply's lines (dot-unstuffed).
    pub(crate) fn parse(lines: &[Vec<u8>]) -> Capabilities {
        let mut caps = Capabilities {
            known: true,
            ..Capabilities::default()
        };
        for line in lines {
            caps.lines.push(escape(line));
            let line = String::from_utf8_lossy(line);
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("STLS") => caps.stls = true,
                Some("PIPELINING") => caps.pipelining = true,
                Some("UIDL") => caps.uidl = true,
                Some("TOP") => caps.top = true,
                Some("USER") => caps.user = true,
                Some("RESP-CODES") => caps.resp_codes = true,
                Some("UTF8") => caps.utf8 = true,
                Some("SASL") => caps.sasl = words.map(str::to_ascii_uppercase).collect(),
                // Only a number is a delay; anything else announces none.
                Some("LOGIN-DELAY") => caps.login_delay = words.next().and_then(|n| n.parse().ok()),
                _ => {}
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_case_blind_and_sasl_lists_mechanisms() {
        let lines: Vec<Vec<u8>> = ["pipelining", "SASL plain SCRAM-SHA-256", "X-UNKNOWN 1"]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect();
        let caps = Capabilities::parse(&lines);
        assert!(caps.known && caps.pipelining && !caps.stls && !caps.uidl);
        assert_eq!(caps.sasl, ["PLAIN", "SCRAM-SHA-256"]);
        assert!(!caps.offers_channel_binding());
        let plus = Capabilities::parse(&[b"SASL SCRAM-SHA-1 scram-sha-1-plus".to_vec()]);
        assert!(plus.offers_channel_binding());
        assert_eq!(caps.lines.len(), 3);
        assert_eq!(caps.login_delay, None);
    }

    #[test]
    fn login_delay_is_read_with_or_without_user() {
        let parse = |line: &str| Capabilities::parse(&[line.as_bytes().to_vec()]).login_delay;
        assert_eq!(parse("LOGIN-DELAY 900"), Some(900));
        assert_eq!(parse("login-delay 300 USER"), Some(300));
        assert_eq!(parse("LOGIN-DELAY"), None);
        assert_eq!(parse("LOGIN-DELAY soon"), None);
        assert_eq!(parse("LOGIN-DELAY -5"), None);
    }
}
