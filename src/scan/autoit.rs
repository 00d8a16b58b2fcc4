//! Compiled AutoIt v3 scripts: an AutoIt interpreter executable carrying
//! the script, and every file it installs with `FileInstall`, encrypted
//! and usually compressed.
//!
//! The data is found by its marker, wherever it is: in the PE overlay
//! (AutoIt 3.2, and 3.3 executables built that way, such as
//! clamav-testfiles' `clam.ea05.exe`/`clam.ea06.exe`) or in an `RT_RCDATA`
//! resource named `SCRIPT` (AutoIt 3.3's default; when the executable is
//! UPX-packed the resource is in UPX's image). The layout, as described by
//! the open-source extractors (AutoIt-Ripper, myAut2Exe) and checked
//! against those two test files:
//!
//! - a 16-byte magic (`A3 48 4B BE 98 6C 4A A9 99 4C 53 0A 86 D6 48 7D`),
//!   `AU3!EA05` or `AU3!EA06`, then 16 bytes (in EA05, their byte sum plus
//!   `0x22AF` seeds the file data's key);
//! - records, each: `FILE` encrypted; a u32 length (XORed with a constant)
//!   and that many characters naming the kind (`>AUTOIT SCRIPT<`-style
//!   names for the script, the source path for an installed file); the
//!   same for the path; a byte, 1 when the data is compressed; the data
//!   length, the uncompressed length and an Adler-32 of the data, each a
//!   u32 XORed with a constant; two FILETIMEs; the encrypted data;
//! - `AU3!EA0x` again at the very end.
//!
//! Every string and the data are XORed with a keystream seeded per field
//! (a constant, plus the length for strings). EA05 strings are single
//! bytes and the keystream is MT19937's output shifted right by one, low
//! byte; EA06 strings are UTF-16 and the keystream is a lagged rotate-add
//! generator over 17 words ([`Lame`]). Compressed data is `EA05`/`EA06`,
//! a big-endian u32 size, then an LZSS bit stream (see [`Expand`]).
//! The EA06 script itself is tokenised, not text: it is scanned as it
//! decodes (ClamAV also rebuilds its text; signatures written against that
//! text do not match here).

use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// The 16 bytes before `AU3!EA0x`.
pub const MAGIC: [u8; 16] = [
    0xA3, 0x48, 0x4B, 0xBE, 0x98, 0x6C, 0x4A, 0xA9, 0x99, 0x4C, 0x53, 0x0A, 0x86, 0xD6, 0x48, 0x7D,
];
const MARKER: &[u8; 7] = b"AU3!EA0";
/// The magic, the marker and its version digit.
const START: usize = MAGIC.len() + MARKER.len() + 1;
/// The bytes after the marker (EA05's data key is their sum).
const SUBHEADER: usize = 16;
/// The kind of AutoIt's one record that is not a file.
const NO_CMDEXECUTE: &str = ">>>AUTOIT NO CMDEXECUTE<<<";
/// The window of the compression: its distances are 15 bits.
const WINDOW: usize = 1 << 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Ea05,
    Ea06,
}

/// The constants a version XORs fields with and seeds keystreams from.
struct Keys {
    tag: u32,
    kind_len: u32,
    kind_seed: u32,
    path_len: u32,
    /// The path is skipped, not decrypted: only the tests write it.
    #[cfg_attr(not(test), allow(dead_code))]
    path_seed: u32,
    size: u32,
    data: u32,
    /// Bytes per character of the strings.
    char_width: u64,
}

impl Version {
    fn keys(self) -> Keys {
        match self {
            Version::Ea05 => Keys {
                tag: 0x16FA,
                kind_len: 0x29BC,
                kind_seed: 0xA25E,
                path_len: 0x29AC,
                path_seed: 0xF25E,
                size: 0x45AA,
                data: 0x22AF,
                char_width: 1,
            },
            Version::Ea06 => Keys {
                tag: 0x18EE,
                kind_len: 0xADBC,
                kind_seed: 0xB33F,
                path_len: 0xF820,
                path_seed: 0xF479,
                size: 0x87BC,
                data: 0x2477,
                char_width: 2,
            },
        }
    }

