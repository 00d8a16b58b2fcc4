//! Containers the walker looks inside, recognised by their first bytes,
//! and the small readers written here for the simple ones: tar (ustar and
//! old-style), SZDD (MS-DOS `COMPRESS.EXE`), BinHex 4.0 and the hex
//! `\objdata` of RTF embedded objects. Zip, gzip, bzip2 and 7z come from
//! crates; OLE2, cabinets, CHM, ARJ, SIS, UPX and NSIS have modules of their
//! own. Every reader streams (no member is held whole) and treats
//! damage as the end of the data, never a panic.

use std::io::Read;

/// A container pimail unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Zip,
    Gzip,
    Bzip2,
    Tar,
    Szdd,
    BinHex,
    Rtf,
    /// A Microsoft Cabinet (`src/scan/cab.rs`).
    Cab,
    /// 7z (`sevenz.rs`).
    SevenZ,
    /// An OLE2 compound file: Office 97-2003 documents, MSI (`ole2.rs`).
    Ole2,
    /// Compiled HTML Help.
    Chm,
    Arj,
    /// A Symbian installation file.
    Sis,
    /// A mail message (an attached .eml or mbox): walked part by part.
    Message,
    /// A Windows executable: UPX-packed, or an NSIS or InstallShield
    /// installer (`walk.rs`, `Walker::pe`).
    Pe,
}

const BINHEX_START: &[u8] = b"(This file must be converted with BinHex";

/// What `head` (an object's first bytes, up to 1 KiB) starts.
pub fn container(head: &[u8]) -> Option<Container> {
    let tar_magic = head.get(257..262) == Some(b"ustar");
    Some(if head.starts_with(b"PK\x03\x04") {
        Container::Zip
    } else if head.starts_with(&[0x1f, 0x8b, 8]) {
        Container::Gzip
    } else if head.starts_with(b"BZh") && head.get(3).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        Container::Bzip2
    } else if tar_magic {
        Container::Tar
    } else if head.starts_with(b"SZDD\x88\xf0\x27\x33") {
        Container::Szdd
    } else if find(head, BINHEX_START).is_some() {
        Container::BinHex
    } else if head.starts_with(super::cab::MAGIC) {
        Container::Cab
    } else if head.starts_with(b"{\\rt") {
        Container::Rtf
    } else if head.starts_with(super::sevenz::SIGNATURE) {
        Container::SevenZ
    } else if head.starts_with(super::ole2::SIGNATURE) {
        Container::Ole2
    } else if head.starts_with(b"ITSF") && matches!(head.get(4..8), Some([2 | 3, 0, 0, 0])) {
        Container::Chm
    } else if head.starts_with(&[0x60, 0xea]) && head.get(10) == Some(&2) {
        // An ARJ main header (its file type 2).
        Container::Arj
    } else if super::sis::is_sis(head) {
        Container::Sis
    } else if looks_like_message(head) {
        Container::Message
    } else if is_pe(head) {
        Container::Pe
    } else {
        return None;
    })
}

/// An MS-DOS header whose `e_lfanew` points at a `PE\0\0` signature in
/// `head` (linkers put it within the first few hundred bytes).
fn is_pe(head: &[u8]) -> bool {
    let Some(at) = head.get(0x3c..0x40) else {
        return false;
    };
    let at = u32::from_le_bytes([at[0], at[1], at[2], at[3]]) as usize;
    head.starts_with(b"MZ") && head.get(at..at.saturating_add(4)) == Some(b"PE\0\0")
}

/// Header names a raw message may start with.
const MAIL_STARTS: &[&[u8]] = &[
    b"from ",
    b"received:",
    b"return-path:",
    b"delivered-to:",
    b"from:",
    b"to:",
    b"subject:",
    b"date:",
    b"message-id:",
    b"mime-version:",
    b"content-type:",
];

/// Whether a file starts like a raw message or an mbox.
pub fn looks_like_message(head: &[u8]) -> bool {
    MAIL_STARTS
        .iter()
        .any(|s| head.len() >= s.len() && head[..s.len()].eq_ignore_ascii_case(s))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One tar member as the reader meets it.
pub struct TarMember<'a> {
    pub name: String,
    /// Regular file ('0' or NUL type flag).
    pub regular: bool,
    pub data: &'a mut dyn Read,
}

