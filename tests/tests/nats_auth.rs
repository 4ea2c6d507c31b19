//! The NATS connection settings that sensors and the blocker share (`palisade_wire::nats::Auth`)
//! against a real nats-server that demands them: user/password, token, a user NKey, and TLS with
//! a private CA and a client certificate (mutual TLS). Each mode is checked both ways: the right
//! settings connect and round-trip a message, the wrong or missing ones are refused.
//!
//! (`.creds` files need an operator/account JWT setup; what is checked for them is that a
//! missing file is reported by name, in `palisade-wire`'s unit tests.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_wire::nats::Auth;
use tokio::process::{Child, Command};

/// A nats-server started from a config file, killed on drop.
struct Server {
    _child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Start with `conf` (the listen address is added) and wait until it accepts TCP.
    async fn start(conf: &str, dir: tempfile::TempDir) -> Server {
        let port = palisade_tests::free_port().expect("free port");
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, format!("listen: 127.0.0.1:{port}\n{conf}\n")).expect("write conf");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server (scripts/setup.sh installs it)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server {
            _child: child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Connect with `auth` and round-trip one message; the error text on failure.
    async fn try_auth(&self, auth: Auth<'_>) -> Result<(), String> {
        auth.check()?;
        let opts = auth
            .connect_options("palisade-auth-test")
            .await
            .map_err(|e| e.to_string())?
            .connection_timeout(Duration::from_secs(5));
        let client = opts.connect(self.url()).await.map_err(|e| e.to_string())?;
        let mut sub = client
            .subscribe("palisade.auth.test")
            .await
            .map_err(|e| e.to_string())?;
        client
            .publish("palisade.auth.test", "ping".into())
            .await
            .map_err(|e| e.to_string())?;
        let got = tokio::time::timeout(Duration::from_secs(5), futures_next(&mut sub))
            .await
            .map_err(|_| "no message back".to_string())?;
        if got.as_deref() != Some(&b"ping"[..]) {
            return Err(format!("unexpected message {got:?}"));
        }
        Ok(())
    }
}

async fn futures_next(sub: &mut async_nats::Subscriber) -> Option<Vec<u8>> {
    use futures_util::StreamExt;
    sub.next().await.map(|m| m.payload.to_vec())
}

#[tokio::test]
async fn user_and_password() {
    let s = Server::start(
        r#"authorization { user: "palisade", password: "s3cret-pass-word" }"#,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let good = Auth {
        user: Some("palisade"),
        password: Some("s3cret-pass-word"),
        ..Auth::default()
    };
    s.try_auth(good).await.expect("right password connects");
    let wrong = Auth {
        password: Some("wrong"),
        ..good
    };
    assert!(s.try_auth(wrong).await.is_err(), "wrong password refused");
    assert!(
        s.try_auth(Auth::default()).await.is_err(),
        "anonymous refused"
    );
}

#[tokio::test]
async fn token() {
    let s = Server::start(
        r#"authorization { token: "t0ken-0123456789abcdef" }"#,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let good = Auth {
        token: Some("t0ken-0123456789abcdef"),
        ..Auth::default()
    };
    s.try_auth(good).await.expect("right token connects");
    let wrong = Auth {
        token: Some("t0ken-wrong"),
        ..Auth::default()
    };
    assert!(s.try_auth(wrong).await.is_err(), "wrong token refused");
}

#[tokio::test]
async fn user_nkey() {
    let user = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let s = Server::start(
        &format!(
            r#"authorization {{ users = [ {{ nkey: "{}" }} ] }}"#,
            user.public_key()
        ),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let seed = user.seed().expect("seed");
    s.try_auth(Auth {
        nkey_seed: Some(&seed),
        ..Auth::default()
    })
    .await
    .expect("the configured NKey connects");
    let other_seed = other.seed().expect("seed");
    assert!(
        s.try_auth(Auth {
            nkey_seed: Some(&other_seed),
            ..Auth::default()
        })
        .await
        .is_err(),
        "an unknown NKey is refused"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "palisade test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "nats");
    let (client_pem, client_key) = leaf(Vec::new(), "palisade-blocker");
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_pem),
        server_key: write("server-key.pem", server_key),
        client_cert: write("client.pem", client_pem),
        client_key: write("client-key.pem", client_key),
    }
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let conf = format!(
        "tls {{\n cert_file: \"{}\"\n key_file: \"{}\"\n ca_file: \"{}\"\n verify: true\n timeout: 3\n}}",
        p.server_cert.display(),
        p.server_key.display(),
        p.ca.display()
    );
    let s = Server::start(&conf, dir).await;
    let good = Auth {
        tls_ca: Some(&p.ca),
        tls_client_cert: Some(&p.client_cert),
        tls_client_key: Some(&p.client_key),
        tls_required: true,
        ..Auth::default()
    };
    s.try_auth(good)
        .await
        .expect("CA + client certificate connect");
    let no_client_cert = Auth {
        tls_client_cert: None,
        tls_client_key: None,
        ..good
    };
    assert!(
        s.try_auth(no_client_cert).await.is_err(),
        "without a client certificate the server refuses"
    );
    let no_ca = Auth {
        tls_ca: None,
        ..good
    };
    assert!(
        s.try_auth(no_ca).await.is_err(),
        "without the private CA the client does not trust the server"
    );
}
