//! Why a gateway connection failed, in the user's terms: each [`GatewayConnectError`] says what
//! is wrong and what to do, in one line, instead of the transport's own words (`tcp connect
//! error`, `received corrupt message of type InvalidContentType`, `UnknownIssuer`).
//!
//! tonic reports a failed connection as a chain of errors (tonic → hyper → io::Error → rustls);
//! [`symptom`] walks that chain down to the io::Error kind and the TLS error and names the
//! mistake; [`Target`], what [`crate::gateway::GatewayClient`] connected to, adds the URL, the
//! CA it was given and who issued the certificate the gateway presents. Two mistakes leave no
//! trace in the chain and are checked for instead: a key that is not the certificate's
//! ([`check_identity`], before connecting) and an `http://` URL for a server that does not speak
//! plain-text gRPC ([`Target::probe_plaintext`]).

use std::error::Error;
use std::io;
use std::path::Path;

use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509, X509NameRef};

/// What went wrong connecting to a gateway, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum GatewayConnectError {
    /// The URL is not `https://HOST:PORT` (or `http://` for a development gateway).
    #[error("{url} is not a gateway URL ({reason}): write it as https://HOST:PORT")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name does not resolve.
    #[error("cannot reach the gateway at {url}: the host name {host} does not resolve")]
    UnknownHost {
        /// The URL given.
        url: String,
        /// Its host.
        host: String,
    },
    /// Nothing listens on the port.
    #[error(
        "cannot reach the gateway at {url} (connection refused): is it running, and is this its \
         port?"
    )]
    Refused {
        /// The URL given.
        url: String,
    },
    /// No answer (a firewall dropping packets, a wrong address, a server that never answers).
    #[error(
        "cannot reach the gateway at {url} (no answer within {secs} s): is the address right and \
         the port open?"
    )]
    NoAnswer {
        /// The URL given.
        url: String,
        /// How long we waited.
        secs: u64,
    },
    /// A plain-text `http://` URL for a gateway that serves TLS.
    #[error("the gateway at {url} speaks TLS: use {https}")]
    SpeaksTls {
        /// The URL given.
        url: String,
        /// The same address with `https://`.
        https: String,
    },
    /// A server that does not speak gRPC (such as a CometBFT node's HTTP/1 RPC) where the
    /// gateway was expected.
    #[error("{url} does not answer gRPC: is this the gateway's port (not the node's RPC)?")]
    NotGrpc {
        /// The URL given.
        url: String,
    },
    /// An `https://` URL for a port that does not speak TLS.
    #[error("{url} does not answer TLS: is this the gateway's port (not the node's RPC)?")]
    NotTls {
        /// The URL given.
        url: String,
    },
    /// The gateway's server certificate is not issued by the CA the client trusts for it.
    #[error(
        "the gateway at {url} presents a certificate issued by {}, not by the CA given ({given}): \
         pass the root CA of the gateway's org (--gateway-ca)",
        presented.as_deref().unwrap_or("another CA")
    )]
    UnknownIssuer {
        /// The URL given.
        url: String,
        /// The name of the CA (or CAs) given, from their certificates.
        given: String,
        /// The issuer of the certificate the gateway presents, if it could be read.
        presented: Option<String>,
    },
    /// The gateway's certificate does not name the host the client connected to.
    #[error(
        "the certificate of the gateway at {url} is not issued for {name}: use a host name or \
         address its certificate names"
    )]
    WrongName {
        /// The URL given.
        url: String,
        /// The name checked (the URL's host, or the name set apart for TLS).
        name: String,
    },
    /// The gateway's certificate is expired or not yet valid.
    #[error(
        "the gateway at {url} presents an expired or not yet valid certificate: its org must \
         renew it (or this machine's clock is wrong)"
    )]
    Expired {
        /// The URL given.
        url: String,
    },
    /// The gateway ended the TLS handshake over the member certificate.
    #[error(
        "the gateway at {url} refused the member certificate ({alert}): use a certificate and \
         key issued by an org of the consortium"
    )]
    CertificateRefused {
        /// The URL given.
        url: String,
        /// The TLS alert the gateway sent.
        alert: String,
    },
    /// Any other TLS failure.
    #[error("TLS with the gateway at {url} failed: {reason}")]
    Tls {
        /// The URL given.
        url: String,
        /// The TLS library's reason.
        reason: String,
    },
    /// The member key does not belong to the member certificate.
    #[error("{key} is not the key of {cert}")]
    KeyMismatch {
        /// The certificate ("certificate PATH").
        cert: String,
        /// The key ("the key in PATH").
        key: String,
    },
    /// A certificate or key that does not parse.
    #[error("{what} is not a PEM {expected}")]
    NotPem {
        /// The file or PEM.
        what: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// Anything else, with its innermost cause.
    #[error("connecting to the gateway at {url} failed: {reason}")]
    Failed {
        /// The URL given.
        url: String,
        /// The innermost cause.
        reason: String,
    },
}