/// Calls `member` for each member of a tar archive (POSIX ustar or old
/// style), in order, until it returns false; it may read as much of the
/// data as it wants. Returns `Err` with a reason for a damaged header;
/// reading stops there.
pub fn tar<R: Read>(
    r: &mut R,
    mut member: impl FnMut(TarMember<'_>) -> std::io::Result<bool>,
) -> std::io::Result<Result<(), String>> {
    loop {
        let mut h = [0u8; 512];
        if read_full(r, &mut h)? < 512 || h.iter().all(|&b| b == 0) {
            return Ok(Ok(()));
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let Ok(size) = u64::from_str_radix(size_field.trim_matches(['\0', ' ']), 8) else {
            return Ok(Err(format!("damaged tar header for {name:?}")));
        };
        let mut data = (&mut *r).take(size);
        let go_on = member(TarMember {
            name,
            regular: h[156] == b'0' || h[156] == 0,
            data: &mut data,
        })?;
        if !go_on {
            return Ok(Ok(()));
        }
        // What the member left unread, and the padding to 512 bytes.
        std::io::copy(&mut data, &mut std::io::sink())?;
        let padding = size.div_ceil(512) * 512 - size;
        std::io::copy(&mut (&mut *r).take(padding), &mut std::io::sink())?;
    }
}

/// SZDD ("MS-DOS COMPRESS"): a 14-byte header, then LZSS over a 4 KiB
/// window that starts filled with spaces.
pub struct Szdd<R: Read> {
    input: R,
    window: Box<[u8; 4096]>,
    pos: usize,
    /// Control bits left (from the low bit) and how many.
    control: u8,
    bits: u8,
    /// A back-reference being copied: from where, how many left.
    copy: Option<(usize, usize)>,
    done: bool,
}

impl<R: Read> Szdd<R> {
    pub fn new(mut input: R) -> std::io::Result<Szdd<R>> {
        let mut header = [0u8; 14];
        let n = read_full(&mut input, &mut header)?;
        Ok(Szdd {
            input,
            window: Box::new([b' '; 4096]),
            pos: 4096 - 16,
            control: 0,
            bits: 0,
            copy: None,
            done: n < 14,
        })
    }

    fn byte(&mut self) -> std::io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        Ok((read_full(&mut self.input, &mut b)? == 1).then_some(b[0]))
    }

    fn emit(&mut self, b: u8, out: &mut [u8], n: &mut usize) {
        self.window[self.pos] = b;
        self.pos = (self.pos + 1) & 4095;
        out[*n] = b;
        *n += 1;
    }
}

impl<R: Read> Read for Szdd<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if let Some((from, left)) = self.copy {
                let b = self.window[from];
                self.emit(b, out, &mut n);
                self.copy = (left > 1).then_some(((from + 1) & 4095, left - 1));
                continue;
            }
            if self.done {
                break;
            }
            if self.bits == 0 {
                match self.byte()? {
                    Some(c) => (self.control, self.bits) = (c, 8),
                    None => {
                        self.done = true;
                        continue;
                    }
                }
            }
            let literal = self.control & 1 == 1;
            self.control >>= 1;
            self.bits -= 1;
            if literal {
                match self.byte()? {
                    Some(b) => self.emit(b, out, &mut n),
                    None => self.done = true,
                }
            } else {
                match (self.byte()?, self.byte()?) {
                    (Some(a), Some(b)) => {
                        let from = a as usize | ((b as usize & 0xf0) << 4);
                        self.copy = Some((from, (b as usize & 0x0f) + 3));
                    }
                    _ => self.done = true,
                }
            }
        }
        Ok(n)
    }
}

