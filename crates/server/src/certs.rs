//! A throw-away certificate authority for local clusters and tests (`fencelock certs`):
//! a self-signed CA, node certificates good for both the client and the peer listener
//! (server and client authentication), and client certificates for mutual TLS.
//!
//! Node certificates name `localhost`, `127.0.0.1` and `::1` plus any extra hosts, so a
//! cluster on one machine works without `tls.server_name`. Keys are ECDSA P-256. The CA
//! key is not kept: to add a node later, make a new set. Not for production: a real
//! deployment gets its certificates from its own PKI.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The names every node certificate carries.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters (e.g. a host that is not a DNS name or IP address).
    #[error("cannot make the certificate for {what}: {source}")]
    Generate {
        /// Which certificate.
        what: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// A name that cannot be part of a file name.
    #[error("bad name {0:?}: use letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// A host that is neither a DNS name nor an IP address.
    #[error("bad host {0:?}: give a DNS name or an IP address")]
    BadHost(String),
    /// A file already exists (and overwriting was not asked for).
    #[error("{0} already exists (pass --force to overwrite)")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair").finish_non_exhaustive()
    }
}

/// A certificate authority held in memory.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn generate(what: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        what: what.to_string(),
        source,
    }
}

impl TestCa {
    /// A new self-signed CA named `name`.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn new(name: &str) -> Result<TestCa, CertError> {
        let err = generate("the CA");
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(&err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(&err)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(&err)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate (PEM): what `tls.peer_ca`, `tls.client_ca` and clients trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(
        &self,
        what: &str,
        common_name: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<CertPair, CertError> {
        let err = generate(what);
        let mut params = CertificateParams::new(names).map_err(&err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(&err)?;
        let cert = params.signed_by(&key, &*self.issuer).map_err(&err)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate for node `id`, for its client and peer listeners and for its calls
    /// to peers: names `localhost`, `127.0.0.1`, `::1` and each of `hosts` (DNS names or
    /// IP addresses).
    ///
    /// # Errors
    /// A host that is neither a DNS name nor an IP address ([`CertError::BadHost`]), or
    /// a signing failure.
    pub fn node_cert(&self, id: u64, hosts: &[String]) -> Result<CertPair, CertError> {
        let mut names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
        for host in hosts {
            check_host(host)?;
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        self.issue(
            &format!("node {id}"),
            &format!("fencelock node {id}"),
            names,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate whose common name is `name`.
    ///
    /// # Errors
    /// A signing failure.
    pub fn client_cert(&self, name: &str) -> Result<CertPair, CertError> {
        self.issue(
            &format!("client {name}"),
            name,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

/// One file written by [`write_certs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Where.
    pub path: PathBuf,
    /// What it is, e.g. "CA certificate" or "node 2 private key".
    pub what: String,
}

/// The file names [`write_certs`] uses, relative to its output directory.
pub mod names {
    /// The CA certificate.
    pub const CA: &str = "ca.pem";

    /// Node `id`'s certificate.
    pub fn node_cert(id: u64) -> String {
        format!("node-{id}.pem")
    }

    /// Node `id`'s private key.
    pub fn node_key(id: u64) -> String {
        format!("node-{id}.key")
    }

    /// Client `name`'s certificate.
    pub fn client_cert(name: &str) -> String {
        format!("client-{name}.pem")
    }

    /// Client `name`'s private key.
    pub fn client_key(name: &str) -> String {
        format!("client-{name}.key")
    }
}

fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(name.to_string()))
    }
}

fn check_host(host: &str) -> Result<(), CertError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(CertError::BadHost(host.to_string()))
    }
}

/// Make a new CA, a certificate for each node id and each client name, and write them
/// to `out` (created if missing; see [`names`]): `ca.pem`, `node-ID.pem` and
/// `node-ID.key`, `client-NAME.pem` and `client-NAME.key`. Keys are written readable by
/// the owner only. Existing files are an error unless `overwrite`.
///
/// # Errors
/// A bad client name or host, an existing file, or a write failure.
pub fn write_certs(
    out: &Path,
    nodes: &[u64],
    clients: &[String],
    hosts: &[String],
    overwrite: bool,
) -> Result<Vec<WrittenFile>, CertError> {
    for name in clients {
        check_name(name)?;
    }
    for host in hosts {
        check_host(host)?;
    }
    let ca = TestCa::new("fencelock throw-away CA")?;
    let mut files: Vec<(PathBuf, String, String, bool)> = vec![(
        out.join(names::CA),
        "CA certificate".to_string(),
        ca.cert_pem(),
        false,
    )];
    for id in nodes {
        let pair = ca.node_cert(*id, hosts)?;
        files.push((
            out.join(names::node_cert(*id)),
            format!("node {id} certificate"),
            pair.cert_pem,
            false,
        ));
        files.push((
            out.join(names::node_key(*id)),
            format!("node {id} private key"),
            pair.key_pem,
            true,
        ));
    }
    for name in clients {
        let pair = ca.client_cert(name)?;
        files.push((
            out.join(names::client_cert(name)),
            format!("client {name} certificate"),
            pair.cert_pem,
            false,
        ));
        files.push((
            out.join(names::client_key(name)),
            format!("client {name} private key"),
            pair.key_pem,
            true,
        ));
    }
    if !overwrite && let Some((path, ..)) = files.iter().find(|(path, ..)| path.exists()) {
        return Err(CertError::Exists(path.clone()));
    }
    std::fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (path, what, text, secret) in files {
        write_file(&path, text.as_bytes(), secret).map_err(|source| CertError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(WrittenFile { path, what });
    }
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if secret {
        // An existing file keeps its mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let files = write_certs(
            &out,
            &[1, 2],
            &["alice".to_string()],
            &["node1.example".to_string(), "10.1.2.3".to_string()],
            false,
        )
        .unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "node-1.pem",
                "node-1.key",
                "node-2.pem",
                "node-2.key",
                "client-alice.pem",
                "client-alice.key"
            ]
        );
        for file in &files {
            let text = std::fs::read_to_string(&file.path).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", file.path.display());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&file.path).unwrap().permissions().mode();
                let want = if file.what.ends_with("key") {
                    0o600
                } else {
                    0o644
                };
                assert_eq!(mode & 0o777, want, "{}", file.path.display());
            }
        }
        let again = write_certs(&out, &[1], &[], &[], false).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        write_certs(&out, &[1], &[], &[], true).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "with space"] {
            let err = write_certs(dir.path(), &[1], &[bad.to_string()], &[], false).unwrap_err();
            assert!(matches!(err, CertError::BadName(_)), "{bad}: {err}");
        }
        let err =
            write_certs(dir.path(), &[1], &[], &["bad host!".to_string()], false).unwrap_err();
        assert!(matches!(err, CertError::BadHost(_)), "{err}");
    }
}
