//! A scripted SMTP server for outbound tests: records what it receives and
//! answers as told (refusals, temporary failures, dropped connections,
//! STARTTLS and AUTH).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth: Option<String>,
}

#[derive(Clone, Default)]
pub struct Script {
    /// RCPT replies by address; others get 250.
    pub rcpt_replies: Vec<(String, String)>,
    /// Replies to the end of DATA, used in turn; then 250.
    pub data_replies: Vec<String>,
    /// Close the connection in the middle of the DATA of these attempts
    /// (0-based count of DATA commands).
    pub drop_in_data: Vec<usize>,
    /// Offer STARTTLS with this certificate and key (PEM).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Require AUTH PLAIN with these credentials.
    pub auth: Option<(String, String)>,
}

pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<Mutex<usize>>,
}

impl Sink {
    pub fn start(script: Script) -> Sink {
        Self::start_on("127.0.0.1:0", script)
    }

    pub fn start_on(addr: &str, script: Script) -> Sink {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let state = Arc::new(Mutex::new((script, 0usize)));
        let (r, c) = (received.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                *c.lock().unwrap() += 1;
                let (r, state) = (r.clone(), state.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, r, state);
                });
            }
        });
        Sink {
            addr,
            received,
            connections,
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` messages arrived (or panics after `secs`).
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sink got {} of {n} messages",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

fn serve(
    stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    state: Arc<Mutex<(Script, usize)>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let script = state.lock().unwrap().0.clone();
    let mut io: BufReader<Box<dyn Io + Send>> = BufReader::new(Box::new(stream.try_clone()?));
    let mut tls = false;
    let mut auth: Option<String> = None;
    let mut from = String::new();
    let mut rcpts = Vec::new();
    macro_rules! say {
        ($($t:tt)*) => {{ let s = format!($($t)*); io.get_mut().write_all(format!("{s}\r\n").as_bytes())?; io.get_mut().flush()?; }};
    }
    say!("220 sink.example ESMTP");
    loop {
        let mut line = String::new();
        if io.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let mut ext = vec![
                "sink.example",
                "PIPELINING",
                "SIZE 100000000",
                "8BITMIME",
                "SMTPUTF8",
            ];
            if script.tls.is_some() && !tls {
                ext.push("STARTTLS");
            }
            if script.auth.is_some() {
                ext.push("AUTH PLAIN LOGIN");
            }
            for (i, e) in ext.iter().enumerate() {
                say!("250{}{e}", if i + 1 == ext.len() { ' ' } else { '-' });
            }
        } else if upper == "STARTTLS" {
            let (cert, key) = script.tls.clone().unwrap();
            say!("220 go ahead");
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            io = BufReader::new(Box::new(rustls::StreamOwned::new(
                conn,
                stream.try_clone()?,
            )));
            tls = true;
        } else if upper.starts_with("AUTH PLAIN ") {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(line[11..].trim())
                .unwrap_or_default();
            let parts: Vec<String> = raw
                .split(|&b| b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let (u, p) = script.auth.clone().unwrap();
            if parts.len() == 3 && parts[1] == u && parts[2] == p {
                auth = Some(u);
                say!("235 2.7.0 ok");
            } else {
                say!("535 5.7.8 bad credentials");
            }
        } else if upper.starts_with("MAIL FROM:") {
            if script.auth.is_some() && auth.is_none() {
                say!("530 5.7.0 auth first");
                continue;
            }
            from = line[10..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            rcpts.clear();
            say!("250 ok");
        } else if upper.starts_with("RCPT TO:") {
            let addr = line[8..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            match script.rcpt_replies.iter().find(|(a, _)| *a == addr) {
                Some((_, reply)) => say!("{reply}"),
                None => {
                    rcpts.push(addr);
                    say!("250 ok");
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                say!("554 no valid recipients");
                continue;
            }
            let attempt = {
                let mut s = state.lock().unwrap();
                s.1 += 1;
                s.1 - 1
            };
            say!("354 go");
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                if script.drop_in_data.contains(&attempt) && data.len() > 100 {
                    // Vanish mid-message.
                    return Ok(());
                }
                let l = if l.starts_with(b"..") {
                    l[1..].to_vec()
                } else {
                    l
                };
                data.extend_from_slice(&l);
            }
            let reply = script
                .data_replies
                .get(attempt)
                .cloned()
                .unwrap_or_else(|| "250 2.0.0 queued".into());
            if reply.starts_with('2') {
                received.lock().unwrap().push(Received {
                    from: from.clone(),
                    rcpts: rcpts.clone(),
                    data,
                    tls,
                    auth: auth.clone(),
                });
            }
            say!("{reply}");
        } else if upper == "RSET" || upper == "NOOP" {
            say!("250 ok");
        } else if upper == "QUIT" {
            say!("221 bye");
            return Ok(());
        } else {
            say!("500 unknown");
        }
    }
}
