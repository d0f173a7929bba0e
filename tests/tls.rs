//! https:// end to end: blast against a TLS server written here (rustls, one thread per
//! connection) that counts what it really receives: connections, handshakes (full and
//! resumed), requests. Certificates are made fresh for each test with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::doc::{assert_balanced, assert_exit, assert_no_errors, at, num};
use common::{blast_json, closed_port, Mock, TempFile};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and a server certificate it signed (for localhost and 127.0.0.1), as PEM files.
struct Pki {
    ca: TempFile,
    cert: TempFile,
    key: TempFile,
    /// The CA's own issuer, to sign client certificates.
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn pki(tag: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("blast test CA {tag}"));
    let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    Pki {
        ca: TempFile::with_contents(&format!("{tag}-ca.pem"), issuer.pem().as_bytes()),
        cert: TempFile::with_contents(&format!("{tag}-cert.pem"), cert.pem().as_bytes()),
        key: TempFile::with_contents(&format!("{tag}-key.pem"), key.serialize_pem().as_bytes()),
        issuer,
    }
}

/// A client certificate signed by `pki`'s CA: (cert, key) files.
fn client_cert(pki: &Pki) -> (TempFile, TempFile) {
    let key = KeyPair::generate().expect("client key");
    let cert = CertificateParams::new(vec!["client.test".to_string()])
        .expect("client params")
        .signed_by(&key, &pki.issuer)
        .expect("client certificate");
    (
        TempFile::with_contents("client-cert.pem", cert.pem().as_bytes()),
        TempFile::with_contents("client-key.pem", key.serialize_pem().as_bytes()),
    )
}

#[allow(deprecated)] // ring, as blast itself (see src/tls.rs)
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(pki: &Pki, client_auth: bool) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert.0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.key.0).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.issuer.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What the TLS server counted.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    handshakes: AtomicU64,
    resumed: AtomicU64,
    requests: AtomicU64,
    /// SNI and ALPN of the last handshake.
    sni: Mutex<Option<String>>,
    alpn: Mutex<Option<Vec<u8>>>,
    /// The protocol version and cipher suite of the last handshake (rustls' names).
    negotiated: Mutex<Option<String>>,
}

impl Counts {
    fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

/// A TLS HTTP/1.1 server on 127.0.0.1: answers every request 200 with a 2-byte body,
/// keep-alive unless the request says `Connection: close`. Its threads end with the test
/// process (each connection has a read timeout).
fn tls_server(config: Arc<rustls::ServerConfig>) -> (u16, Arc<Counts>) {
    tls_server_with(config, Reply::Ok)
}

#[derive(Clone, Copy)]
enum Reply {
    /// 200 once the request head is in.
    Ok,
    /// 413 as soon as the head is in, then a reset, the body unread (as nginx does with a
    /// body over `client_max_body_size`).
    EarlyTooLarge,
}

fn tls_server_with(config: Arc<rustls::ServerConfig>, reply: Reply) -> (u16, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let (c, config) = (c.clone(), config.clone());
            thread::spawn(move || serve_tls(tcp, config, &c, reply));
        }
    });
    (port, counts)
}

