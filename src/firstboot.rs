//! `pimail firstboot`: turns the plain settings file that the user edited
//! on the card's FAT boot partition into a running mail box.
//!
//! Order matters for a power cut at any point: the store and the admin
//! account are committed before the clear-text password is scrubbed from
//! the card, so a second boot either finds the password still there (and
//! redoes the work) or finds the config in place (and only re-prints the
//! DNS records).
//!
//! Changes to the system (host name, Wi-Fi, SSH, the root partition) are
//! made only on the pimail image, recognised by [`IMAGE_MARKER`]; anywhere
//! else `firstboot` only sets up pimail itself.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use pimail::{admin, auth, store};

use crate::Failure;

/// Written by image/assemble.sh; its presence means "this is our image".
pub const IMAGE_MARKER: &str = "/etc/pimail-image";

/// Keys whose values are secrets: removed from the card once applied.
const SECRET_KEYS: [&str; 3] = ["admin_password", "wifi_password", "smarthost_password"];

const KEYS: [&str; 11] = [
    "domain",
    "hostname",
    "admin",
    "admin_password",
    "smarthost",
    "smarthost_user",
    "smarthost_password",
    "wifi_ssid",
    "wifi_password",
    "wifi_country",
    "ssh_key",
];

/// Shortest admin password accepted: the box answers on the internet.
pub const MIN_PASSWORD_LEN: usize = 10;

/// The settings file, as written by the user. Empty values are `None`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub admin: Option<String>,
    pub admin_password: Option<String>,
    pub smarthost: Option<String>,
    pub smarthost_user: Option<String>,
    pub smarthost_password: Option<String>,
    pub wifi_ssid: Option<String>,
    pub wifi_password: Option<String>,
    pub wifi_country: Option<String>,
    pub ssh_key: Option<String>,
}

/// A problem in the settings file, with the line it is on (1-based; 0 when
/// it concerns a missing key).
#[derive(Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub line: usize,
    pub message: String,
}

impl SettingsError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        SettingsError {
            line,
            message: message.into(),
        }
    }

    pub fn describe(&self, file: &Path) -> String {
        if self.line == 0 {
            format!("{}: {}", file.display(), self.message)
        } else {
            format!("{} line {}: {}", file.display(), self.line, self.message)
        }
    }
}

/// Splits a settings line into key and value; `None` for blank lines and
/// comments. `#` starts a comment only at the start of a line, so that
/// passwords may contain it.
fn split_line(line: &str) -> Option<Result<(&str, &str), ()>> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(
        t.split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or(()),
    )
}

/// Parses `key = value` lines. Values may be wrapped in double quotes;
/// unknown and repeated keys are errors (a typo must not silently leave a
/// setting out). A UTF-8 byte order mark and CRLF line ends are accepted:
/// the file is edited on whatever computer the user has.
pub fn parse(text: &str) -> Result<Settings, SettingsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut s = Settings::default();
    let mut seen: Vec<&str> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some(kv) = split_line(line) else { continue };
        let (key, value) =
            kv.map_err(|()| SettingsError::at(n, "expected `key = value` (or a # comment)"))?;
        let key_lower = key.to_ascii_lowercase();
        let Some(&key) = KEYS.iter().find(|k| **k == key_lower) else {
            return Err(SettingsError::at(
                n,
                format!("unknown key `{key}` (expected one of {})", KEYS.join(", ")),
            ));
        };
        if seen.contains(&key) {
            return Err(SettingsError::at(n, format!("`{key}` is set twice")));
        }
        seen.push(key);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let value = (!value.is_empty()).then(|| value.to_string());
        let slot = match key {
            "domain" => &mut s.domain,
            "hostname" => &mut s.hostname,
            "admin" => &mut s.admin,
            "admin_password" => &mut s.admin_password,
            "smarthost" => &mut s.smarthost,
            "smarthost_user" => &mut s.smarthost_user,
            "smarthost_password" => &mut s.smarthost_password,
            "wifi_ssid" => &mut s.wifi_ssid,
            "wifi_password" => &mut s.wifi_password,
            "wifi_country" => &mut s.wifi_country,
            _ => &mut s.ssh_key,
        };
        *slot = value;
    }
    Ok(s)
}