/// A mistake recognised in a transport error chain.
#[derive(Debug, PartialEq, Eq)]
enum Symptom {
    /// TCP connection refused.
    Refused,
    /// TCP connect timed out.
    TimedOut,
    /// The peer closed the connection during the TLS handshake.
    ClosedInHandshake,
    /// The peer's bytes are not TLS records.
    NotTls,
    /// The server certificate's issuer is not a trusted CA.
    UnknownIssuer,
    /// The server certificate does not name the host.
    WrongName,
    /// The server certificate is outside its validity.
    Expired,
    /// The peer sent a TLS alert (its name).
    Alert(String),
    /// Another TLS error (rustls's message).
    OtherTls(String),
}

/// The errors of a chain, innermost last. `io::Error::source` skips the error it wraps (it
/// returns that error's source), so each io::Error's own payload is listed after it.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e);
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            out.push(inner);
        }
        next = e.source();
    }
    out
}

/// What `err` (a tonic transport error or the source of a call's status) says went wrong, if it
/// is one of the mistakes we can name.
///
/// rustls errors are recognised by their `Debug` form (`InvalidCertificate(UnknownIssuer)`,
/// `InvalidMessage(..)`, `AlertReceived(..)`): the client reaches rustls only through tonic and
/// does not depend on it, and these are the names of rustls's public error variants.
fn symptom(err: &(dyn Error + 'static)) -> Option<Symptom> {
    let links = chain(err);
    for e in &links {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return Some(Symptom::Refused),
                io::ErrorKind::TimedOut => return Some(Symptom::TimedOut),
                _ => {}
            }
        }
        let debug = format!("{e:?}");
        let tls = [
            ("InvalidCertificate(UnknownIssuer", Symptom::UnknownIssuer),
            ("InvalidCertificate(NotValidForName", Symptom::WrongName),
            ("InvalidCertificate(Expired", Symptom::Expired),
            ("InvalidCertificate(NotValidYet", Symptom::Expired),
            ("InvalidMessage(", Symptom::NotTls),
        ];
        if let Some((_, s)) = tls.into_iter().find(|(p, _)| debug.starts_with(p)) {
            return Some(s);
        }
        if let Some(alert) = debug
            .strip_prefix("AlertReceived(")
            .and_then(|a| a.strip_suffix(')'))
        {
            return Some(Symptom::Alert(alert.to_owned()));
        }
        if debug.starts_with("InvalidCertificate(") || debug.starts_with("PeerMisbehaved(") {
            return Some(Symptom::OtherTls(e.to_string()));
        }
    }
    // A TLS client whose peer hangs up mid-handshake (a server that does not speak TLS and
    // drops what it cannot parse).
    links
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::UnexpectedEof)
        .then_some(Symptom::ClosedInHandshake)
}

