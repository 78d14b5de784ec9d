//! SASL mechanisms for the POP3 AUTH command (RFC 5034): PLAIN (RFC 4616), LOGIN,
//! CRAM-MD5 (RFC 2195) and its SHA-1 and SHA-256 variants, SCRAM-SHA-1, -224, -256,
//! -384 and -512 (RFC 5802, RFC 7677) and their -PLUS variants bound to the TLS
//! session by `tls-server-end-point` (RFC 5929 §4.1), XOAUTH2 and OAUTHBEARER
//! (RFC 7628). DIGEST-MD5 (historic, RFC 6331) and NTLM are deliberately left out.
//! Each is a small state machine over byte strings; the client does the base64 and
//! the wire.

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
    ScramSha1Plus,
    ScramSha224Plus,
    ScramSha256Plus,
    ScramSha384Plus,
    ScramSha512Plus,
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
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha224Plus => "SCRAM-SHA-224-PLUS",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha384Plus => "SCRAM-SHA-384-PLUS",
            Mechanism::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The hash a SCRAM mechanism runs on, with or without -PLUS.
    fn scram_hash(self) -> Option<Hash> {
        Some(match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Hash::Sha1,
            Mechanism::ScramSha224 | Mechanism::ScramSha224Plus => Hash::Sha224,
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Hash::Sha256,
            Mechanism::ScramSha384 | Mechanism::ScramSha384Plus => Hash::Sha384,
            Mechanism::ScramSha512 | Mechanism::ScramSha512Plus => Hash::Sha512,
            _ => return None,
        })
    }

    /// A SCRAM -PLUS mechanism: it binds the login to the TLS session (RFC 5802 §6)
    /// and so can only run inside TLS.
    pub(crate) fn binds_channel(self) -> bool {
        matches!(
            self,
            Mechanism::ScramSha1Plus
                | Mechanism::ScramSha224Plus
                | Mechanism::ScramSha256Plus
                | Mechanism::ScramSha384Plus
                | Mechanism::ScramSha512Plus
        )
    }

    /// The SCRAM mechanism with the same hash, without channel binding.
    pub(crate) fn unbound(self) -> Mechanism {
        match self {
            Mechanism::ScramSha1Plus => Mechanism::ScramSha1,
            Mechanism::ScramSha224Plus => Mechanism::ScramSha224,
            Mechanism::ScramSha256Plus => Mechanism::ScramSha256,
            Mechanism::ScramSha384Plus => Mechanism::ScramSha384,
            Mechanism::ScramSha512Plus => Mechanism::ScramSha512,
            other => other,
        }
    }
}

/// What a SCRAM client says of channel binding in its GS2 header (RFC 5802 §6 and
/// §7, `gs2-cbind-flag`), and the binding data with "p".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelBinding {
    /// "n": no TLS, so nothing to bind to; or the server offers -PLUS and the
    /// mechanism without it was chosen on purpose (RFC 5802 §6 lets a client that
    /// does not bind say "n"; "y" would make such a server fail the login).
    None,
    /// "y": inside TLS, but the server does not advertise any -PLUS mechanism.
    /// A server that does support binding fails the login on seeing it (RFC 5802
    /// §6), which catches a man in the middle who struck -PLUS from CAPA.
    ServerLacks,
    /// "p=tls-server-end-point": the hash of the server's certificate as the TLS
    /// handshake gave it (RFC 5929 §4.1).
    TlsServerEndPoint(Vec<u8>),
}

impl ChannelBinding {
    /// The binding of a SCRAM exchange: `certificate` is the server's DER
    /// certificate when the connection is inside TLS, `plus_offered` whether CAPA
    /// advertised any -PLUS mechanism. A -PLUS mechanism needs the certificate.
    pub(crate) fn for_scram(
        mechanism: Mechanism,
        certificate: Option<&[u8]>,
        plus_offered: bool,
    ) -> Result<ChannelBinding, Error> {
        match (mechanism.binds_channel(), certificate) {
            (true, Some(der)) => Ok(ChannelBinding::TlsServerEndPoint(tls_server_end_point(
                der,
            )?)),
            (true, None) => Err(Error::ChannelBinding(format!(
                "{} binds the login to the TLS session, and this connection has none",
                mechanism.name()
            ))),
            (false, Some(_)) if !plus_offered => Ok(ChannelBinding::ServerLacks),
            (false, _) => Ok(ChannelBinding::None),
        }
    }