/// BinHex 4.0: after the "(This file must be converted..." line, 6-bit
/// characters between colons, then run-length coding (0x90). Yields the
/// decoded stream: header, data fork, resource fork (see
/// [`binhex_data_fork`]).
pub struct BinHex<R: Read> {
    input: R,
    /// Bits decoded and not yet used, and how many.
    acc: u32,
    nbits: u8,
    /// Inside the colons.
    started: bool,
    done: bool,
    last: u8,
    repeat: usize,
    /// Saw 0x90: the next byte is a count.
    marker: bool,
}

const BINHEX_ALPHABET: &[u8; 64] =
    b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";

impl<R: Read> BinHex<R> {
    pub fn new(input: R) -> BinHex<R> {
        BinHex {
            input,
            acc: 0,
            nbits: 0,
            started: false,
            done: false,
            last: 0,
            repeat: 0,
            marker: false,
        }
    }

    /// The next byte before run-length decoding.
    fn packed(&mut self) -> std::io::Result<Option<u8>> {
        while self.nbits < 8 {
            if self.done {
                return Ok(None);
            }
            let mut c = [0u8; 1];
            if read_full(&mut self.input, &mut c)? == 0 {
                self.done = true;
                return Ok(None);
            }
            let c = c[0];
            if !self.started {
                // The data starts at a colon at the start of a line.
                self.started = c == b':';
                continue;
            }
            if c == b':' {
                self.done = true;
                continue;
            }
            let Some(v) = BINHEX_ALPHABET.iter().position(|&a| a == c) else {
                continue;
            };
            self.acc = (self.acc << 6) | v as u32;
            self.nbits += 6;
        }
        self.nbits -= 8;
        Ok(Some((self.acc >> self.nbits) as u8))
    }
}

impl<R: Read> Read for BinHex<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.repeat > 0 {
                out[n] = self.last;
                n += 1;
                self.repeat -= 1;
                continue;
            }
            let Some(b) = self.packed()? else { break };
            if self.marker {
                self.marker = false;
                if b == 0 {
                    self.last = 0x90;
                    out[n] = 0x90;
                    n += 1;
                } else {
                    self.repeat = b as usize - 1;
                }
            } else if b == 0x90 {
                self.marker = true;
            } else {
                self.last = b;
                out[n] = b;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Reads a decoded BinHex stream's header and returns the data fork's
/// length (the reader is then at the data fork), or None if damaged.
pub fn binhex_data_fork(r: &mut impl Read) -> std::io::Result<Option<u64>> {
    let mut len = [0u8; 1];
    if read_full(r, &mut len)? < 1 {
        return Ok(None);
    }
    // Name, version, type, creator, flags, data length, resource length,
    // header CRC.
    let mut rest = vec![0u8; len[0] as usize + 1 + 4 + 4 + 2 + 4 + 4 + 2];
    if read_full(r, &mut rest)? < rest.len() {
        return Ok(None);
    }
    let at = len[0] as usize + 1 + 10;
    Ok(rest
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64))
}

/// The hex digits of every `\objdata` group of an RTF document, decoded:
/// embedded OLE objects (a packaged file is in there as it is).
pub struct RtfObjects<R: Read> {
    input: R,
    /// Bytes of the keyword being matched.
    matched: usize,
    /// Inside an objdata group: the brace depth at which it ends.
    depth: i64,
    inside: Option<i64>,
    high: Option<u8>,
    done: bool,
}

const OBJDATA: &[u8] = b"\\objdata";

impl<R: Read> RtfObjects<R> {
    pub fn new(input: R) -> RtfObjects<R> {
        RtfObjects {
            input,
            matched: 0,
            depth: 0,
            inside: None,
            high: None,
            done: false,
        }
    }
}