    fn keystream(self, seed: u32) -> Keystream {
        match self {
            Version::Ea05 => Keystream::Mt(Box::new(Mt::new(seed))),
            Version::Ea06 => Keystream::Lame(Lame::new(seed)),
        }
    }
}

/// Where a script's records are, and how to decrypt them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    pub version: Version,
    /// Offset of the first record.
    pub records: u64,
    /// Seed of every file data's keystream.
    data_seed: u32,
}

/// The first AutoIt script in `file` (`size` bytes), searched for
/// everywhere (the overlay's place would need the section table, a
/// resource's the resource tree; the 24-byte start is unambiguous).
pub fn find(file: &mut (impl Read + Seek), size: u64) -> io::Result<Option<Script>> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0u8; CHUNK + START];
    let mut have = 0;
    // File offset of buf[0].
    let mut base = 0u64;
    file.seek(SeekFrom::Start(0))?;
    loop {
        let n = super::unpack::read_full(file, &mut buf[have..])?;
        if n == 0 {
            return Ok(None);
        }
        have += n;
        let mut from = 0;
        while let Some(i) = buf[from..have].iter().position(|&b| b == MAGIC[0]) {
            let at = from + i;
            let Some(start) = buf.get(at..at + START).filter(|_| at + START <= have) else {
                break;
            };
            let version = match start[START - 1] {
                b'5' => Some(Version::Ea05),
                b'6' => Some(Version::Ea06),
                _ => None,
            };
            if start[..16] == MAGIC
                && &start[16..START - 1] == MARKER
                && let Some(version) = version
            {
                return script(file, base + at as u64, version, size);
            }
            from = at + 1;
        }
        // Keep what may be the start of a marker cut by the chunk's end.
        let keep = have.min(START - 1);
        buf.copy_within(have - keep..have, 0);
        base += (have - keep) as u64;
        have = keep;
    }
}

/// The script whose marker is at `at`.
fn script(
    file: &mut (impl Read + Seek),
    at: u64,
    version: Version,
    size: u64,
) -> io::Result<Option<Script>> {
    let mut sub = [0u8; SUBHEADER];
    file.seek(SeekFrom::Start(at + START as u64))?;
    if super::unpack::read_full(file, &mut sub)? < SUBHEADER {
        return Ok(None);
    }
    let records = at + (START + SUBHEADER) as u64;
    let data_seed = match version {
        Version::Ea05 => {
            let sum: u32 = sub.iter().map(|&b| b as u32).sum();
            sum.wrapping_add(version.keys().data)
        }
        Version::Ea06 => version.keys().data,
    };
    Ok((records < size).then_some(Script {
        version,
        records,
        data_seed,
    }))
}

/// One record of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// A file (the script or an installed file), not AutoIt's marker
    /// record.
    pub file: bool,
    /// Its data is compressed (see [`Expand`]).
    pub compressed: bool,
    /// Offset and length of the encrypted data.
    pub data: u64,
    pub len: u32,
}

impl Record {
    /// Where the next record starts.
    pub fn next(&self) -> u64 {
        self.data + self.len as u64
    }
}

