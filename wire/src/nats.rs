//! How sensors and the blocker reach NATS: the authentication and TLS settings both services
//! accept (the same names in both configuration files), checked and turned into async-nats
//! connect options in one place.
//!
//! Each service keeps these fields in its own `[nats]` table (serde cannot flatten a shared
//! struct into a table that refuses unknown fields) and lends them here as an [`Auth`].

use std::path::Path;

use async_nats::ConnectOptions;

/// Authentication and TLS for the NATS connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth<'a> {
    /// User name (with `password`).
    pub user: Option<&'a str>,
    /// Password (with `user`).
    pub password: Option<&'a str>,
    /// Authentication token.
    pub token: Option<&'a str>,
    /// NKey seed (`SU...`).
    pub nkey_seed: Option<&'a str>,
    /// `.creds` file (JWT + NKey seed).
    pub creds_file: Option<&'a Path>,
    /// PEM file of CA certificates to trust.
    pub tls_ca: Option<&'a Path>,
    /// PEM client certificate for mutual TLS (with `tls_client_key`).
    pub tls_client_cert: Option<&'a Path>,
    /// PEM private key of the client certificate.
    pub tls_client_key: Option<&'a Path>,
    /// Refuse a connection without TLS, whatever the URL scheme.
    pub tls_required: bool,
}

impl Auth<'_> {
    /// Settings that only work in pairs; the message names the `[nats]` fields.
    pub fn check(&self) -> Result<(), String> {
        if self.user.is_some() != self.password.is_some() {
            return Err("nats.user and nats.password go together".into());
        }
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err("nats.tls_client_cert and nats.tls_client_key go together".into());
        }
        Ok(())
    }

    /// Connect options named `name` (shown by the server), with these credentials. Reading
    /// the `.creds` file is the only thing that can fail here; the error names the file.
    pub async fn connect_options(&self, name: &str) -> std::io::Result<ConnectOptions> {
        install_crypto_provider();
        let mut opts = match self.creds_file {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("credentials file {}: {e}", path.display()),
                    )
                })?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (self.user, self.password) {
            opts = opts.user_and_password(user.to_owned(), password.to_owned());
        }
        if let Some(token) = self.token {
            opts = opts.token(token.to_owned());
        }
        if let Some(seed) = self.nkey_seed {
            opts = opts.nkey(seed.to_owned());
        }
        if let Some(ca) = self.tls_ca {
            opts = opts.add_root_certificates(ca.to_path_buf());
        }
        if let (Some(cert), Some(key)) = (self.tls_client_cert, self.tls_client_key) {
            opts = opts.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
        }
        if self.tls_required {
            opts = opts.require_tls(true);
        }
        Ok(opts.name(name))
    }
}

/// Make rustls's process-wide crypto provider `ring`, the one async-nats is built for.
///
/// rustls picks a default from its crate features only when exactly one provider is compiled in.
/// The blocker also links the AWS SDK, which enables `aws-lc-rs`: with both present, the first
/// TLS handshake to NATS panicked ("Could not automatically determine the process-level
/// CryptoProvider"). Called before every connect; installing twice is a no-op. The AWS SDK
/// configures its own provider explicitly and is unaffected.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_checked() {
        assert!(Auth::default().check().is_ok());
        let half = Auth {
            user: Some("u"),
            ..Auth::default()
        };
        assert!(half.check().unwrap_err().contains("nats.password"));
        let cert = Auth {
            tls_client_cert: Some(Path::new("/c.pem")),
            ..Auth::default()
        };
        assert!(cert.check().unwrap_err().contains("tls_client_key"));
    }

    #[tokio::test]
    async fn a_missing_creds_file_is_named() {
        let auth = Auth {
            creds_file: Some(Path::new("/nonexistent/palisade.creds")),
            ..Auth::default()
        };
        let err = auth.connect_options("t").await.err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/palisade.creds")),
            "{err:?}"
        );
    }
}
