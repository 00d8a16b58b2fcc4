//! `pimail firstboot` off the image: the settings file becomes a data
//! directory with the admin account, the password leaves the file, the DNS
//! records land beside it, and a second run changes nothing.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pimail");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pimail-firstboot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    dir
}

fn firstboot(dir: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(["firstboot", "--settings"])
        .arg(dir.join("boot/pimail.txt"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn settings_file_becomes_a_mail_box() {
    let dir = scratch("ok");
    let template = include_str!("../board/pimail.txt");
    let settings = template
        .replace("domain = example.org", "domain = example.test")
        .replace("admin = you@example.org", "admin = boss")
        .replace(
            "admin_password =\n",
            "admin_password = correct horse battery\n",
        )
        .replace("smarthost =\n", "smarthost = smtp.isp.test:587\n");
    std::fs::write(dir.join("boot/pimail.txt"), &settings).unwrap();

    let out = firstboot(&dir);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("example.test.\tIN MX 10 mail.example.test."),
        "{said}"
    );
    assert!(said.contains("not on the pimail image"), "{said}");

    let after = std::fs::read_to_string(dir.join("boot/pimail.txt")).unwrap();
    assert!(!after.contains("correct horse"), "{after}");
    assert!(after.contains("\nadmin_password =\n"), "{after}");
    assert!(
        after.contains("\nsmarthost = smtp.isp.test:587\n"),
        "{after}"
    );
    let dns = std::fs::read_to_string(dir.join("boot/pimail-dns.txt")).unwrap();
    assert!(dns.contains("v=spf1 mx -all"), "{dns}");

    let config = dir.join("data/pimail.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("smarthost = \"smtp.isp.test:587\""), "{toml}");
    let list = |what: &str| {
        let out = Command::new(BIN)
            .args([what, "list", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(list("user").contains("boss@example.test"));
    let aliases = list("alias");
    assert!(aliases.contains("postmaster@example.test"), "{aliases}");
    assert!(aliases.contains("abuse@example.test"), "{aliases}");

    // Second boot: nothing to do, nothing changed, records printed again.
    let out = firstboot(&dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("set up already"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("boot/pimail.txt")).unwrap(),
        after
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unedited_file_is_refused_and_left_alone() {
    let dir = scratch("unedited");
    let template = include_str!("../board/pimail.txt");
    std::fs::write(dir.join("boot/pimail.txt"), template).unwrap();
    let out = firstboot(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("pimail.txt: `domain`"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("data/pimail.toml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("boot/pimail.txt")).unwrap(),
        template
    );
    let _ = std::fs::remove_dir_all(&dir);
}
