//! TLS with rustls (ring provider), driven by the runtime's own sockets: rustls is sans-I/O,
//! so a connection's loop feeds it what the socket has (`read_tls` reads straight from the
//! socket into rustls' buffer) and writes what it has to send, with the same readiness waits
//! as plain sockets. No thread, no second buffer of ciphertext.
//!
//! Here: the client and server configurations, and the few async steps both sides share
//! (flush, read more, handshake).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ConnectionCommon, DigitallySignedStruct, RootCertStore, ServerConfig, SideData,
    SignatureScheme, SupportedCipherSuite,
};

use crate::rt::Stream;

/// TLS 1.3 tickets a shard keeps, at most: each is used once, and connections that open
/// together each need one (rustls' own cache keeps 8 per server, so that 100 connections
/// reopened at once mostly made full handshakes).
const MAX_TICKETS: usize = 4096;

/// The ring provider: aws-lc-rs (rustls' default) needs cmake and clang to build, which
/// blast's build machines do not have. rustls 0.23.48 deprecates ring's provider because
/// it has no post-quantum key exchange; X25519 and the NIST curves are what it offers,
/// which is what nginx and most terminating proxies negotiate anyway.
///
/// Its key exchange groups in the order browsers and OpenSSL prefer, X25519 first: ring's
/// provider lists P-384 first, whose ring implementation costs about ten times as much per
/// handshake, and a server that accepts the first key share offered takes it.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

/// The cipher suites blast can offer: the ring provider's, TLS 1.3 first.
#[allow(deprecated)]
pub static SUITES: &[SupportedCipherSuite] = rustls::crypto::ring::ALL_CIPHER_SUITES;

/// How many suites `SUITES` holds (the size of the negotiated-suite counters).
#[allow(deprecated)]
pub const SUITE_COUNT: usize = rustls::crypto::ring::ALL_CIPHER_SUITES.len();

/// A suite's IANA name (what OpenSSL calls a TLS 1.3 suite too): `TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`. rustls spells the TLS 1.3 ones `TLS13_...`.
pub fn suite_name(suite: SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// Where a negotiated suite stands in `SUITES` (the index of its counter).
pub fn suite_index(suite: SupportedCipherSuite) -> Option<usize> {
    SUITES.iter().position(|s| s.suite() == suite.suite())
}

/// `--tls-ciphers A,B,...`: the suites to offer, in that order, by IANA or rustls name.
pub fn parse_ciphers(list: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let wanted = raw.to_ascii_uppercase().replacen("TLS13_", "TLS_", 1);
        let Some(suite) = SUITES.iter().find(|s| suite_name(**s) == wanted) else {
            let known: Vec<String> = SUITES.iter().map(|s| suite_name(*s)).collect();
            return Err(format!(
                "--tls-ciphers {raw}: not a cipher suite blast offers (one of {})",
                known.join(", ")
            ));
        };
        let name = suite_name(*suite);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err("--tls-ciphers: no cipher suite given".into());
    }
    Ok(names)
}

/// `--tls-version`: the one TLS version to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl Version {
    pub fn parse(raw: &str) -> Result<Version, String> {
        match raw.trim().to_ascii_lowercase().trim_start_matches("tlsv") {
            "1.2" => Ok(Version::Tls12),
            "1.3" => Ok(Version::Tls13),
            _ => Err(format!("--tls-version {raw}: expected 1.2 or 1.3")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::Tls12 => "1.2",
            Version::Tls13 => "1.3",
        }
    }

    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            Version::Tls12 => &rustls::version::TLS12,
            Version::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// What the command line says about TLS for an `https://` target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientOptions {
    /// PEM file of the CA certificates to trust instead of the system's.
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (its handshake signatures are still checked).
    pub insecure: bool,
    /// PEM client certificate chain and its private key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Resume sessions on reconnects (the default).
    pub resume: bool,
    /// `--tls-version`: only this version (else 1.3 and 1.2).
    pub version: Option<Version>,
    /// `--tls-ciphers`: these suites, in this order (names from `parse_ciphers`; else all
    /// of `SUITES`).
    pub ciphers: Option<Vec<String>>,
}

fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The system's trusted roots (rustls-native-certs: the OS store, /etc/ssl/certs and the
/// like, or SSL_CERT_FILE / SSL_CERT_DIR), or the `--cacert` file's.
fn roots(cacert: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let certs = match cacert {
        Some(path) => read_certs("--cacert", path)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no system CA certificates found{why}; give --cacert PATH (or install ca-certificates)"
                ));
            }
            found.certs
        }
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no usable CA certificate in --cacert".into());
    }
    Ok(store)
}

