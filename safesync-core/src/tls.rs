//! Telling a certificate that is not trusted apart from other connect
//! failures (feature `tls`).
//!
//! rustls reports a server certificate it cannot verify as
//! `invalid peer certificate: UnknownIssuer`, several wrappers deep (sqlx's
//! `Tls` error, an `io::Error`, a `RedisError`). [`not_trusted`] walks the
//! chain once and says in words what failed, so that
//! [`Error::TlsNotTrusted`](crate::Error::TlsNotTrusted) can name it.

use std::error::Error as StdError;

/// Why the server's certificate was refused, if `err` (or an error it
/// wraps) is rustls refusing it; `None` for every other failure.
pub fn not_trusted(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(reason) = rustls_refusal(e) {
            return Some(reason);
        }
        // `io::Error::source` skips the error it wraps: look inside it too.
        if let Some(reason) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| rustls_refusal(inner))
        {
            return Some(reason);
        }
        next = e.source();
    }
    None
}

fn rustls_refusal(e: &(dyn StdError + 'static)) -> Option<String> {
    match e.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(cert) => Some(describe(cert)),
        _ => None,
    }
}

fn describe(cert: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match cert {
        C::UnknownIssuer => "it is not signed by a trusted CA (UnknownIssuer)".to_owned(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("it is not issued for the host connected to ({cert:?})")
        }
        C::Expired | C::ExpiredContext { .. } => format!("it has expired ({cert:?})"),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("it is not valid yet ({cert:?})")
        }
        C::Revoked => "it has been revoked".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_refusal_inside_io_and_boxed_errors() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        let sqlx = sqlx::Error::Tls(Box::new(io));
        let reason = not_trusted(&sqlx).expect("found");
        assert!(reason.contains("not signed by a trusted CA"), "{reason}");

        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(not_trusted(&expired).unwrap().contains("expired"));
    }

    #[test]
    fn other_failures_are_not_called_untrusted() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(not_trusted(&refused), None);
        let handshake = rustls::Error::HandshakeNotComplete;
        assert_eq!(not_trusted(&sqlx::Error::Tls(Box::new(handshake))), None);
    }
}
