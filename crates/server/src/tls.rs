//! TLS for the node's listeners and its calls to peers: reads the PEM files that
//! [`TlsConfig`] names and turns them into tonic's (rustls, ring provider) settings, and
//! into rustls settings for the Raft links ([`crate::raft::link`]) on the peer port.
//!
//! Every problem is found at start-up, with the file named: a missing or unreadable
//! file, a file without a certificate or key, or PEM that rustls will not take.

use crate::config::TlsConfig;
use crate::limits::TLS_HANDSHAKE_TIMEOUT;
use crate::raft::link::LinkClientTls;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The tonic TLS settings of one node, built from its [`TlsConfig`].
#[derive(Clone, Debug, Default)]
pub struct NodeTls {
    /// The client listener's settings, when it speaks TLS.
    pub client_server: Option<ServerTlsConfig>,
    /// The peer listener's settings (mutual TLS), when peer traffic is encrypted.
    pub peer_server: Option<ServerTlsConfig>,
    /// The settings of this node's calls to its peers (presents this node's certificate,
    /// checks theirs against the cluster CA).
    pub peer_client: Option<ClientTlsConfig>,
    /// The same mutual TLS for Raft links accepted on the peer port.
    pub peer_link_server: Option<Arc<rustls::ServerConfig>>,
    /// The same mutual TLS for Raft links to peers.
    pub peer_link_client: Option<LinkClientTls>,
}

/// Read a PEM file, checking that it holds a block whose label ends with `label`
/// (`CERTIFICATE`, `PRIVATE KEY`).
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn read_pem(path: &Path, what: &str, label: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("-----BEGIN ") && line.ends_with(&format!("{label}-----"))
    });
    if !has_block {
        return Err(format!(
            "the {what} {} holds no PEM {label} block",
            path.display()
        ));
    }
    Ok(bytes)
}

fn identity(cert: &Path, key: &Path, what: &str) -> Result<Identity, String> {
    Ok(Identity::from_pem(
        read_pem(cert, &format!("{what} certificate"), "CERTIFICATE")?,
        read_pem(key, &format!("{what} key"), "PRIVATE KEY")?,
    ))
}

fn ca(path: &Path, what: &str) -> Result<Certificate, String> {
    Ok(Certificate::from_pem(read_pem(path, what, "CERTIFICATE")?))
}

impl NodeTls {
    /// Read the files `config` names and build the settings (listeners refuse plaintext
    /// once they have TLS settings).
    ///
    /// # Errors
    /// A message naming the setting or file at fault.
    pub fn load(config: &TlsConfig) -> Result<NodeTls, String> {
        config.validate()?;
        let mut tls = NodeTls::default();
        if let Some((cert, key)) = config.client_identity() {
            let mut server = ServerTlsConfig::new()
                .identity(identity(cert, key, "tls.cert/tls.key")?)
                .timeout(TLS_HANDSHAKE_TIMEOUT);
            if let Some(client_ca) = &config.client_ca {
                server = server.client_ca_root(ca(client_ca, "tls.client_ca")?);
            }
            check_server(
                &server,
                "client listener (tls.cert, tls.key, tls.client_ca)",
            )?;
            tls.client_server = Some(server);
        }
        if let (Some(peer_ca_path), Some((cert, key))) = (&config.peer_ca, config.peer_identity()) {
            // Read once; tonic's settings and the links' rustls settings share the bytes.
            let cert_pem = read_pem(cert, "peer certificate", "CERTIFICATE")?;
            let key_pem = read_pem(key, "peer key", "PRIVATE KEY")?;
            let ca_pem = read_pem(peer_ca_path, "tls.peer_ca", "CERTIFICATE")?;
            let identity = Identity::from_pem(&cert_pem, &key_pem);
            let peer_ca = Certificate::from_pem(&ca_pem);
            let server = ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(peer_ca.clone())
                .timeout(TLS_HANDSHAKE_TIMEOUT);
            check_server(&server, "peer listener (peer certificate, tls.peer_ca)")?;
            let mut client = ClientTlsConfig::new()
                .ca_certificate(peer_ca)
                .identity(identity)
                .timeout(TLS_HANDSHAKE_TIMEOUT);
            if let Some(name) = &config.server_name {
                client = client.domain_name(name.clone());
            }
            Endpoint::from_static("https://127.0.0.1:1")
                .tls_config(client.clone())
                .map_err(|e| {
                    format!(
                        "peer TLS (peer certificate, tls.peer_ca): {}",
                        error_chain(&e)
                    )
                })?;
            tls.peer_server = Some(server);
            tls.peer_client = Some(client);
            let (link_server, link_client) = link_tls(&cert_pem, &key_pem, &ca_pem)
                .map_err(|e| format!("peer TLS (peer certificate, tls.peer_ca): {e}"))?;
            tls.peer_link_server = Some(link_server);
            tls.peer_link_client = Some(LinkClientTls {
                config: link_client,
                server_name: config.server_name.clone(),
            });
        }
        Ok(tls)
    }
}

/// rustls settings for Raft links, both ends: this node's certificate and key, peers'
/// certificates checked against the cluster CA (client certificates required).
fn link_tls(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(ca.map_err(|e| format!("CA: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("CA: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| e.to_string())?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// Build the settings once, so that bad PEM is reported at start-up.
fn check_server(server: &ServerTlsConfig, what: &str) -> Result<(), String> {
    tonic::transport::Server::builder()
        .tls_config(server.clone())
        .map(|_| ())
        .map_err(|e| format!("{what}: {}", error_chain(&e)))
}

/// An error and its sources, joined by ": ".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