/// The client configuration of a run (each shard takes a copy with its own session cache:
/// `for_shard`). ALPN says http/1.1.
pub fn client_config(o: &ClientOptions) -> Result<ClientConfig, String> {
    let mut provider = provider();
    if let Some(names) = &o.ciphers {
        Arc::make_mut(&mut provider).cipher_suites = names
            .iter()
            .filter_map(|n| SUITES.iter().find(|s| suite_name(**s) == *n).copied())
            .collect();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match o.version {
        Some(v) => &[v.rustls()],
        None => rustls::DEFAULT_VERSIONS,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| match (&o.ciphers, o.version) {
            (Some(_), Some(v)) => format!(
                "--tls-ciphers: none of them is a TLS {} suite (--tls-version)",
                v.as_str()
            ),
            _ => format!("TLS: {e}"),
        })?;
    let builder = if o.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(o.cacert.as_deref())?)
    };
    let mut config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs("--cert", cert)?, read_key("--key", key)?)
            .map_err(|e| format!("--cert/--key: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert and --key go together".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A shard's configuration: `base` with a session store of its own (its lock is never
/// contended: one core uses it), or none with `--no-tls-resume`.
pub fn for_shard(base: &ClientConfig, resume: bool) -> Arc<ClientConfig> {
    let mut config = base.clone();
    config.resumption = if resume {
        rustls::client::Resumption::store(Arc::new(Sessions::default()))
    } else {
        rustls::client::Resumption::disabled()
    };
    Arc::new(config)
}

/// A shard's sessions for its one target (a run has one host): the TLS 1.2 session, and up
/// to `MAX_TICKETS` TLS 1.3 tickets, each handed out once, oldest first.
#[derive(Debug, Default)]
struct Sessions {
    kx_hint: Mutex<Option<rustls::NamedGroup>>,
    tls12: Mutex<Option<rustls::client::Tls12ClientSessionValue>>,
    tls13: Mutex<VecDeque<rustls::client::Tls13ClientSessionValue>>,
}

impl rustls::client::ClientSessionStore for Sessions {
    fn set_kx_hint(&self, _: ServerName<'static>, group: rustls::NamedGroup) {
        *lock(&self.kx_hint) = Some(group);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        *lock(&self.kx_hint)
    }

    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        *lock(&self.tls12) = Some(value);
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        lock(&self.tls12).clone()
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        *lock(&self.tls12) = None;
    }

    fn insert_tls13_ticket(
        &self,
        _: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        let mut tickets = lock(&self.tls13);
        if tickets.len() == MAX_TICKETS {
            tickets.pop_front();
        }
        tickets.push_back(value);
    }

    fn take_tls13_ticket(
        &self,
        _: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        // The newest: the least likely to have expired.
        lock(&self.tls13).pop_back()
    }
}

/// A poisoned lock still holds usable sessions.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The name the server's certificate must carry, sent as SNI (an IP address is checked
/// against the certificate's IP addresses and sends no SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?}: not a TLS server name ({e})"))
}

/// `--insecure`: any certificate is accepted; the handshake's signatures are still checked,
/// so that the cost of a handshake is a real one.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `blast mock --tls-cert/--tls-key`: the server side, ALPN http/1.1, stateless session
/// tickets (resumption without a cache shared between the mock's cores).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(read_certs("--tls-cert", cert)?, read_key("--tls-key", key)?)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// The socket as rustls' `Write`: one non-blocking send, `WouldBlock` when the socket has
/// no room.
pub(crate) struct Io<'a>(pub &'a Stream);

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .try_write(buf)
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }

    /// rustls hands over every record it has queued at once.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0
            .try_write_vectored(bufs)
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket as rustls' `Read`, with arrival stamps when asked for.
struct Stamped<'a, 'b> {
    stream: &'a Stream,
    arrived: Option<&'b mut Option<SystemTime>>,
}

impl Read for Stamped<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = match self.arrived.as_deref_mut() {
            Some(at) => self.stream.try_read_stamped(buf, at),
            None => self.stream.try_read(buf),
        };
        got.unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }
}