    /// The GS2 header (RFC 5802 §7): the flag, and an empty authzid.
    fn gs2_header(&self) -> &'static str {
        match self {
            ChannelBinding::None => "n,,",
            ChannelBinding::ServerLacks => "y,,",
            ChannelBinding::TlsServerEndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    /// The `c=` attribute's value: the GS2 header and, with "p", the binding data,
    /// in base64 (RFC 5802 §7, `channel-binding`).
    fn c_attribute(&self) -> String {
        let mut input = self.gs2_header().as_bytes().to_vec();
        if let ChannelBinding::TlsServerEndPoint(data) = self {
            input.extend_from_slice(data);
        }
        BASE64.encode(input)
    }
}

/// RFC 5929 §4.1: the `tls-server-end-point` binding data, the hash of the server's
/// DER certificate with the hash of the certificate's signature algorithm, SHA-256
/// where that is MD5 or SHA-1. A signature without one hash function (Ed25519,
/// Ed448) has no binding data defined, and is refused.
pub(crate) fn tls_server_end_point(der: &[u8]) -> Result<Vec<u8>, Error> {
    use x509_parser::signature_algorithm::SignatureAlgorithm;
    let bad = |why: String| Error::ChannelBinding(format!("tls-server-end-point: {why}"));
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| bad("the server's certificate cannot be read".into()))?;
    let algorithm = &cert.signature_algorithm;
    let oid = match SignatureAlgorithm::try_from(algorithm) {
        // RSASSA-PSS names its hash in its parameters (RFC 4055 §3.1).
        Ok(SignatureAlgorithm::RSASSA_PSS(params)) => params.hash_algorithm_oid().to_id_string(),
        _ => algorithm.algorithm.to_id_string(),
    };
    let hash = match oid.as_str() {
        // md5WithRSAEncryption, sha1WithRSAEncryption, ecdsa-with-SHA1,
        // dsa-with-sha1, and SHA-1 or MD5 itself (from PSS): "if the certificate's
        // signatureAlgorithm uses a single hash function and that hash function is
        // either MD5 or SHA-1, then use SHA-256".
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.10045.4.1"
        | "1.2.840.10040.4.3"
        | "1.3.14.3.2.26"
        | "1.2.840.113549.2.5" => Hash::Sha256,
        // sha224WithRSAEncryption, ecdsa-with-SHA224, dsa-with-sha224, SHA-224.
        "1.2.840.113549.1.1.14"
        | "1.2.840.10045.4.3.1"
        | "2.16.840.1.101.3.4.3.1"
        | "2.16.840.1.101.3.4.2.4" => Hash::Sha224,
        // sha256WithRSAEncryption, ecdsa-with-SHA256, dsa-with-sha256, SHA-256.
        "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.3.2"
        | "2.16.840.1.101.3.4.3.2"
        | "2.16.840.1.101.3.4.2.1" => Hash::Sha256,
        // sha384WithRSAEncryption, ecdsa-with-SHA384, SHA-384.
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" | "2.16.840.1.101.3.4.2.2" => {
            Hash::Sha384
        }
        // sha512WithRSAEncryption, ecdsa-with-SHA512, SHA-512.
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" | "2.16.840.1.101.3.4.2.3" => {
            Hash::Sha512
        }
        other => {
            return Err(bad(format!(
                "the certificate's signature algorithm ({other}) uses no single hash function, so RFC 5929 §4.1 defines no binding for it"
            )))
        }
    };
    Ok(hash.digest(der))
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
    /// For SCRAM: what the GS2 header says of channel binding.
    binding: ChannelBinding,
    /// For SCRAM: the server proved it knows the password.
    server_verified: bool,
}

struct ScramState {
    client_nonce: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

impl Exchange {
    /// An exchange; `binding` matters to SCRAM only (see [`ChannelBinding::for_scram`]).
    pub(crate) fn new(
        mechanism: Mechanism,
        user: &str,
        secret: &str,
        peer: Peer,
        binding: ChannelBinding,
    ) -> Exchange {
        Exchange {
            mechanism,
            user: user.to_string(),
            secret: secret.to_string(),
            peer,
            step: 0,
            scram: None,
            binding,
            server_verified: false,
        }
    }

