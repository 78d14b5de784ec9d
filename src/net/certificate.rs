//! What a server's certificate says of itself, for people: subject, issuer and the
//! end of its validity, read from the DER that the handshake gave (`probe` shows
//! them, `-v` traces them). The names are the server's text, escaped as all of it is.

use crate::text::escape;

/// What a certificate says of itself, for people.
pub(crate) struct CertificateDetails {
    pub subject: String,
    pub issuer: String,
    /// The end of its validity, UTC.
    pub not_after: String,
}

impl CertificateDetails {
    /// Reads a DER certificate (RFC 5280 §4.1); `None` if it is not one.
    pub(crate) fn of(der: &[u8]) -> Option<CertificateDetails> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let not_after = cert.validity().not_after.timestamp();
        let not_after = chrono::DateTime::from_timestamp(not_after, 0).map_or_else(
            || not_after.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
        Some(CertificateDetails {
            subject: name(cert.subject()),
            issuer: name(cert.issuer()),
            not_after,
        })
    }
}

/// OpenSSL's short name of a name attribute (RFC 4519 §2), for the usual ones.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// A distinguished name as OpenSSL shows it: "CN=localhost, O=Example".
fn name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    name.iter_attributes()
        .map(|attr| {
            let oid = attr.attr_type().to_id_string();
            let key = match short_name(&oid) {
                Some(short) => short.to_string(),
                None => x509_parser::objects::oid2sn(attr.attr_type(), registry)
                    .map_or(oid, str::to_string),
            };
            // Certificate text is the server's choice: escape it like any other.
            let value = escape(attr.attr_value().data);
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
