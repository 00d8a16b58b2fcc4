//! The server core: one thread runs a `LocalExecutor` that drives every
//! connection; the store writer and password hashing have threads of their
//! own so that nothing here blocks.

pub mod conn;
pub mod control;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncWriteExt, StreamExt, future};
use futures_rustls::TlsAcceptor;
use smol::LocalExecutor;

use crate::config::Config;
use crate::store::writer::{BatchLimits, Writer};
use crate::store::{Store, StoreError};

/// State shared by every task on the executor thread.
pub struct Server {
    config: RefCell<Rc<Config>>,
    tls: RefCell<Option<TlsAcceptor>>,
    pub store: Arc<Store>,
    pub writer: Writer,
    /// DKIM keys for signing submitted mail, by domain.
    pub dkim: RefCell<Vec<Arc<crate::dkim::Signer>>>,
    /// The stub resolver (MX lookups for outbound delivery).
    pub resolver: crate::dns::Resolver,
    /// The attachment scanner's signatures (src/scan).
    pub scan: crate::scan::delivery::ScanState,
    connections: Cell<usize>,
    per_ip: RefCell<HashMap<IpAddr, usize>>,
    /// Closed (never sent on) when the server begins to shut down: every
    /// `recv()` then returns at once.
    shutdown: async_channel::Receiver<()>,
    shutdown_trigger: RefCell<Option<async_channel::Sender<()>>>,
    pub auth: crate::auth::Authenticator,
    /// Bumped after every commit that changed a mailbox; sessions that
    /// watch mailboxes (IMAP IDLE) wait on `change`.
    generation: Cell<u64>,
    change: event_listener::Event,
    /// Users with an open POP3 session (RFC 2449 [IN-USE]), and when each
    /// last logged in over POP3 (LOGIN-DELAY).
    pop3_sessions: RefCell<std::collections::HashSet<String>>,
    pop3_logins: RefCell<HashMap<String, Instant>>,
    /// Wakes the outbound queue runner when mail was queued.
    queue_wake: event_listener::Event,
}

impl Server {
    pub fn config(&self) -> Rc<Config> {
        self.config.borrow().clone()
    }

    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.borrow().clone()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_trigger.borrow().is_none()
    }

    /// Resolves when shutdown begins.
    pub async fn shutting_down(&self) {
        let _ = self.shutdown.recv().await;
    }

    fn begin_shutdown(&self) {
        self.shutdown_trigger.borrow_mut().take();
    }

    /// Counts a new connection, or refuses it over the global or per-IP
    /// limit.
    pub fn admit(self: &Rc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let config = self.config();
        if self.connections.get() >= config.limits.max_connections {
            return None;
        }
        let mut per_ip = self.per_ip.borrow_mut();
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= config.limits.max_connections_per_ip {
            return None;
        }
        *n += 1;
        self.connections.set(self.connections.get() + 1);
        Some(ConnectionSlot {
            server: self.clone(),
            ip,
        })
    }

    /// Tells watching sessions that mailboxes changed (a delivery, flags,
    /// an expunge); they then compare what they know with the store.
    pub fn notify_change(&self) {
        self.generation.set(self.generation.get() + 1);
        self.change.notify(usize::MAX);
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Resolves once the generation differs from `seen`.
    pub async fn changed_since(&self, seen: u64) {
        loop {
            if self.generation.get() != seen {
                return;
            }
            let listener = self.change.listen();
            if self.generation.get() != seen {
                return;
            }
            listener.await;
        }
    }

    /// Stores a message and tells watching sessions.
    pub async fn deliver(
        &self,
        d: crate::store::ops::Delivery,
    ) -> Result<Vec<crate::store::ops::Delivered>, StoreError> {
        let r = self.writer.deliver(d).await;
        if r.is_ok() {
            self.notify_change();
        }
        r
    }

    /// Takes the POP3 maildrop lock of `user`; false if another session has it.
    pub fn pop3_lock(&self, user: &str) -> bool {
        self.pop3_sessions.borrow_mut().insert(user.to_string())
    }

    pub fn pop3_unlock(&self, user: &str) {
        self.pop3_sessions.borrow_mut().remove(user);
    }

    /// Records a POP3 login, or says how long to wait under LOGIN-DELAY.
    pub fn pop3_login_too_soon(&self, user: &str, delay: Duration) -> Option<Duration> {
        let mut logins = self.pop3_logins.borrow_mut();
        if let Some(wait) = crate::pop3::session::too_soon(logins.get(user).copied(), delay) {
            return Some(wait);
        }
        if logins.len() > 10_000 {
            logins.retain(|_, at| at.elapsed() < delay);
        }
        logins.insert(user.to_string(), Instant::now());
        None
    }

    /// Tells the queue runner that new mail is waiting.
    pub fn wake_queue(&self) {
        self.queue_wake.notify(usize::MAX);
    }

    /// A listener for [`Server::wake_queue`]; create it before checking
    /// the queue so no wake-up is missed.
    pub fn queue_listener(&self) -> event_listener::EventListener {
        self.queue_wake.listen()
    }

    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    fn reload(&self) {
        let path = self.config().file.clone();
        match Config::load(&path) {
            Ok(new) => {
                match tls::server_config(&new.tls_cert, &new.tls_key) {
                    Ok(c) => *self.tls.borrow_mut() = Some(TlsAcceptor::from(c)),
                    Err(e) => {
                        log::error!("reload: TLS not reloaded, keeping the old certificate: {e}")
                    }
                }
                if new.listen != self.config().listen {
                    log::warn!(
                        "reload: listener addresses changed; they take effect at the next restart"
                    );
                }
                self.scan.reload(&new);
                *self.dkim.borrow_mut() = crate::outbound::sign::load_signers(&new.data_dir);
                *self.config.borrow_mut() = Rc::new(new);
                log::info!("reloaded {}", path.display());
            }
            Err(e) => log::error!("reload failed, keeping the running config: {e}"),
        }
    }
}