    pub(crate) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the server's first SCRAM challenge (server-first) has been answered:
    /// before it, a refusal is of the client-first message, its GS2 header and so
    /// its channel binding type, not of the password.
    pub(crate) fn past_client_first(&self) -> bool {
        self.scram.is_some() && self.step > 1
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
                // A -PLUS mechanism without binding data, or binding data sent
                // with a mechanism that does not bind, would be refused or lie.
                let bound = matches!(self.binding, ChannelBinding::TlsServerEndPoint(_));
                if m.binds_channel() != bound {
                    return Err(Error::ChannelBinding(format!(
                        "{} without the binding it needs",
                        m.name()
                    )));
                }
                let client_nonce = nonce()?;
                let bare = format!("n={},r={client_nonce}", scram_name(&self.user));
                // RFC 5802 §7: client-first-message = gs2-header client-first-message-bare.
                let first = format!("{}{bare}", self.binding.gs2_header());
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
        if self.mechanism.scram_hash().is_some() && !self.server_verified {
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
        // RFC 5802 §7: c= carries the GS2 header again, and with "p" the binding
        // data, so that the proof covers both.
        let without_proof = format!("c={},r={nonce}", self.binding.c_attribute());
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
            // RFC 5802 §7's server-error values about the binding itself: a
            // binding type the server does not take, or another TLS session than
            // ours, or a "y" where the server does bind (-PLUS was struck from CAPA).
            let mechanism = self.mechanism.name();
            match error {
                "unsupported-channel-binding-type" | "channel-binding-not-supported" => {
                    return Err(Error::BindingRefused {
                        mechanism,
                        code: None,
                        text: error.to_string(),
                    })
                }
                "channel-bindings-dont-match" => {
                    return Err(Error::BindingMismatch {
                        mechanism,
                        why: "the server saw another TLS certificate than popfetch did (channel bindings don't match)",
                    })
                }
                "server-does-support-channel-binding" => {
                    return Err(Error::BindingMismatch {
                        mechanism,
                        why: "the server binds to the TLS session, but the capabilities popfetch received offered no -PLUS mechanism",
                    })
                }
                _ => {}
            }
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
        let mut e = Exchange::new(
            Mechanism::Plain,
            "tim",
            "tanstaaftanstaaf",
            peer(),
            ChannelBinding::None,
        );
        assert_eq!(
            e.initial_response().unwrap().unwrap(),
            b"\0tim\0tanstaaftanstaaf"
        );
        let mut e = Exchange::new(
            Mechanism::XOAuth2,
            "u@x",
            "tok",
            peer(),
            ChannelBinding::None,
        );
        assert_eq!(
            e.initial_response().unwrap().unwrap(),
            b"user=u@x\x01auth=Bearer tok\x01\x01"
        );
        let mut e = Exchange::new(
            Mechanism::OAuthBearer,
            "u@x",
            "tok",
            peer(),
            ChannelBinding::None,
        );
        assert_eq!(
            e.initial_response().unwrap().unwrap(),
            b"n,a=u@x,\x01host=mail.example\x01port=995\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(e.respond(b"{\"status\":\"invalid_token\"}").unwrap(), [1]);
    }

    #[test]
    fn cram_md5_matches_rfc_2195() {
        let mut e = Exchange::new(
            Mechanism::CramMd5,
            "tim",
            "tanstaaftanstaaf",
            peer(),
            ChannelBinding::None,
        );
        assert_eq!(e.initial_response().unwrap(), None);
        let response = e
            .respond(b"<1896.697170952@postoffice.reston.mci.net>")
            .unwrap();
        assert_eq!(response, b"tim b913a602c7eda7a495b4e6e7334d3890");
    }

    #[test]
    fn login_sends_user_then_password() {
        let mut e = Exchange::new(Mechanism::Login, "u", "p", peer(), ChannelBinding::None);
        assert_eq!(e.initial_response().unwrap(), None);
        assert_eq!(e.respond(b"Username:").unwrap(), b"u");
        assert_eq!(e.respond(b"Password:").unwrap(), b"p");
        assert!(e.respond(b"more?").is_err());
    }

    /// RFC 7677 §3's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let mut e = Exchange::new(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            peer(),
            ChannelBinding::None,
        );
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
        let mut e = Exchange::new(
            Mechanism::ScramSha1,
            "user",
            "pencil",
            peer(),
            ChannelBinding::None,
        );
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
        let mut e = Exchange::new(
            Mechanism::ScramSha256,
            "u",
            "p",
            peer(),
            ChannelBinding::None,
        );
        e.initial_response().unwrap();
        let ours = e.scram.as_ref().unwrap().client_nonce.clone();
        let weak = format!("r={ours}xyz,s=QSXCR+Q6sek8bf92,i=1");
        assert!(e.respond(weak.as_bytes()).is_err());
        let mut e = Exchange::new(
            Mechanism::ScramSha256,
            "u",
            "p",
            peer(),
            ChannelBinding::None,
        );
        e.initial_response().unwrap();
        assert!(e.respond(b"r=other,s=QSXCR+Q6sek8bf92,i=4096").is_err());
    }

