//! POP3 benchmark client for benches/pop3/run.sh. Standard library only:
//! `rustc -O --edition 2024 benches/pop3/client.rs -o target/pop3-bench`.
//!
//! Modes (run with no arguments for the option list):
//!   smtp     deliver the generated messages over SMTP (pimail)
//!   maildir  write the same messages into a Maildir's new/ (Dovecot)
//!   bench    one POP3 session: login, STAT, UIDL, LIST, RETR all, QUIT; timed
//!   idle     memory of N idle authenticated sessions of N different users
//!   mem      memory of a process and all its descendants
//!
//! Output is one line of `key=value` fields on stdout; problems go to stderr
//! and are counted in an `errors=` field (the caller decides what is fatal).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::exit;
use std::thread::sleep;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  pop3-bench smtp    --addr HOST:PORT --rcpt ADDR [--count 1000] [--seed 1]
  pop3-bench maildir --dir MAILDIR [--count 1000] [--seed 1] [--uid N --gid N]
  pop3-bench bench   --addr HOST:PORT --user U --pass P [--cpu-pid PID] [--expect N]
  pop3-bench idle    --addr HOST:PORT --user-fmt 'bench{}@dom' --pass P --count 50
                     --pid PID --metric rss|pss [--settle-ms 2000]
  pop3-bench mem     --pid PID --metric rss|pss
  pop3-bench sizes   [--count 1000] [--seed 1]   (sizes of the generated set)";

// ---------------------------------------------------------------------------
// Options

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                die(&format!("unexpected argument {a}\n{USAGE}"));
            };
            let Some(value) = it.next() else {
                die(&format!("--{key} needs a value"));
            };
            map.insert(key.to_string(), value.clone());
        }
        Opts(map)
    }
    fn str(&self, key: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| die(&format!("--{key} is required\n{USAGE}")))
    }
    fn num(&self, key: &str, default: u64) -> u64 {
        match self.0.get(key) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{key}: not a number: {v}"))),
        }
    }
    fn opt(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

fn die(msg: &str) -> ! {
    eprintln!("pop3-bench: {msg}");
    exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        die(USAGE);
    };
    let o = Opts::parse(&args[1..]);
    let result = match mode.as_str() {
        "smtp" => smtp(&o),
        "maildir" => maildir(&o),
        "bench" => bench(&o),
        "idle" => idle(&o),
        "mem" => {
            let (kib, procs) = memory(o.num("pid", 0) as u32, &o.str("metric"));
            println!("kib={kib} procs={procs}");
            Ok(())
        }
        "sizes" => {
            let (n, seed) = (o.num("count", 1000) as usize, o.num("seed", 1));
            let sizes: Vec<usize> = (0..n).map(|i| message(seed, i).len()).collect();
            let big = sizes.iter().filter(|&&s| s > 64 * 1024).count();
            println!(
                "messages={n} crlf_octets={} min={} max={} over_64k={big}",
                sizes.iter().sum::<usize>(),
                sizes.iter().min().unwrap_or(&0),
                sizes.iter().max().unwrap_or(&0)
            );
            Ok(())
        }
        _ => die(USAGE),
    };
    if let Err(e) = result {
        die(&format!("{mode}: {e}"));
    }
}

// ---------------------------------------------------------------------------
// Deterministic message generator

struct Rng(u64);