/// The record at `at`, or None at the end of the records (or damage):
/// anything but an encrypted `FILE` there ends them.
pub fn record(
    file: &mut (impl Read + Seek),
    script: &Script,
    at: u64,
) -> io::Result<Option<Record>> {
    let v = script.version;
    let k = v.keys();
    file.seek(SeekFrom::Start(at))?;
    let Some(tag) = read_word(file)? else {
        return Ok(None);
    };
    if decrypt_word(tag, v.keystream(k.tag)) != *b"FILE" {
        return Ok(None);
    }
    // The kind: only AutoIt's marker record's is read, to skip it.
    let Some(chars) = read_word(file)?.map(|w| w ^ k.kind_len) else {
        return Ok(None);
    };
    let kind_bytes = chars as u64 * k.char_width;
    let mut is_file = true;
    if chars as usize == NO_CMDEXECUTE.len() {
        let mut kind = vec![0u8; kind_bytes as usize];
        if super::unpack::read_full(file, &mut kind)? < kind.len() {
            return Ok(None);
        }
        let mut keys = v.keystream(k.kind_seed.wrapping_add(chars));
        for b in &mut kind {
            *b ^= keys.next_byte();
        }
        is_file = !match v {
            Version::Ea05 => kind == NO_CMDEXECUTE.as_bytes(),
            Version::Ea06 => kind
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .eq(NO_CMDEXECUTE.encode_utf16()),
        };
    } else {
        file.seek(SeekFrom::Current(kind_bytes as i64))?;
    }
    // The path: not needed to scan the file.
    let Some(chars) = read_word(file)?.map(|w| w ^ k.path_len) else {
        return Ok(None);
    };
    file.seek(SeekFrom::Current((chars as u64 * k.char_width) as i64))?;
    let mut flag = [0u8; 1];
    if super::unpack::read_full(file, &mut flag)? < 1 {
        return Ok(None);
    }
    let Some(len) = read_word(file)?.map(|w| w ^ k.size) else {
        return Ok(None);
    };
    // After the uncompressed length, the Adler-32 and two FILETIMEs.
    let data = file.stream_position()? + 4 + 4 + 16;
    Ok(Some(Record {
        file: is_file,
        compressed: flag[0] == 1,
        data,
        len,
    }))
}

fn read_word(file: &mut impl Read) -> io::Result<Option<u32>> {
    let mut word = [0u8; 4];
    let n = super::unpack::read_full(file, &mut word)?;
    Ok((n == 4).then(|| u32::from_le_bytes(word)))
}

fn decrypt_word(word: u32, mut keys: Keystream) -> [u8; 4] {
    word.to_le_bytes().map(|b| b ^ keys.next_byte())
}

/// A record's data, decrypted as it is read.
pub struct Decrypt<R> {
    inner: R,
    keys: Keystream,
}

impl<R: Read> Decrypt<R> {
    pub fn new(inner: R, script: &Script) -> Decrypt<R> {
        Decrypt {
            inner,
            keys: script.version.keystream(script.data_seed),
        }
    }
}

impl<R: Read> Read for Decrypt<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for b in &mut buf[..n] {
            *b ^= self.keys.next_byte();
        }
        Ok(n)
    }
}

/// The keystream of one field.
enum Keystream {
    Mt(Box<Mt>),
    Lame(Lame),
}

impl Keystream {
    fn next_byte(&mut self) -> u8 {
        match self {
            // EA05 keys with bits 1 to 8 of each output.
            Keystream::Mt(mt) => (mt.next_u32() >> 1) as u8,
            Keystream::Lame(l) => l.next_byte(),
        }
    }
}

/// MT19937 (Matsumoto and Nishimura, 1998), seeded as its reference
/// `init_genrand`.
struct Mt {
    state: [u32; 624],
    at: usize,
}

impl Mt {
    fn new(seed: u32) -> Mt {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt { state, at: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.at == 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7FFF_FFFF);
                let twist = if y & 1 == 1 { 0x9908_B0DF } else { 0 };
                self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ twist;
            }
            self.at = 0;
        }
        let mut y = self.state[self.at];
        self.at += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^ (y >> 18)
    }
}

/// EA06's generator: 17 words, each step replaces one with the sum of it
/// and another rotated (by 9 and 13), both indices counting down. AutoIt
/// turns a step into a double in [0, 1) from the word's bits and takes
/// `floor(x * 256)` of every second step: exactly the word's top byte.
struct Lame {
    words: [u32; 17],
    i: usize,
    j: usize,
}

impl Lame {
    fn new(seed: u32) -> Lame {
        let mut words = [0u32; 17];
        let mut s = seed;
        for w in &mut words {
            s = 1u32.wrapping_sub(s.wrapping_mul(0x53A9_B4FB));
            *w = s;
        }
        let mut l = Lame { words, i: 0, j: 10 };
        for _ in 0..9 {
            l.step();
        }
        l
    }

    fn step(&mut self) -> u32 {
        let w = self.words[self.i]
            .rotate_left(9)
            .wrapping_add(self.words[self.j].rotate_left(13));
        self.words[self.i] = w;
        self.i = if self.i == 0 { 16 } else { self.i - 1 };
        self.j = if self.j == 0 { 16 } else { self.j - 1 };
        w
    }

