//! SASL mechanisms for the POP3 AUTH command (RFC 5034): PLAIN (RFC 4616), LOGIN,
//! CRAM-MD5 (RFC 2195) and its SHA-1 and SHA-256 variants, SCRAM-SHA-1, -224, -256,
//! -384 and -512 (RFC 5802, RFC 7677), XOAUTH2 and OAUTHBEARER (RFC 7628). DIGEST-MD5
//! (historic, RFC 6331) and NTLM are deliberately left out. Each is a small state machine over byte strings; the
//! client does the base64 and the wire.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use super::Error;

/// A SASL mechanism popfetch can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    Plain,
    Login,
    CramMd5,
    CramSha1,
    CramSha256,
    ScramSha1,
    ScramSha224,
    ScramSha256,
    ScramSha384,
    ScramSha512,
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    /// The name used in CAPA's SASL line and in AUTH.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::CramSha1 => "CRAM-SHA1",
            Mechanism::CramSha256 => "CRAM-SHA256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha224 => "SCRAM-SHA-224",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha384 => "SCRAM-SHA-384",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Whether the secret crosses the wire in a form an eavesdropper can reuse, so
    /// the mechanism must only run inside TLS unless explicitly chosen.
    /// The hash a SCRAM mechanism runs on.
    fn scram_hash(self) -> Option<Hash> {
        Some(match self {
            Mechanism::ScramSha1 => Hash::Sha1,
            Mechanism::ScramSha224 => Hash::Sha224,
            Mechanism::ScramSha256 => Hash::Sha256,
            Mechanism::ScramSha384 => Hash::Sha384,
            Mechanism::ScramSha512 => Hash::Sha512,
            _ => return None,
        })
    }
}

/// Where the server is, for OAUTHBEARER's host and port fields.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub host: String,
    pub port: u16,
}

/// One run of a mechanism.
pub(crate) struct Exchange {
    mechanism: Mechanism,
    user: String,
    secret: String,
    peer: Peer,
    step: u8,
    scram: Option<ScramState>,
    /// For SCRAM: the server proved it knows the password.
    server_verified: bool,
}

struct ScramState {
    client_nonce: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

impl Exchange {
    pub(crate) fn new(mechanism: Mechanism, user: &str, secret: &str, peer: Peer) -> Exchange {
        Exchange {
            mechanism,
            user: user.to_string(),
            secret: secret.to_string(),
            peer,
            step: 0,
            scram: None,
            server_verified: false,
        }
    }

    pub(crate) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The response sent with the AUTH command itself, where the mechanism has one.
    pub(crate) fn initial_response(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(match self.mechanism {
            Mechanism::Plain => {
                self.step = 1;
                Some(format!("\0{}\0{}", self.user, self.secret).into_bytes())
            }
            Mechanism::XOAuth2 => {
                self.step = 1;
                Some(
                    format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.secret)
                        .into_bytes(),
                )
            }
            Mechanism::OAuthBearer => {
                self.step = 1;
                Some(
                    format!(
                        "n,a={},\x01host={}\x01port={}\x01auth=Bearer {}\x01\x01",
                        gs2_name(&self.user),
                        self.peer.host,
                        self.peer.port,
                        self.secret
                    )
                    .into_bytes(),
                )
            }
            m if m.scram_hash().is_some() => {
                let client_nonce = nonce()?;
                let bare = format!("n={},r={client_nonce}", scram_name(&self.user));
                let first = format!("n,,{bare}");
                self.scram = Some(ScramState {
                    client_nonce,
                    client_first_bare: bare,
                    server_signature: Vec::new(),
                });
                self.step = 1;
                Some(first.into_bytes())
            }
            _ => None,
        })
    }

