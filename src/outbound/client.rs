//! The SMTP client that delivers queued mail (RFC 5321), with STARTTLS
//! (RFC 3207), AUTH PLAIN for smarthosts (RFC 4954), PIPELINING (RFC 2920),
//! SIZE, 8BITMIME and SMTPUTF8 when the peer offers them.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use futures_lite::AsyncWriteExt;

use crate::pop3::DotStuffer;
use crate::server::conn::{Input, Line, MaybeTls, with_timeout};
use crate::store::queue::QueueEntry;
use crate::store::{BlobId, Store};

/// RFC 5321 4.5.3.2 client timeouts.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(300);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
pub const DATA_INIT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// STARTTLS if offered, without checking the certificate (what MX
    /// delivery does by default: better than clear text, RFC 7435).
    Opportunistic,
    /// STARTTLS required, certificate checked against the roots.
    Required,
    /// TLS from the first byte (a smarthost on 465), certificate checked.
    Implicit,
    /// Never (tests, or a smarthost on a trusted link).
    Off,
}

pub struct ClientSettings {
    pub helo: String,
    pub tls: Tls,
    /// Roots for checked certificates.
    pub roots: Arc<rustls::RootCertStore>,
    pub credentials: Option<(String, String)>,
}

/// Why a connection or a message failed; `permanent` for a 5xx reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub permanent: bool,
    pub text: String,
}

impl Failure {
    fn temp(text: impl Into<String>) -> Failure {
        Failure {
            permanent: false,
            text: text.into(),
        }
    }
}

/// The outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    Failed(Failure),
}

/// A connection we made to a peer.
pub type ClientStream = MaybeTls<futures_rustls::client::TlsStream<Async<TcpStream>>>;

