//! Compact binary encoding of store rows.
//!
//! Rows are small, read far more often than written, and must decode without
//! panicking even when the file was damaged: every read is bounds-checked and
//! a short or malformed row is an error, never a crash.

/// Appends fields to a row being built.
#[derive(Default)]
pub struct RowWriter {
    buf: Vec<u8>,
}

impl RowWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A length-prefixed byte string (u32 length).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// The row was shorter than its fields or held invalid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Reads fields of a row in the order they were written.
pub struct RowReader<'a> {
    rest: &'a [u8],
}

impl<'a> RowReader<'a> {
    pub fn new(row: &'a [u8]) -> Self {
        Self { rest: row }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed)
    }
    pub fn raw<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.array()
    }
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = RowWriter::new();
        w.u8(7)
            .u32(0xdead_beef)
            .u64(1 << 40)
            .i64(-5)
            .str("Junk")
            .bytes(b"");
        let row = w.finish();
        let mut r = RowReader::new(&row);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u32(), Ok(0xdead_beef));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.i64(), Ok(-5));
        assert_eq!(r.str(), Ok("Junk"));
        assert_eq!(r.bytes(), Ok(&b""[..]));
        assert!(r.rest().is_empty());
    }

    #[test]
    fn short_rows_are_errors() {
        let mut w = RowWriter::new();
        w.str("hello");
        let row = w.finish();
        for cut in 0..row.len() {
            let mut r = RowReader::new(&row[..cut]);
            assert_eq!(r.str(), Err(Malformed), "cut at {cut}");
        }
        // A length prefix claiming more than the row holds.
        let mut r = RowReader::new(&[0xff, 0xff, 0xff, 0x7f, b'a']);
        assert_eq!(r.bytes(), Err(Malformed));
    }
}