    /// Answers one server challenge (already base64-decoded).
    pub(crate) fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        let step = self.step;
        self.step += 1;
        match (self.mechanism, step) {
            // LOGIN asks for the user name, then the password.
            (Mechanism::Login, 0) => Ok(self.user.clone().into_bytes()),
            (Mechanism::Login, 1) => Ok(self.secret.clone().into_bytes()),
            (Mechanism::CramMd5, 0) => Ok(cram(
                &self.user,
                mac::<Hmac<md5::Md5>>(self.secret.as_bytes(), challenge),
            )),
            (Mechanism::CramSha1, 0) => Ok(cram(
                &self.user,
                Hash::Sha1.hmac(self.secret.as_bytes(), challenge),
            )),
            (Mechanism::CramSha256, 0) => Ok(cram(
                &self.user,
                Hash::Sha256.hmac(self.secret.as_bytes(), challenge),
            )),
            (m, 1) if m.scram_hash().is_some() => {
                self.scram_final(m.scram_hash().expect("a SCRAM mechanism"), challenge)
            }
            (m, 2) if m.scram_hash().is_some() => {
                self.scram_verify(challenge)?;
                Ok(Vec::new())
            }
            // After a failed OAuth token the server explains itself in a challenge;
            // the answer is an empty response (XOAUTH2) or a lone ^A (RFC 7628 §3.2.3),
            // after which the server says -ERR.
            (Mechanism::XOAuth2, _) => Ok(Vec::new()),
            (Mechanism::OAuthBearer, _) => Ok(vec![1]),
            _ => Err(Error::Protocol(format!(
                "the server sent more {} challenges than the mechanism has",
                self.mechanism.name()
            ))),
        }
    }

    /// Called on +OK: SCRAM must have seen the server's proof (mutual
    /// authentication); a server that skips it might not know the password at all.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        let scram = matches!(
            self.mechanism,
            Mechanism::ScramSha1 | Mechanism::ScramSha256
        );
        if scram && !self.server_verified {
            return Err(Error::Protocol(
                "the server accepted the SCRAM login without proving it knows the password".into(),
            ));
        }
        Ok(())
    }

    fn scram_final(&mut self, hash: Hash, server_first: &[u8]) -> Result<Vec<u8>, Error> {
        let bad = |what: &str| Error::Protocol(format!("malformed SCRAM server-first ({what})"));
        let server_first = std::str::from_utf8(server_first).map_err(|_| bad("not UTF-8"))?;
        let state = self.scram.as_mut().ok_or_else(|| bad("out of order"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for field in server_first.split(',') {
            match field.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(BASE64.decode(v).map_err(|_| bad("salt"))?),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("m", _)) => return Err(bad("unsupported extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| bad("no nonce"))?;
        let salt = salt.ok_or_else(|| bad("no salt"))?;
        let iterations = iterations.ok_or_else(|| bad("no iteration count"))?;
        if !nonce.starts_with(&state.client_nonce) || nonce.len() == state.client_nonce.len() {
            return Err(bad("the nonce does not extend ours"));
        }
        // RFC 7677 §4: at least 4096 iterations. Fewer would let a man in the middle
        // make the captured proof cheap to crack; far more would stall us.
        if !(4096..=1_000_000).contains(&iterations) {
            return Err(Error::Protocol(format!(
                "the server asked for {iterations} SCRAM iterations; refusing (allowed: 4096 to 1000000)"
            )));
        }
        let salted = hash.pbkdf2(self.secret.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", state.client_first_bare);
        let signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hash.hmac(&salted, b"Server Key");
        state.server_signature = hash.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    fn scram_verify(&mut self, server_final: &[u8]) -> Result<(), Error> {
        let state = self.scram.as_ref().expect("server-first came first");
        let text = String::from_utf8_lossy(server_final);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(Error::Auth {
                code: None,
                text: format!("SCRAM: {}", super::response::escape(error.as_bytes())),
            });
        }
        let verifier = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or("")).ok());
        if verifier.as_deref() != Some(&state.server_signature[..]) {
            return Err(Error::Protocol(
                "the server's SCRAM signature is wrong: it does not know the password".into(),
            ));
        }
        self.server_verified = true;
        Ok(())
    }
}

/// The hash functions SCRAM and the CRAM variants are used with.
#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => mac::<Hmac<Sha1>>(key, data),
            Hash::Sha224 => mac::<Hmac<Sha224>>(key, data),
            Hash::Sha256 => mac::<Hmac<Sha256>>(key, data),
            Hash::Sha384 => mac::<Hmac<Sha384>>(key, data),
            Hash::Sha512 => mac::<Hmac<Sha512>>(key, data),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha224 => Sha224::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802 §2.2's Hi(): PBKDF2 with this hash's HMAC.
    fn pbkdf2(self, password: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
        use pbkdf2::pbkdf2_hmac_array as hi;
        match self {
            Hash::Sha1 => hi::<Sha1, 20>(password, salt, rounds).to_vec(),
            Hash::Sha224 => hi::<Sha224, 28>(password, salt, rounds).to_vec(),
            Hash::Sha256 => hi::<Sha256, 32>(password, salt, rounds).to_vec(),
            Hash::Sha384 => hi::<Sha384, 48>(password, salt, rounds).to_vec(),
            Hash::Sha512 => hi::<Sha512, 64>(password, salt, rounds).to_vec(),
        }
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 2195: the user name, a space, and the hex HMAC of the challenge.
fn cram(user: &str, digest: Vec<u8>) -> Vec<u8> {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{user} {hex}").into_bytes()
}

/// RFC 5802 §5.1: "=" and "," in a user name are escaped.
fn scram_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// RFC 5801 §4: the same escaping for the GS2 authzid.
fn gs2_name(user: &str) -> String {
    scram_name(user)
}

fn nonce() -> Result<String, Error> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Refused(format!("no randomness for a SCRAM nonce: {e}")))?;
    Ok(BASE64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            host: "mail.example".into(),
            port: 995,
        }
    }

    #[test]
    fn plain_and_oauth_initial_responses() {
        let mut e = Exchange::new(Mechanism::Plain, "tim", "tanstaaftanstaaf", peer());
        assert_eq!(
            e.initial_response().unwrap().unwrap(),
            b"\0tim\0tanstaaftanstaaf"
        );
        let mut e = Exchange::new(Mechanism::XOAuth2, "u@x", "tok", peer());
        assert_eq!(
            e.initial_response().unwrap().unwrap(),
            b"user=u@x\x01auth=Bearer tok\x01\x01"
        );
        let mut e = Exchange::new(Mechanism::OAuthBearer, "u@x", "tok", peer());
        assert_eq!(
            e.initial_response().unwrap().unwrap(),
            b"n,a=u@x,\x01host=mail.example\x01port=995\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(e.respond(b"{\"status\":\"invalid_token\"}").unwrap(), [1]);
    }

    #[test]
    fn cram_md5_matches_rfc_2195() {
        let mut e = Exchange::new(Mechanism::CramMd5, "tim", "tanstaaftanstaaf", peer());
        assert_eq!(e.initial_response().unwrap(), None);
        let response = e
            .respond(b"<1896.697170952@postoffice.reston.mci.net>")
            .unwrap();
        assert_eq!(response, b"tim b913a602c7eda7a495b4e6e7334d3890");
    }

    #[test]
    fn login_sends_user_then_password() {
        let mut e = Exchange::new(Mechanism::Login, "u", "p", peer());
        assert_eq!(e.initial_response().unwrap(), None);
        assert_eq!(e.respond(b"Username:").unwrap(), b"u");
        assert_eq!(e.respond(b"Password:").unwrap(), b"p");
        assert!(e.respond(b"more?").is_err());
    }

    /// RFC 7677 §3's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let mut e = Exchange::new(Mechanism::ScramSha256, "user", "pencil", peer());
        e.initial_response().unwrap();
        let state = e.scram.as_mut().unwrap();
        state.client_nonce = "rOprNGfwEbeRWgbNEkqO".into();
        state.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = e.respond(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(e.finish().is_err(), "no server proof yet");
        e.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        e.finish().unwrap();
    }

    /// RFC 5802 §5's SCRAM-SHA-1 example.
    #[test]
    fn scram_sha1_matches_rfc_5802() {
        let mut e = Exchange::new(Mechanism::ScramSha1, "user", "pencil", peer());
        e.initial_response().unwrap();
        let state = e.scram.as_mut().unwrap();
        state.client_nonce = "fyko+d2lbbFgONRv9qkxdawL".into();
        state.client_first_bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into();
        let client_final = e
            .respond(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(
            e.respond(b"v=AAAA").is_err(),
            "a wrong server proof is refused"
        );
    }

    #[test]
    fn scram_refuses_weak_iterations_and_foreign_nonces() {
        let mut e = Exchange::new(Mechanism::ScramSha256, "u", "p", peer());
        e.initial_response().unwrap();
        let ours = e.scram.as_ref().unwrap().client_nonce.clone();
        let weak = format!("r={ours}xyz,s=QSXCR+Q6sek8bf92,i=1");
        assert!(e.respond(weak.as_bytes()).is_err());
        let mut e = Exchange::new(Mechanism::ScramSha256, "u", "p", peer());
        e.initial_response().unwrap();
        assert!(e.respond(b"r=other,s=QSXCR+Q6sek8bf92,i=4096").is_err());
    }
}