/// Accepts any certificate (opportunistic TLS) but still checks the
/// handshake signatures, so the session keys are the peer's.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(
    verify: bool,
    roots: &Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::temp(format!("TLS setup: {e}")))?;
    let config = if verify {
        builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Loads PEM roots (e.g. Debian's /etc/ssl/certs/ca-certificates.crt); a
/// missing file gives an empty set, so checked TLS then fails loudly.
pub fn load_roots(path: &std::path::Path) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(iter) = rustls::pki_types::CertificateDer::pem_file_iter(path) {
        for c in iter.flatten() {
            let _ = roots.add(c);
        }
    }
    roots
}

/// A reply: code, and the text of all its lines joined by "\n".
type Reply = (u16, String);

/// One SMTP connection to a peer.
pub struct Connection {
    stream: ClientStream,
    input: Input,
    extensions: Vec<String>,
    /// The peer's name, for TLS and log lines.
    pub peer: String,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, and does STARTTLS and AUTH
    /// as the settings ask.
    pub async fn open(
        addr: SocketAddr,
        peer: &str,
        settings: &ClientSettings,
    ) -> Result<Connection, Failure> {
        let tcp = with_timeout(CONNECT_TIMEOUT, Async::<TcpStream>::connect(addr))
            .await
            .map_err(|e| Failure::temp(format!("connect to {peer} [{addr}]: {e}")))?;
        let _ = tcp.get_ref().set_nodelay(true);
        let mut c = Connection {
            stream: MaybeTls::Plain(tcp),
            input: Input::new(4096),
            extensions: Vec::new(),
            peer: peer.to_string(),
        };
        if settings.tls == Tls::Implicit {
            c.start_tls(true, settings).await?;
        }
        let (code, text) = c.reply(GREETING_TIMEOUT).await?;
        if code != 220 {
            return Err(c.failure(code, &text, "greeting"));
        }
        c.ehlo(settings).await?;
        let offered = c.has("STARTTLS");
        match settings.tls {
            Tls::Opportunistic | Tls::Required if offered => {
                let (code, text) = c.command("STARTTLS", COMMAND_TIMEOUT).await?;
                if code == 220 {
                    c.start_tls(settings.tls == Tls::Required, settings).await?;
                    c.ehlo(settings).await?;
                } else if settings.tls == Tls::Required {
                    return Err(c.failure(code.min(499), &text, "STARTTLS"));
                }
            }
            Tls::Required => {
                return Err(Failure::temp(format!(
                    "{peer} does not offer STARTTLS and TLS is required"
                )));
            }
            _ => {}
        }
        if let Some((user, password)) = &settings.credentials {
            let token = crate::auth::sasl::encode(&format!("\0{user}\0{password}"));
            let (code, text) = c
                .command(&format!("AUTH PLAIN {token}"), COMMAND_TIMEOUT)
                .await?;
            if code != 235 {
                return Err(c.failure(code, &text, "AUTH"));
            }
        }
        Ok(c)
    }

    fn has(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| {
            e.split(' ')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(ext))
        })
    }

    fn failure(&self, code: u16, text: &str, stage: &str) -> Failure {
        Failure {
            permanent: (500..600).contains(&code),
            text: format!("{} said after {stage}: {code} {text}", self.peer),
        }
    }

    async fn ehlo(&mut self, settings: &ClientSettings) -> Result<(), Failure> {
        let (code, text) = self
            .command(&format!("EHLO {}", settings.helo), COMMAND_TIMEOUT)
            .await?;
        if code == 250 {
            self.extensions = text.lines().skip(1).map(str::to_string).collect();
            return Ok(());
        }
        // RFC 5321 3.2: fall back to HELO.
        let (code, text) = self
            .command(&format!("HELO {}", settings.helo), COMMAND_TIMEOUT)
            .await?;
        if code != 250 {
            return Err(self.failure(code, &text, "HELO"));
        }
        self.extensions.clear();
        Ok(())
    }

    async fn start_tls(&mut self, verify: bool, settings: &ClientSettings) -> Result<(), Failure> {
        let tcp = self
            .stream
            .take_plain()
            .map_err(|e| Failure::temp(e.to_string()))?;
        let config = tls_config(verify, &settings.roots)?;
        let name = rustls::pki_types::ServerName::try_from(self.peer.clone())
            .map_err(|_| Failure::temp(format!("{} is not a valid TLS server name", self.peer)))?;
        let tls = with_timeout(
            COMMAND_TIMEOUT,
            futures_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|e| Failure::temp(format!("TLS with {}: {e}", self.peer)))?;
        self.stream = MaybeTls::Tls(Box::new(tls));
        self.input.clear();
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Failure> {
        with_timeout(timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|e| Failure::temp(format!("writing to {}: {e}", self.peer)))
    }

    async fn command(&mut self, line: &str, timeout: Duration) -> Result<Reply, Failure> {
        self.write(format!("{line}\r\n").as_bytes(), timeout)
            .await?;
        self.reply(timeout).await
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self, timeout: Duration) -> Result<Reply, Failure> {
        let mut text = String::new();
        loop {
            let line = with_timeout(timeout, self.input.read_line(&mut self.stream, 4096))
                .await
                .map_err(|e| Failure::temp(format!("reading from {}: {e}", self.peer)))?;
            let range = match line {
                Line::Complete(r) => r,
                Line::TooLong => {
                    return Err(Failure::temp(format!(
                        "{} sent an over-long reply line",
                        self.peer
                    )));
                }
                Line::Eof => {
                    return Err(Failure::temp(format!(
                        "{} closed the connection",
                        self.peer
                    )));
                }
            };
            let l = String::from_utf8_lossy(self.input.get(range)).into_owned();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| {
                    Failure::temp(format!("{} sent a malformed reply: {l:?}", self.peer))
                })?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(l.get(4..).unwrap_or(""));
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
    }

    /// Sends one message (that of the queue entry `message`) to `rcpts`;
    /// the outcome per recipient, in order. A failure of the whole
    /// transaction (MAIL, DATA, the connection) applies to every recipient.
    pub async fn send(
        &mut self,
        store: &Store,
        message: &QueueEntry,
        rcpts: &[String],
    ) -> Vec<Outcome> {
        match self.transaction(store, message, rcpts).await {
            Ok(v) => v,
            Err(f) => rcpts.iter().map(|_| Outcome::Failed(f.clone())).collect(),
        }
    }

    async fn transaction(
        &mut self,
        store: &Store,
        message: &QueueEntry,
        rcpts: &[String],
    ) -> Result<Vec<Outcome>, Failure> {
        let (from, size, eight_bit, smtputf8) = (
            &message.from,
            message.size,
            message.eight_bit,
            message.smtputf8,
        );
        if smtputf8 && !self.has("SMTPUTF8") {
            // RFC 6531 3.2: the message cannot be delivered to this peer.
            return Err(Failure {
                permanent: true,
                text: format!(
                    "{} does not support SMTPUTF8, which this message needs",
                    self.peer
                ),
            });
        }
        let mut mail = format!("MAIL FROM:<{from}>");
        if self.has("SIZE") {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if eight_bit && self.has("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        if smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        let pipelining = self.has("PIPELINING");
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        if pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write.
            let mut batch = format!("{mail}\r\n");
            for r in rcpts {
                batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            batch.push_str("DATA\r\n");
            self.write(batch.as_bytes(), COMMAND_TIMEOUT).await?;
            let (code, text) = self.reply(COMMAND_TIMEOUT).await?;
            let mail_failed = (code != 250).then(|| self.failure(code, &text, "MAIL FROM"));
            for o in outcomes.iter_mut() {
                let (code, text) = self.reply(COMMAND_TIMEOUT).await?;
                if code != 250 && code != 251 {
                    *o = Some(Outcome::Failed(self.failure(code, &text, "RCPT TO")));
                }
            }
            let (code, text) = self.reply(DATA_INIT_TIMEOUT).await?;
            if let Some(f) = mail_failed {
                return Err(f);
            }
            if outcomes.iter().all(Option::is_some) {
                // Nobody accepted; DATA must have failed too (RFC 2920 3.1).
                if code == 354 {
                    self.write(b".\r\n", DATA_END_TIMEOUT).await?;
                    let _ = self.reply(DATA_END_TIMEOUT).await?;
                }
                return Ok(outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or(Outcome::Failed(Failure::temp("no reply"))))
                    .collect());
            }
            if code != 354 {
                return Err(self.failure(code, &text, "DATA"));
            }
        } else {
            let (code, text) = self.command(&mail, COMMAND_TIMEOUT).await?;
            if code != 250 {
                return Err(self.failure(code, &text, "MAIL FROM"));
            }
            for (o, r) in outcomes.iter_mut().zip(rcpts) {
                let (code, text) = self
                    .command(&format!("RCPT TO:<{r}>"), COMMAND_TIMEOUT)
                    .await?;
                if code != 250 && code != 251 {
                    *o = Some(Outcome::Failed(self.failure(code, &text, "RCPT TO")));
                }
            }
            if outcomes.iter().all(Option::is_some) {
                let _ = self.command("RSET", COMMAND_TIMEOUT).await;
                return Ok(outcomes.into_iter().flatten().collect());
            }
            let (code, text) = self.command("DATA", DATA_INIT_TIMEOUT).await?;
            if code != 354 {
                return Err(self.failure(code, &text, "DATA"));
            }
        }
        self.send_content(store, &message.blob).await?;
        let (code, text) = self.reply(DATA_END_TIMEOUT).await?;
        if code != 250 {
            return Err(self.failure(code, &text, "end of data"));
        }
        let accepted = format!("{}: {code} {text}", self.peer);
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Delivered(accepted.clone())))
            .collect())
    }

    /// Streams the stored message, dot-stuffed, one chunk at a time.
    async fn send_content(&mut self, store: &Store, blob: &BlobId) -> Result<(), Failure> {
        let row = store
            .blob(blob)
            .map_err(|e| Failure::temp(format!("reading the message: {e}")))?
            .ok_or_else(|| Failure::temp("the message content is gone from the store"))?;
        let mut stuffer = DotStuffer::default();
        let mut piece = Vec::new();
        for i in 0..row.chunks {
            let chunk = store
                .chunk(blob, i)
                .map_err(|e| Failure::temp(format!("reading the message: {e}")))?
                .ok_or_else(|| Failure::temp("a chunk of the message is missing"))?;
            piece.clear();
            stuffer.stuff(&chunk, &mut piece);
            self.write(&piece, DATA_BLOCK_TIMEOUT).await?;
        }
        piece.clear();
        stuffer.finish(&mut piece);
        self.write(&piece, DATA_BLOCK_TIMEOUT).await
    }

    /// Resets for the next message on this connection.
    pub async fn rset(&mut self) -> bool {
        matches!(self.command("RSET", COMMAND_TIMEOUT).await, Ok((250, _)))
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT", Duration::from_secs(10)).await;
        let _ = self.stream.close().await;
    }
}
