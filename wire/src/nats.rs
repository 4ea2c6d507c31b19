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
    /// Credentials file: a `.creds` file (JWT + NKey seed), or an NKey seed file (the seed
    /// alone, bare or decorated; for servers with `authorization { users = [{ nkey: ... }] }`).
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
            Some(path) => credentials_file(path).await?,
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

/// What a credentials file holds.
#[derive(Debug, PartialEq, Eq)]
enum CredsKind<'a> {
    /// A NATS `.creds` file: a user JWT and its NKey seed (operator/JWT mode).
    Jwt,
    /// An NKey seed file: the seed alone, bare or between the NATS tools' decoration lines
    /// (`-----BEGIN USER NKEY SEED-----`), as `palisade-blocker credentials` writes it.
    Seed(&'a str),
}

/// Tell a `.creds` file from an NKey seed file. The error never quotes the content (it is a
/// secret).
fn creds_kind(text: &str) -> Result<CredsKind<'_>, String> {
    if text.contains("BEGIN NATS USER JWT") {
        return Ok(CredsKind::Jwt);
    }
    // Everything but the decoration lines (`---...---`), comments and blank lines.
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("---") && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(seed), None) if seed.starts_with("SU") => Ok(CredsKind::Seed(seed)),
        (Some(_), None) => Err(
            "neither a .creds file (user JWT + seed) nor a user NKey seed \
             (`SU...`)"
                .into(),
        ),
        (None, _) => Err("empty: neither a .creds file nor an NKey seed file".into()),
        (Some(_), Some(_)) => Err("an NKey seed file holds one seed, and no user JWT was \
             found for a .creds file"
            .into()),
    }
}

/// Connect options from a credentials file: a `.creds` file (JWT + seed) or an NKey seed
/// file. Errors name the file.
async fn credentials_file(path: &Path) -> std::io::Result<ConnectOptions> {
    let named = |kind: std::io::ErrorKind, e: &dyn std::fmt::Display| {
        std::io::Error::new(kind, format!("credentials file {}: {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| named(e.kind(), &e))?;
    match creds_kind(&text).map_err(|e| named(std::io::ErrorKind::InvalidData, &e))? {
        CredsKind::Jwt => ConnectOptions::with_credentials(&text)
            .map_err(|e| named(std::io::ErrorKind::InvalidData, &e)),
        CredsKind::Seed(seed) => {
            nkeys::KeyPair::from_seed(seed).map_err(|_| {
                named(
                    std::io::ErrorKind::InvalidData,
                    &"the NKey seed does not decode (damaged or truncated)",
                )
            })?;
            Ok(ConnectOptions::new().nkey(seed.to_owned()))
        }
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

    #[test]
    fn seed_files_and_creds_files_are_told_apart() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        assert_eq!(
            creds_kind(&format!("{seed}\n")),
            Ok(CredsKind::Seed(&seed[..]))
        );
        let decorated =
            format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n");
        assert_eq!(creds_kind(&decorated), Ok(CredsKind::Seed(&seed[..])));
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi\n------END NATS USER JWT------\n\n{decorated}"
        );
        assert_eq!(creds_kind(&creds), Ok(CredsKind::Jwt));
        for bad in ["", "\n\n", "hello", "SUAAA\nSUBBB\n"] {
            let err = creds_kind(bad).unwrap_err();
            assert!(!err.contains("SUAAA"), "the content is never quoted: {err}");
        }
    }

    #[tokio::test]
    async fn a_damaged_seed_file_is_named() {
        let dir = std::env::temp_dir().join(format!("palisade-wire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.nk");
        std::fs::write(&path, "SUNOTAREALSEED\n").unwrap();
        let auth = Auth {
            creds_file: Some(&path),
            ..Auth::default()
        };
        let err = auth.connect_options("t").await.err().map(|e| e.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
        let err = err.unwrap_or_default();
        assert!(
            err.contains("bad.nk") && err.contains("does not decode"),
            "{err}"
        );
        assert!(!err.contains("SUNOTAREALSEED"), "{err}");
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
