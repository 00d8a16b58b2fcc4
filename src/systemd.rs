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