/// Write every record rustls has to send: how many bytes went on the wire.
pub(crate) async fn flush<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    stream: &Stream,
) -> io::Result<usize> {
    let mut sent = 0;
    while conn.wants_write() {
        match conn.write_tls(&mut Io(stream)) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Read what the socket has into rustls, waiting for it if need be: the bytes read, 0 at
/// the end of the stream. The caller then processes them (`process_new_packets`).
pub(crate) async fn read_some<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    stream: &Stream,
) -> io::Result<usize> {
    read_some_stamped(conn, stream, None).await
}

/// One read of what the socket holds into rustls, without waiting (`WouldBlock` when it
/// holds nothing).
pub(crate) fn read_now<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    stream: &Stream,
) -> io::Result<usize> {
    conn.read_tls(&mut Stamped {
        stream,
        arrived: None,
    })
}

/// `read_some`, and (with `arrived`) when the kernel says the bytes arrived (see
/// `Stream::try_read_stamped`).
pub(crate) async fn read_some_stamped<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    stream: &Stream,
    mut arrived: Option<&mut Option<SystemTime>>,
) -> io::Result<usize> {
    loop {
        let mut from = Stamped {
            stream,
            arrived: arrived.as_deref_mut(),
        };
        match conn.read_tls(&mut from) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Why a handshake (or a later record) failed, in one line.
#[derive(Debug)]
pub enum Failure {
    Tls(rustls::Error),
    Io(io::Error),
    /// The peer closed the connection before the handshake was done.
    Eof,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use rustls::{CertificateError, Error, InvalidMessage};
        match self {
            Failure::Tls(Error::InvalidMessage(InvalidMessage::InvalidContentType)) => write!(
                f,
                "the server's answer is not TLS (a plain HTTP port?): use http://"
            ),
            Failure::Tls(
                e @ Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ),
            ) => write!(
                f,
                "{e} (not signed by a trusted CA: give --cacert PATH, or --insecure)"
            ),
            Failure::Tls(e @ Error::InvalidCertificate(_)) => {
                write!(f, "{e} (--insecure skips the check)")
            }
            Failure::Tls(e) => write!(f, "{e}"),
            Failure::Io(e) => write!(f, "TLS handshake: {e}"),
            Failure::Eof => write!(
                f,
                "the server closed the connection during the TLS handshake (does the port speak TLS?)"
            ),
        }
    }
}

/// Run the handshake to its end (the last flight may still be buffered: a client's goes
/// out with its first request, a server must flush its own): the bytes it wrote and read. A failure is sent to the peer as an
/// alert when rustls has one.
pub(crate) async fn handshake<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    stream: &Stream,
) -> Result<(usize, usize), Failure> {
    let (mut sent, mut received) = (0, 0);
    while conn.is_handshaking() {
        sent += flush(conn, stream).await.map_err(Failure::Io)?;
        if !conn.is_handshaking() {
            break;
        }
        match read_some(conn, stream).await.map_err(Failure::Io)? {
            0 => return Err(Failure::Eof),
            n => received += n,
        }
        if let Err(e) = conn.process_new_packets() {
            let _ = flush(conn, stream).await;
            return Err(Failure::Tls(e));
        }
    }
    Ok((sent, received))
}

/// The first bytes of a TLS record from a server (a handshake or an alert): what an
/// `http://` request to a TLS port gets back.
pub fn looks_like_tls(data: &[u8]) -> bool {
    matches!(data, [0x15 | 0x16, 0x03, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_http() {
        // A TLS alert (what rustls and OpenSSL send to plain HTTP), a handshake record.
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x00, 0x5a]));
        assert!(!looks_like_tls(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(!looks_like_tls(&[0x15]));
        assert!(!looks_like_tls(&[0x17, 0x03, 0x03]));
    }

    #[test]
    fn failures_name_their_cause() {
        use rustls::{CertificateError, Error, InvalidMessage};
        let plain = Failure::Tls(Error::InvalidMessage(InvalidMessage::InvalidContentType));
        assert!(plain.to_string().contains("use http://"), "{plain}");
        let ca = Failure::Tls(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        let ca = ca.to_string();
        assert!(
            ca.contains("UnknownIssuer") && ca.contains("--cacert"),
            "{ca}"
        );
        assert!(Failure::Eof.to_string().contains("does the port speak TLS"));
    }

    #[test]
    fn options_are_checked_when_the_configuration_is_built() {
        let o = ClientOptions {
            cert: Some("/nonexistent/cert.pem".into()),
            insecure: true,
            ..ClientOptions::default()
        };
        assert_eq!(
            client_config(&o).unwrap_err(),
            "--cert and --key go together"
        );
        let o = ClientOptions {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..ClientOptions::default()
        };
        assert!(client_config(&o)
            .unwrap_err()
            .starts_with("cannot read --cacert /nonexistent/ca.pem"));
        let c = client_config(&ClientOptions {
            insecure: true,
            ..ClientOptions::default()
        })
        .unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
    }
}