    /// Self-signed test certificates (`openssl req -x509 -newkey ec ... -sha256`,
    /// `-sha384`, `-sha1`; RSA-PSS with `-sha512 -sigopt rsa_padding_mode:pss`),
    /// DER in base64, and the hashes `openssl dgst` gives of each DER: the
    /// known answers of RFC 5929 §4.1.
    const CERT_ECDSA_SHA256: &str = "MIIBfDCCASOgAwIBAgIUV5kuHfo5QhIvTSXpAAsOvFq92TkwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJY2Itc2hhMjU2MB4XDTI2MTIwMTAxMDU1OFoXDTM2MTEyODAxMDU1OFowFDESMBAGA1UEAwwJY2Itc2hhMjU2MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEDIiSY30i5uofWbAArjwsw1h2wiPOSTWBKdWS/GW2vbCcbJYZh1yZwbqTuSbydXzVZzZ53AZJ/tfyazPnkeeZnaNTMFEwHQYDVR0OBBYEFDI62nMzAmc99l6Tfk/aQn2UYN5IMB8GA1UdIwQYMBaAFDI62nMzAmc99l6Tfk/aQn2UYN5IMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgPTlT3IjDj4rkV512nK7mAiNJRLaNDO5H8Jxoy4sNEOwCIDySp0yNMhCR9mnkvale4No3vo1ZlZ8V67DDrN4f0jUf";
    const CERT_ECDSA_SHA384: &str = "MIIBfTCCASOgAwIBAgIUKEOZQarCUbiYJv6oEpw4R/sn5X0wCgYIKoZIzj0EAwMwFDESMBAGA1UEAwwJY2Itc2hhMzg0MB4XDTI2MTIwMTAxMDU1OVoXDTM2MTEyODAxMDU1OVowFDESMBAGA1UEAwwJY2Itc2hhMzg0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9OI4EbHDm83QHmeWtgFc3vZSEQI+B6F7esu4nJNNhs/9ZnPzT2Omxde7WlEmOzr9PFAbqfkk4BXNTvA/a9XgMKNTMFEwHQYDVR0OBBYEFL0PgtzxlLUjdFPSF1s7BFhVDVlMMB8GA1UdIwQYMBaAFL0PgtzxlLUjdFPSF1s7BFhVDVlMMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwMDSAAwRQIgF7UVFRc6/QdzMfYhxzUxBGN/bOxHPRjolSeK+oEQlkACIQCedPODI8stCKz7wFApIqXcsB6oA53aOj0v6i/Hre7S4w==";
    const CERT_ECDSA_SHA1: &str = "MIIBdjCCAR6gAwIBAgIUb96xjZzjlqq694rx1oNY4pAyDLEwCQYHKoZIzj0EATASMRAwDgYDVQQDDAdjYi1zaGExMB4XDTI2MTIwMTAxMDU1OVoXDTM2MTEyODAxMDU1OVowEjEQMA4GA1UEAwwHY2Itc2hhMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABBlvh03LhzorPePFOF4I0FuPNqC2q2sCXJNBq6HPF0LQxHflfK3UivRYozKi7CQn1stfHKv1HUcQIc042Nym22GjUzBRMB0GA1UdDgQWBBT3iIL/Aj9vTypl3xL6GZHNKXD1UTAfBgNVHSMEGDAWgBT3iIL/Aj9vTypl3xL6GZHNKXD1UTAPBgNVHRMBAf8EBTADAQH/MAkGByqGSM49BAEDRwAwRAIgOoA+M4zUO0Mf3JwP2HLNj5boEbUnAve8CPLJe5rDguMCIDzPMZeSsB7QKZtiC2fI+B2r9fL6eeCiEMjcZlsjUEo+";
    const CERT_RSA_PSS_SHA512: &str = "MIICZjCCAZugAwIBAgIULE5eKi24KKZjfua+yWGnI781YNAwQQYJKoZIhvcNAQEKMDSgDzANBglghkgBZQMEAgMFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgMFAKIDAgE+MBExDzANBgNVBAMMBmNiLXBzczAeFw0yNjEyMDEwMTA2MDBaFw0zNjExMjgwMTA2MDBaMBExDzANBgNVBAMMBmNiLXBzczCBnzANBgkqhkiG9w0BAQEFAAOBjQAwgYkCgYEAykMEL9lyFjH+DH8Wx3ahJV8E1+XLdXOmSrWysVcuL5WIxmYPL+sT44LcgsW593JOFrX8f7saZW9c6qBCl86CZyR6Mbbw2J9o/C7A2jURCKhwSMwOZDJZZblkHjSj4Xj6eevNaNouI6IN3WWx7SGJPqqmUF/4xO2edzc9XTmw4s8CAwEAAaNTMFEwHQYDVR0OBBYEFChSzO6VOO9j4B64wA2D9+xSo48+MB8GA1UdIwQYMBaAFChSzO6VOO9j4B64wA2D9+xSo48+MA8GA1UdEwEB/wQFMAMBAf8wQQYJKoZIhvcNAQEKMDSgDzANBglghkgBZQMEAgMFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgMFAKIDAgE+A4GBAJ/XPR6SqXToqBk93tTxBNexqpspXi6dtW+ENb8Xaps1M7PUAM6207eMuBiSD/aejg0Mh+x6fBVCMjBeUFMELi8aFtsHv54Uq+JEyywpWTPpkFLR+1OLaCD6cItFZ/YVNgB0tCZ+rzACFXCsTjVu97vOQF/Cu+taVAmJyvuoV5R5";