fn serve_tls(tcp: TcpStream, config: Arc<rustls::ServerConfig>, c: &Counts, reply: Reply) {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut shaken = false;
    loop {
        let n = match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !shaken {
            shaken = true;
            c.handshakes.fetch_add(1, Ordering::SeqCst);
            if tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                c.resumed.fetch_add(1, Ordering::SeqCst);
            }
            *c.sni.lock().unwrap() = tls.conn.server_name().map(str::to_string);
            *c.alpn.lock().unwrap() = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
            *c.negotiated.lock().unwrap() = Some(format!(
                "{:?} {:?}",
                tls.conn.protocol_version().unwrap(),
                tls.conn.negotiated_cipher_suite().unwrap().suite()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            buf.drain(..end + 4);
            c.requests.fetch_add(1, Ordering::SeqCst);
            if let Reply::EarlyTooLarge = reply {
                let answer = b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                let _ = tls.write_all(answer).and_then(|()| tls.flush());
                common::reset_on_close(&tls.sock);
                return;
            }
            let close = head.contains("\r\nconnection: close");
            let answer: &[u8] = if close {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if tls.write_all(answer).and_then(|()| tls.flush()).is_err() {
                return;
            }
            if close {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let _ = tls.sock.shutdown(Shutdown::Write);
                // Let the client read to the end before the socket goes.
                let _ = tls.sock.read(&mut chunk);
                return;
            }
        }
    }
}

/// A plain HTTP server that answers anything with a 400 and closes, as nginx or
/// `blast mock` do with bytes that are not HTTP (a TLS ClientHello).
fn plain_400_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            thread::spawn(move || {
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 1024];
                if tcp.read(&mut b).unwrap_or(0) > 0 {
                    let _ = tcp.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    port
}

/// `blast_json` of `url` trusting `pki`'s CA (`--cacert`), with `args` after.
fn blast_trusting(
    pki: &Pki,
    url: &str,
    args: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let mut all = vec![url, "--cacert", pki.ca.path_str()];
    all.extend_from_slice(args);
    blast_json(&all)
}

fn tls_messages(doc: &serde_json::Value) -> String {
    at(doc, "error_messages")
        .get("tls")
        .map(|m| m.to_string())
        .unwrap_or_default()
}

#[test]
fn keep_alive_requests_over_tls_are_counted_exactly() {
    let pki = pki("keepalive");
    let (port, counts) = tls_server(server_config(&pki, false));
    let url = format!("https://localhost:{port}/x");
    let (out, doc) = blast_trusting(&pki, &url, &["-n", "4", "-c", "1", "--requests", "300"]);
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_balanced(&doc);
    assert_eq!(num(&doc, "requests.ok"), 300);
    assert_eq!(counts.get(&counts.requests), 300);
    // One handshake per connection, and each is measured.
    assert_eq!(counts.get(&counts.handshakes), 4);
    assert_eq!(num(&doc, "connections.opened"), 4);
    assert_eq!(num(&doc, "connections.tls_handshakes"), 4);
    assert_eq!(num(&doc, "tls_handshake_us.count"), 4);
    assert_eq!(num(&doc, "connect_us.count"), 4);
    assert!(at(&doc, "histograms").get("tls_handshake_us").is_some());
    assert!(at(&doc, "histograms").get("connect_us").is_some());
    assert_eq!(at(&doc, "config.tls.resume"), &serde_json::json!(true));
    // SNI from the URL's host; ALPN says http/1.1.
    assert_eq!(counts.sni.lock().unwrap().as_deref(), Some("localhost"));
    assert_eq!(
        counts.alpn.lock().unwrap().as_deref(),
        Some(&b"http/1.1"[..])
    );
}

/// `--tls-version` and `--tls-ciphers` decide what is offered: the server sees it, and the
/// result counts the handshakes by the suite negotiated.
#[test]
fn tls_version_and_ciphers_are_what_is_offered() {
    let pki = pki("suites");
    let (port, counts) = tls_server(server_config(&pki, false));
    let url = format!("https://127.0.0.1:{port}/");
    let cases: [(&[&str], &str, &str); 4] = [
        // The default: TLS 1.3, AES-256-GCM first (the test server follows the client).
        (
            &[],
            "TLSv1_3 TLS13_AES_256_GCM_SHA384",
            "TLS_AES_256_GCM_SHA384",
        ),
        (
            &[
                "--tls-ciphers",
                "tls13_aes_128_gcm_sha256,TLS_AES_256_GCM_SHA384",
            ],
            "TLSv1_3 TLS13_AES_128_GCM_SHA256",
            "TLS_AES_128_GCM_SHA256",
        ),
        (
            &["--tls-version", "1.2"],
            "TLSv1_2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            &[
                "--tls-version",
                "TLSv1.2",
                "--tls-ciphers",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ],
            "TLSv1_2 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];
    for (extra, server_saw, reported) in cases {
        let mut args = vec!["--cores", "1", "--conns", "1", "--requests", "2"];
        args.extend_from_slice(extra);
        let (out, doc) = blast_trusting(&pki, &url, &args);
        assert_exit(&out, 0);
        assert_no_errors(&doc);
        assert_eq!(
            counts.negotiated.lock().unwrap().as_deref(),
            Some(server_saw),
            "{extra:?}"
        );
        assert_eq!(
            at(&doc, "connections.tls_ciphers"),
            &serde_json::json!({ reported: 1 }),
            "{extra:?}"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("1 TLS handshakes (0 resumed; {reported})")),
            "{text}"
        );
    }
    let (_, doc) = blast_json(&[
        &url,
        "-k",
        "--tls-version",
        "1.3",
        "--tls-ciphers",
        "TLS_AES_128_GCM_SHA256",
        "--requests",
        "1",
    ]);
    assert_eq!(at(&doc, "config.tls.version"), "1.3");
    assert_eq!(
        at(&doc, "config.tls.ciphers"),
        &serde_json::json!(["TLS_AES_128_GCM_SHA256"])
    );
}

/// A server that answers 413 to a large body's head and resets the connection while blast
/// is still writing: the response is read through TLS and counted, as over plain http.
#[test]
fn an_early_final_response_over_tls_is_counted() {
    let pki = pki("early");
    let (port, counts) = tls_server_with(server_config(&pki, false), Reply::EarlyTooLarge);
    let url = format!("https://localhost:{port}/");
    let doc = common::post_huge_body(&url, &["--cacert", pki.ca.path_str()]);
    assert_balanced(&doc);
    assert_eq!(
        counts.get(&counts.requests),
        3,
        "requests the server received"
    );
    assert_eq!(num(&doc, "requests.completed"), 3, "{doc:#}");
    assert_eq!(num(&doc, "status.413"), 3, "{doc:#}");
    assert_eq!(num(&doc, "requests.failed"), 0, "{doc:#}");
}

#[test]
fn an_open_loop_over_tls_sends_its_schedule() {
    let pki = pki("openloop");
    let (port, counts) = tls_server(server_config(&pki, false));
    let url = format!("https://127.0.0.1:{port}/");
    let (out, doc) = blast_trusting(
        &pki,
        &url,
        &["-n", "4", "-c", "1", "--rate", "100", "-d", "1s"],
    );
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_balanced(&doc);
    let ok = num(&doc, "requests.ok");
    assert_eq!(ok, counts.get(&counts.requests));
    assert_eq!(ok + num(&doc, "open_loop.missed"), 100, "{doc:#}");
}

#[test]
fn connection_close_makes_a_handshake_per_request_and_resumes_sessions() {
    let pki = pki("close");
    let (port, counts) = tls_server(server_config(&pki, false));
    let url = format!("https://127.0.0.1:{port}/");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "-H",
            "Connection: close",
            "-n",
            "2",
            "-c",
            "1",
            "--requests",
            "40",
        ];
        a.extend_from_slice(extra);
        blast_trusting(&pki, &url, &a)
    };
    let (out, doc) = run(&[]);
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(num(&doc, "requests.ok"), 40);
    assert_eq!(counts.get(&counts.requests), 40);
    // A new connection, and a handshake, for every request.
    assert_eq!(counts.get(&counts.accepted), 40);
    assert_eq!(counts.get(&counts.handshakes), 40);
    assert_eq!(num(&doc, "connections.opened"), 40);
    assert_eq!(num(&doc, "connections.tls_handshakes"), 40);
    assert_eq!(num(&doc, "tls_handshake_us.count"), 40);
    // The first handshake of each connection is a full one; later ones resume. blast's
    // count is the server's.
    let resumed = num(&doc, "connections.tls_resumed");
    assert_eq!(resumed, counts.get(&counts.resumed));
    // Each reconnect finds a ticket from an earlier connection (the server sends two).
    assert_eq!(resumed, 40 - 2, "{doc:#}");

    // --no-tls-resume: every handshake is a full one.
    let before = counts.get(&counts.resumed);
    let (out, doc) = run(&["--no-tls-resume"]);
    assert_exit(&out, 0);
    assert_eq!(num(&doc, "requests.ok"), 40);
    assert_eq!(num(&doc, "connections.tls_handshakes"), 40);
    assert_eq!(num(&doc, "connections.tls_resumed"), 0);
    assert_eq!(counts.get(&counts.resumed), before);
    assert_eq!(at(&doc, "config.tls.resume"), &serde_json::json!(false));
}

#[test]
fn connection_close_over_plain_http_opens_a_connection_per_request() {
    let server = common::TestServer::start(common::Behaviour::keep_alive());
    let url = format!("http://127.0.0.1:{}/", server.port());
    let (out, doc) = blast_json(&[
        &url,
        "-H",
        "Connection: close",
        "-n",
        "2",
        "-c",
        "1",
        "--requests",
        "30",
    ]);
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(num(&doc, "requests.ok"), 30);
    assert_eq!(server.counts().requests, 30);
    assert_eq!(server.counts().accepted, 30);
    assert_eq!(num(&doc, "connections.opened"), 30);
    assert_eq!(num(&doc, "connect_us.count"), 30);
    // Plain http has no TLS figures.
    assert!(at(&doc, "connections").get("tls_handshakes").is_none());
    assert!(doc.get("tls_handshake_us").is_none());
    // A keep-alive run keeps no connect distribution (nor its memory).
    let (out, doc) = blast_json(&[&url, "-n", "2", "-c", "1", "--requests", "10"]);
    assert_exit(&out, 0);
    assert!(doc.get("connect_us").is_none(), "{doc:#}");
    assert!(at(&doc, "histograms").get("connect_us").is_none());
}

#[test]
fn a_certificate_from_another_ca_is_a_tls_error_and_exit_1() {
    let (server_pki, other) = (pki("server"), pki("other"));
    let (port, counts) = tls_server(server_config(&server_pki, false));
    let url = format!("https://127.0.0.1:{port}/");
    let (out, doc) = blast_trusting(&other, &url, &["-n", "1", "-c", "1", "--requests", "3"]);
    assert_exit(&out, 1);
    assert_balanced(&doc);
    assert_eq!(num(&doc, "errors.tls"), 3);
    assert_eq!(num(&doc, "requests.failed"), 3);
    let msg = tls_messages(&doc);
    assert!(
        msg.contains("UnknownIssuer") && msg.contains("--cacert"),
        "{msg}"
    );
    assert_eq!(counts.get(&counts.requests), 0);
    assert_eq!(counts.get(&counts.handshakes), 0);
    // --insecure accepts it.
    let (out, doc) = blast_json(&[&url, "--insecure", "-n", "1", "-c", "1", "--requests", "3"]);
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(counts.get(&counts.requests), 3);
}

#[test]
fn http_to_a_tls_port_says_use_https() {
    let pki = pki("plainclient");
    let (port, counts) = tls_server(server_config(&pki, false));
    let url = format!("http://127.0.0.1:{port}/");
    let (out, doc) = blast_json(&[&url, "-n", "1", "-c", "1", "--requests", "2"]);
    assert_exit(&out, 1);
    assert_balanced(&doc);
    assert_eq!(num(&doc, "errors.tls"), 2, "{doc:#}");
    let msg = tls_messages(&doc);
    assert!(msg.contains("speaks TLS, use https://"), "{msg}");
    assert_eq!(counts.get(&counts.requests), 0);
}

#[test]
fn https_to_a_plain_port_says_use_http() {
    let port = plain_400_server();
    let url = format!("https://127.0.0.1:{port}/");
    let (out, doc) = blast_json(&[&url, "-k", "-n", "1", "-c", "1", "--requests", "2"]);
    assert_exit(&out, 1);
    assert_eq!(num(&doc, "errors.tls"), 2, "{doc:#}");
    let msg = tls_messages(&doc);
    assert!(msg.contains("not TLS") && msg.contains("http://"), "{msg}");
}

#[test]
fn https_to_a_silent_port_gives_up_after_the_connect_timeout() {
    // Accepts (the kernel's backlog) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let (out, doc) = blast_json(&[
        &url,
        "-k",
        "-n",
        "1",
        "-c",
        "1",
        "--requests",
        "1",
        "--connect-timeout",
        "300ms",
    ]);
    assert_exit(&out, 1);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(num(&doc, "errors.tls"), 1);
    assert!(tls_messages(&doc).contains("--connect-timeout"), "{doc:#}");
    drop(listener);
}

