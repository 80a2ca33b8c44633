//! `rediss://` with a CA of your own (feature `tls`).
//!
//! A `rediss://` URL given to [`client`](crate::client) verifies the
//! server against the public web PKI roots (webpki-roots), like a browser.
//! A server whose certificate is signed by a private CA needs that CA:
//! [`client_tls`] reads it from a PEM file, and only that CA is trusted.
//!
//! rustls needs one process-wide crypto provider; safesync installs the
//! `ring` one the first time it makes a Redis client or connection (unless
//! the program installed one of its own before), so no call here panics
//! for want of it.

use std::path::Path;
use std::sync::Once;

use redis::{Client, TlsCertificates};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use safesync_core::__private::redact_url;
use safesync_core::{Error, Result};

use crate::handle::Redis;

/// A Redis client for a `rediss://` URL whose server certificate must be
/// signed by the CA (or one of the CAs) in the PEM file `ca_pem`.
///
/// The host in the URL must be a name or IP address the certificate is
/// issued for (its subject alternative names). Nothing is connected yet:
/// a certificate the CA did not sign fails the first command with
/// [`Error::TlsNotTrusted`].
///
/// Fails with [`Error::Config`] naming what was wrong when the URL is not
/// `rediss://`, or the file cannot be read or holds no PEM certificate.
///
/// ```no_run
/// let redis = safesync_queue::client_tls("rediss://:secret@redis.internal:6380", "/etc/ssl/redis-ca.pem")?;
/// # let _ = redis;
/// # Ok::<_, safesync_core::Error>(())
/// ```
///
/// ```
/// let err = safesync_queue::client_tls("redis://127.0.0.1:6379", "/etc/ssl/ca.pem").unwrap_err();
/// assert!(err.to_string().contains("needs a `rediss://` URL"), "{err}");
/// let err = safesync_queue::client_tls("rediss://127.0.0.1:6380", "/no/such/ca.pem").unwrap_err();
/// assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
/// ```
pub fn client_tls(url: &str, ca_pem: impl AsRef<Path>) -> Result<Redis> {
    let ca_pem = ca_pem.as_ref();
    let certs = read_ca(url, ca_pem)?;
    let redacted = redact_url(url);
    Client::build_with_tls(url, certs)
        .map(Redis::from)
        .map_err(|e| {
            Error::Config(format!(
                "cannot use Redis URL `{redacted}` with the CA file `{}`: {}",
                ca_pem.display(),
                e.to_string().replace(url, &redacted)
            ))
        })
}

/// A Redis Cluster reached through `seeds` (`rediss://` URLs of some of
/// its nodes) whose certificates must be signed by the CA (or one of the
/// CAs) in the PEM file `ca_pem`; [`cluster`](crate::cluster) with a CA of
/// your own. The nodes must announce addresses their certificates are
/// issued for.
///
/// Fails with [`Error::Config`] like [`client_tls`], and like
/// [`cluster`](crate::cluster) for the seeds.
///
/// ```no_run
/// let redis = safesync_queue::cluster_tls(
///     &["rediss://:secret@redis-0.internal:6380", "rediss://:secret@redis-1.internal:6380"],
///     "/etc/ssl/redis-ca.pem",
/// )?;
/// # let _ = redis;
/// # Ok::<_, safesync_core::Error>(())
/// ```
///
/// ```
/// let err = safesync_queue::cluster_tls(&["redis://127.0.0.1:7000"], "/etc/ssl/ca.pem").unwrap_err();
/// assert!(err.to_string().contains("needs a `rediss://` URL"), "{err}");
/// ```
pub fn cluster_tls<S: AsRef<str>>(seeds: &[S], ca_pem: impl AsRef<Path>) -> Result<Redis> {
    let ca_pem = ca_pem.as_ref();
    let nodes = seeds
        .iter()
        .map(|s| match client_tls(s.as_ref(), ca_pem)?.node_client() {
            Some(c) => Ok(c.clone()),
            None => Err(Error::Config("a cluster seed must be one node".to_owned())),
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = seeds.first() else {
        return crate::handle::cluster_of(seeds, &nodes, |b| b);
    };
    let certs = read_ca(first.as_ref(), ca_pem)?;
    crate::handle::cluster_of(seeds, &nodes, |b| b.certs(certs))
}

/// The CA certificates in `ca_pem`, for the `rediss://` URL `url`.
fn read_ca(url: &str, ca_pem: &Path) -> Result<TlsCertificates> {
    install_crypto_provider();
    let redacted = redact_url(url);
    if !url.starts_with("rediss://") {
        return Err(Error::Config(format!(
            "a CA file for Redis needs a `rediss://` URL (TLS), not `{redacted}`"
        )));
    }
    let pem = std::fs::read(ca_pem).map_err(|e| {
        Error::Config(format!(
            "cannot read the Redis CA file `{}`: {e}",
            ca_pem.display()
        ))
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "the Redis CA file `{}` is not PEM: {e}",
                ca_pem.display()
            ))
        })?;
    if certificates.is_empty() {
        return Err(Error::Config(format!(
            "the Redis CA file `{}` holds no certificate (expected `-----BEGIN CERTIFICATE-----`)",
            ca_pem.display()
        )));
    }
    Ok(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    })
}

/// Installs rustls' `ring` provider as the process default, once; a
/// provider the program installed first is kept.
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means a provider is installed already: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_with_its_name() {
        let path =
            std::env::temp_dir().join(format!("safesync-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, b"not a certificate\n").unwrap();
        let err = client_tls("rediss://127.0.0.1:1", &path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        let shown = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{shown}");
        assert!(shown.contains("holds no certificate"), "{shown}");
        assert!(shown.contains("safesync-empty-ca"), "{shown}");
    }

    #[test]
    fn passwords_stay_out_of_url_errors() {
        let err = client_tls("redis://:hunter2@127.0.0.1", "/x.pem").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
