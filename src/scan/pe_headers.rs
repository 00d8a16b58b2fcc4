//! The few fields of a PE's headers that the packer modules (wwpack.rs,
//! yc.rs) need: the entry point, the image size and the section table
//! (Microsoft PE/COFF specification, sections 3 and 4).

/// One section header's addresses and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub name: [u8; 8],
    pub rva: u32,
    pub vsize: u32,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Offset of `PE\0\0`.
    pub nt: usize,
    pub entry: u32,
    pub image_size: u32,
    /// Offset of the first section header.
    pub table: usize,
    pub sections: Vec<Section>,
}

/// A PE has at most 96 sections (the loader's limit in the specification).
const MAX_SECTIONS: usize = 96;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The headers in `head` (the file's first bytes), if it is a 32-bit PE
/// whose section table lies within them.
pub fn parse(head: &[u8]) -> Option<Headers> {
    if !head.starts_with(b"MZ") {
        return None;
    }
    let nt = u32_at(head, 0x3c)? as usize;
    if head.get(nt..nt.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let count = u16_at(head, nt + 6)? as usize;
    let optional = u16_at(head, nt + 20)? as usize;
    // PE32 only: the packers here are 32-bit.
    if count == 0 || count > MAX_SECTIONS || u16_at(head, nt + 24)? != 0x10b {
        return None;
    }
    let table = nt + 24 + optional;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let at = table + 40 * i;
        let mut name = [0u8; 8];
        name.copy_from_slice(head.get(at..at + 8)?);
        sections.push(Section {
            name,
            vsize: u32_at(head, at + 8)?,
            rva: u32_at(head, at + 12)?,
            raw_size: u32_at(head, at + 16)?,
            raw: u32_at(head, at + 20)?,
        });
    }
    Some(Headers {
        nt,
        entry: u32_at(head, nt + 24 + 16)?,
        image_size: u32_at(head, nt + 24 + 56)?,
        table,
        sections,
    })
}

impl Headers {
    /// The file offset of `rva` and how many bytes of its section's raw
    /// data follow it there.
    pub fn raw_of(&self, rva: u32) -> Option<(u64, u32)> {
        let s = self.sections.iter().find(|s| s.holds(rva))?;
        let into = rva - s.rva;
        let left = s.raw_size.checked_sub(into)?;
        Some((s.raw as u64 + into as u64, left))
    }
}
