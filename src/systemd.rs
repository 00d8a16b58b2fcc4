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
