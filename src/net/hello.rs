//! What a TLS handshake negotiated, read off the wire from the server's hello:
//! native-tls does not report the version and cipher suite.

use super::TlsVersion;

/// The TLS version and cipher suite a handshake negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The protocol version's code point (0x0303 is TLS 1.2, RFC 8446 §4.2.1).
    pub version: u16,
    /// The cipher suite's code point (IANA "TLS Cipher Suites").
    pub cipher: u16,
}

impl Negotiated {
    /// Reads the ServerHello at the start of the server's first flight: the
    /// legacy version, session id and cipher suite, and for TLS 1.3 the
    /// supported_versions extension that holds the real version (RFC 8446 §4.1.3,
    /// §4.2.1; RFC 5246 §7.4.1.3 before it).
    pub(crate) fn from_hello(bytes: &[u8]) -> Option<Negotiated> {
        // The record header: handshake (22), version, length.
        let record = bytes.get(5..)?;
        if bytes[0] != 22 {
            return None;
        }
        // The handshake header: server_hello (2), a 3-byte length.
        if *record.first()? != 2 {
            return None;
        }
        let body = record.get(4..)?;
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
        };
        let mut version = u16_at(0)?;
        let session_id = usize::from(*body.get(34)?);
        let mut at = 35 + session_id;
        let cipher = u16_at(at)?;
        at += 3;
        if let Some(total) = u16_at(at) {
            let end = at + 2 + usize::from(total);
            at += 2;
            while at + 4 <= end {
                let (kind, len) = (u16_at(at)?, usize::from(u16_at(at + 2)?));
                if kind == 43 && len == 2 {
                    version = u16_at(at + 4)?;
                }
                at += 4 + len;
            }
        }
        Some(Negotiated { version, cipher })
    }

    /// The version, if it is one a minimum can name (TLS 1.0 to 1.3).
    pub(crate) fn tls_version(&self) -> Option<TlsVersion> {
        match self.version {
            0x0301 => Some(TlsVersion::V1_0),
            0x0302 => Some(TlsVersion::V1_1),
            0x0303 => Some(TlsVersion::V1_2),
            0x0304 => Some(TlsVersion::V1_3),
            _ => None,
        }
    }

    /// The version as OpenSSL names it ("TLSv1.3").
    pub(crate) fn version_name(&self) -> String {
        match self.tls_version() {
            Some(TlsVersion::V1_0) => "TLSv1".into(),
            Some(v) => format!("TLSv{v}"),
            None => format!("version 0x{:04x}", self.version),
        }
    }

    /// The cipher suite's IANA name, for the suites servers choose today.
    pub(crate) fn cipher_name(&self) -> String {
        let name = match self.cipher {
            0x1301 => "TLS_AES_128_GCM_SHA256",
            0x1302 => "TLS_AES_256_GCM_SHA384",
            0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
            0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            0x009e => "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
            0x009f => "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
            0xc013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            0xc014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            0x002f => "TLS_RSA_WITH_AES_128_CBC_SHA",
            0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
            0x009c => "TLS_RSA_WITH_AES_128_GCM_SHA256",
            0x009d => "TLS_RSA_WITH_AES_256_GCM_SHA384",
            other => return format!("0x{other:04x}"),
        };
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ServerHello record: `version` in the legacy field, a 32-byte session
    /// id, `cipher`, and `extensions`.
    fn hello(version: u16, cipher: u16, extensions: &[u8]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        body.extend([7; 32]);
        body.push(32);
        body.extend([9; 32]);
        body.extend(cipher.to_be_bytes());
        body.push(0);
        body.extend(u16::try_from(extensions.len()).unwrap().to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![2, 0];
        handshake.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        handshake.extend(body);
        let mut record = vec![22, 3, 3];
        record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn the_server_hello_tells_the_version_and_cipher() {
        // TLS 1.2: the legacy version is the version.
        let v12 = Negotiated::from_hello(&hello(0x0303, 0xc030, &[0xff, 1, 0, 1, 0])).unwrap();
        assert_eq!(v12.tls_version(), Some(TlsVersion::V1_2));
        assert_eq!(v12.version_name(), "TLSv1.2");
        assert_eq!(v12.cipher_name(), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        // TLS 1.3: supported_versions (43) holds it, after another extension.
        let ext = [0, 51, 0, 2, 0xaa, 0xbb, 0, 43, 0, 2, 3, 4];
        let v13 = Negotiated::from_hello(&hello(0x0303, 0x1302, &ext)).unwrap();
        assert_eq!(v13.tls_version(), Some(TlsVersion::V1_3));
        assert_eq!(v13.cipher_name(), "TLS_AES_256_GCM_SHA384");
        let v10 = Negotiated::from_hello(&hello(0x0301, 0x1234, &[])).unwrap();
        assert_eq!(v10.version_name(), "TLSv1");
        assert_eq!(v10.cipher_name(), "0x1234");
        // Not a hello, or cut short: nothing is claimed.
        assert_eq!(Negotiated::from_hello(b"+OK POP3 ready\r\n"), None);
        assert_eq!(Negotiated::from_hello(&hello(0x0303, 1, &[])[..40]), None);
    }
}