impl Rng {
    fn new(seed: u64, i: usize) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "for", "is", "on", "that", "by", "this", "with", "you",
    "it", "not", "or", "be", "are", "from", "at", "as", "your", "all", "have", "new", "more",
    "an", "was", "we", "will", "home", "can", "about", "if", "page", "my", "has", "search",
    "free", "but", "our", "one", "other", "do", "no", "information", "time", "they", "site",
    "he", "up", "may", "what", "which", "their", "news", "out", "use", "any", "there", "see",
    "only", "so", "his", "when", "contact", "here", "business", "who", "web", "also", "now",
    "help", "get", "view", "online", "first", "been", "would", "how", "were", "me", "services",
    "some", "these", "click", "its", "like", "service", "than", "find", "price", "date", "back",
    "top", "people", "had", "list", "name", "just", "over", "state", "year", "day", "into",
    "email", "two", "health", "world", "next", "used", "go", "work", "last", "most", "products",
    "music", "buy", "data", "make", "them", "should", "product", "system", "post", "her", "city",
    "meeting", "invoice", "attached", "regards", "thanks", "schedule", "server", "backup",
    "Raspberry", "board", "mailbox", "deadline", "report", "quarterly", "budget", "draft",
];
const FIRST: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoe",
];
const LAST: &[&str] = &[
    "Smith", "Jones", "Martin", "Bernard", "Dubois", "Garcia", "Mueller", "Rossi", "Novak",
    "Svensson", "Nakamura", "Kowalski", "Okafor", "Silva", "Jensen", "Horvat",
];
const DOMAINS: &[&str] = &[
    "example.org", "example.com", "example.net", "mail.example.org", "lists.example.com",
];
const DAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Lines that start with "." (byte-stuffed on the wire), one in ~25.
const DOT_LINES: &[&str] = &[
    ".",
    "..",
    "...",
    ".hidden configuration file mentioned above",
    ". leading dot then a space",
    ".. two leading dots",
    ".\tdot and a tab",
];

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn sentence_line(r: &mut Rng, width: usize) -> String {
    let mut line = String::new();
    while line.len() < width {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(r.pick(WORDS));
    }
    line
}