/// A counted connection; dropping it frees the slot.
pub struct ConnectionSlot {
    server: Rc<Server>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let s = &self.server;
        s.connections.set(s.connections.get().saturating_sub(1));
        let mut per_ip = s.per_ip.borrow_mut();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A listening socket and what it serves.
struct Listening {
    service: Service,
    addr: SocketAddr,
    listener: Async<TcpListener>,
    /// How it came to be, for the log: bound by pimail, or passed by systemd.
    origin: &'static str,
}

/// The listening sockets systemd passed (socket activation), each with the
/// service it is for: see [`Service::for_passed_socket`]. A socket that fits
/// no service stops the start, naming it, rather than sitting unserved.
fn passed_listeners() -> Result<Vec<Listening>, ServeError> {
    let mut passed = Vec::new();
    let from_manager = crate::systemd::passed_listeners()
        .map_err(|e| ServeError::Io(format!("socket activation: {e}")))?;
    for (name, listener) in from_manager {
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::Io(format!("socket activation: socket {name:?}: {e}")))?;
        let service = Service::for_passed_socket(&name, addr.port()).ok_or_else(|| {
            ServeError::Io(format!(
                "socket activation: the socket on {addr} is named {name:?}; set \
                 FileDescriptorName= in its .socket unit to one of {}, or use a standard port",
                Service::ALL.map(Service::name).join(", ")
            ))
        })?;
        let listener = Async::new(listener).map_err(|e| ServeError::Bind(addr, e))?;
        passed.push(Listening {
            service,
            addr,
            listener,
            origin: " (socket from systemd)",
        });
    }
    Ok(passed)
}

/// Binds a listening socket. IPv6 sockets are v6-only so that "0.0.0.0:25"
/// and "[::]:25" can both be configured.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, setsockopt, sockopt,
    };
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd: OwnedFd =
        nix::sys::socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    nix::sys::socket::listen(
        &fd,
        nix::sys::socket::Backlog::new(256).unwrap_or(nix::sys::socket::Backlog::MAXCONN),
    )?;
    Ok(TcpListener::from(fd))
}

