//! Where OpenSSL finds the system's trusted roots: in the hashed certificate
//! directory, one root when a chain needs it, rather than the whole bundle file.

use std::ffi::OsString;
#[cfg(not(any(target_vendor = "apple", windows)))]
use std::path::Path;
use std::sync::OnceLock;

/// The variables OpenSSL (and `openssl-probe`, which native-tls asks) read for
/// the system's roots.
#[cfg(not(any(target_vendor = "apple", windows)))]
const CERT_FILE: &str = "SSL_CERT_FILE";
#[cfg(not(any(target_vendor = "apple", windows)))]
const CERT_DIR: &str = "SSL_CERT_DIR";

/// The variables as popfetch found them, when [`prefer_lazy_roots`] changed them.
static FOUND: OnceLock<[(&str, Option<OsString>); 2]> = OnceLock::new();

/// Has OpenSSL look the system's roots up lazily, with the same roots.
///
/// native-tls's OpenSSL connector parses the whole CA bundle when it is built,
/// twice (OpenSSL's default paths, then the bundle `openssl-probe` finds): some
/// 100 ms of CPU with OpenSSL 3.0 for the 140-odd roots of Debian's bundle,
/// before the first byte to the server. Where the system keeps the same roots
/// as a hashed directory beside the bundle (`update-ca-certificates` writes
/// both from one list), this points `SSL_CERT_DIR` at the directory and
/// `SSL_CERT_FILE` at an empty file, so that both loads find nothing to parse
/// and verification consults the directory for the one root a chain needs, as
/// OpenSSL's default paths do. Fewer roots could only refuse more, never accept
/// more.
///
/// It changes nothing where the user chose another store (a file outside the
/// hashed directory, or one variable without the other), where no hashed
/// directory exists, or where the TLS library is not OpenSSL. It sets the
/// process's environment, so it must run before any thread starts; the child
/// processes popfetch runs get the variables back as they were ([`found_env`]).
pub(crate) fn prefer_lazy_roots() {
    #[cfg(not(any(target_vendor = "apple", windows)))]
    {
        let (file, dir) = (std::env::var_os(CERT_FILE), std::env::var_os(CERT_DIR));
        let hashed = match (&file, &dir) {
            (None, None) => openssl_probe::candidate_cert_dirs()
                .find(|dir| is_hashed(dir))
                .map(Path::to_path_buf),
            // The store of update-ca-certificates, named: the bundle inside the
            // hashed directory.
            (Some(file), Some(dir))
                if Path::new(file).parent() == Some(Path::new(dir))
                    && is_hashed(Path::new(dir)) =>
            {
                Some(Path::new(dir).to_path_buf())
            }
            _ => None,
        };
        let Some(hashed) = hashed else {
            return;
        };
        let _ = FOUND.set([(CERT_FILE, file), (CERT_DIR, dir)]);
        // Before any thread: nothing reads the environment concurrently.
        std::env::set_var(CERT_DIR, hashed);
        std::env::set_var(CERT_FILE, "/dev/null");
    }
}

/// The variables [`prefer_lazy_roots`] changed, with the values popfetch was
/// given (`None`: unset), for a child process to run with; empty if it changed
/// none.
pub(crate) fn found_env() -> &'static [(&'static str, Option<OsString>)] {
    FOUND.get().map_or(&[], |found| found.as_slice())
}

/// Whether `dir` holds OpenSSL's subject-hash links (`5ad8a5d6.0`).
#[cfg(not(any(target_vendor = "apple", windows)))]
fn is_hashed(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        name.len() >= 10
            && name[..8].iter().all(u8::is_ascii_hexdigit)
            && name[8] == b'.'
            && name[9..].iter().all(u8::is_ascii_digit)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(not(any(target_vendor = "apple", windows)))]
    fn a_hashed_directory_is_told_by_its_links() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!super::is_hashed(dir.path()));
        std::fs::write(dir.path().join("ca-certificates.crt"), "").unwrap();
        assert!(!super::is_hashed(dir.path()));
        std::fs::write(dir.path().join("5ad8a5d6.0"), "").unwrap();
        assert!(super::is_hashed(dir.path()));
    }
}
