//! A PE file's layout in memory, as packers' stubs see it: the headers,
//! the sections at their relative virtual addresses (RVAs). Packers that
//! decompress in place (MEW, Upack) address their data by RVA, and what
//! they produce is the image, not a file: this maps RVAs to file offsets
//! and builds that image (Microsoft PE/COFF specification, "Section Table").

use std::io::{Read, Seek, SeekFrom};

/// The fields of the headers a stub's addresses need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub image_base: u32,
    pub entry: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub sections: Vec<Section>,
}

/// A section: where it is in memory and where its bytes are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub rva: u32,
    pub virtual_size: u32,
    /// The file offset as the loader uses it: rounded down to 512 bytes.
    pub raw: u32,
    pub raw_size: u32,
}

/// The most sections read: the format allows 96 in practice (the loader's
/// own limit), packers use two or three.
const MAX_SECTIONS: usize = 96;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Layout {
    /// The layout of a 32-bit PE (optional header magic 0x10b) whose
    /// headers are in `head`; None for anything else.
    pub fn parse(head: &[u8]) -> Option<Layout> {
        if !head.starts_with(b"MZ") {
            return None;
        }
        let pe = u32_at(head, 0x3c)? as usize;
        if head.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
            return None;
        }
        let count = u16_at(head, pe + 6)? as usize;
        let opt_size = u16_at(head, pe + 20)? as usize;
        let opt = pe + 24;
        if u16_at(head, opt)? != 0x10b || count > MAX_SECTIONS {
            return None;
        }
        let file_align = u32_at(head, opt + 36)?;
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let s = opt + opt_size + 40 * i;
            let raw_size = u32_at(head, s + 16)?;
            // The loader reads whole file-alignment units.
            let raw_size = match file_align {
                a if a.is_power_of_two() && a >= 0x200 => raw_size.saturating_add(a - 1) & !(a - 1),
                _ => raw_size,
            };
            sections.push(Section {
                virtual_size: u32_at(head, s + 8)?,
                rva: u32_at(head, s + 12)?,
                raw: u32_at(head, s + 20)? & !0x1ff,
                raw_size,
            });
        }
        Some(Layout {
            image_base: u32_at(head, opt + 28)?,
            entry: u32_at(head, opt + 16)?,
            size_of_image: u32_at(head, opt + 56)?,
            size_of_headers: u32_at(head, opt + 60)?,
            sections,
        })
    }

    /// The file offset of `rva` and how many bytes from there the file
    /// holds for it, if any.
    pub fn offset(&self, rva: u32) -> Option<(u64, u32)> {
        if rva < self.size_of_headers {
            return Some((rva as u64, self.size_of_headers - rva));
        }
        // The last section containing it wins, as the last one the loader
        // copies does.
        self.sections.iter().rev().find_map(|s| {
            let within = rva.checked_sub(s.rva)?;
            (within < s.raw_size).then(|| (s.raw as u64 + within as u64, s.raw_size - within))
        })
    }

    /// Up to `len` bytes at `rva`, as much as the file has there.
    pub fn read(
        &self,
        file: &mut (impl Read + Seek),
        rva: u32,
        len: usize,
    ) -> std::io::Result<Vec<u8>> {
        let Some((at, left)) = self.offset(rva) else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; len.min(left as usize)];
        file.seek(SeekFrom::Start(at))?;
        let n = super::unpack::read_full(file, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The image as the loader maps it: `size_of_image` bytes (the caller
    /// bounds it), zeros where no file bytes go.
    pub fn load(&self, file: &mut (impl Read + Seek)) -> std::io::Result<Vec<u8>> {
        let mut image = vec![0u8; self.size_of_image as usize];
        let mut fill = |rva: u32, at: u64, len: u32| -> std::io::Result<()> {
            let start = (rva as usize).min(image.len());
            let end = start.saturating_add(len as usize).min(image.len());
            file.seek(SeekFrom::Start(at))?;
            super::unpack::read_full(file, &mut image[start..end])?;
            Ok(())
        };
        fill(0, 0, self.size_of_headers)?;
        for s in &self.sections {
            let len = match s.virtual_size {
                0 => s.raw_size,
                v => s.raw_size.min(v),
            };
            fill(s.rva, s.raw as u64, len)?;
        }
        Ok(image)
    }
}

/// A zip archive within an unpacked image (a self-extractor's payload,
/// often a resource): from its first local header to the end of its
/// end-of-central-directory record, found from that record (APPNOTE.TXT
/// section 4.3.16: the directory's size and offset put the archive's
/// start at the record's position less both). Scanned as an object of its
/// own, as the self-extractor would write it out.
pub fn embedded_zip(image: &[u8]) -> Option<std::ops::Range<usize>> {
    const END: &[u8] = b"PK\x05\x06";
    image
        .windows(END.len())
        .enumerate()
        .filter(|(_, w)| *w == END)
        .find_map(|(at, _)| {
            let cd_size = u32_at(image, at + 12)? as usize;
            let cd_offset = u32_at(image, at + 16)? as usize;
            let comment = u16_at(image, at + 20)? as usize;
            let start = at.checked_sub(cd_size)?.checked_sub(cd_offset)?;
            let end = at + 22 + comment;
            (image.get(start..start + 4)? == b"PK\x03\x04" && end <= image.len())
                .then_some(start..end)
        })
}