#[derive(Debug)]
pub enum ServeError {
    Store(StoreError),
    Tls(String),
    Bind(SocketAddr, std::io::Error),
    Io(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Store(e) => write!(f, "{e}"),
            ServeError::Tls(e) => write!(f, "TLS: {e}"),
            ServeError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServeError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(config: Config) -> Result<(), ServeError> {
    let store = Arc::new(
        Store::open(&config.store.path, config.store_options()).map_err(ServeError::Store)?,
    );
    let tls = match tls::server_config(&config.tls_cert, &config.tls_key) {
        Ok(c) => Some(TlsAcceptor::from(c)),
        Err(e) => return Err(ServeError::Tls(e)),
    };
    let mut passed = passed_listeners()?;
    let mut listeners = Vec::new();
    for service in Service::ALL {
        let addrs = service.addresses(&config);
        if !service.implemented() {
            if !addrs.is_empty() {
                log::warn!(
                    "{} is not implemented yet; not listening on {addrs:?}",
                    service.name()
                );
            }
            continue;
        }
        // Sockets from systemd replace the config's addresses for their
        // service; the other services bind their own.
        let from_systemd: Vec<_> = passed.extract_if(.., |l| l.service == service).collect();
        if !from_systemd.is_empty() {
            listeners.extend(from_systemd);
            continue;
        }
        for addr in addrs {
            let l = bind(*addr).map_err(|e| ServeError::Bind(*addr, e))?;
            let l = Async::new(l).map_err(|e| ServeError::Bind(*addr, e))?;
            listeners.push(Listening {
                service,
                addr: *addr,
                listener: l,
                origin: "",
            });
        }
    }
    std::fs::create_dir_all(config.spool_dir())
        .map_err(|e| ServeError::Io(format!("{}: {e}", config.spool_dir().display())))?;
    let control = control::bind(&config)
        .map_err(|e| ServeError::Io(format!("{}: {e}", config.control_socket().display())))?;
    let (writer, writer_thread) = Writer::start(
        store.clone(),
        BatchLimits {
            max_messages: config.store.batch_max_messages,
            max_bytes: config.store.batch_max_bytes,
        },
    );
    let mut signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Int,
        async_signal::Signal::Hup,
    ])
    .map_err(|e| ServeError::Io(format!("installing signal handlers: {e}")))?;
    let scan = crate::scan::delivery::ScanState::start(&config).map_err(ServeError::Io)?;
    let dkim = crate::outbound::sign::load_signers(&config.data_dir);
    let resolver = if config.relay.dns_servers.is_empty() {
        crate::dns::Resolver::from_resolv_conf(std::path::Path::new("/etc/resolv.conf"))
            .map_err(|e| ServeError::Io(format!("/etc/resolv.conf: {e}")))?
    } else {
        crate::dns::Resolver::new(config.relay.dns_servers.clone(), Duration::from_secs(5), 2)
    };
    let (trigger, shutdown) = async_channel::bounded(1);
    let grace = config.limits.shutdown_grace;
    let socket_path = config.control_socket();
    let auth = crate::auth::Authenticator::new(&config);
    let server = Rc::new(Server {
        config: RefCell::new(Rc::new(config)),
        tls: RefCell::new(tls),
        store: store.clone(),
        writer,
        scan,
        dkim: RefCell::new(dkim),
        resolver,
        connections: Cell::new(0),
        per_ip: RefCell::new(HashMap::new()),
        shutdown,
        shutdown_trigger: RefCell::new(Some(trigger)),
        auth,
        generation: Cell::new(0),
        change: event_listener::Event::new(),
        pop3_sessions: RefCell::new(std::collections::HashSet::new()),
        pop3_logins: RefCell::new(HashMap::new()),
        queue_wake: event_listener::Event::new(),
    });

    let ex = Rc::new(LocalExecutor::new());
    async_io::block_on(ex.run(async {
        for Listening {
            service,
            addr,
            listener,
            origin,
        } in listeners
        {
            log::info!("{} listening on {addr}{origin}", service.name());
            ex.spawn(accept_loop(ex.clone(), server.clone(), listener, service))
                .detach();
        }
        ex.spawn(control::serve(ex.clone(), server.clone(), control))
            .detach();
        ex.spawn(crate::outbound::runner::run(ex.clone(), server.clone()))
            .detach();
        crate::systemd::notify_ready();
        // Pinged from the executor itself: a stuck executor stops the pings.
        if let Some(every) = crate::systemd::watchdog_interval() {
            ex.spawn(async move {
                loop {
                    crate::systemd::notify_watchdog();
                    Timer::after(every).await;
                }
            })
            .detach();
        }
        log::info!("pimail ready (pid {})", std::process::id());
        while let Some(sig) = signals.next().await {
            match sig {
                Ok(async_signal::Signal::Hup) => server.reload(),
                Ok(_) => break,
                Err(e) => log::error!("signal: {e}"),
            }
        }
        log::info!("shutting down: no new connections; waiting for sessions in progress");
        crate::systemd::notify_stopping();
        server.begin_shutdown();
        let deadline = Instant::now() + grace;
        while server.connections() > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(20)).await;
        }
        if server.connections() > 0 {
            log::warn!(
                "{} sessions still open after the grace period; closing",
                server.connections()
            );
        }
    }));
    let _ = std::fs::remove_file(&socket_path);
    let stats = server.writer.stats.clone();
    // Tasks still parked on the executor hold handles too, so close the
    // queue explicitly: the writer finishes what is queued and exits.
    server.writer.close();
    let _ = writer_thread.join();
    log::info!(
        "stopped: {} commits, {} messages stored",
        stats.commits.load(std::sync::atomic::Ordering::Relaxed),
        stats.messages.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// The protocols a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Smtp,
    Submission,
    Submissions,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Smtp,
        Service::Submission,
        Service::Submissions,
        Service::Imap,
        Service::Imaps,
        Service::Pop3,
        Service::Pop3s,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
        }
    }

    /// The service a socket passed by systemd is for: the one its socket
    /// unit names with FileDescriptorName= (smtp, submission, ...), or, when
    /// the name is no service's (systemd's default is the unit's own name,
    /// as for the one pimail.socket with several ListenStream= lines), the
    /// one whose standard port it listens on.
    pub fn for_passed_socket(name: &str, port: u16) -> Option<Service> {
        let by_name = |name: &str| Service::ALL.into_iter().find(|s| s.name() == name);
        by_name(name).or_else(|| {
            let (standard, _) = crate::config::STANDARD_PORTS
                .into_iter()
                .find(|&(_, p)| p == port)?;
            by_name(standard)
        })
    }

    fn addresses(self, config: &Config) -> &[SocketAddr] {
        let l = &config.listen;
        match self {
            Service::Smtp => &l.smtp,
            Service::Submission => &l.submission,
            Service::Submissions => &l.submissions,
            Service::Imap => &l.imap,
            Service::Imaps => &l.imaps,
            Service::Pop3 => &l.pop3,
            Service::Pop3s => &l.pop3s,
        }
    }

    /// TLS from the first byte (RFC 8314), instead of STARTTLS.
    pub fn implicit_tls(self) -> bool {
        matches!(self, Service::Submissions | Service::Imaps | Service::Pop3s)
    }

    fn implemented(self) -> bool {
        matches!(
            self,
            Service::Smtp
                | Service::Submission
                | Service::Submissions
                | Service::Imap
                | Service::Imaps
                | Service::Pop3
                | Service::Pop3s
        )
    }
}