/// What firstboot will do, checked: every field the user must fill in.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub domain: String,
    pub hostname: String,
    pub admin: String,
    pub wifi: Option<Wifi>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Wifi {
    pub ssid: String,
    pub password: String,
    pub country: String,
}

impl Settings {
    /// Checks the settings; `need_password` is false when the store exists
    /// already (a second boot after the password was scrubbed).
    pub fn plan(&self, need_password: bool) -> Result<Plan, SettingsError> {
        let missing =
            |key: &str, what: &str| SettingsError::at(0, format!("`{key}` is empty: {what}"));
        let domain = self
            .domain
            .as_deref()
            .ok_or_else(|| missing("domain", "set it to your mail domain, e.g. example.net"))?
            .to_ascii_lowercase();
        if domain == "example.org"
            || store::ops::validate_address(&format!("postmaster@{domain}")).is_err()
        {
            return Err(SettingsError::at(
                0,
                format!("`domain`: expected your own mail domain, found {domain:?}"),
            ));
        }
        let hostname = match self.hostname.as_deref() {
            Some(h) => h.to_ascii_lowercase(),
            None => format!("mail.{domain}"),
        };
        if !valid_hostname(&hostname) {
            return Err(SettingsError::at(
                0,
                format!("`hostname`: expected a name like mail.{domain}, found {hostname:?}"),
            ));
        }
        let admin = match self.admin.as_deref() {
            None => format!("postmaster@{domain}"),
            Some(a) if a.contains('@') => store::ops::normalize_address(a),
            Some(local) => store::ops::normalize_address(&format!("{local}@{domain}")),
        };
        if store::ops::validate_address(&admin).is_err() || !admin.ends_with(&format!("@{domain}"))
        {
            return Err(SettingsError::at(
                0,
                format!("`admin`: expected an address @{domain}, found {admin:?}"),
            ));
        }
        if need_password {
            match self.admin_password.as_deref() {
                None => {
                    return Err(missing(
                        "admin_password",
                        "choose the admin mailbox's password",
                    ));
                }
                Some(p) if p.chars().count() < MIN_PASSWORD_LEN => {
                    return Err(SettingsError::at(
                        0,
                        format!(
                            "`admin_password`: expected at least {MIN_PASSWORD_LEN} characters, found {}",
                            p.chars().count()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let wifi = match (&self.wifi_ssid, &self.wifi_password) {
            (None, None) => None,
            (Some(ssid), Some(password)) => {
                let country = self
                    .wifi_country
                    .as_deref()
                    .ok_or_else(|| {
                        missing(
                            "wifi_country",
                            "the two-letter country code Wi-Fi must obey, e.g. GB",
                        )
                    })?
                    .to_ascii_uppercase();
                if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(SettingsError::at(
                        0,
                        format!("`wifi_country`: expected two letters like GB, found {country:?}"),
                    ));
                }
                // WPA2 passphrases are 8 to 63 characters (IEEE 802.11i H.4.1).
                if !(8..=63).contains(&password.len()) {
                    return Err(SettingsError::at(
                        0,
                        format!(
                            "`wifi_password`: expected 8 to 63 characters, found {}",
                            password.len()
                        ),
                    ));
                }
                for (key, v) in [("wifi_ssid", ssid), ("wifi_password", password)] {
                    if v.contains(['"', '\\']) || v.chars().any(char::is_control) {
                        return Err(SettingsError::at(
                            0,
                            format!(
                                "`{key}`: quotes, backslashes and control characters are not supported"
                            ),
                        ));
                    }
                }
                Some(Wifi {
                    ssid: ssid.clone(),
                    password: password.clone(),
                    country,
                })
            }
            (Some(_), None) => return Err(missing("wifi_password", "needed with wifi_ssid")),
            (None, Some(_)) => return Err(missing("wifi_ssid", "needed with wifi_password")),
        };
        Ok(Plan {
            domain,
            hostname,
            admin,
            wifi,
        })
    }
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.contains('.')
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The settings text with every secret's value removed, each line ending
/// and every other byte kept; `None` when there was nothing to remove.
pub fn scrub(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let secret = match split_line(body) {
            Some(Ok((key, value))) => {
                let key = key.trim_start_matches('\u{feff}').to_ascii_lowercase();
                (SECRET_KEYS.contains(&key.as_str()) && !value.is_empty()).then_some(key)
            }
            _ => None,
        };
        match secret {
            Some(key) => {
                changed = true;
                let nl = if ending.is_empty() { "\n" } else { ending };
                let _ = write!(
                    out,
                    "# {key} was applied on first boot and removed from this card.{nl}{key} ={ending}"
                );
            }
            None => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// Options of `pimail firstboot`.
pub struct Options {
    pub settings: PathBuf,
    pub data_dir: PathBuf,
}

/// Applies the settings file. See the module documentation for the order.
pub fn run(opts: &Options) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&opts.settings).map_err(|e| {
        Failure(
            2,
            format!(
                "{}: {e} (copy board/pimail.txt there and fill it in)",
                opts.settings.display()
            ),
        )
    })?;
    let settings = parse(&text).map_err(|e| Failure(2, e.describe(&opts.settings)))?;
    let config_file = opts.data_dir.join("pimail.toml");
    let fresh = !config_file.exists();
    let plan = settings
        .plan(fresh)
        .map_err(|e| Failure(2, e.describe(&opts.settings)))?;
    if fresh {
        let smarthost = [
            ("smarthost", settings.smarthost.as_deref()),
            ("smarthost_user", settings.smarthost_user.as_deref()),
            ("smarthost_password", settings.smarthost_password.as_deref()),
        ];
        let config = crate::create_instance(
            &opts.data_dir,
            &plan.domain,
            &plan.hostname,
            None,
            &|text| set_relay_keys(text, &smarthost),
        )?;
        let hash = auth::password::hash(
            settings.admin_password.as_deref().unwrap_or_default(),
            auth::password::HashCost {
                memory_kib: config.auth.argon2_memory_kib,
                iterations: config.auth.argon2_iterations,
            },
        )
        .map_err(|e| Failure(1, e))?;
        let store = store::Store::open(&config.store.path, config.store_options())?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut requests = vec![admin::Request::UserAdd {
            address: plan.admin.clone(),
            hash,
        }];
        for role in ["postmaster", "abuse"] {
            let alias = format!("{role}@{}", plan.domain);
            if alias != plan.admin {
                requests.push(admin::Request::AliasAdd {
                    alias,
                    targets: vec![plan.admin.clone()],
                });
            }
        }
        for req in &requests {
            admin::run_direct(&store, req, &mut out)?;
        }
        drop(store);
        give_to_service_user(&opts.data_dir);
    } else if let Some(password) = settings.admin_password.as_deref() {
        // A password put back on the card later resets the admin's.
        let config = pimail::config::Config::load(&config_file)?;
        let hash = auth::password::hash(
            password,
            auth::password::HashCost {
                memory_kib: config.auth.argon2_memory_kib,
                iterations: config.auth.argon2_iterations,
            },
        )
        .map_err(|e| Failure(1, e))?;
        let store = store::Store::open(&config.store.path, config.store_options())?;
        let req = admin::Request::UserPasswd {
            address: plan.admin.clone(),
            hash,
        };
        admin::run_direct(&store, &req, &mut std::io::stdout().lock())?;
        outln!(
            "{}: password of {} reset",
            config_file.display(),
            plan.admin
        );
    } else {
        outln!("{} exists: pimail is set up already", config_file.display());
    }
    if let Some(scrubbed) = scrub(&text) {
        replace_file(&opts.settings, scrubbed.as_bytes()).map_err(|e| {
            Failure(
                1,
                format!("{}: removing the passwords: {e}", opts.settings.display()),
            )
        })?;
        outln!("removed the passwords from {}", opts.settings.display());
    }
    if Path::new(IMAGE_MARKER).exists() {
        configure_system(&plan, &settings);
    } else {
        outln!(
            "not on the pimail image ({IMAGE_MARKER} is absent): host name, Wi-Fi, SSH and partitions left alone"
        );
    }
    let records =
        pimail::dkim::records::zone_text(&plan.domain, &plan.hostname, &opts.data_dir.join("dkim"))
            .unwrap_or_else(|e| format!("; DNS records not available: {e}\n"));
    out!("{records}");
    if let Some(dir) = opts.settings.parent() {
        let path = dir.join("pimail-dns.txt");
        if let Err(e) = replace_file(&path, records.as_bytes()) {
            log::warn!("{}: {e}", path.display());
        }
    }
    // The boot partition is FAT, written back lazily: without this a power
    // cut within half a minute would bring the clear-text password back.
    nix::unistd::sync();
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Fills in the `[relay]` keys of a config template.
fn set_relay_keys(text: String, keys: &[(&str, Option<&str>)]) -> String {
    let mut text = text;
    for (key, value) in keys {
        if let Some(v) = value {
            let quoted = toml_string(v);
            text = text.replacen(
                &format!("\n{key} = \"\"\n"),
                &format!("\n{key} = {quoted}\n"),
                1,
            );
        }
    }
    text
}

fn toml_string(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`, so that a power cut leaves the old or the new file
/// (FAT renames are not journalled, but the window is one directory write).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // The directory entry itself; not every file system allows it.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// When run as root and a `pimail` user exists (the unit's User=), hands
/// the data directory to it; systemd would also do so for StateDirectory=,
/// but `pimail serve` run by hand would not.
fn give_to_service_user(dir: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(Some(user)) = nix::unistd::User::from_name("pimail") else {
        return;
    };
    fn walk(p: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
        if let Err(e) = nix::unistd::chown(p, Some(uid), Some(gid)) {
            log::warn!("{}: chown: {e}", p.display());
        }
        if p.is_dir()
            && !p.is_symlink()
            && let Ok(entries) = std::fs::read_dir(p)
        {
            for entry in entries.flatten() {
                walk(&entry.path(), uid, gid);
            }
        }
    }
    walk(dir, user.uid, user.gid);
}

/// Host name, Wi-Fi, SSH and the root partition: image only. Each step
/// logs its failure and lets the others run; mail works without them.
fn configure_system(plan: &Plan, settings: &Settings) {
    if let Err(e) = std::fs::write("/etc/hostname", format!("{}\n", plan.hostname)) {
        log::warn!("/etc/hostname: {e}");
    }
    if let Err(e) = nix::unistd::sethostname(&plan.hostname) {
        log::warn!("sethostname: {e}");
    }
    if let Some(wifi) = &plan.wifi {
        match write_wifi(wifi) {
            Ok(()) => outln!("Wi-Fi: joining {:?}", wifi.ssid),
            Err(e) => log::warn!("Wi-Fi: {e}"),
        }
    }
    if let Some(key) = &settings.ssh_key {
        match write_ssh_key(key) {
            Ok(()) => outln!("SSH: on, root may log in with the given key"),
            Err(e) => log::warn!("SSH: {e}"),
        }
    }
    match grow_root() {
        Ok(Some(msg)) => outln!("{msg}"),
        Ok(None) => {}
        Err(e) => log::warn!("growing the root partition: {e}"),
    }
}

/// Wi-Fi on the image: wpa_supplicant@wlan0 with the network below, and
/// systemd-networkd's 30-wireless.network for DHCP. The radio's driver is
/// blacklisted on the image until this runs (no radios on Ethernet).
fn write_wifi(wifi: &Wifi) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let conf = format!(
        "ctrl_interface=DIR=/run/wpa_supplicant\nupdate_config=0\ncountry={}\n\nnetwork={{\n\tssid=\"{}\"\n\tpsk=\"{}\"\n\tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n\tieee80211w=1\n}}\n",
        wifi.country, wifi.ssid, wifi.password
    );
    let path = "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf";
    std::fs::create_dir_all("/etc/wpa_supplicant").map_err(|e| e.to_string())?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(|e| format!("{path}: {e}"))?;
    let radios = "/etc/modprobe.d/pimail-radios.conf";
    if let Ok(text) = std::fs::read_to_string(radios) {
        let kept: String = text
            .lines()
            .filter(|l| l.trim() != "blacklist brcmfmac")
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(radios, kept).map_err(|e| format!("{radios}: {e}"))?;
    }
    let _ = Command::new("modprobe").arg("brcmfmac").status();
    systemctl(&[
        "enable",
        "--now",
        "--no-block",
        "wpa_supplicant@wlan0.service",
    ])
}

fn write_ssh_key(key: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") && !key.starts_with("sk-") {
        return Err(format!(
            "`ssh_key`: expected a public key line like \"ssh-ed25519 AAAA...\", found {key:?}"
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create("/root/.ssh")
        .map_err(|e| format!("/root/.ssh: {e}"))?;
    let existing = std::fs::read_to_string("/root/.ssh/authorized_keys").unwrap_or_default();
    if existing.lines().any(|l| l.trim() == key) {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open("/root/.ssh/authorized_keys")
        .and_then(|mut f| writeln!(f, "{key}"))
        .map_err(|e| format!("/root/.ssh/authorized_keys: {e}"))?;
    systemctl(&["enable", "--now", "--no-block", "ssh.service"])
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .map_err(|e| format!("systemctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("systemctl {}: {status}", args.join(" ")))
    }
}

/// Grows the root file system's partition to the end of its disk, then the
/// ext4 file system online. A no-op when the partition already ends within
/// 4 MiB of the disk's end, or when the root is not a partition.
fn grow_root() -> Result<Option<String>, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    let Some(device) = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .filter(|(_, mountpoint)| *mountpoint == "/")
        .map(|(dev, _)| dev)
        .next_back()
    else {
        return Ok(None);
    };
    let Some(name) = device.strip_prefix("/dev/") else {
        return Ok(None);
    };
    let sys = Path::new("/sys/class/block").join(name);
    let read_num =
        |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let Some(partition) = read_num(sys.join("partition")) else {
        return Ok(None);
    };
    let disk_dir = sys
        .canonicalize()
        .map_err(|e| format!("{}: {e}", sys.display()))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no parent disk")?;
    let disk_name = disk_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no parent disk")?
        .to_string();
    let (Some(disk_size), Some(start), Some(size)) = (
        read_num(disk_dir.join("size")),
        read_num(sys.join("start")),
        read_num(sys.join("size")),
    ) else {
        return Ok(None);
    };
    // Sizes in /sys are in 512-byte sectors whatever the device's.
    const SLACK: u64 = 4 * 2048;
    if start + size + SLACK >= disk_size {
        return Ok(None);
    }
    let disk = format!("/dev/{disk_name}");
    let mut sfdisk = Command::new("sfdisk")
        .args([
            "--force",
            "--no-reread",
            "--no-tell-kernel",
            "-N",
            &partition.to_string(),
            &disk,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("sfdisk: {e}"))?;
    if let Some(mut stdin) = sfdisk.stdin.take() {
        stdin
            .write_all(b", +\n")
            .map_err(|e| format!("sfdisk: {e}"))?;
    }
    let status = sfdisk.wait().map_err(|e| format!("sfdisk: {e}"))?;
    if !status.success() {
        return Err(format!("sfdisk -N {partition} {disk}: {status}"));
    }
    for (program, args) in [
        ("partx", vec!["-u", "-n", &partition.to_string(), &disk]),
        ("resize2fs", vec![device]),
    ] {
        let out = Command::new(program)
            .args(&args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let new_size = read_num(sys.join("size")).unwrap_or(size);
    Ok(Some(format!(
        "root partition {device} grown from {} MiB to {} MiB",
        size / 2048,
        new_size / 2048
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../board/pimail.txt");

    #[test]
    fn the_shipped_template_parses_and_asks_for_a_domain() {
        let s = parse(TEMPLATE).unwrap();
        assert_eq!(s.domain.as_deref(), Some("example.org"));
        assert_eq!(s.admin_password, None);
        let e = s.plan(true).unwrap_err();
        assert!(e.message.contains("`domain`"), "{e:?}");
    }

    #[test]
    fn parses_keys_quotes_crlf_bom_and_hash_in_values() {
        let text = "\u{feff}# comment\r\n\r\nDomain = Example.NET\r\nadmin = me\r\n\
                    admin_password = \"p#ss word=1\"\r\n  wifi_ssid=Home Net \r\nwifi_password=abc#12345\r\nwifi_country = gb\r\n";
        let s = parse(text).unwrap();
        assert_eq!(s.domain.as_deref(), Some("Example.NET"));
        assert_eq!(s.admin_password.as_deref(), Some("p#ss word=1"));
        assert_eq!(s.wifi_ssid.as_deref(), Some("Home Net"));
        let plan = s.plan(true).unwrap();
        assert_eq!(
            plan,
            Plan {
                domain: "example.net".into(),
                hostname: "mail.example.net".into(),
                admin: "me@example.net".into(),
                wifi: Some(Wifi {
                    ssid: "Home Net".into(),
                    password: "abc#12345".into(),
                    country: "GB".into()
                }),
            }
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        for (text, line, needle) in [
            ("domain = a.b\ndomian = c.d\n", 2, "unknown key `domian`"),
            ("domain = a.b\n\ndomain = c.d\n", 3, "set twice"),
            ("# x\njust words\n", 2, "expected `key = value`"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.message.contains(needle), "{e:?}");
        }
    }

    #[test]
    fn plan_checks_what_the_user_must_fill_in() {
        let ok = "domain = example.net\nadmin_password = 0123456789\n";
        assert_eq!(
            parse(ok).unwrap().plan(true).unwrap().admin,
            "postmaster@example.net"
        );
        for (text, needle) in [
            ("admin_password = 0123456789\n", "`domain` is empty"),
            ("domain = example.net\n", "`admin_password` is empty"),
            (
                "domain = example.net\nadmin_password = 012345678\n",
                "at least 10",
            ),
            (
                "domain = example.net\nadmin = a@elsewhere.org\nadmin_password = 0123456789\n",
                "`admin`",
            ),
            (
                "domain = no_dots\nadmin_password = 0123456789\n",
                "`domain`",
            ),
            (
                "domain = example.net\nhostname = bad host\nadmin_password = 0123456789\n",
                "`hostname`",
            ),
            (&format!("{ok}wifi_ssid = x\n"), "`wifi_password` is empty"),
            (
                &format!("{ok}wifi_ssid = x\nwifi_password = 12345678\n"),
                "`wifi_country` is empty",
            ),
            (
                &format!("{ok}wifi_ssid = x\nwifi_password = 1234567\nwifi_country = de\n"),
                "8 to 63",
            ),
            (
                &format!("{ok}wifi_ssid = a\"b\nwifi_password = 12345678\nwifi_country = de\n"),
                "quotes",
            ),
        ] {
            let e = parse(text).unwrap().plan(true).unwrap_err();
            assert!(e.message.contains(needle), "{text:?}: {e:?}");
        }
        // A second boot: the password was scrubbed, the store exists.
        assert!(parse("domain = example.net\n").unwrap().plan(false).is_ok());
    }

    #[test]
    fn scrub_removes_only_secret_values_and_keeps_everything_else() {
        let text = "# settings\r\ndomain = example.net\r\nadmin_password = s3cret#1 long\r\n\
                    wifi_ssid = home\r\nwifi_password = wifipass1\r\nsmarthost_password =\r\nssh_key = ssh-ed25519 AAAA x";
        let out = scrub(text).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
        assert!(!out.contains("wifipass1"), "{out}");
        assert!(
            out.contains("# admin_password was applied on first boot"),
            "{out}"
        );
        assert!(
            out.starts_with("# settings\r\ndomain = example.net\r\n"),
            "{out}"
        );
        assert!(out.ends_with("ssh_key = ssh-ed25519 AAAA x"), "{out}");
        assert!(out.contains("admin_password =\r\n"), "{out}");
        let s = parse(&out).unwrap();
        assert_eq!((s.admin_password, s.wifi_password), (None, None));
        assert_eq!(s.wifi_ssid.as_deref(), Some("home"));
        // Nothing left to scrub: idempotent.
        assert_eq!(scrub(&out), None);
        assert_eq!(scrub(TEMPLATE), None);
    }

    #[test]
    fn scrub_handles_a_secret_on_the_last_line_without_newline() {
        let out = scrub("domain = a.b\nadmin_password = x").unwrap();
        assert_eq!(
            out,
            "domain = a.b\n# admin_password was applied on first boot and removed from this card.\nadmin_password ="
        );
    }

    #[test]
    fn relay_keys_are_filled_into_the_template() {
        let text = pimail::config::template(&pimail::config::InitValues {
            hostname: "mail.example.net",
            domain: "example.net",
            data_dir: Path::new("/var/lib/pimail"),
            dev_port_base: None,
        });
        let text = set_relay_keys(
            text,
            &[
                ("smarthost", Some("smtp.isp.example:587")),
                ("smarthost_user", Some("me")),
                ("smarthost_password", Some("a\"b\\c")),
            ],
        );
        let config = pimail::config::Config::parse(Path::new("pimail.toml"), &text)
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(
            config.relay.smarthost,
            Some(("smtp.isp.example".to_string(), 587))
        );
        assert_eq!(
            config.relay.smarthost_credentials,
            Some(("me".to_string(), "a\"b\\c".to_string()))
        );
    }
}