#[test]
fn client_certificates_are_presented_when_given() {
    let pki = pki("mtls");
    let (port, counts) = tls_server(server_config(&pki, true));
    let url = format!("https://127.0.0.1:{port}/");
    let (cert, key) = client_cert(&pki);
    let (out, doc) = blast_trusting(
        &pki,
        &url,
        &[
            "--cert",
            cert.path_str(),
            "--key",
            key.path_str(),
            "-n",
            "1",
            "-c",
            "1",
            "--requests",
            "5",
        ],
    );
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(counts.get(&counts.requests), 5);
    // Without one, the server refuses the handshake (TLS 1.3: the client learns it from
    // the server's alert, on its first read).
    let (out, doc) = blast_trusting(&pki, &url, &["-n", "1", "-c", "1", "--requests", "2"]);
    assert_exit(&out, 1);
    assert_eq!(num(&doc, "errors.tls"), 2, "{doc:#}");
    assert!(tls_messages(&doc).contains("alert"), "{doc:#}");
    assert_eq!(counts.get(&counts.requests), 5);
}

#[test]
fn bad_tls_options_are_refused_before_the_run() {
    let pki = pki("opts");
    let port = closed_port();
    let https = format!("https://127.0.0.1:{port}/");
    let http = format!("http://127.0.0.1:{port}/");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&http, "--cacert", pki.ca.path_str()],
            "applies to an https:// URL",
        ),
        (vec![&http, "--insecure"], "applies to an https:// URL"),
        (
            vec![&https, "--cacert", "/nonexistent/ca.pem"],
            "cannot read --cacert",
        ),
        (
            vec![&https, "--cacert", pki.key.path_str()],
            "no PEM certificate",
        ),
        (
            vec![&https, "--insecure", "--cacert", pki.ca.path_str()],
            "--insecure",
        ),
        (
            vec![
                &https,
                "-k",
                "--cert",
                pki.cert.path_str(),
                "--key",
                "/nonexistent/key.pem",
            ],
            "cannot read --key",
        ),
        (
            vec![&https, "-k", "-H", "Connection: close", "--pipeline", "4"],
            "Connection: close",
        ),
        (
            vec![&http, "--tls-version", "1.3"],
            "applies to an https:// URL",
        ),
        (
            vec![&https, "-k", "--tls-version", "1.1"],
            "expected 1.2 or 1.3",
        ),
        (
            vec![&https, "-k", "--tls-ciphers", "RC4-MD5"],
            "not a cipher suite blast offers (one of TLS_AES_256_GCM_SHA384,",
        ),
        (
            vec![
                &https,
                "-k",
                "--tls-version",
                "1.2",
                "--tls-ciphers",
                "TLS_AES_128_GCM_SHA256",
            ],
            "none of them is a TLS 1.2 suite",
        ),
    ];
    for (args, want) in cases {
        let run = common::run_blast(&args);
        let err = run.stderr();
        assert_eq!(run.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("blast: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

/// `blast mock --tls-cert/--tls-key` on a free port.
fn tls_mock(pki: &Pki) -> Mock {
    Mock::start_with(&[
        "--cores",
        "1",
        "--tls-cert",
        pki.cert.path_str(),
        "--tls-key",
        pki.key.path_str(),
    ])
}

#[test]
fn the_mock_serves_tls_end_to_end() {
    let pki = pki("mock");
    let mock = tls_mock(&pki);
    let url = format!("https://localhost:{}/api/generate", mock.port);
    let (out, doc) = blast_json(&[
        &url,
        "--api",
        "ollama-generate",
        "--cacert",
        pki.ca.path_str(),
        "-n",
        "2",
        "-c",
        "1",
        "--requests",
        "20",
    ]);
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(num(&doc, "requests.ok"), 20);
    // 32 tokens per answer, decoded from the stream that came over TLS.
    assert_eq!(num(&doc, "tokens.output"), 20 * 32, "{doc:#}");
    assert_eq!(num(&doc, "connections.tls_handshakes"), 2);

    // Handshakes on purpose, resumed with the mock's session tickets.
    let url = format!("https://localhost:{}/api/version", mock.port);
    let (out, doc) = blast_trusting(
        &pki,
        &url,
        &[
            "-H",
            "Connection: close",
            "-n",
            "1",
            "-c",
            "1",
            "--requests",
            "10",
        ],
    );
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(num(&doc, "connections.tls_handshakes"), 10);
    assert_eq!(num(&doc, "connections.tls_resumed"), 9, "{doc:#}");

    // TLS 1.2, whose client waits for the server's Finished before it sends a request (the
    // mock once left it buffered: every handshake timed out), resumed by ticket too.
    let (out, doc) = blast_trusting(
        &pki,
        &url,
        &[
            "--tls-version",
            "1.2",
            "-H",
            "Connection: close",
            "--conns",
            "1",
            "--cores",
            "1",
            "--requests",
            "10",
        ],
    );
    assert_exit(&out, 0);
    assert_no_errors(&doc);
    assert_eq!(num(&doc, "connections.tls_resumed"), 9, "{doc:#}");
    assert_eq!(
        at(&doc, "connections.tls_ciphers"),
        &serde_json::json!({"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 10})
    );

    // The mock's TLS port asked in plain HTTP: its alert names the cause.
    let url = format!("http://127.0.0.1:{}/api/version", mock.port);
    let (out, doc) = blast_json(&[&url, "-n", "1", "-c", "1", "--requests", "1"]);
    assert_exit(&out, 1);
    assert!(tls_messages(&doc).contains("use https://"), "{doc:#}");
}