    fn der(base64: &str) -> Vec<u8> {
        BASE64.decode(base64).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn tls_server_end_point_hashes_with_the_signature_hash_but_never_sha1() {
        let end_point = |cert| hex(&tls_server_end_point(&der(cert)).unwrap());
        assert_eq!(
            end_point(CERT_ECDSA_SHA256),
            "b65d527c1658895d6b1f14ab8c5cc1612c8e889295690a7b3dbe789e26c5d10e"
        );
        assert_eq!(
            end_point(CERT_ECDSA_SHA384),
            "83c40e124810ff0a9864e9a755d228760090879f4e2aeebeac211b63c47c1b92997943d57a06bf1cffda7445c4e2758f"
        );
        // SHA-1 signed: SHA-256 instead (RFC 5929 §4.1).
        assert_eq!(
            end_point(CERT_ECDSA_SHA1),
            "d1c5cfde23df2112f8fc1f6504af95bc7fc6a73a91a1dab1a0310d39ebc0819b"
        );
        // RSASSA-PSS: the hash its parameters name.
        assert_eq!(
            end_point(CERT_RSA_PSS_SHA512),
            "89fc1caddced0f34cf6172792b0854ec41e7831fa1ef5d0693e56c317ed4dca3767af8e6b8af90ab9d3afcc1d7530a3dda9d3eef28653823ed7c17970d013a48"
        );
        assert!(matches!(
            tls_server_end_point(b"not a certificate"),
            Err(Error::ChannelBinding(_))
        ));
    }

    #[test]
    fn the_gs2_flag_follows_tls_and_what_the_server_offers() {
        let cert = der(CERT_ECDSA_SHA256);
        let bind = |m, cert: Option<&[u8]>, plus| ChannelBinding::for_scram(m, cert, plus);
        // No TLS: "n". TLS without -PLUS offered: "y". -PLUS offered, chosen
        // without it: "n" (a "y" would be refused).
        assert_eq!(
            bind(Mechanism::ScramSha256, None, false).unwrap(),
            ChannelBinding::None
        );
        assert_eq!(
            bind(Mechanism::ScramSha256, Some(&cert), false).unwrap(),
            ChannelBinding::ServerLacks
        );
        assert_eq!(
            bind(Mechanism::ScramSha256, Some(&cert), true).unwrap(),
            ChannelBinding::None
        );
        assert_eq!(
            bind(Mechanism::ScramSha256Plus, Some(&cert), true).unwrap(),
            ChannelBinding::TlsServerEndPoint(tls_server_end_point(&cert).unwrap())
        );
        assert!(matches!(
            bind(Mechanism::ScramSha256Plus, None, true),
            Err(Error::ChannelBinding(_))
        ));
    }

    /// The client-first and client-final messages of one exchange with `binding`:
    /// the GS2 header sent, and the c= attribute, decoded.
    fn gs2_and_c(mechanism: Mechanism, binding: ChannelBinding) -> (String, Vec<u8>) {
        let mut e = Exchange::new(mechanism, "user", "pencil", peer(), binding);
        let first = String::from_utf8(e.initial_response().unwrap().unwrap()).unwrap();
        let ours = e.scram.as_ref().unwrap().client_nonce.clone();
        let header = first.strip_suffix(&format!("n=user,r={ours}")).unwrap();
        assert!(!e.past_client_first());
        let server_first = format!("r={ours}srv,s=QSXCR+Q6sek8bf92,i=4096");
        let last = String::from_utf8(e.respond(server_first.as_bytes()).unwrap()).unwrap();
        assert!(e.past_client_first());
        let c = last.strip_prefix("c=").unwrap().split(',').next().unwrap();
        (header.to_string(), BASE64.decode(c).unwrap())
    }

    #[test]
    fn scram_plus_sends_its_binding_in_the_gs2_header_and_c() {
        let cert = der(CERT_ECDSA_SHA384);
        let data = tls_server_end_point(&cert).unwrap();
        let (header, c) = gs2_and_c(
            Mechanism::ScramSha256Plus,
            ChannelBinding::TlsServerEndPoint(data.clone()),
        );
        assert_eq!(header, "p=tls-server-end-point,,");
        let mut expected = b"p=tls-server-end-point,,".to_vec();
        expected.extend_from_slice(&data);
        assert_eq!(c, expected);
        assert_eq!(data.len(), 48, "SHA-384 of a SHA-384-signed certificate");

        let (header, c) = gs2_and_c(Mechanism::ScramSha1, ChannelBinding::ServerLacks);
        assert_eq!((header.as_str(), c.as_slice()), ("y,,", &b"y,,"[..]));
        let (header, c) = gs2_and_c(Mechanism::ScramSha512, ChannelBinding::None);
        assert_eq!((header.as_str(), c.as_slice()), ("n,,", &b"n,,"[..]));
    }

    #[test]
    fn scram_plus_never_runs_without_its_binding() {
        let mut e = Exchange::new(
            Mechanism::ScramSha256Plus,
            "u",
            "p",
            peer(),
            ChannelBinding::ServerLacks,
        );
        assert!(matches!(
            e.initial_response(),
            Err(Error::ChannelBinding(_))
        ));
        let mut e = Exchange::new(
            Mechanism::ScramSha256,
            "u",
            "p",
            peer(),
            ChannelBinding::TlsServerEndPoint(vec![1; 32]),
        );
        assert!(e.initial_response().is_err());
    }

    #[test]
    fn binding_errors_from_the_server_are_told_apart() {
        for (error, refused) in [
            ("unsupported-channel-binding-type", true),
            ("channel-bindings-dont-match", false),
            ("server-does-support-channel-binding", false),
        ] {
            let mut e = Exchange::new(
                Mechanism::ScramSha256Plus,
                "u",
                "p",
                peer(),
                ChannelBinding::TlsServerEndPoint(vec![7; 32]),
            );
            e.initial_response().unwrap();
            let ours = e.scram.as_ref().unwrap().client_nonce.clone();
            e.respond(format!("r={ours}x,s=QSXCR+Q6sek8bf92,i=4096").as_bytes())
                .unwrap();
            let got = e.respond(format!("e={error}").as_bytes()).unwrap_err();
            assert_eq!(
                matches!(got, Error::BindingRefused { .. }),
                refused,
                "{error}: {got}"
            );
            assert_eq!(
                matches!(got, Error::BindingMismatch { .. }),
                !refused,
                "{error}: {got}"
            );
        }
    }

    #[test]
    fn every_scram_needs_the_server_proof() {
        let mut e = Exchange::new(
            Mechanism::ScramSha512,
            "u",
            "p",
            peer(),
            ChannelBinding::None,
        );
        e.initial_response().unwrap();
        let ours = e.scram.as_ref().unwrap().client_nonce.clone();
        e.respond(format!("r={ours}x,s=QSXCR+Q6sek8bf92,i=4096").as_bytes())
            .unwrap();
        assert!(e.finish().is_err(), "+OK without v= is refused");
    }
}
