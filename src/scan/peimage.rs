//! A 32-bit PE file's headers and its image as the Windows loader maps
//! it, for the unpackers of packers whose stubs address everything by RVA
//! (ASPack, Petite, WWPack32, yC, PESpin).
//!
//! Only what they need is read (PE/COFF: the file header, the optional
//! header's entry point, image base and size, the section table).

use std::io::{Read, Seek, SeekFrom};

/// One section table entry (PE/COFF section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub name: [u8; 8],
    pub rva: u32,
    pub vsize: u32,
    /// File offset of the raw data.
    pub raw: u32,
    pub raw_size: u32,
}

impl Section {
    /// Whether `rva` lies in the section as mapped (its virtual size, or
    /// its raw size if the linker left the virtual size 0).
    pub fn holds(&self, rva: u32) -> bool {
        let len = if self.vsize == 0 {
            self.raw_size
        } else {
            self.vsize
        };
        rva >= self.rva && rva - self.rva < len
    }
}

/// The headers' fields the unpackers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Offset of `PE\0\0`.
    pub nt: usize,
    /// Offset of the first section header.
    pub table: usize,
    pub entry: u32,
    pub image_base: u32,
    pub image_size: u32,
    pub sections: Vec<Section>,
}

/// The loader's limit on sections (PE/COFF: at most 96).
const MAX_SECTIONS: usize = 96;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The headers in `head` (the file's first bytes) of a PE32 image; None
/// for anything else (PE32+, a damaged or truncated table).
pub fn headers(head: &[u8]) -> Option<Headers> {
    if !head.starts_with(b"MZ") {
        return None;
    }
    let pe = u32_at(head, 0x3c)? as usize;
    if head.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let count = u16_at(head, pe + 6)? as usize;
    let optional = pe + 24;
    // PE32 (0x10b): the packers handled here are 32-bit only.
    if u16_at(head, optional)? != 0x10b || count == 0 || count > MAX_SECTIONS {
        return None;
    }
    let table = optional + u16_at(head, pe + 20)? as usize;
    let sections = (0..count)
        .map(|s| {
            let at = table + 40 * s;
            let mut name = [0u8; 8];
            name.copy_from_slice(head.get(at..at.checked_add(8)?)?);
            Some(Section {
                name,
                vsize: u32_at(head, at + 8)?,
                rva: u32_at(head, at + 12)?,
                raw_size: u32_at(head, at + 16)?,
                raw: u32_at(head, at + 20)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Headers {
        nt: pe,
        table,
        entry: u32_at(head, optional + 16)?,
        image_base: u32_at(head, optional + 28)?,
        image_size: u32_at(head, optional + 56)?,
        sections,
    })
}

impl Headers {
    /// The section holding `rva` in memory.
    pub fn section_of(&self, rva: u32) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| rva >= s.rva && rva - s.rva < s.vsize.max(s.raw_size))
    }

    /// The file offset of `rva`, if a section's raw data holds it.
    pub fn file_offset(&self, rva: u32) -> Option<u64> {
        let s = self.section_of(rva)?;
        let into = rva - s.rva;
        (into < s.raw_size).then(|| s.raw as u64 + into as u64)
    }

    /// The file offset of `rva` and how many bytes of its section's raw
    /// data follow it there (the section found by [`Section::holds`]).
    pub fn raw_of(&self, rva: u32) -> Option<(u64, u32)> {
        let s = self.sections.iter().find(|s| s.holds(rva))?;
        let into = rva - s.rva;
        let left = s.raw_size.checked_sub(into)?;
        Some((s.raw as u64 + into as u64, left))
    }

    /// The lowest section address: where the image's sections start (the
    /// unpacked output is scanned from there, without the headers, so it
    /// is not taken for the packed executable again).
    pub fn first_rva(&self) -> u32 {
        self.sections.iter().map(|s| s.rva).min().unwrap_or(0)
    }
}

/// Up to `len` bytes of `file` from `at` (fewer at its end).
pub fn read_at(file: &mut (impl Read + Seek), at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(at))?;
    let n = super::unpack::read_full(file, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// The image as the loader maps it: `image_size` bytes (the caller has
/// checked it against its limits), each section's raw data at its
/// address (clipped to the image and the file), zeros elsewhere.
pub fn map(file: &mut (impl Read + Seek), h: &Headers) -> std::io::Result<Vec<u8>> {
    let mut image = vec![0u8; h.image_size as usize];
    for s in &h.sections {
        let start = (s.rva as usize).min(image.len());
        let len = (s.raw_size as usize).min(image.len() - start);
        let data = read_at(file, s.raw as u64, len)?;
        image[start..start + data.len()].copy_from_slice(&data);
    }
    Ok(image)
}

/// A zip archive carried in `data` (an unpacked image): from its first
/// local file header to the end of its central directory, as a
/// self-extractor holds one. None if there is no complete one.
pub fn embedded_zip(data: &[u8]) -> Option<&[u8]> {
    let start = data.windows(4).position(|w| w == b"PK\x03\x04")?;
    let end = data[start..].windows(4).rposition(|w| w == b"PK\x05\x06")? + start;
    let comment = u16_at(data, end + 20)? as usize;
    data.get(start..(end + 22 + comment).min(data.len()))
}

#[cfg(test)]
pub mod tests {
    /// A minimal PE32 file for the unpackers' tests: headers in the first
    /// 0x200 bytes, then each section's raw data (address, bytes; 0x1000
    /// bytes of memory each), the entry point at `entry`.
    pub fn pe(entry: u32, sections: &[(u32, &[u8])]) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c] = 0x40;
        f[0x40..0x44].copy_from_slice(b"PE\0\0");
        f[0x44..0x46].copy_from_slice(&0x14cu16.to_le_bytes());
        f[0x46..0x48].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        f[0x54..0x56].copy_from_slice(&0xe0u16.to_le_bytes());
        let opt = 0x58;
        f[opt..opt + 2].copy_from_slice(&0x10bu16.to_le_bytes());
        f[opt + 16..opt + 20].copy_from_slice(&entry.to_le_bytes());
        f[opt + 28..opt + 32].copy_from_slice(&0x40_0000u32.to_le_bytes());
        let end = sections.iter().map(|s| s.0).max().unwrap_or(0) + 0x1000;
        f[opt + 56..opt + 60].copy_from_slice(&end.to_le_bytes());
        let mut raw = 0x200u32;
        for (i, (rva, data)) in sections.iter().enumerate() {
            let at = opt + 0xe0 + 40 * i;
            let len = data.len() as u32;
            for (o, v) in [(8, 0x1000), (12, *rva), (16, len), (20, raw)] {
                f[at + o..at + o + 4].copy_from_slice(&v.to_le_bytes());
            }
            raw += len;
        }
        for (_, data) in sections {
            f.extend_from_slice(data);
        }
        f
    }

    #[test]
    fn headers_and_image_of_a_built_pe() {
        let f = pe(0x2000, &[(0x1000, b"code"), (0x2000, b"stub")]);
        let h = super::headers(&f).unwrap();
        assert_eq!(
            (h.entry, h.image_size, h.first_rva()),
            (0x2000, 0x3000, 0x1000)
        );
        assert_eq!(h.file_offset(0x2002), Some(0x206));
        let image = super::map(&mut std::io::Cursor::new(&f), &h).unwrap();
        assert_eq!(&image[0x1000..0x1004], b"code");
        assert_eq!(&image[0x2000..0x2004], b"stub");
        // Truncated headers: not a PE32.
        assert!(super::headers(&f[..0x100]).is_none());
    }
}