    fn next_byte(&mut self) -> u8 {
        self.step();
        (self.step() >> 24) as u8
    }
}

/// AutoIt's compression, decoded as it is read: `EA05`/`EA06`, the
/// uncompressed size (big-endian u32), then a bit stream read from each
/// byte's top bit down. A flag bit (1 for a literal in EA06, 0 in EA05),
/// then either 8 bits of a literal or a 15-bit distance back and a length
/// of 3 plus a code of 2 bits, then 3, 5 and 8 more when all ones (adding
/// 3, 7 and 31), then bytes of 8 while they are 255. The output ends at
/// the declared size; damage (the input ending, a distance of 0 or before
/// the start) ends it where it is. Memory: the 32 KiB window.
pub struct Expand<R: Read> {
    input: BufReader<R>,
    /// Bits not yet used, in the low `bits` bits of `acc`.
    acc: u32,
    bits: u32,
    literal: u32,
    window: Vec<u8>,
    out: u64,
    size: u64,
    /// A match being copied: its distance and the bytes left.
    copy: (usize, u64),
    ended: bool,
}

impl<R: Read> Expand<R> {
    /// Reads the header of compressed data: None if it is not one.
    pub fn new(mut input: R) -> io::Result<Option<Expand<R>>> {
        let mut head = [0u8; 8];
        if super::unpack::read_full(&mut input, &mut head)? < 8 {
            return Ok(None);
        }
        let literal = match &head[..4] {
            b"EA05" => 0,
            b"EA06" => 1,
            _ => return Ok(None),
        };
        Ok(Some(Expand {
            input: BufReader::with_capacity(4096, input),
            acc: 0,
            bits: 0,
            literal,
            window: vec![0; WINDOW],
            out: 0,
            size: u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as u64,
            copy: (0, 0),
            ended: false,
        }))
    }

    /// The uncompressed size the header declares.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn get(&mut self, n: u32) -> Option<u32> {
        while self.bits < n {
            let mut b = [0u8; 1];
            match self.input.read(&mut b) {
                Ok(1) => {}
                _ => return None,
            }
            self.acc = (self.acc << 8) | b[0] as u32;
            self.bits += 8;
        }
        self.bits -= n;
        Some((self.acc >> self.bits) & ((1 << n) - 1))
    }

    /// The length after a distance.
    fn length(&mut self) -> Option<u64> {
        let mut add = 0u64;
        for (width, all_ones, next) in [(2, 3, 3), (3, 7, 10), (5, 31, 41), (8, 255, 296)] {
            let code = self.get(width)?;
            if code != all_ones {
                return Some(3 + add + code as u64);
            }
            add = next;
        }
        loop {
            let code = self.get(8)?;
            if code != 255 {
                return Some(3 + add + code as u64);
            }
            add += 255;
        }
    }

    /// The next token: a literal, or a match set up in `copy`.
    fn token(&mut self) -> Option<Option<u8>> {
        if self.get(1)? == self.literal {
            return Some(Some(self.get(8)? as u8));
        }
        let distance = self.get(15)? as usize;
        let length = self.length()?;
        if distance == 0 || distance as u64 > self.out {
            return None;
        }
        self.copy = (distance, length);
        Some(None)
    }
}

impl<R: Read> Read for Expand<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.out < self.size && !self.ended {
            let b = if self.copy.1 > 0 {
                self.copy.1 -= 1;
                // At most `out` back: checked when the match was read.
                self.window[(self.out as usize - self.copy.0) % WINDOW]
            } else {
                match self.token() {
                    Some(Some(b)) => b,
                    Some(None) => continue,
                    None => {
                        self.ended = true;
                        break;
                    }
                }
            };
            self.window[self.out as usize % WINDOW] = b;
            buf[n] = b;
            n += 1;
            self.out += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bits written from each byte's top bit down, as [`Expand`] reads.
    struct BitWriter {
        out: Vec<u8>,
        used: u32,
    }

    impl BitWriter {
        fn put(&mut self, value: u32, n: u32) {
            for i in (0..n).rev() {
                if self.used.is_multiple_of(8) {
                    self.out.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                *self.out.last_mut().unwrap() |= bit << (7 - self.used % 8);
                self.used += 1;
            }
        }
    }