/// Message `i` of the set `seed`, with CRLF line endings, as it would arrive
/// over SMTP (not dot-stuffed). Sizes: 95% 2-20 KiB, 5% about 100 KiB
/// (multipart with a base64 attachment).
pub fn message(seed: u64, i: usize) -> Vec<u8> {
    let mut r = Rng::new(seed, i);
    let big = r.below(20) == 0;
    let target = if big {
        r.range(95 * 1024, 105 * 1024)
    } else {
        r.range(2 * 1024, 20 * 1024)
    } as usize;
    let (first, last) = (r.pick(FIRST), r.pick(LAST));
    let domain = r.pick(DOMAINS);
    let from_local = format!("{}.{}", first.to_lowercase(), last.to_lowercase());
    let day = 1 + r.below(28);
    let (h, m, s) = (r.below(24), r.below(60), r.below(60));
    let date = format!(
        "{}, {day} {} 2024 {h:02}:{m:02}:{s:02} +0{}00",
        r.pick(DAYS),
        r.pick(MONTHS),
        r.below(3)
    );
    let mut subject_words = vec![];
    for _ in 0..r.range(3, 9) {
        subject_words.push(r.pick(WORDS));
    }
    let mut h = String::new();
    let ip = format!("192.0.2.{}", 1 + r.below(250));
    h += &format!(
        "Received: from mx.{domain} (mx.{domain} [{ip}])\r\n\tby mx.bench.local with ESMTPS id {:016x}\r\n\tfor <bench@bench.local>; {date}\r\n",
        r.next()
    );
    h += &format!("From: {first} {last} <{from_local}@{domain}>\r\n");
    h += "To: Bench User <bench@bench.local>\r\n";
    if r.below(3) == 0 {
        h += &format!("Cc: {} <{}@{}>\r\n", r.pick(FIRST), r.pick(FIRST).to_lowercase(), r.pick(DOMAINS));
    }
    let reply = r.below(3) == 0;
    h += &format!(
        "Subject: {}{}\r\n",
        if reply { "Re: " } else { "" },
        subject_words.join(" ")
    );
    h += &format!("Date: {date}\r\n");
    h += &format!("Message-ID: <{i}.{seed}.{:012x}@{domain}>\r\n", r.next() >> 16);
    if reply {
        let parent = format!("<{:x}.{:x}@{domain}>", r.next() >> 20, r.next() >> 40);
        h += &format!("In-Reply-To: {parent}\r\nReferences: {parent}\r\n");
    }
    if r.below(4) == 0 {
        h += &format!("List-Id: <{}.lists.example.com>\r\n", r.pick(WORDS));
        h += "List-Unsubscribe: <mailto:leave@lists.example.com>\r\n";
    }
    h += "MIME-Version: 1.0\r\n";
    let boundary = format!("=_bench_{:016x}", r.next());
    if big {
        h += &format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n");
    } else {
        h += "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n";
    }
    h += "\r\n";
    let mut body = String::new();
    let text_target = if big { target.min(4096 + h.len()) } else { target };
    if big {
        body += "This is a multi-part message in MIME format.\r\n\r\n";
        body += &format!("--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    }
    body += &format!("Hello {},\r\n\r\n", r.pick(FIRST));
    while h.len() + body.len() < text_target {
        let roll = r.below(100);
        if roll < 4 {
            body += r.pick(DOT_LINES);
        } else if roll < 12 {
            // blank line between paragraphs
        } else if roll < 15 {
            body += "> ";
            body += &sentence_line(&mut r, 60);
        } else {
            let width = r.range(40, 74) as usize;
            body += &sentence_line(&mut r, width);
        }
        body += "\r\n";
    }
    if big {
        body += &format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream; name=\"report-{i}.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"report-{i}.bin\"\r\n\r\n"
        );
        while h.len() + body.len() + boundary.len() + 8 < target {
            let line: String = (0..76)
                .map(|_| B64[r.below(64) as usize] as char)
                .collect();
            body += &line;
            body += "\r\n";
        }
        body += &format!("--{boundary}--\r\n");
    } else {
        body += &format!("\r\n-- \r\n{first} {last}\r\n");
    }
    let mut msg = h.into_bytes();
    msg.extend_from_slice(body.as_bytes());
    msg
}

/// FNV-1a of the part after the header (first empty line), so that a
/// trace header the server adds does not change it.
fn body_hash(msg: &[u8]) -> u64 {
    let start = find(msg, b"\r\n\r\n").map_or(0, |p| p + 4);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &msg[start..] {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Delivery

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, s.try_clone()?),
            writer: s,
            line: Vec::with_capacity(1024),
        })
    }
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.write_all(data)
    }
    /// One line with its line ending, in self.line; error at EOF.
    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
        Ok(())
    }
    fn line_str(&self) -> String {
        String::from_utf8_lossy(&self.line).trim_end().to_string()
    }
    /// SMTP reply (multi-line aware); its code.
    fn smtp_reply(&mut self) -> io::Result<u32> {
        loop {
            self.read_line()?;
            if self.line.len() < 4 || self.line[3] != b'-' {
                break;
            }
        }
        Ok(std::str::from_utf8(&self.line[..3.min(self.line.len())])
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    }
    fn smtp(&mut self, cmd: &str, want: u32) -> io::Result<()> {
        self.send(format!("{cmd}\r\n").as_bytes())?;
        let code = self.smtp_reply()?;
        if code != want {
            return Err(io::Error::other(format!("{cmd} -> {}", self.line_str())));
        }
        Ok(())
    }
    /// POP3 single-line reply; error unless +OK.
    fn pop_ok(&mut self, what: &str) -> io::Result<String> {
        self.read_line()?;
        if !self.line.starts_with(b"+OK") {
            return Err(io::Error::other(format!("{what} -> {}", self.line_str())));
        }
        Ok(self.line_str())
    }
    fn pop(&mut self, cmd: &str) -> io::Result<String> {
        self.send(format!("{cmd}\r\n").as_bytes())?;
        let what = if cmd.starts_with("PASS") { "PASS ***" } else { cmd };
        self.pop_ok(what)
    }
    /// Lines of a multi-line POP3 response up to "." (not included),
    /// without CRLF, un-stuffed.
    fn pop_lines(&mut self) -> io::Result<Vec<String>> {
        let mut out = vec![];
        loop {
            self.read_line()?;
            let l = self.line_str();
            if l == "." {
                return Ok(out);
            }
            out.push(l.strip_prefix('.').map(str::to_string).unwrap_or(l));
        }
    }
}