impl<R: Read> Read for RtfObjects<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        let mut buf = [0u8; 4096];
        while n < out.len() && !self.done {
            let want = (out.len() - n).min(buf.len());
            let got = self.input.read(&mut buf[..want])?;
            if got == 0 {
                self.done = true;
                break;
            }
            for &c in &buf[..got] {
                match c {
                    b'{' => self.depth += 1,
                    b'}' => {
                        if self.inside == Some(self.depth) {
                            self.inside = None;
                            self.high = None;
                        }
                        self.depth -= 1;
                    }
                    _ => {}
                }
                if let Some(_d) = self.inside {
                    let Some(v) = (c as char).to_digit(16) else {
                        continue;
                    };
                    match self.high.take() {
                        Some(h) => {
                            out[n] = (h << 4) | v as u8;
                            n += 1;
                        }
                        None => self.high = Some(v as u8),
                    }
                    continue;
                }
                if c == OBJDATA[self.matched] {
                    self.matched += 1;
                    if self.matched == OBJDATA.len() {
                        self.matched = 0;
                        self.inside = Some(self.depth);
                    }
                } else {
                    self.matched = usize::from(c == OBJDATA[0]);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(mut r: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn szdd_back_references() {
        // Three literals, then "copy 6 from where A went" (4096 - 16).
        let data = b"SZDD\x88\xf0\x27\x33A_\x09\0\0\0\x07ABC\xf0\xf3";
        assert_eq!(all(Szdd::new(&data[..]).unwrap()), b"ABCABCABC");
    }

    #[test]
    fn binhex_run_length() {
        // 'A', then 0x90 0x03: two more of it; 0x90 0x00 is 0x90 itself.
        let packed = [0x41u8, 0x90, 0x03, 0x90, 0x00];
        let mut text = b"(This file must be converted with BinHex 4.0)\n:".to_vec();
        let v = |i: usize| packed.get(i).copied().unwrap_or(0) as u32;
        for k in (0..packed.len()).step_by(3) {
            let word = (v(k) << 16) | (v(k + 1) << 8) | v(k + 2);
            for s in 0..4 {
                text.push(BINHEX_ALPHABET[((word >> (18 - 6 * s)) & 63) as usize]);
            }
        }
        text.push(b':');
        // The last 0 is the padding of the final 6-bit group.
        assert_eq!(all(BinHex::new(&text[..])), [0x41, 0x41, 0x41, 0x90, 0]);
    }

    #[test]
    fn containers_by_their_first_bytes() {
        assert_eq!(container(b"PK\x03\x04...."), Some(Container::Zip));
        assert_eq!(container(b"\x1f\x8b\x08\0"), Some(Container::Gzip));
        assert_eq!(container(b"BZh91AY&SY"), Some(Container::Bzip2));
        assert_eq!(container(b"BZhx"), None);
        assert_eq!(container(b"{\\rtf1\\ansi"), Some(Container::Rtf));
        assert_eq!(container(b"Subject: x\r\n"), Some(Container::Message));
        assert_eq!(
            container(b"7z\xbc\xaf\x27\x1c\0\x04"),
            Some(Container::SevenZ)
        );
        assert_eq!(
            container(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\0"),
            Some(Container::Ole2)
        );
        let mut t = vec![0u8; 512];
        t[257..262].copy_from_slice(b"ustar");
        assert_eq!(container(&t), Some(Container::Tar));
        assert_eq!(container(b"MZ\x90\0"), None);
        let mut pe = vec![0u8; 256];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert_eq!(container(&pe), Some(Container::Pe));
        pe[0x3c] = 0xff;
        assert_eq!(container(&pe), None);
    }

    proptest! {
        #[test]
        fn readers_never_panic_on_damage(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut szdd = b"SZDD\x88\xf0\x27\x33A_\0\0\0\0".to_vec();
            szdd.extend_from_slice(&data);
            all(Szdd::new(&szdd[..]).unwrap());
            let mut bh = BINHEX_START.to_vec();
            bh.extend_from_slice(b" 4.0)\n:");
            bh.extend_from_slice(&data);
            let mut r = BinHex::new(&bh[..]);
            let _ = binhex_data_fork(&mut r).unwrap();
            all(r);
            let mut rtf = b"{\\rtf1{\\*\\objdata ".to_vec();
            rtf.extend_from_slice(&data);
            all(RtfObjects::new(&rtf[..]));
            let mut t = data.clone();
            t.resize(t.len().max(600), 0);
            t[257..262].copy_from_slice(b"ustar");
            let _ = tar(&mut &t[..], |m| {
                std::io::copy(m.data, &mut std::io::sink())?;
                Ok(true)
            })
            .unwrap();
        }
    }
}
