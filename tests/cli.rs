//! The command line: help, exit codes, config errors, store errors,
//! account management with and without a running server, SIGHUP reload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn help_for_every_subcommand() {
    for args in [
        &["--help"][..],
        &["init", "--help"],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["user", "del", "--help"],
        &["user", "list", "--help"],
        &["user", "passwd", "--help"],
        &["alias", "add", "--help"],
        &["alias", "del", "--help"],
        &["alias", "list", "--help"],
        &["message", "list", "--help"],
        &["message", "show", "--help"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
    for bad in [
        &["frobnicate"][..],
        &["user", "add"],
        &["init", "--domain", "x.example"],
        &[],
    ] {
        let out = run(bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `pimail --help | head`: output into a pipe nobody reads ends quietly
/// (exit 0), not with a panic about a broken pipe.
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    for args in [&["--help"][..], &["--version"], &["user", "--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn version_names_the_release_and_the_machine() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "pimail {} ({}-linux-",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    assert!(text.starts_with(&expected), "{text:?}: not {expected:?}...");
}

#[test]
fn config_errors_exit_2_naming_file_and_key() {
    let inst = Instance::new("cfgerr", |t| t);
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        text.replace("max_recipients = 100", "max_recipients = \"lots\""),
    )
    .unwrap();
    let out = inst.cli(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(inst.config.to_str().unwrap())
            && err.contains("limits.max_recipients")
            && err.contains("expected an integer"),
        "{err}"
    );
    let out = inst.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["check-config", "--config", "/nonexistent/pimail.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pimail.toml"));
    // $PIMAIL_CONFIG is the default.
    let out = Command::new(BIN)
        .arg("check-config")
        .env("PIMAIL_CONFIG", "/nonexistent/env.toml")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env.toml"));
}

#[test]
fn init_and_accounts_without_a_server() {
    let inst = Instance::new("accounts", |t| t);
    let ok = inst.cli(&["check-config"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // init refuses to overwrite.
    let out = run(&[
        "init",
        "--data-dir",
        inst.dir.to_str().unwrap(),
        "--domain",
        DOMAIN,
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Accounts only in our domains; duplicates refused.
    let out = inst.cli_stdin(
        &["user", "add", "eve@elsewhere.example", "--password-stdin"],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = inst.cli_stdin(&["user", "add", USER, "--password-stdin"], "pw\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = inst.cli_stdin(
        &["user", "add", "Bob@Example.TEST", "--password-stdin"],
        "pw\n",
    );
    assert!(out.status.success());
    let list = String::from_utf8(inst.cli(&["user", "list"]).stdout).unwrap();
    assert_eq!(list, "alice@example.test\nbob@example.test\n");
    assert!(
        inst.cli_stdin(
            &["user", "passwd", "bob@example.test", "--password-stdin"],
            "new\n"
        )
        .status
        .success()
    );
    assert_eq!(
        inst.cli_stdin(
            &["user", "passwd", "nobody@example.test", "--password-stdin"],
            "new\n"
        )
        .status
        .code(),
        Some(1)
    );
    assert!(
        inst.cli(&["user", "del", "bob@example.test"])
            .status
            .success()
    );
    assert_eq!(
        inst.cli(&["user", "del", "bob@example.test"]).status.code(),
        Some(1)
    );
    // Stored password hashes are Argon2id, never the password.
    let store = std::fs::read(inst.dir.join("pimail.redb")).unwrap();
    let text = String::from_utf8_lossy(&store);
    assert!(text.contains("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(!text.contains("secret"));
    // Empty mailbox listing, unknown message, unknown mailbox.
    assert!(inst.cli(&["message", "list", USER]).stdout.is_empty());
    assert_eq!(
        inst.cli(&["message", "show", USER, "1"]).status.code(),
        Some(1)
    );
    assert_eq!(
        inst.cli(&["message", "list", USER, "--mailbox", "Nope"])
            .status
            .code(),
        Some(1)
    );
    assert!(
        inst.cli(&["message", "list", USER, "--mailbox", "Junk"])
            .status
            .success()
    );
}

#[test]
fn foreign_or_damaged_store_is_a_clear_error() {
    let inst = Instance::new("foreign", |t| t);
    std::fs::write(
        inst.dir.join("pimail.redb"),
        b"not a database\n".repeat(1000),
    )
    .unwrap();
    let out = inst.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pimail.redb") && err.contains("not a pimail store"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn management_through_a_running_server_and_sighup() {
    let mut inst = Instance::new("running", |t| t);
    inst.start();
    let out = inst.cli_stdin(
        &["user", "add", "carol@example.test", "--password-stdin"],
        "pw\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The new account receives mail at once.
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    assert_eq!(
        c.send_mail(
            "x@other.example",
            &["carol@example.test"],
            &message("c1", 100)
        )
        .0,
        250
    );
    c.expect("QUIT", 221);
    assert_eq!(inst.uids("carol@example.test", "INBOX"), vec![1]);
    // SIGHUP with a changed limit: new sessions see it.
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        text.replace("max_recipients = 100", "max_recipients = 1"),
    )
    .unwrap();
    inst.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<x@other.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.expect("RCPT TO:<carol@example.test>", 452);
    drop(c);
    // A broken config on SIGHUP keeps the running one.
    std::fs::write(&inst.config, "this is [not toml").unwrap();
    inst.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("NOOP", 250);
    assert!(inst.log().contains("reload failed"), "{}", inst.log());
    std::fs::write(&inst.config, text).unwrap();
    inst.signal("TERM");
    assert_eq!(inst.wait(Duration::from_secs(20)), Some(0));
    // Without the server, the same commands work on the file directly.
    assert!(
        inst.cli(&["user", "del", "carol@example.test"])
            .status
            .success()
    );
}
