//! The control socket: `pimail user add` and friends reach a running
//! server here, since the server holds the store file exclusively. The
//! socket is created owner-only (0600) in the data directory.

use std::os::unix::net::UnixListener;
use std::rc::Rc;
use std::time::Duration;

use async_io::Async;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use smol::LocalExecutor;

use super::Server;
use super::conn::with_timeout;
use crate::admin::Request;
use crate::config::Config;
use crate::store::writer::WriteOutcome;

const MAX_REQUEST: usize = 64 * 1024;

pub fn bind(config: &Config) -> std::io::Result<Async<UnixListener>> {
    let path = config.control_socket();
    if path.exists() {
        // Left by a crash; a live server holds the store lock, which we
        // already took, so nobody is listening on it.
        std::fs::remove_file(&path)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    Async::new(listener?)
}

pub async fn serve(
    ex: Rc<LocalExecutor<'static>>,
    server: Rc<Server>,
    listener: Async<UnixListener>,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            server.shutting_down().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _))) => {
                ex.spawn(handle(server.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                log::warn!("control socket: {e}");
                async_io::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(server: Rc<Server>, mut stream: Async<std::os::unix::net::UnixStream>) {
    let mut request = Vec::new();
    let read = with_timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || request.len() + n > MAX_REQUEST {
                return Err(std::io::Error::other("bad request"));
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await;
    let (status, body) = match read {
        Err(e) => (
            "ERR 2".to_string(),
            format!("control request: {e}\n").into_bytes(),
        ),
        Ok(()) => answer(&server, &String::from_utf8_lossy(&request)).await,
    };
    let _ = with_timeout(Duration::from_secs(30), async {
        stream.write_all(format!("{status}\n").as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    })
    .await;
}

async fn answer(server: &Server, line: &str) -> (String, Vec<u8>) {
    let Some(req) = Request::decode(line) else {
        return ("ERR 2".into(), b"unknown control request\n".to_vec());
    };
    log::info!("control: {}", line.split('\t').next().unwrap_or(""));
    match req.write_op() {
        Some(op) => match server.writer.submit(op).await {
            Ok(WriteOutcome::Admin(msg)) => {
                // A change may concern watching sessions or the queue.
                server.notify_change();
                server.wake_queue();
                ("OK".into(), msg.into_bytes())
            }
            Ok(WriteOutcome::Delivered(_)) => ("ERR 1".into(), b"unexpected answer\n".to_vec()),
            Err(e) => ("ERR 1".into(), format!("{e}\n").into_bytes()),
        },
        None => {
            let mut out = Vec::new();
            match req.read(&server.store, &mut out) {
                Ok(()) => ("OK".into(), out),
                Err(e) => ("ERR 1".into(), format!("{e}\n").into_bytes()),
            }
        }
    }
}

/// Client side, used by the CLI: sends a request and copies the answer.
pub fn request(
    config: &Config,
    req: &Request,
    out: &mut dyn std::io::Write,
) -> Result<(), (i32, String)> {
    use std::io::{BufRead, Read, Write};
    let path = config.control_socket();
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        (
            1,
            format!("{}: cannot reach the running server: {e}", path.display()),
        )
    })?;
    stream
        .write_all(req.encode().as_bytes())
        .map_err(|e| (1, format!("{}: {e}", path.display())))?;
    let mut reader = std::io::BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| (1, format!("{}: {e}", path.display())))?;
    let mut body = Vec::new();
    reader
        .read_to_end(&mut body)
        .map_err(|e| (1, format!("{}: {e}", path.display())))?;
    match status.trim_end().strip_prefix("ERR ") {
        None if status.trim_end() == "OK" => {
            out.write_all(&body).map_err(|e| (1, e.to_string()))?;
            Ok(())
        }
        Some(code) => Err((
            code.parse().unwrap_or(1),
            String::from_utf8_lossy(&body).trim_end().to_string(),
        )),
        None => Err((
            1,
            format!("{}: unexpected answer {status:?}", path.display()),
        )),
    }
}
