//! sd_notify(3) over the NOTIFY_SOCKET datagram, without libsystemd.

use std::os::unix::net::UnixDatagram;

fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = result {
        log::debug!("sd_notify {state:?}: {e}");
    }
}

pub fn notify_ready() {
    notify("READY=1");
}

pub fn notify_stopping() {
    notify("STOPPING=1");
}

pub fn notify_watchdog() {
    notify("WATCHDOG=1");
}

/// How often to send WATCHDOG=1: half of WATCHDOG_USEC (sd_watchdog_enabled(3)),
/// or `None` when the service manager wants no pings (or wants them from
/// another process, per WATCHDOG_PID).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str()?.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// The listening sockets the service manager passed (socket activation,
/// sd_listen_fds(3)), each with its name from LISTEN_FDNAMES (the socket
/// unit's FileDescriptorName=, by default the unit's name). Empty when none
/// were passed, or when they were meant for another process (LISTEN_PID).
/// listenfd holds the one unsafe step, taking ownership of fd 3 onwards.
pub fn passed_listeners() -> std::io::Result<Vec<(String, std::net::TcpListener)>> {
    let mut fds = listenfd::ListenFd::from_env();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let mut passed = Vec::new();
    for index in 0..fds.len() {
        let name = names.next().unwrap_or_default().to_string();
        let fd = index + 3; // SD_LISTEN_FDS_START
        match fds.take_tcp_listener(index) {
            Ok(Some(listener)) => passed.push((name, listener)),
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("fd {fd} ({name:?}) is not a TCP stream socket: {e}"),
                ));
            }
        }
    }
    Ok(passed)
}
