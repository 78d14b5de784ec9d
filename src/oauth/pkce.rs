//! Proof Key for Code Exchange (RFC 7636) with the S256 method only: a fresh
//! random verifier per login, and its challenge for the authorization request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The RFC 7636 §4.1 unreserved characters.
const UNRESERVED: &[u8; 66] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// The verifier's length: 43 to 128 (RFC 7636 §4.1); 64 characters of 66 carry
/// some 386 bits, above the 256 §7.1 asks for.
const VERIFIER_LEN: usize = 64;

/// A `code_verifier` (RFC 7636 §4.1). It stays secret until the token request.
#[derive(Debug)]
pub(crate) struct Verifier(Secret);

impl Verifier {
    /// A new random verifier, from the system's random source.
    pub(crate) fn new() -> Result<Verifier, getrandom::Error> {
        let mut bytes = [0u8; VERIFIER_LEN];
        getrandom::fill(&mut bytes)?;
        // Rejection sampling keeps the characters uniform: 66 does not divide 256.
        let mut out = String::with_capacity(VERIFIER_LEN);
        let limit = 256 - 256 % UNRESERVED.len();
        let mut pool = bytes.to_vec();
        while out.len() < VERIFIER_LEN {
            match pool.pop() {
                Some(b) if usize::from(b) < limit => {
                    out.push(char::from(UNRESERVED[usize::from(b) % UNRESERVED.len()]));
                }
                Some(_) => {}
                None => {
                    getrandom::fill(&mut bytes)?;
                    pool = bytes.to_vec();
                }
            }
        }
        Ok(Verifier(Secret::new(out)))
    }

    /// The verifier, for the token request (RFC 7636 §4.5).
    pub(crate) fn expose(&self) -> &str {
        self.0.expose()
    }

    /// `code_challenge` with `code_challenge_method=S256` (RFC 7636 §4.2).
    pub(crate) fn challenge(&self) -> String {
        challenge(self.expose())
    }
}

/// BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), unpadded (RFC 7636 §4.2).
pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_unreserved_fresh_and_hidden() {
        let a = Verifier::new().unwrap();
        let b = Verifier::new().unwrap();
        assert_eq!(a.expose().len(), VERIFIER_LEN);
        assert!((43..=128).contains(&a.expose().len()));
        assert!(a.expose().bytes().all(|c| UNRESERVED.contains(&c)));
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(a.challenge().len(), 43);
    }
}