    /// Distances the sample compressor tries: near ones, and far ones up
    /// to the window's end.
    const DISTANCES: [usize; 20] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 32, 64, 100, 1000, 4096, 20_000, 30_000, 32_767,
    ];

    /// AutoIt compression of `data` (greedy, over [`DISTANCES`]), to make
    /// samples.
    pub fn compress(version: Version, data: &[u8]) -> Vec<u8> {
        let literal = (version == Version::Ea06) as u32;
        let mut w = BitWriter {
            out: Vec::new(),
            used: 0,
        };
        let mut at = 0;
        while at < data.len() {
            let best = DISTANCES
                .iter()
                .filter(|&&d| d <= at)
                .map(|&d| {
                    let len = (0..data.len() - at)
                        .take_while(|&k| data[at + k] == data[at + k - d])
                        .count();
                    (len, d)
                })
                .max();
            match best {
                Some((len, d)) if len >= 3 => {
                    w.put(1 - literal, 1);
                    w.put(d as u32, 15);
                    length(&mut w, (len - 3) as u32);
                    at += len;
                }
                _ => {
                    w.put(literal, 1);
                    w.put(data[at] as u32, 8);
                    at += 1;
                }
            }
        }
        let mut out = match version {
            Version::Ea05 => b"EA05".to_vec(),
            Version::Ea06 => b"EA06".to_vec(),
        };
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&w.out);
        out
    }

    /// A match length less 3, as [`Expand::length`] reads it.
    fn length(w: &mut BitWriter, mut l: u32) {
        for (width, all_ones) in [(2, 3), (3, 7), (5, 31), (8, 255)] {
            if l < all_ones {
                return w.put(l, width);
            }
            w.put(all_ones, width);
            l -= all_ones;
        }
        while l >= 255 {
            w.put(255, 8);
            l -= 255;
        }
        w.put(l, 8);
    }

    fn encrypt(version: Version, seed: u32, data: &[u8]) -> Vec<u8> {
        let mut keys = version.keystream(seed);
        data.iter().map(|b| b ^ keys.next_byte()).collect()
    }

    fn string(version: Version, len_key: u32, seed: u32, s: &str) -> Vec<u8> {
        let chars = s.len() as u32;
        let bytes: Vec<u8> = match version {
            Version::Ea05 => s.bytes().collect(),
            Version::Ea06 => s.bytes().flat_map(|b| [b, 0]).collect(),
        };
        let mut out = (chars ^ len_key).to_le_bytes().to_vec();
        out.extend(encrypt(version, seed.wrapping_add(chars), &bytes));
        out
    }

    /// A record: `data` as it is stored (compressed or not), declared
    /// length `len`.
    pub fn encode_record(
        version: Version,
        kind: &str,
        compressed: bool,
        data: &[u8],
        len: u32,
    ) -> Vec<u8> {
        let k = version.keys();
        // EA05's seed adds the sub-header's byte sum: [`encode_script`] writes
        // zeros.
        let data_seed = k.data;
        let mut r = encrypt(version, k.tag, b"FILE");
        r.extend(string(version, k.kind_len, k.kind_seed, kind));
        r.extend(string(version, k.path_len, k.path_seed, "C:\\sample"));
        r.push(compressed as u8);
        r.extend_from_slice(&(len ^ k.size).to_le_bytes());
        r.extend_from_slice(&(len ^ k.size).to_le_bytes());
        // Adler-32 (not checked) and two FILETIMEs.
        r.extend_from_slice(&[0; 4 + 16]);
        r.extend(encrypt(version, data_seed, data));
        r
    }

    /// The data an AutoIt executable carries: the start, a zero
    /// sub-header, `records`, the closing marker.
    pub fn encode_script(version: Version, records: &[Vec<u8>]) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(MARKER);
        s.push(if version == Version::Ea05 { b'5' } else { b'6' });
        s.extend_from_slice(&[0; SUBHEADER]);
        for r in records {
            s.extend_from_slice(r);
        }
        s.extend_from_slice(MARKER);
        s.push(if version == Version::Ea05 { b'5' } else { b'6' });
        s
    }

    /// A file's record, compressed when asked.
    pub fn encode_file(version: Version, kind: &str, data: &[u8], compressed: bool) -> Vec<u8> {
        let stored = if compressed {
            compress(version, data)
        } else {
            data.to_vec()
        };
        encode_record(version, kind, compressed, &stored, stored.len() as u32)
    }

    /// Every file's decoded bytes, as the walker reads them.
    fn files(data: &[u8]) -> Vec<Vec<u8>> {
        let mut c = io::Cursor::new(data);
        let Some(script) = find(&mut c, data.len() as u64).unwrap() else {
            return Vec::new();
        };
        let mut at = script.records;
        let mut out = Vec::new();
        while let Some(r) = record(&mut c, &script, at).unwrap() {
            at = r.next();
            if !r.file {
                continue;
            }
            c.seek(SeekFrom::Start(r.data)).unwrap();
            let d = Decrypt::new((&mut c).take(r.len as u64), &script);
            let mut file = Vec::new();
            if r.compressed {
                if let Some(mut e) = Expand::new(d).unwrap() {
                    (&mut e).take(1 << 20).read_to_end(&mut file).unwrap();
                }
            } else {
                d.take(1 << 20).read_to_end(&mut file).unwrap();
            }
            out.push(file);
            if out.len() > 100 {
                break;
            }
        }
        out
    }

    #[test]
    fn keystreams_decrypt_the_test_files_record_tags() {
        // The first record's tag in clamav-testfiles' clam.ea05.exe and
        // clam.ea06.exe (bytes 40 to 44 after the magic).
        let ea05 = u32::from_le_bytes([0xff, 0x6d, 0xb0, 0xce]);
        let ea06 = u32::from_le_bytes([0x6b, 0x43, 0xca, 0x52]);
        assert_eq!(
            decrypt_word(ea05, Version::Ea05.keystream(0x16FA)),
            *b"FILE"
        );
        assert_eq!(
            decrypt_word(ea06, Version::Ea06.keystream(0x18EE)),
            *b"FILE"
        );
    }

    #[test]
    fn mt19937_reference_output() {
        // The reference implementation's first output for seed 5489.
        assert_eq!(Mt::new(5489).next_u32(), 3_499_211_612);
    }

    #[test]
    fn files_round_trip() {
        // Pseudo-random bytes, with a 2,000-byte run repeated 30,000 back
        // (a far match, lengths past 296) and output past the window.
        let mut big: Vec<u8> = (0..40_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        big.copy_within(1000..3000, 31_000);
        for version in [Version::Ea05, Version::Ea06] {
            let runs = b"abcabcabc".repeat(200);
            let data = encode_script(
                version,
                &[
                    encode_file(version, ">>>AUTOIT SCRIPT<<<", b"MsgBox(0, 'x', 'y')", true),
                    encode_record(version, NO_CMDEXECUTE, false, &[1, 2, 3], 3),
                    encode_file(version, "C:\\runs.bin", &runs, true),
                    encode_file(version, "C:\\plain.bin", b"stored as it is", false),
                    encode_file(version, "C:\\big.bin", &big, true),
                ],
            );
            let got = files(&data);
            assert_eq!(got.len(), 4, "{version:?}");
            assert_eq!(got[0], b"MsgBox(0, 'x', 'y')");
            assert_eq!(got[1], runs);
            assert_eq!(got[2], b"stored as it is");
            assert!(got[3] == big, "{version:?}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_after_a_marker_never_panic(
            rest in proptest::collection::vec(any::<u8>(), 0..2000),
            ea06: bool,
        ) {
            let version = if ea06 { Version::Ea06 } else { Version::Ea05 };
            let mut data = encode_script(version, &[]);
            data.truncate(START + SUBHEADER);
            data.extend_from_slice(&rest);
            files(&data);
            // And records whose data is random (a valid header first).
            let mut junk = b"EA06".to_vec();
            junk.extend_from_slice(&0x10_000u32.to_be_bytes());
            junk.extend_from_slice(&rest);
            let data = encode_script(version, &[encode_record(version, "k", true, &junk, junk.len() as u32)]);
            files(&data);
        }
    }
}