fn smtp(o: &Opts) -> io::Result<()> {
    let (addr, rcpt) = (o.str("addr"), o.str("rcpt"));
    let (n, seed) = (o.num("count", 1000) as usize, o.num("seed", 1));
    let start = Instant::now();
    let mut c = Conn::connect(&addr)?;
    if c.smtp_reply()? != 220 {
        return Err(io::Error::other(format!("greeting: {}", c.line_str())));
    }
    c.smtp("EHLO bench.client", 250)?;
    let mut octets = 0usize;
    let mut digest = 0u64;
    for i in 0..n {
        let msg = message(seed, i);
        octets += msg.len();
        digest = digest.wrapping_add(body_hash(&msg));
        c.smtp(&format!("MAIL FROM:<sender{i}@example.org>"), 250)?;
        c.smtp(&format!("RCPT TO:<{rcpt}>"), 250)?;
        c.smtp("DATA", 354)?;
        let mut wire = Vec::with_capacity(msg.len() + 256);
        let mut at_start = true;
        for &b in &msg {
            if at_start && b == b'.' {
                wire.push(b'.');
            }
            wire.push(b);
            at_start = b == b'\n';
        }
        wire.extend_from_slice(b".\r\n");
        c.send(&wire)?;
        let code = c.smtp_reply()?;
        if code != 250 {
            return Err(io::Error::other(format!("message {i}: {}", c.line_str())));
        }
    }
    let _ = c.smtp("QUIT", 221);
    println!(
        "delivered={n} crlf_octets={octets} body_digest={digest:016x} seconds={:.2}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn maildir(o: &Opts) -> io::Result<()> {
    let dir = o.str("dir");
    let (n, seed) = (o.num("count", 1000) as usize, o.num("seed", 1));
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(Path::new(&dir).join(sub))?;
    }
    let mut octets = 0usize;
    let mut digest = 0u64;
    for i in 0..n {
        let msg = message(seed, i);
        octets += msg.len();
        digest = digest.wrapping_add(body_hash(&msg));
        // Dovecot keeps Maildir files with LF and counts sizes with CRLF; the
        // S= (file) and W= (CRLF) sizes in the name are what its LDA writes.
        let lf: Vec<u8> = msg.iter().copied().filter(|&b| b != b'\r').collect();
        let name = format!(
            "{}.M{i}P1.bench.local,S={},W={}",
            1_700_000_000 + i,
            lf.len(),
            msg.len()
        );
        let tmp = Path::new(&dir).join("tmp").join(&name);
        fs::write(&tmp, &lf)?;
        fs::rename(&tmp, Path::new(&dir).join("new").join(&name))?;
    }
    println!("written={n} crlf_octets={octets} body_digest={digest:016x}");
    Ok(())
}