/// The innermost message of the chain: the cause, without the wrappers' "transport error",
/// "tcp connect error".
pub(crate) fn root_cause(err: &(dyn Error + 'static)) -> String {
    chain(err)
        .last()
        .map_or_else(|| err.to_string(), |e| e.to_string())
}

/// Whether a TLS alert from the server is about the client's certificate.
fn is_certificate_alert(alert: &str) -> bool {
    [
        "BadCertificate",
        "UnsupportedCertificate",
        "CertificateRevoked",
        "CertificateExpired",
        "CertificateUnknown",
        "CertificateRequired",
        "UnknownCA",
        "AccessDenied",
        "DecryptError",
    ]
    .contains(&alert)
}

/// A certificate name's common name (its whole one-line form if it has none).
fn common_name(name: &X509NameRef) -> String {
    name.entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| {
            name.entries()
                .filter_map(|e| e.data().to_string().ok())
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// The names of the CAs in a PEM bundle, for a message ("datacorp CA"); an error if it holds no
/// certificate.
pub(crate) fn ca_names(pem: &[u8], what: &str) -> Result<String, GatewayConnectError> {
    let not_pem = || GatewayConnectError::NotPem {
        what: what.to_owned(),
        expected: "CA certificate",
    };
    let certs = X509::stack_from_pem(pem).map_err(|_| not_pem())?;
    if certs.is_empty() {
        return Err(not_pem());
    }
    Ok(certs
        .iter()
        .map(|c| common_name(c.subject_name()))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Checks that `key_pem` is the private key of the certificate `cert_pem` before any
/// connection: over TLS the mismatch shows only as a failed handshake. The files, when known,
/// name them in the message.
pub(crate) fn check_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: Option<(&Path, &Path)>,
) -> Result<(), GatewayConnectError> {
    let (cert_file, key_file) = match files {
        Some((c, k)) => (c.display().to_string(), k.display().to_string()),
        None => ("the member certificate".into(), "the member key".into()),
    };
    let x509 = X509::from_pem(cert_pem).map_err(|_| GatewayConnectError::NotPem {
        what: cert_file.clone(),
        expected: "certificate",
    })?;
    let private = PKey::private_key_from_pem(key_pem).map_err(|_| GatewayConnectError::NotPem {
        what: key_file.clone(),
        expected: "private key",
    })?;
    let matches = x509
        .public_key()
        .map(|public| public.public_eq(&private))
        .unwrap_or(false);
    if matches {
        return Ok(());
    }
    Err(match files {
        Some(_) => GatewayConnectError::KeyMismatch {
            cert: format!("certificate {cert_file}"),
            key: format!("the key in {key_file}"),
        },
        None => GatewayConnectError::KeyMismatch {
            cert: format!(
                "the member certificate ({})",
                common_name(x509.subject_name())
            ),
            key: key_file,
        },
    })
}

/// Where a client connects, kept to explain a failure in the user's terms.
#[derive(Debug)]
pub(crate) struct Target {
    /// The URL as given.
    pub(crate) url: String,
    /// Its host (an IPv6 address without brackets).
    pub(crate) host: String,
    /// Its port (or the scheme's).
    pub(crate) port: u16,
    /// The name the gateway's certificate must carry (the host, unless set apart).
    pub(crate) name: String,
    /// The names of the CAs trusted for the gateway's certificate (None: plain text).
    pub(crate) trusted_cas: Option<String>,
}

impl Target {
    /// The mistake behind a failed call, if it names one: a transport failure (the gateway went
    /// away, a reconnection met another certificate), or an answer from an HTTP server that is
    /// not a gRPC one (tonic makes up a status for it).
    pub(crate) fn explain_call(&self, s: &tonic::Status) -> Option<GatewayConnectError> {
        if s.message().starts_with("grpc-status header missing") {
            return Some(GatewayConnectError::NotGrpc {
                url: self.url.clone(),
            });
        }
        self.explain(Error::source(s)?, false)
    }

    /// The user's mistake behind a failed connection (`connecting`) or call, if its error chain
    /// names one.
    fn explain(
        &self,
        err: &(dyn Error + 'static),
        connecting: bool,
    ) -> Option<GatewayConnectError> {
        let url = self.url.clone();
        Some(match symptom(err)? {
            Symptom::Refused => GatewayConnectError::Refused { url },
            Symptom::TimedOut => GatewayConnectError::NoAnswer {
                url,
                secs: crate::gateway::CONNECT_TIMEOUT.as_secs(),
            },
            // A connection that closes during a call is not a handshake closed on us.
            Symptom::NotTls if self.trusted_cas.is_some() => GatewayConnectError::NotTls { url },
            Symptom::ClosedInHandshake if connecting && self.trusted_cas.is_some() => {
                GatewayConnectError::NotTls { url }
            }
            Symptom::NotTls | Symptom::ClosedInHandshake => return None,
            Symptom::UnknownIssuer => GatewayConnectError::UnknownIssuer {
                url,
                given: self.trusted_cas.clone().unwrap_or_default(),
                presented: None,
            },
            Symptom::WrongName => GatewayConnectError::WrongName {
                url,
                name: self.name.clone(),
            },
            Symptom::Expired => GatewayConnectError::Expired { url },
            Symptom::Alert(alert) if is_certificate_alert(&alert) => {
                GatewayConnectError::CertificateRefused { url, alert }
            }
            Symptom::Alert(alert) => GatewayConnectError::Tls {
                url,
                reason: format!("the gateway sent TLS alert {alert}"),
            },
            Symptom::OtherTls(reason) => GatewayConnectError::Tls { url, reason },
        })
    }

    /// The mistake behind a failed connection: as [`Target::explain`], with what only another
    /// look at the network tells (who issued the certificate the gateway presents, whether the
    /// host resolves); else the innermost cause.
    ///
    /// The error is read before the first await, so the future holds no `&dyn Error` (which is
    /// not `Send`) and a connection can be made from a task on a multi-threaded runtime.
    pub(crate) fn diagnose(
        &self,
        err: &(dyn Error + 'static),
    ) -> impl std::future::Future<Output = GatewayConnectError> + Send + '_ {
        let explained = self.explain(err, true);
        let root = root_cause(err);
        self.diagnosed(explained, root)
    }

    async fn diagnosed(
        &self,
        explained: Option<GatewayConnectError>,
        root: String,
    ) -> GatewayConnectError {
        match explained {
            Some(GatewayConnectError::UnknownIssuer { url, given, .. }) => {
                let (host, port) = (self.host.clone(), self.port);
                let presented = tokio::task::spawn_blocking(move || presented_issuer(&host, port))
                    .await
                    .ok()
                    .flatten();
                GatewayConnectError::UnknownIssuer {
                    url,
                    given,
                    presented,
                }
            }
            Some(e) => e,
            None => match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                Err(_) => GatewayConnectError::UnknownHost {
                    url: self.url.clone(),
                    host: self.host.clone(),
                },
                Ok(_) => GatewayConnectError::Failed {
                    url: self.url.clone(),
                    reason: root,
                },
            },
        }
    }

    /// For a plain-text URL: whether the server answers an HTTP/2 client's first bytes as a
    /// gRPC server does, with a SETTINGS frame (a 3-byte length, then type 4). A TLS server
    /// answers with an alert record (0x15 0x03 ..), an HTTP/1 server (a node's RPC) with a status
    /// line, other servers with their own greeting or by hanging up. HTTP/2 over plain text
    /// notices none of this until the first call, and then says only "h2 protocol error" or
    /// "broken pipe", which is why this one round trip is made when connecting. A server that
    /// says nothing within the wait is left to the calls to judge.
    pub(crate) async fn probe_plaintext(&self) -> Option<GatewayConnectError> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        let mut head = Vec::with_capacity(4);
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            s.write_all(PREFACE_AND_SETTINGS).await?;
            (&mut s).take(4).read_to_end(&mut head).await
        };
        tokio::time::timeout(std::time::Duration::from_secs(3), exchange)
            .await
            .ok()?
            .ok()?;
        let url = self.url.clone();
        match greeting(&head) {
            Greeting::Http2 => None,
            Greeting::Tls => Some(GatewayConnectError::SpeaksTls {
                https: format!("https://{}", url.trim_start_matches("http://")),
                url,
            }),
            Greeting::Other => Some(GatewayConnectError::NotGrpc { url }),
        }
    }
}

/// The issuer of the certificate the server at `host:port` presents, read over a separate TLS
/// handshake that verifies nothing and sends nothing: only to name, in an error, the CA the
/// gateway's certificate comes from.
fn presented_issuer(host: &str, port: u16) -> Option<String> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use std::net::ToSocketAddrs as _;
    let timeout = std::time::Duration::from_secs(3);
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_verify(SslVerifyMode::NONE);
    let stream = builder
        .build()
        .configure()
        .ok()?
        .verify_hostname(false)
        .connect(host, tcp)
        .ok()?;
    let cert = stream.ssl().peer_certificate()?;
    Some(common_name(cert.issuer_name()))
}

/// What a server's first bytes, in answer to an HTTP/2 client's, say it speaks.
#[derive(Debug, PartialEq, Eq)]
enum Greeting {
    /// A SETTINGS frame: a 3-byte length, then type 4.
    Http2,
    /// A TLS record (an alert or a handshake): type 0x15 or 0x16, then version 3.x.
    Tls,
    /// Anything else: an HTTP/1 status line, another protocol's greeting, a hang-up.
    Other,
}

fn greeting(head: &[u8]) -> Greeting {
    match head {
        [_, _, _, 0x04, ..] => Greeting::Http2,
        [0x15 | 0x16, 0x03, ..] => Greeting::Tls,
        _ => Greeting::Other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An error wrapping another, as tonic's and hyper's wrappers do.
    #[derive(Debug)]
    struct Wrapper(&'static str, Box<dyn Error + Send + Sync>);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    /// Shaped as rustls's error enum, whose `Debug` form [`symptom`] reads.
    #[derive(Debug)]
    #[allow(dead_code)]
    enum FakeRustls {
        InvalidCertificate(FakeCertificateError),
        InvalidMessage(FakeInvalidMessage),
        AlertReceived(FakeAlert),
    }
    #[derive(Debug)]
    enum FakeCertificateError {
        UnknownIssuer,
    }
    #[derive(Debug)]
    enum FakeInvalidMessage {
        InvalidContentType,
    }
    #[derive(Debug)]
    enum FakeAlert {
        BadCertificate,
    }
    impl std::fmt::Display for FakeRustls {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "rustls says {self:?}")
        }
    }
    impl Error for FakeRustls {}

    fn wrapped(inner: io::Error) -> Wrapper {
        Wrapper(
            "transport error",
            Box::new(Wrapper("tcp connect error", Box::new(inner))),
        )
    }

    fn tls(e: FakeRustls) -> Wrapper {
        wrapped(io::Error::new(io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn refused_connection_is_named_through_the_wrappers() {
        let e = wrapped(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(symptom(&e), Some(Symptom::Refused));
    }

    #[test]
    fn tls_errors_inside_an_io_error_are_named() {
        use FakeRustls::*;
        let cases = [
            (
                InvalidCertificate(FakeCertificateError::UnknownIssuer),
                Symptom::UnknownIssuer,
            ),
            (
                InvalidMessage(FakeInvalidMessage::InvalidContentType),
                Symptom::NotTls,
            ),
            (
                AlertReceived(FakeAlert::BadCertificate),
                Symptom::Alert("BadCertificate".into()),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(symptom(&tls(err)), Some(want));
        }
    }

    #[test]
    fn unknown_failures_give_their_innermost_cause() {
        let e = wrapped(io::Error::other("network is unreachable"));
        assert_eq!(symptom(&e), None);
        assert_eq!(root_cause(&e), "network is unreachable");
    }

    #[test]
    fn plaintext_probe_tells_grpc_from_tls_and_http1() {
        let settings = [0, 0, 0x12, 0x04, 0, 0, 0, 0, 0];
        assert_eq!(greeting(&settings), Greeting::Http2);
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
        assert_eq!(greeting(&alert), Greeting::Tls);
        assert_eq!(greeting(b"HTTP/1.1 400 Bad Request"), Greeting::Other);
        assert_eq!(greeting(b""), Greeting::Other);
    }

    #[test]
    fn key_of_another_certificate_is_refused_before_connecting() {
        let make = || {
            let key = openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap(),
            )
            .unwrap();
            let key = PKey::from_ec_key(key).unwrap();
            let mut name = openssl::x509::X509NameBuilder::new().unwrap();
            name.append_entry_by_nid(Nid::COMMONNAME, "member").unwrap();
            let name = name.build();
            let mut b = X509::builder().unwrap();
            b.set_subject_name(&name).unwrap();
            b.set_issuer_name(&name).unwrap();
            b.set_pubkey(&key).unwrap();
            b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
                .unwrap();
            b.sign(&key, openssl::hash::MessageDigest::sha256())
                .unwrap();
            (
                b.build().to_pem().unwrap(),
                key.private_key_to_pem_pkcs8().unwrap(),
            )
        };
        let (cert, key) = make();
        let (_, other_key) = make();
        let files = (Path::new("a.pem"), Path::new("b.key"));
        check_identity(&cert, &key, Some(files)).unwrap();
        let err = check_identity(&cert, &other_key, Some(files)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the key in b.key is not the key of certificate a.pem"
        );
        let err = check_identity(&cert, &other_key, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the member key is not the key of the member certificate (member)"
        );
        let err = check_identity(b"junk", &key, Some(files)).unwrap_err();
        assert_eq!(err.to_string(), "a.pem is not a PEM certificate");
        assert_eq!(ca_names(&cert, "ca.pem").unwrap(), "member");
    }
}
