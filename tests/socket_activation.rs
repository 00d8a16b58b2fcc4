//! Socket activation: pimail started by `systemd-socket-activate` (the
//! LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES protocol of systemd's .socket units)
//! serves SMTP on the socket it was given, named by FileDescriptorName,
//! and binds the config's addresses for the services it got no socket for.
//! Skipped where systemd-socket-activate is not installed.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn have_socket_activate() -> bool {
    match Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
    {
        Ok(out) => out.status.success(),
        Err(e) => {
            eprintln!("skipped: systemd-socket-activate not runnable here: {e}");
            false
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `pimail serve` under systemd-socket-activate, which listens on
/// `addr`, names the socket `fdname`, and on the first connection (which
/// this makes and returns) execs pimail in its place, as systemd starts a
/// service when its socket is first used.
fn serve_activated(inst: &mut Instance, addr: SocketAddr, fdname: &str) -> TcpStream {
    let log = std::fs::File::create(inst.dir.join("server.log")).unwrap();
    let child = Command::new("systemd-socket-activate")
        .arg(format!("--listen={addr}"))
        .arg(format!("--fdname={fdname}"))
        .args(["-E", "RUST_LOG=debug", BIN, "serve", "--config"])
        .arg(&inst.config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start systemd-socket-activate");
    inst.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !inst.log().contains("Listening on") {
        assert!(Instant::now() < deadline, "not listening: {}", inst.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    TcpStream::connect(addr).unwrap()
}

fn read_line(stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

#[test]
fn smtp_greets_on_the_passed_socket_and_other_services_bind_their_own() {
    if !have_socket_activate() {
        return;
    }
    let mut inst = Instance::new("sockact", |t| t);
    let passed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The socket exists before pimail does; the greeting says pimail took it.
    let smtp = serve_activated(&mut inst, passed, "smtp");
    let greeting = read_line(&smtp);
    assert!(
        greeting.starts_with("220 ") && greeting.contains("ESMTP"),
        "{greeting:?}; log:\n{}",
        inst.log()
    );

    // POP3 got no socket: pimail bound the config's address itself.
    let pop3_addr = SocketAddr::from(([127, 0, 0, 1], inst.port_base + 110));
    let deadline = Instant::now() + Duration::from_secs(20);
    let pop3 = loop {
        match TcpStream::connect(pop3_addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("POP3 {pop3_addr}: {e}\n{}", inst.log()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(read_line(&pop3).starts_with("+OK"), "{}", inst.log());

    // The passed socket replaced the config's SMTP address.
    assert!(
        TcpStream::connect(inst.smtp_addr()).is_err(),
        "pimail also bound {} though systemd passed an smtp socket",
        inst.smtp_addr()
    );
    assert!(
        inst.log()
            .contains(&format!("smtp listening on {passed} (socket from systemd)")),
        "{}",
        inst.log()
    );
}

#[test]
fn a_socket_named_for_no_service_stops_the_start_with_the_fix() {
    if !have_socket_activate() {
        return;
    }
    let mut inst = Instance::new("sockact-bad", |t| t);
    // Not a service's name, not a standard port: pimail cannot guess.
    let passed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _first = serve_activated(&mut inst, passed, "mail");
    assert_eq!(
        inst.wait(Duration::from_secs(20)),
        Some(1),
        "{}",
        inst.log()
    );
    let log = inst.log();
    assert!(
        log.contains(&format!("the socket on {passed} is named \"mail\""))
            && log.contains("FileDescriptorName="),
        "{log}"
    );
}
