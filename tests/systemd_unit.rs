//! systemd/pimail.service stays hardened: `systemd-analyze security` scores
//! it at most 2.0 (skipped where systemd-analyze is not installed), and the
//! directives the appliance relies on are present.

use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pimail.service");
const SOCKET_UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pimail.socket");
const MAX_EXPOSURE: f64 = 2.0;

#[test]
fn exposure_is_at_most_2() {
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", UNIT])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: systemd-analyze not runnable here: {e}");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure in systemd-analyze output:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "{line}: above {MAX_EXPOSURE}; what counts against it:\n{text}"
    );
}

#[test]
fn unit_has_notify_watchdog_reload_and_the_one_capability() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "StateDirectory=pimail",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "{UNIT}: no line starting {line:?}"
        );
    }
    // PrivateUsers=yes would make the capability useless for binding port 25.
    assert!(!unit.contains("PrivateUsers=yes"));
}

#[test]
fn socket_unit_listens_on_each_standard_port_once() {
    use pimail::server::Service;
    let unit = std::fs::read_to_string(SOCKET_UNIT).unwrap();
    let mut ports: Vec<u16> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .map(|p| {
            p.parse()
                .unwrap_or_else(|e| panic!("{SOCKET_UNIT}: ListenStream={p}: {e}"))
        })
        .collect();
    ports.sort_unstable();
    let mut expected: Vec<u16> = pimail::config::STANDARD_PORTS
        .iter()
        .map(|&(_, p)| p)
        .collect();
    expected.sort_unstable();
    assert_eq!(ports, expected, "{SOCKET_UNIT}");
    // With no FileDescriptorName=, systemd names every socket after the
    // unit; pimail must still tell the services apart, by port.
    assert!(!unit.lines().any(|l| l.starts_with("FileDescriptorName=")));
    for (name, port) in pimail::config::STANDARD_PORTS {
        let service = Service::for_passed_socket("pimail.socket", port);
        assert_eq!(service.map(Service::name), Some(name), "port {port}");
    }
    assert!(unit.lines().any(|l| l == "WantedBy=sockets.target"));
}