async fn accept_loop(
    ex: Rc<LocalExecutor<'static>>,
    server: Rc<Server>,
    listener: Async<TcpListener>,
    service: Service,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            server.shutting_down().await;
            None
        })
        .await;
        let (tcp, peer) = match accepted {
            None => return,
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Replies are small writes that follow the client's data; without
        // TCP_NODELAY each can wait for a delayed ACK (about 40 ms).
        let _ = tcp.get_ref().set_nodelay(true);
        let Some(slot) = server.admit(peer.ip()) else {
            ex.spawn(refuse(tcp)).detach();
            continue;
        };
        let server = server.clone();
        ex.spawn(async move {
            let _slot = slot;
            let mut stream = conn::Stream::Plain(tcp);
            if service.implicit_tls() {
                let Some(acceptor) = server.tls() else { return };
                let timeout = server.config().limits.tls_handshake_timeout;
                if let Err(e) = stream.start_tls(&acceptor, timeout).await {
                    log::debug!("{} {peer}: TLS handshake: {e}", service.name());
                    return;
                }
            }
            match service {
                Service::Smtp => crate::smtp::session::run(server, stream, peer, false).await,
                Service::Submission | Service::Submissions => {
                    crate::smtp::session::run(server, stream, peer, true).await
                }
                Service::Imap | Service::Imaps => {
                    crate::imap::session::run(server, stream, peer).await
                }
                Service::Pop3 | Service::Pop3s => {
                    crate::pop3::session::run(server, stream, peer).await
                }
            }
        })
        .detach();
    }
}

async fn refuse(mut stream: Async<TcpStream>) {
    let _ = conn::with_timeout(Duration::from_secs(5), async {
        stream
            .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
            .await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::Service;

    #[test]
    fn passed_socket_is_matched_by_name_then_by_standard_port() {
        for (name, port, expected) in [
            // FileDescriptorName= wins over the port.
            ("smtp", 2525, Some(Service::Smtp)),
            ("submission", 25, Some(Service::Submission)),
            ("submissions", 10465, Some(Service::Submissions)),
            ("imap", 1143, Some(Service::Imap)),
            ("imaps", 1993, Some(Service::Imaps)),
            ("pop3", 1110, Some(Service::Pop3)),
            ("pop3s", 1995, Some(Service::Pop3s)),
            // systemd's default name (the unit's): the port decides.
            ("pimail.socket", 25, Some(Service::Smtp)),
            ("pimail.socket", 587, Some(Service::Submission)),
            ("pimail.socket", 465, Some(Service::Submissions)),
            ("pimail.socket", 143, Some(Service::Imap)),
            ("pimail.socket", 993, Some(Service::Imaps)),
            ("pimail.socket", 110, Some(Service::Pop3)),
            ("pimail.socket", 995, Some(Service::Pop3s)),
            ("", 995, Some(Service::Pop3s)),
            // Neither: no guess.
            ("pimail.socket", 8025, None),
            ("SMTP", 8025, None),
            ("", 0, None),
        ] {
            assert_eq!(
                Service::for_passed_socket(name, port),
                expected,
                "{name:?} on port {port}"
            );
        }
    }
}