// ---------------------------------------------------------------------------
// POP3 session benchmark

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn bench(o: &Opts) -> io::Result<()> {
    let (addr, user, pass) = (o.str("addr"), o.str("user"), o.str("pass"));
    let cpu_pid = o.num("cpu-pid", 0) as u32;
    let expect = o.opt("expect").map(|v| v.parse::<usize>().unwrap_or(0));
    let mut errors = 0usize;
    let complain = |errors: &mut usize, msg: String| {
        *errors += 1;
        if *errors <= 10 {
            eprintln!("pop3-bench: {msg}");
        }
    };
    let cpu0 = if cpu_pid != 0 { cpu_ticks(cpu_pid) } else { 0 };

    let t = Instant::now();
    let mut c = Conn::connect(&addr)?;
    c.pop_ok("greeting")?;
    c.pop(&format!("USER {user}"))?;
    c.pop(&format!("PASS {pass}"))?;
    let login = t.elapsed();

    let t1 = Instant::now();
    let stat = c.pop("STAT")?;
    let stat_time = t1.elapsed();
    let fields: Vec<&str> = stat.split_whitespace().collect();
    let stat_n: usize = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stat_octets: u64 = fields.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);

    let t2 = Instant::now();
    c.pop("UIDL")?;
    let uidl = c.pop_lines()?;
    let uidl_time = t2.elapsed();

    let t3 = Instant::now();
    c.pop("LIST")?;
    let list = c.pop_lines()?;
    let list_time = t3.elapsed();

    let mut sizes: Vec<(u32, u64)> = vec![];
    for l in &list {
        let mut f = l.split_whitespace();
        match (f.next().and_then(|v| v.parse().ok()), f.next().and_then(|v| v.parse().ok())) {
            (Some(n), Some(s)) => sizes.push((n, s)),
            _ => complain(&mut errors, format!("bad LIST line {l:?}")),
        }
    }
    let uids: HashSet<&str> = uidl.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
    if uids.len() != uidl.len() {
        complain(&mut errors, format!("UIDL: {} lines, {} distinct ids", uidl.len(), uids.len()));
    }
    if uidl.len() != stat_n || sizes.len() != stat_n {
        complain(
            &mut errors,
            format!("STAT says {stat_n}, UIDL lists {}, LIST {}", uidl.len(), sizes.len()),
        );
    }
    let list_octets: u64 = sizes.iter().map(|s| s.1).sum();
    if list_octets != stat_octets {
        complain(&mut errors, format!("STAT octets {stat_octets} != LIST sum {list_octets}"));
    }
    if let Some(e) = expect
        && e != stat_n
    {
        complain(&mut errors, format!("expected {e} messages, STAT says {stat_n}"));
    }

    // RETR each message in turn (no pipelining, as fetchmail and most MUAs).
    let t4 = Instant::now();
    let mut retr_octets = 0u64;
    let mut wire_octets = 0u64;
    let mut digest = 0u64;
    let mut msg = Vec::with_capacity(256 * 1024);
    for &(n, size) in &sizes {
        c.pop(&format!("RETR {n}"))?;
        msg.clear();
        loop {
            c.read_line()?;
            wire_octets += c.line.len() as u64;
            if c.line == b".\r\n" || c.line == b".\n" {
                break;
            }
            let l = if c.line.starts_with(b".") { &c.line[1..] } else { &c.line[..] };
            msg.extend_from_slice(l);
        }
        retr_octets += msg.len() as u64;
        if msg.len() as u64 != size {
            complain(&mut errors, format!("RETR {n}: {} octets, LIST said {size}", msg.len()));
        }
        if msg.windows(2).filter(|w| w[1] == b'\n' && w[0] != b'\r').count() > 0
            || msg.first() == Some(&b'\n')
        {
            complain(&mut errors, format!("RETR {n}: bare LF in the message"));
        }
        digest = digest.wrapping_add(body_hash(&msg));
    }
    let retr_time = t4.elapsed();

    let t5 = Instant::now();
    c.pop("QUIT")?;
    // wait for the server to close (the session is over for it too)
    let mut rest = vec![];
    let _ = c.reader.read_to_end(&mut rest);
    let quit_time = t5.elapsed();
    let total = t.elapsed();
    let cpu = if cpu_pid != 0 {
        // let a per-session process (Dovecot) exit and be reaped
        sleep(Duration::from_millis(300));
        format!("{}", (cpu_ticks(cpu_pid).saturating_sub(cpu0)) * 10)
    } else {
        "NA".into()
    };
    println!(
        "login_ms={} stat_ms={} uidl_ms={} list_ms={} retr_ms={} quit_ms={} total_ms={} \
         server_cpu_ms={cpu} messages={stat_n} stat_octets={stat_octets} retr_octets={retr_octets} \
         wire_octets={wire_octets} body_digest={digest:016x} errors={errors}",
        ms(login),
        ms(stat_time),
        ms(uidl_time),
        ms(list_time),
        ms(retr_time),
        ms(quit_time),
        ms(total),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Idle sessions and memory

fn idle(o: &Opts) -> io::Result<()> {
    let (addr, fmt, pass) = (o.str("addr"), o.str("user-fmt"), o.str("pass"));
    let count = o.num("count", 50) as usize;
    let pid = o.num("pid", 0) as u32;
    let metric = o.str("metric");
    let settle = Duration::from_millis(o.num("settle-ms", 2000));

    let (before, procs_before) = memory(pid, &metric);
    let t = Instant::now();
    let mut sessions = vec![];
    let mut failed = 0;
    for i in 1..=count {
        let user = fmt.replace("{}", &i.to_string());
        let login = (|| -> io::Result<Conn> {
            let mut c = Conn::connect(&addr)?;
            c.pop_ok("greeting")?;
            c.pop(&format!("USER {user}"))?;
            c.pop(&format!("PASS {pass}"))?;
            Ok(c)
        })();
        match login {
            Ok(c) => sessions.push(c),
            Err(e) => {
                failed += 1;
                eprintln!("pop3-bench: login of {user}: {e}");
            }
        }
    }
    let login_time = t.elapsed();
    sleep(settle);
    let (with, procs_with) = memory(pid, &metric);
    // every session still alive and usable?
    let mut alive = 0;
    for c in &mut sessions {
        if c.pop("NOOP").is_ok() {
            alive += 1;
        }
    }
    for c in &mut sessions {
        let _ = c.pop("QUIT");
    }
    drop(sessions);
    sleep(settle);
    let (after, procs_after) = memory(pid, &metric);
    let per = if alive > 0 {
        format!("{:.0}", (with as f64 - before as f64) / alive as f64)
    } else {
        "NA".into()
    };
    println!(
        "sessions={count} alive={alive} failed={failed} login_ms={} before_kib={before} with_kib={with} \
         after_kib={after} per_session_kib={per} procs_before={procs_before} procs_with={procs_with} \
         procs_after={procs_after}",
        ms(login_time)
    );
    Ok(())
}

/// (ppid, fields after the command name) of /proc/PID/stat.
fn stat_fields(pid: u32) -> Option<(u32, Vec<u64>)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<u64> = rest.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
    Some((*f.first()? as u32, f))
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((ppid, _)) = stat_fields(p)
            {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// User + system time (own and reaped children's) of the tree, in clock
/// ticks (USER_HZ, 100 on Linux x86 and ARM).
fn cpu_ticks(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|&p| stat_fields(p))
        // after the command: state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime cutime cstime (fields 3..17);
        // the vector starts at ppid (field 4)
        .map(|(_, f)| f.get(10..14).map_or(0, |t| t.iter().sum::<u64>()))
        .sum()
}

/// (KiB, processes): VmRSS of `pid` alone (`rss`), or the sum of Pss over
/// `pid` and its descendants (`pss`, from smaps_rollup).
fn memory(pid: u32, metric: &str) -> (u64, usize) {
    let field = |file: &str, key: &str| -> u64 {
        fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                    l.split_whitespace().nth(1).and_then(|v| v.parse().ok())
                })
            })
            .unwrap_or(0)
    };
    match metric {
        "rss" => (field(&format!("/proc/{pid}/status"), "VmRSS:"), 1),
        "pss" => {
            let pids = tree(pid);
            let sum = pids
                .iter()
                .map(|p| field(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
                .sum();
            (sum, pids.len())
        }
        _ => die("--metric must be rss or pss"),
    }
}
