//! Whole-message tests: the messages in testdata/ against their expected
//! verdicts, and every limit at and past its value.

use std::io::{Read, Write};
use std::path::Path;

use super::*;

fn db() -> Database {
    Database::builtin().unwrap()
}

fn verdict(f: &Finding) -> String {
    match f {
        Finding::Clean => "OK".into(),
        Finding::Infected(n) | Finding::Limit(n) => format!("{n} FOUND"),
    }
}

#[test]
fn testdata_messages_get_their_expected_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scan/testdata");
    let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let db = db();
    let mut n = 0;
    for line in expected.lines() {
        let (name, want) = line.split_once(": ").unwrap();
        let msg = std::fs::read(dir.join(name)).unwrap();
        let got = scan_message_bytes(&db, &msg, Limits::default()).unwrap();
        assert_eq!(verdict(&got), want, "{name}");
        // The same through the CLI's path (the file read a chunk at a time).
        let got = cli::scan_file(&db, Limits::default(), &dir.join(name)).unwrap();
        assert_eq!(verdict(&got), want, "{name} via scan_file");
        n += 1;
    }
    assert!(n >= 10);
}

fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn with_attachment(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut m = b"Subject: t\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    for line in b64.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

fn scan(msg: &[u8], limits: Limits) -> Finding {
    scan_message_bytes(&db(), msg, limits).unwrap()
}

const EICAR: &[u8] = signature::EICAR;

fn infected() -> Finding {
    Finding::Infected(signature::EICAR_NAME.into())
}

#[test]
fn depth_limit() {
    // EICAR in a zip in a zip: depth 2.
    let nested = zip(&[("in.zip", &zip(&[("e.com", EICAR)]))]);
    let msg = with_attachment(&nested);
    let at = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, at), infected());
    let below = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, below), Finding::Limit(LIMIT_DEPTH.into()));
}

#[test]
fn object_size_limit() {
    let mut data = vec![b'.'; 5000];
    data[100..100 + EICAR.len()].copy_from_slice(EICAR);
    let msg = with_attachment(&data);
    let at = Limits {
        max_object_size: 5000,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, at), infected());
    let below = Limits {
        max_object_size: 4999,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, below), Finding::Limit(LIMIT_OBJECT.into()));
    // An entry's declared size counts before anything is inflated.
    let z = zip(&[("big", &vec![0u8; 5000])]);
    assert_eq!(
        scan(&with_attachment(&z), below),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

#[test]
fn total_size_limit() {
    let entry = vec![b'x'; 3000];
    let z = zip(&[("a", &entry), ("b", &entry), ("c", EICAR)]);
    let msg = with_attachment(&z);
    let total = (z.len() + 6000 + EICAR.len()) as u64;
    let at = Limits {
        max_total_size: total,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, at), infected());
    let below = Limits {
        max_total_size: total - 1,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, below), Finding::Limit(LIMIT_TOTAL.into()));
}

#[test]
fn zip_entries_limit() {
    let z = zip(&[("a", b"1"), ("b", b"2"), ("c", EICAR)]);
    let msg = with_attachment(&z);
    let at = Limits {
        max_zip_entries: 3,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, at), infected());
    let below = Limits {
        max_zip_entries: 2,
        ..Limits::default()
    };
    assert_eq!(scan(&msg, below), Finding::Limit(LIMIT_ENTRIES.into()));
}

#[test]
fn hash_and_body_signatures_from_files() {
    use md5::Digest;
    let dir = std::env::temp_dir().join(format!("pimail-scan-sigs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let payload = b"a harmless file that a hash signature names".to_vec();
    let md5 = md5::Md5::digest(&payload);
    let sha256 = sha2::Sha256::digest(&payload);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    std::fs::write(
        dir.join("t.hdb"),
        format!("{}:{}:Test.Md5\n", hex(&md5), payload.len()),
    )
    .unwrap();
    std::fs::write(
        dir.join("t.hsb"),
        format!("{}:*:Test.Sha256\n", hex(&sha256)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t.ndb"),
        "Test.Body:0:*:7365637265742d6d61726b6572\n",
    )
    .unwrap();
    let db = Database::load(&dir, &std::env::temp_dir()).unwrap();
    let f = |m: &[u8]| scan_message_bytes(&db, m, Limits::default()).unwrap();
    assert_eq!(
        f(&with_attachment(&payload)),
        Finding::Infected("Test.Md5".into())
    );
    // Same hash in a zip entry.
    assert_eq!(
        f(&with_attachment(&zip(&[("x", &payload)]))),
        Finding::Infected("Test.Md5".into())
    );
    assert_eq!(
        f(&with_attachment(b"has a secret-marker inside")),
        Finding::Infected("Test.Body".into())
    );
    assert_eq!(f(&with_attachment(b"nothing")), Finding::Clean);
    // An allow-list entry for the same file wins; .ign2 silences a name.
    std::fs::write(dir.join("t.fp"), format!("{}:*:Known.Good\n", hex(&md5))).unwrap();
    std::fs::write(dir.join("t.ign2"), "Test.Body\n").unwrap();
    let db = Database::load(&dir, &std::env::temp_dir()).unwrap();
    let f = |m: &[u8]| scan_message_bytes(&db, m, Limits::default()).unwrap();
    assert_eq!(f(&with_attachment(&payload)), Finding::Clean);
    assert_eq!(
        f(&with_attachment(b"has a secret-marker inside")),
        Finding::Clean
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn raw_windows_overlap_and_count_offsets_from_the_start() {
    // A plain body larger than a window, EICAR across the first boundary.
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    let at = (1 << 20) - 30;
    msg.resize(at, b'a');
    msg.extend_from_slice(EICAR);
    msg.resize(3 << 20, b'b');
    let db = db();
    let mut w = Walker::new(&db, Limits::default());
    let got = w
        .stream(std::io::Cursor::new(&msg), msg.len() as u64)
        .unwrap();
    assert_eq!(got, infected());
    let clean = vec![b'c'; 3 << 20];
    let got = w
        .stream(std::io::Cursor::new(&clean), clean.len() as u64)
        .unwrap();
    assert_eq!(got, Finding::Clean);
}

#[test]
fn cli_lines_and_exit_codes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scan/testdata");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let s = cli::run(
        Path::new("/nonexistent"),
        &std::env::temp_dir(),
        &[dir.join("clean-text.eml"), dir.join("eicar-base64.eml")],
        Limits::default(),
        &mut out,
        &mut err,
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("clean-text.eml: OK\n"), "{out}");
    assert!(
        out.contains("eicar-base64.eml: Eicar-Test-Signature FOUND\n"),
        "{out}"
    );
    assert_eq!(s.exit_code(), 1);
    let mut out = Vec::new();
    let s = cli::run(
        Path::new("/nonexistent"),
        &std::env::temp_dir(),
        &[dir.join("clean-text.eml"), dir.join("missing.eml")],
        Limits::default(),
        &mut out,
        &mut err,
    );
    assert_eq!(s.exit_code(), 2, "{}", String::from_utf8_lossy(&out));
}

/// A tar archive built here: one ustar header and the data per member.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        t.extend_from_slice(&h);
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.resize(t.len() + 1024, 0);
    t
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(data).unwrap();
    bz.finish().unwrap()
}

#[test]
fn gzip_bzip2_and_tar() {
    let lim = Limits::default();
    assert_eq!(scan(&with_attachment(&gzip(EICAR)), lim), infected());
    assert_eq!(scan(&with_attachment(&bzip2(EICAR)), lim), infected());
    let tgz = gzip(&tar(&[("readme", b"hello"), ("e.com", EICAR)]));
    assert_eq!(scan(&with_attachment(&tgz), lim), infected());
    let clean = gzip(&tar(&[("readme", b"hello"), ("more", b"world")]));
    assert_eq!(scan(&with_attachment(&clean), lim), Finding::Clean);
    // The entry limit counts tar members too (EICAR itself would show in
    // the tar's own bytes: it is compressed once more here).
    let tgz = gzip(&tar(&[("readme", b"hello"), ("e.gz", &gzip(EICAR))]));
    assert_eq!(scan(&with_attachment(&tgz), lim), infected());
    let one = Limits {
        max_zip_entries: 1,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&tgz), one),
        Finding::Limit(LIMIT_ENTRIES.into())
    );
    // gzip, tar and gzip again: three levels below the attachment.
    let at = Limits {
        max_depth: 3,
        ..lim
    };
    assert_eq!(scan(&with_attachment(&tgz), at), infected());
    let below = Limits {
        max_depth: 2,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&tgz), below),
        Finding::Limit(LIMIT_DEPTH.into())
    );
    // One bzip2 block buffer at a time.
    assert_eq!(
        scan(&with_attachment(&bzip2(&bzip2(EICAR))), lim),
        Finding::Limit(LIMIT_DEPTH.into())
    );
    // A gzip bomb stops at the object size, not at what it declares.
    let bomb = gzip(&vec![0u8; 100_000]);
    let small = Limits {
        max_object_size: 50_000,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&bomb), small),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

#[test]
fn zip_entries_in_bzip2() {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Bzip2);
    w.start_file("e.com", opts).unwrap();
    w.write_all(EICAR).unwrap();
    let z = w.finish().unwrap().into_inner();
    assert_eq!(scan(&with_attachment(&z), Limits::default()), infected());
}

#[test]
fn szdd_compressed_file() {
    // All literals: a control byte of eight 1 bits before each eight bytes.
    let mut szdd = b"SZDD\x88\xf0\x27\x33A_\0\0\0\0".to_vec();
    for block in EICAR.chunks(8) {
        szdd.push(0xff);
        szdd.extend_from_slice(block);
    }
    assert_eq!(scan(&with_attachment(&szdd), Limits::default()), infected());
}

/// BinHex 4.0 built here (no run-length coding but for 0x90 itself).
fn binhex(data: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] =
        b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";
    let mut raw = vec![5u8];
    raw.extend_from_slice(b"e.com\0TEXTttxt\0\0");
    raw.extend_from_slice(&(data.len() as u32).to_be_bytes());
    raw.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    raw.extend_from_slice(data);
    raw.extend_from_slice(&[0, 0, 0, 0]);
    let mut packed = Vec::new();
    for &b in &raw {
        packed.push(b);
        if b == 0x90 {
            packed.push(0);
        }
    }
    let mut out = b"(This file must be converted with BinHex 4.0)\r\n:".to_vec();
    for (i, c) in packed.chunks(3).enumerate() {
        let v = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..=c.len() {
            out.push(ALPHABET[((v >> (18 - 6 * k)) & 63) as usize]);
        }
        if i % 16 == 15 {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b":\r\n");
    out
}

#[test]
fn binhex_data_fork() {
    assert_eq!(
        scan(&with_attachment(&binhex(EICAR)), Limits::default()),
        infected()
    );
    assert_eq!(
        scan(&with_attachment(&binhex(b"harmless")), Limits::default()),
        Finding::Clean
    );
}

#[test]
fn rtf_embedded_object() {
    let hex: String = [b"\x01\x05\0\0junk".as_slice(), EICAR, b"tail"]
        .concat()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Line breaks inside the hex, as word processors write it.
    let hex = hex
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    let rtf = format!("{{\\rtf1\\ansi{{\\object\\objemb{{\\*\\objdata {hex}}}}}}}");
    assert_eq!(
        scan(&with_attachment(rtf.as_bytes()), Limits::default()),
        infected()
    );
    let plain = "{\\rtf1\\ansi 58354f2150 is just text}";
    assert_eq!(
        scan(&with_attachment(plain.as_bytes()), Limits::default()),
        Finding::Clean
    );
}

#[test]
fn message_attached_as_a_file() {
    // A whole message (EICAR in its own base64 attachment) attached as
    // application/octet-stream: walked as a message.
    let inner = with_attachment(EICAR);
    let mut mbox = b"From someone@example.test Thu Jan  1 00:00:00 2026\r\n".to_vec();
    mbox.extend_from_slice(&inner);
    assert_eq!(scan(&with_attachment(&mbox), Limits::default()), infected());
    let deep = Limits {
        max_depth: 0,
        ..Limits::default()
    };
    assert_eq!(
        scan(&with_attachment(&mbox), deep),
        Finding::Limit(LIMIT_DEPTH.into())
    );
}

/// 7z samples made with 7-Zip 26.02 (`7zz`) from a readme of 40 lines
/// (so that LZMA2 compresses the solid block rather than store it) and
/// EICAR as `e.com`: `7zz a -ms=on eicar-solid.7z readme.txt e.com`
/// (LZMA2, one solid block, compressed header), `7zz a -m0=LZMA -mhc=off
/// eicar-lzma-plainheader.7z e.com`, `7zz a -pTest -mhe=off
/// eicar-encrypted.7z e.com` (LZMA2 then AES).
const SEVENZ_SOLID: &[u8] = include_bytes!("testdata/eicar-solid.7z");
const SEVENZ_LZMA: &[u8] = include_bytes!("testdata/eicar-lzma-plainheader.7z");
const SEVENZ_ENCRYPTED: &[u8] = include_bytes!("testdata/eicar-encrypted.7z");

/// A 7z archive with its next header replaced by `header` and both CRCs
/// (next header, start header) recomputed.
fn sevenz_with_header(archive: &[u8], header: &[u8]) -> Vec<u8> {
    let crc = |b: &[u8]| {
        let mut c = flate2::Crc::new();
        c.update(b);
        c.sum()
    };
    let offset = u64::from_le_bytes(archive[12..20].try_into().unwrap()) as usize;
    let mut out = archive[..32 + offset].to_vec();
    out.extend_from_slice(header);
    out[20..28].copy_from_slice(&(header.len() as u64).to_le_bytes());
    out[28..32].copy_from_slice(&crc(header).to_le_bytes());
    let start = crc(&out[12..32]);
    out[8..12].copy_from_slice(&start.to_le_bytes());
    out
}

fn sevenz_header(archive: &[u8]) -> &[u8] {
    let offset = u64::from_le_bytes(archive[12..20].try_into().unwrap()) as usize;
    &archive[32 + offset..]
}

#[test]
fn sevenz_entries() {
    let lim = Limits::default();
    // Compressed: EICAR is not in the archive's own bytes.
    for sample in [SEVENZ_SOLID, SEVENZ_LZMA, SEVENZ_ENCRYPTED] {
        assert!(!sample.windows(EICAR.len()).any(|w| w == EICAR));
    }
    assert_eq!(scan(&with_attachment(SEVENZ_SOLID), lim), infected());
    assert_eq!(scan(&with_attachment(SEVENZ_LZMA), lim), infected());
    // Encrypted entries are skipped.
    assert_eq!(
        scan(&with_attachment(SEVENZ_ENCRYPTED), lim),
        Finding::Clean
    );
    // EICAR is the second entry of the solid block: depth 2 for a 7z in
    // a gzip.
    let gz = gzip(SEVENZ_SOLID);
    let at = Limits {
        max_depth: 2,
        ..lim
    };
    assert_eq!(scan(&with_attachment(&gz), at), infected());
    let below = Limits {
        max_depth: 1,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&gz), below),
        Finding::Limit(LIMIT_DEPTH.into())
    );
}

#[test]
fn sevenz_limits() {
    let lim = Limits::default();
    let one = Limits {
        max_zip_entries: 1,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(SEVENZ_SOLID), one),
        Finding::Limit(LIMIT_ENTRIES.into())
    );
    // EICAR's declared 68 bytes, refused before decoding.
    let small = Limits {
        max_object_size: 67,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(SEVENZ_LZMA), small),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    // A 64 MiB LZMA dictionary in the coder's properties: refused, not
    // allocated.
    let header = sevenz_header(SEVENZ_LZMA);
    let props = header
        .windows(5)
        .position(|w| w == [0x5d, 0x00, 0x10, 0x00, 0x00])
        .unwrap();
    let mut big_dict = header.to_vec();
    big_dict[props + 1..props + 5].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let archive = sevenz_with_header(SEVENZ_LZMA, &big_dict);
    assert_eq!(
        scan(&with_attachment(&archive), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    // A compressed header that declares 1 MiB once decoded: more than
    // 1,000 entries need, refused before it is decoded.
    let header = sevenz_header(SEVENZ_SOLID);
    let size = header.windows(2).position(|w| w == [0x0c, 0x76]).unwrap();
    let mut huge = header[..size + 1].to_vec();
    huge.extend_from_slice(&[0xe0, 0x00, 0x00, 0x10]);
    huge.extend_from_slice(&header[size + 2..]);
    let archive = sevenz_with_header(SEVENZ_SOLID, &huge);
    assert_eq!(
        scan(&with_attachment(&archive), lim),
        Finding::Limit(LIMIT_ENTRIES.into())
    );
}

#[test]
fn sevenz_damage_is_never_a_panic() {
    let lim = Limits::default();
    for sample in [SEVENZ_SOLID, SEVENZ_LZMA, SEVENZ_ENCRYPTED] {
        for cut in 0..sample.len() {
            let got = scan(&with_attachment(&sample[..cut]), lim);
            assert!(matches!(got, Finding::Clean | Finding::Limit(_)), "{cut}");
        }
        for at in 6..sample.len() {
            let mut bad = sample.to_vec();
            bad[at] ^= 0x55;
            scan(&with_attachment(&bad), lim);
        }
    }
}

/// An OLE2 compound file ([MS-CFB] version 3, 512-byte sectors) built
/// here: streams under 4096 bytes in the mini stream, the others in
/// sectors of their own. Each chain is laid out backwards (its last
/// sector first), so a stream's bytes are in the file only out of order:
/// what is found was read along the chains.
fn ole2(streams: &[(&str, &[u8])]) -> Vec<u8> {
    const END: u32 = 0xffff_fffe;
    let mut fat: Vec<u32> = vec![0xffff_fffd]; // sector 0: the FAT
    let mut sectors: Vec<Vec<u8>> = vec![Vec::new()];
    // Appends a chain of `data`'s blocks of `size` bytes to `table`,
    // backwards; returns its first block.
    fn chain(table: &mut Vec<u32>, blocks: &mut Vec<Vec<u8>>, data: &[u8], size: usize) -> u32 {
        if data.is_empty() {
            return END;
        }
        let parts: Vec<&[u8]> = data.chunks(size).collect();
        let base = table.len();
        for (i, part) in parts.iter().enumerate().rev() {
            let mut b = part.to_vec();
            b.resize(size, 0);
            blocks.push(b);
            // Block base + (n - 1 - i) holds part i; it links to part i + 1.
            table.push(if i + 1 == parts.len() {
                END
            } else {
                (base + parts.len() - 2 - i) as u32
            });
        }
        (base + parts.len() - 1) as u32
    }
    let mut minifat = Vec::new();
    let mut minis = Vec::new();
    let mut entries = Vec::new();
    for (name, data) in streams {
        let start = if data.len() < 4096 {
            chain(&mut minifat, &mut minis, data, 64)
        } else {
            chain(&mut fat, &mut sectors, data, 512)
        };
        entries.push((*name, 2u8, start, data.len()));
    }
    let ministream = minis.concat();
    let mini_start = chain(&mut fat, &mut sectors, &ministream, 512);
    let minifat_bytes: Vec<u8> = minifat.iter().flat_map(|v| v.to_le_bytes()).collect();
    let minifat_start = chain(&mut fat, &mut sectors, &minifat_bytes, 512);
    entries.insert(0, ("Root Entry", 5, mini_start, ministream.len()));
    let mut dir = Vec::new();
    for (i, (name, kind, start, size)) in entries.iter().enumerate() {
        let mut e = [0u8; 128];
        let units: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        e[..units.len()].copy_from_slice(&units);
        e[64..66].copy_from_slice(&(units.len() as u16 + 2).to_le_bytes());
        e[66] = *kind;
        // A list rather than a balanced tree: root's child is entry 1,
        // each entry's right sibling the next.
        let none = u32::MAX.to_le_bytes();
        e[68..72].copy_from_slice(&none);
        let next = if i == 0 || i + 1 == entries.len() {
            u32::MAX
        } else {
            i as u32 + 1
        };
        e[72..76].copy_from_slice(&next.to_le_bytes());
        let child = if i == 0 && entries.len() > 1 {
            1
        } else {
            u32::MAX
        };
        e[76..80].copy_from_slice(&child.to_le_bytes());
        e[116..120].copy_from_slice(&start.to_le_bytes());
        e[120..124].copy_from_slice(&(*size as u32).to_le_bytes());
        dir.extend_from_slice(&e);
    }
    let dir_start = chain(&mut fat, &mut sectors, &dir, 512);
    assert!(fat.len() <= 128, "one FAT sector");
    let mut fat_sector: Vec<u8> = fat.iter().flat_map(|v| v.to_le_bytes()).collect();
    fat_sector.resize(512, 0xff);
    sectors[0] = fat_sector;
    let mut h = vec![0u8; 512];
    h[..8].copy_from_slice(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1");
    let u16s: [(usize, u16); 5] = [(24, 0x3e), (26, 3), (28, 0xfffe), (30, 9), (32, 6)];
    for (at, v) in u16s {
        h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    let minifat_sectors = minifat_bytes.len().div_ceil(512) as u32;
    let u32s: [(usize, u32); 8] = [
        (44, 1),
        (48, dir_start),
        (56, 4096),
        (60, minifat_start),
        (64, minifat_sectors),
        (68, END),
        (72, 0),
        (76, 0),
    ];
    for (at, v) in u32s {
        h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    h[80..512].fill(0xff);
    h.extend(sectors.concat());
    h
}

/// A PowerPoint Document stream: a container with an atom, then an
/// ExOleObjStg record holding `object` zlib-compressed (instance 1).
fn ppt_stream(object: &[u8], declared: u32) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(object).unwrap();
    let z = z.finish().unwrap();
    let record = |ver_inst: u16, kind: u16, body: &[u8]| {
        let mut r = ver_inst.to_le_bytes().to_vec();
        r.extend_from_slice(&kind.to_le_bytes());
        r.extend_from_slice(&(body.len() as u32).to_le_bytes());
        r.extend_from_slice(body);
        r
    };
    let atom = record(0x0001, 0x03e9, &[0u8; 40]);
    let mut s = record(0x000f, 0x03e8, &atom);
    let mut body = declared.to_le_bytes().to_vec();
    body.extend_from_slice(&z);
    s.extend(record(0x0010, 0x1011, &body));
    s.extend(record(0x0000, 0x1772, &[0u8; 20]));
    s
}

#[test]
fn ole2_streams() {
    let lim = Limits::default();
    let mut big = vec![b'.'; 5000];
    big[1000..1000 + EICAR.len()].copy_from_slice(EICAR);
    for streams in [
        vec![("WordDocument", &b"text"[..]), ("\u{1}Ole10Native", EICAR)],
        vec![("Data", &big[..]), ("1Table", b"x")],
    ] {
        let file = ole2(&streams);
        assert!(!file.windows(EICAR.len()).any(|w| w == EICAR));
        assert_eq!(scan(&with_attachment(&file), lim), infected());
    }
    let clean = ole2(&[("WordDocument", b"text"), ("Data", &[7u8; 5000])]);
    assert_eq!(scan(&with_attachment(&clean), lim), Finding::Clean);
}

#[test]
fn powerpoint_embedded_object() {
    let lim = Limits::default();
    let doc = ole2(&[
        ("Current User", b"user"),
        (
            "PowerPoint Document",
            &ppt_stream(EICAR, EICAR.len() as u32),
        ),
    ]);
    assert_eq!(scan(&with_attachment(&doc), lim), infected());
    // The object is one level below its stream.
    let at = Limits {
        max_depth: 2,
        ..lim
    };
    assert_eq!(scan(&with_attachment(&doc), at), infected());
    let below = Limits {
        max_depth: 1,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&doc), below),
        Finding::Limit(LIMIT_DEPTH.into())
    );
    // A bomb: refused on the size it declares, and what inflates past
    // that size is not read.
    let bomb = ole2(&[("PowerPoint Document", &ppt_stream(&[0u8; 100_000], 1 << 30))]);
    assert_eq!(
        scan(&with_attachment(&bomb), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    let mut hidden = vec![0u8; 100_000];
    hidden[90_000..90_000 + EICAR.len()].copy_from_slice(EICAR);
    let lying = ole2(&[("PowerPoint Document", &ppt_stream(&hidden, 1000))]);
    assert_eq!(scan(&with_attachment(&lying), lim), Finding::Clean);
}

#[test]
fn ole2_limits_and_damage() {
    let lim = Limits::default();
    let file = ole2(&[("a", b"1"), ("b", b"2"), ("c", EICAR)]);
    let three = Limits {
        max_zip_entries: 3,
        ..lim
    };
    assert_eq!(scan(&with_attachment(&file), three), infected());
    let two = Limits {
        max_zip_entries: 2,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&file), two),
        Finding::Limit(LIMIT_ENTRIES.into())
    );
    let small = Limits {
        max_object_size: 4999,
        ..lim
    };
    let big = ole2(&[("Data", &[7u8; 5000])]);
    assert_eq!(
        scan(&with_attachment(&big), small),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    // Truncated and damaged files end a stream or the directory early.
    let doc = ole2(&[
        ("Data", &[7u8; 5000]),
        (
            "PowerPoint Document",
            &ppt_stream(EICAR, EICAR.len() as u32),
        ),
    ]);
    // A FAT sector past the end: no table, no streams, no error.
    let mut far = doc.clone();
    far[76..80].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(scan(&with_attachment(&far), lim), Finding::Clean);
    for cut in (0..doc.len()).step_by(7) {
        let got = scan(&with_attachment(&doc[..cut]), lim);
        assert!(matches!(got, Finding::Clean | Finding::Limit(_)), "{cut}");
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let mut bad = doc.clone();
        for _ in 0..4 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = 8 + (rng as usize) % (bad.len() - 8);
            bad[at] = (rng >> 32) as u8;
        }
        scan(&with_attachment(&bad), lim);
    }
}

/// Raw LZMA (no header) with an end marker, and its properties byte.
fn lzma_raw(data: &[u8], dict: u32) -> (u8, Vec<u8>) {
    let mut opts = lzma_rust2::LzmaOptions::with_preset(6);
    opts.dict_size = dict;
    let props = opts.get_props();
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, true).unwrap();
    w.write_all(data).unwrap();
    (props, w.finish().unwrap())
}

/// An MS-DOS header pointing at a PE signature, padded to `len` bytes.
fn pe_stub(len: usize) -> Vec<u8> {
    let mut pe = vec![0u8; len];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c] = 0x80;
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    pe
}

/// An image to pack: EICAR amid code-like bytes.
fn image() -> Vec<u8> {
    let mut img: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    img.extend_from_slice(EICAR);
    img.extend_from_slice(&[0x90; 500]);
    img
}

/// A UPX-packed PE as UPX 3 and 4 lay one out (pimail reads only the
/// pack header and the data after it): the pack header ends the headers
/// at 0x400, the compressed data follows. `u_len` may lie.
fn upx_packed(method: u8, packed: &[u8], u_len: u32, u_adler: u32) -> Vec<u8> {
    let mut pe = pe_stub(0x3e0);
    pe.extend_from_slice(&[b'U', b'P', b'X', b'!', 13, 9, method, 8]);
    let c_adler = upx::adler32(packed);
    for v in [u_adler, c_adler, u_len, packed.len() as u32, u_len] {
        pe.extend_from_slice(&v.to_le_bytes());
    }
    // Filter, its parameter, MRU entries, header checksum.
    pe.extend_from_slice(&[0, 0, 0, 0]);
    pe.extend_from_slice(packed);
    pe
}

fn upx_samples() -> Vec<(u8, Vec<u8>)> {
    use upx::Nrv;
    let img = image();
    let mut v: Vec<(u8, Vec<u8>)> = [
        (2, Nrv::B, 32),
        (3, Nrv::B, 8),
        (6, Nrv::D, 8),
        (7, Nrv::D, 16),
        (5, Nrv::D, 32),
        (8, Nrv::E, 32),
        (10, Nrv::E, 16),
    ]
    .into_iter()
    .map(|(m, kind, width)| (m, upx::tests::compress(kind, width, &img)))
    .collect();
    // Method 14: two bytes of properties for lc 3, lp 0, pb 2.
    let (_, raw) = lzma_raw(&img, 1 << 16);
    let mut lzma = vec![(3 << 3) | 2, 3];
    lzma.extend_from_slice(&raw);
    v.push((14, lzma));
    v
}

#[test]
fn upx_packed_executable() {
    let img = image();
    let lim = Limits::default();
    for (method, packed) in upx_samples() {
        let pe = upx_packed(method, &packed, img.len() as u32, upx::adler32(&img));
        assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
        assert_eq!(
            scan(&with_attachment(&pe), lim),
            infected(),
            "method {method}"
        );
        // Truncated: the pack header's checksum no longer holds, the file
        // is scanned as it is.
        let cut = &pe[..pe.len() - packed.len() / 2];
        assert_eq!(scan(&with_attachment(cut), lim), Finding::Clean);
        // Damaged data that still passes the header's checks (the checksum
        // is of what is there): no panic, no error.
        let mut damaged = packed.clone();
        for b in damaged.iter_mut().skip(40).step_by(97) {
            *b ^= 0x5a;
        }
        let pe = upx_packed(method, &damaged, img.len() as u32, 0);
        scan(&with_attachment(&pe), lim);
        // A declared size past the object limit is a verdict, before any
        // allocation.
        let pe = upx_packed(method, &packed, 0x7fff_ffff, 0);
        assert_eq!(
            scan(&with_attachment(&pe), lim),
            Finding::Limit(LIMIT_OBJECT.into())
        );
        // An output shorter than declared is what is scanned.
        let pe = upx_packed(method, &packed, 3000, 0);
        assert_eq!(scan(&with_attachment(&pe), lim), Finding::Clean);
    }
    // Total: the declared size counts before decompressing.
    let (method, packed) = &upx_samples()[0];
    let pe = upx_packed(*method, packed, img.len() as u32, 0);
    let small = Limits {
        max_total_size: (pe.len() + img.len()) as u64 - 1,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&pe), small),
        Finding::Limit(LIMIT_TOTAL.into())
    );
}

#[test]
fn wwpack_packed_executable() {
    let img = image();
    let lim = Limits::default();
    let pe = wwpack::tests::sample(&img, 0x1000);
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // A zip in the unpacked section (a self-extractor's) is unpacked too.
    let mut sfx = vec![0u8; 100];
    sfx.extend_from_slice(&zip(&[("eicar.com", EICAR)]));
    let pe = wwpack::tests::sample(&sfx, 0x1000);
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // Truncated in the headers or the packed data (the stub is gone), or
    // damaged: no panic, no error. Cut after the stub's records, it is
    // still unpacked.
    let pe = wwpack::tests::sample(&img, 0x1000);
    for cut in [0x300, 0x500] {
        assert_eq!(scan(&with_attachment(&pe[..cut]), lim), Finding::Clean);
    }
    let cut = &pe[..pe.len() - 0x100];
    assert_eq!(scan(&with_attachment(cut), lim), infected());
    for step in [7, 31, 97] {
        let mut damaged = pe.clone();
        for b in damaged[0x400..pe.len() - 0x400].iter_mut().step_by(step) {
            *b ^= 0x5a;
        }
        scan(&with_attachment(&damaged), lim);
    }
    // Room for more than the object limit in the image: a verdict before
    // anything is decompressed.
    let pe = wwpack::tests::sample(&img, 0x7000_0000);
    assert_eq!(
        scan(&with_attachment(&pe), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

#[test]
fn yc_encrypted_executable() {
    let img = image();
    let lim = Limits::default();
    let pe = yc::tests::sample(&img, 0x1000);
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // Cut in the stub's encrypted part or in the headers: not decrypted,
    // scanned as it is; damaged: no panic, no error.
    assert_eq!(
        scan(&with_attachment(&pe[..pe.len() - 0x1000]), lim),
        Finding::Clean
    );
    assert_eq!(scan(&with_attachment(&pe[..0x300]), lim), Finding::Clean);
    for step in [7, 31, 97] {
        let mut damaged = pe.clone();
        for b in damaged[0x400..].iter_mut().step_by(step) {
            *b ^= 0x5a;
        }
        scan(&with_attachment(&damaged), lim);
    }
    // The file is decrypted in memory: it counts against the total before.
    let small = Limits {
        max_total_size: 2 * pe.len() as u64 - 1,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&pe), small),
        Finding::Limit(LIMIT_TOTAL.into())
    );
}

#[test]
fn pespin_protected_executable() {
    let img = image();
    let lim = Limits::default();
    let pe = pespin::tests::sample(&img, 0x1000);
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // Cut in the stub or the headers: not decrypted, scanned as it is;
    // damaged: no panic, no error.
    for cut in [0x300, pe.len() - 0x100] {
        assert_eq!(scan(&with_attachment(&pe[..cut]), lim), Finding::Clean);
    }
    for step in [7, 31, 97] {
        let mut damaged = pe.clone();
        for b in damaged[0x400..].iter_mut().step_by(step) {
            *b ^= 0x5a;
        }
        scan(&with_attachment(&damaged), lim);
    }
    // A section expanding past the object limit: a verdict before it is
    // decompressed.
    let pe = pespin::tests::sample(&img, 0x7000_0000);
    assert_eq!(
        scan(&with_attachment(&pe), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

/// An NSIS installer: a stub, the first header at 512, then `data`.
fn nsis(header_len: u32, data: &[u8]) -> Vec<u8> {
    let mut f = pe_stub(512);
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(b"\xEF\xBE\xAD\xDENullsoftInst");
    f.extend_from_slice(&header_len.to_le_bytes());
    f.extend_from_slice(&(28 + data.len() as u32 + 4).to_le_bytes());
    f.extend_from_slice(data);
    // The CRC-32 NSIS ends with (not checked).
    f.extend_from_slice(&[0; 4]);
    f
}

fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    d.write_all(data).unwrap();
    d.finish().unwrap()
}

/// NSIS's LZMA stream: properties, dictionary size, raw LZMA (encoded
/// with a small dictionary: the data is small, any larger one declared
/// reads the same).
fn nsis_lzma(data: &[u8], dict: u32) -> Vec<u8> {
    let (props, raw) = lzma_raw(data, 1 << 16);
    let mut s = vec![props];
    s.extend_from_slice(&dict.to_le_bytes());
    s.extend_from_slice(&raw);
    s
}

/// The installer's blocks: a script header and two files, EICAR hidden
/// by compression in the second.
fn nsis_blocks() -> Vec<Vec<u8>> {
    let script = b"\x01\0\0\0 a script header of sorts".repeat(20);
    let mut file = b"MZ installed program ".repeat(30);
    file.extend_from_slice(EICAR);
    vec![script, b"readme, stored".to_vec(), file]
}

fn length_prefixed(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    for b in blocks {
        s.extend_from_slice(&(b.len() as u32).to_le_bytes());
        s.extend_from_slice(b);
    }
    s
}

/// Non-solid: each block compressed on its own (the second stored).
fn nsis_non_solid(compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let blocks = nsis_blocks();
    let mut data = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if i == 1 {
            data.extend_from_slice(&(b.len() as u32).to_le_bytes());
            data.extend_from_slice(b);
        } else {
            let c = compress(b);
            data.extend_from_slice(&(c.len() as u32 | 1 << 31).to_le_bytes());
            data.extend_from_slice(&c);
        }
    }
    nsis(blocks[0].len() as u32, &data)
}

fn nsis_samples() -> Vec<(&'static str, Vec<u8>)> {
    let blocks = nsis_blocks();
    let solid = length_prefixed(&blocks);
    let header_len = blocks[0].len() as u32;
    vec![
        ("deflate", nsis_non_solid(deflate_raw)),
        ("lzma", nsis_non_solid(|b| nsis_lzma(b, 8 << 20))),
        ("solid deflate", nsis(header_len, &deflate_raw(&solid))),
        ("solid lzma", nsis(header_len, &nsis_lzma(&solid, 8 << 20))),
        (
            "solid lzma 1 MiB",
            nsis(header_len, &nsis_lzma(&solid, 1 << 20)),
        ),
        // A dictionary past the bound is cut to it: this data fits.
        (
            "solid lzma 64 MiB",
            nsis(header_len, &nsis_lzma(&solid, 64 << 20)),
        ),
    ]
}

#[test]
fn nsis_installer() {
    let lim = Limits::default();
    for (name, f) in nsis_samples() {
        assert!(!f.windows(EICAR.len()).any(|w| w == EICAR), "{name}");
        assert_eq!(scan(&with_attachment(&f), lim), infected(), "{name}");
        // Truncated inside the last block: what came before is scanned, no
        // error.
        let cut = &f[..f.len() - 30];
        scan(&with_attachment(cut), lim);
        let cut = &f[..600];
        assert_eq!(scan(&with_attachment(cut), lim), Finding::Clean, "{name}");
        // Damaged bytes through the data: whatever is decoded is scanned.
        for step in [7, 31, 101] {
            let mut bad = f.clone();
            for b in bad.iter_mut().skip(540).step_by(step) {
                *b ^= 0xa5;
            }
            scan(&with_attachment(&bad), lim);
        }
        // Three blocks: the entry limit counts each.
        let two = Limits {
            max_zip_entries: 2,
            ..lim
        };
        assert_eq!(
            scan(&with_attachment(&f), two),
            Finding::Limit(LIMIT_ENTRIES.into()),
            "{name}"
        );
    }
    // A solid stream's declared file length past the object limit.
    let mut blocks = nsis_blocks();
    blocks.truncate(1);
    let mut solid = length_prefixed(&blocks);
    solid.extend_from_slice(&0x7fff_0000u32.to_le_bytes());
    solid.extend_from_slice(b"a bomb would follow");
    let f = nsis(blocks[0].len() as u32, &deflate_raw(&solid));
    assert_eq!(
        scan(&with_attachment(&f), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    // Not an installer: a PE with nothing after its stub.
    assert_eq!(scan(&with_attachment(&pe_stub(4096)), lim), Finding::Clean);
}

fn html_with_data_uri(payload: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
    format!("<a href=\"data:application/octet-stream;base64,{b64}\">get it</a>\n").into_bytes()
}

#[test]
fn html_data_uri_payloads() {
    // An HTML file attached as application/octet-stream (as clam.exe.html
    // is): recognised by its first tag.
    let html = html_with_data_uri(EICAR);
    assert_eq!(scan(&with_attachment(&html), Limits::default()), infected());
    // A text/html body, the URI split over quoted-printable soft breaks.
    let qp: Vec<u8> = html
        .chunks(30)
        .flat_map(|c| [c, b"=\r\n"].concat())
        .collect();
    let mut mail = b"Subject: t\r\nContent-Type: text/html\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\r\n<html><body>"
        .to_vec();
    mail.extend_from_slice(&qp);
    assert_eq!(scan(&mail, Limits::default()), infected());
    // Percent-encoded, in a text/html part.
    let pct: String = EICAR.iter().map(|b| format!("%{b:02X}")).collect();
    let mail = format!("Subject: t\r\nContent-Type: text/html\r\n\r\n<img src='data:,{pct}'>");
    assert_eq!(scan(mail.as_bytes(), Limits::default()), infected());
    // Harmless payloads, and a URI cut off by the end of the text.
    let clean = html_with_data_uri(b"just an image");
    assert_eq!(
        scan(&with_attachment(&clean), Limits::default()),
        Finding::Clean
    );
    let cut = &html[..html.len() - 20];
    assert_eq!(
        scan(&with_attachment(cut), Limits::default()),
        Finding::Clean
    );
    // The payload is one level below its page.
    let shallow = Limits {
        max_depth: 0,
        ..Limits::default()
    };
    assert_eq!(
        scan(&with_attachment(&html), shallow),
        Finding::Limit(LIMIT_DEPTH.into())
    );
}

/// An LZX stream of one uncompressed block (RFC-less, per the LZX format:
/// no E8 translation bit, block type 3, a 24-bit size, padding to 16 bits,
/// the three repeated offsets, the bytes).
fn lzx_uncompressed(data: &[u8]) -> Vec<u8> {
    let bits: u32 = (0b0011 << 28) | ((data.len() as u32) << 4);
    let mut out = Vec::new();
    out.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(bits as u16).to_le_bytes());
    for _ in 0..3 {
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A CHM (ITSF version 3) built here: `stored` as a file of section 0,
/// `packed` as one of the LZX section, with an LZX window of `window` 32
/// KiB units.
fn chm(stored: &[u8], packed: &[u8], window: u32) -> Vec<u8> {
    fn encint(mut v: u64, out: &mut Vec<u8>) {
        let mut groups = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            groups.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        out.extend(groups.iter().rev());
    }
    let lzx = lzx_uncompressed(packed);
    let mut control = 6u32.to_le_bytes().to_vec();
    control.extend_from_slice(b"LZXC");
    // Version 2, a reset every two frames (64 KiB), the window, cache size.
    for v in [2u32, 2, window, 1] {
        control.extend_from_slice(&v.to_le_bytes());
    }
    // One entry per 32 KiB frame: the block's 16-byte header, then the
    // bytes as they are.
    let frames = packed.len().div_ceil(0x8000).max(1) as u64;
    let mut table = Vec::new();
    for v in [2u32, frames as u32, 8, 0x28] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    for v in [packed.len() as u64, lzx.len() as u64, 0x8000] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..frames {
        let at = if i == 0 { 0 } else { 16 + i * 0x8000 };
        table.extend_from_slice(&at.to_le_bytes());
    }
    // Section 0: control data, reset table, LZX stream, stored file.
    let mut section0 = Vec::new();
    let mut entries = Vec::new();
    let names: [(&[u8], u64, &[u8]); 5] = [
        (b"::DataSpace/Storage/MSCompressed/ControlData", 0, &control),
        (
            b"::DataSpace/Storage/MSCompressed/Transform/{7FC28940-9D31-11D0-9B27-00A0C91E9C7C}/InstanceData/ResetTable",
            0,
            &table,
        ),
        (b"::DataSpace/Storage/MSCompressed/Content", 0, &lzx),
        (b"/stored.txt", 0, stored),
        (b"/packed.exe", 1, packed),
    ];
    for (name, section, data) in names {
        encint(name.len() as u64, &mut entries);
        entries.extend_from_slice(name);
        encint(section, &mut entries);
        if section == 0 {
            encint(section0.len() as u64, &mut entries);
            section0.extend_from_slice(data);
        } else {
            encint(0, &mut entries);
        }
        encint(data.len() as u64, &mut entries);
    }
    let chunk = 512usize;
    let mut pmgl = b"PMGL".to_vec();
    pmgl.extend_from_slice(&((chunk - 0x14 - entries.len()) as u32).to_le_bytes());
    pmgl.extend_from_slice(&0u32.to_le_bytes());
    pmgl.extend_from_slice(&u32::MAX.to_le_bytes());
    pmgl.extend_from_slice(&u32::MAX.to_le_bytes());
    pmgl.extend_from_slice(&entries);
    pmgl.resize(chunk, 0);
    let mut itsp = b"ITSP".to_vec();
    for v in [
        1u32,
        0x54,
        10,
        chunk as u32,
        2,
        1,
        u32::MAX,
        0,
        0,
        u32::MAX,
        1,
    ] {
        itsp.extend_from_slice(&v.to_le_bytes());
    }
    itsp.resize(0x54, 0);
    let dir_len = (itsp.len() + chunk) as u64;
    let mut f = b"ITSF".to_vec();
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&0x60u32.to_le_bytes());
    f.resize(0x48, 0);
    f.extend_from_slice(&0x60u64.to_le_bytes());
    f.extend_from_slice(&dir_len.to_le_bytes());
    f.extend_from_slice(&(0x60 + dir_len).to_le_bytes());
    f.extend_from_slice(&itsp);
    f.extend_from_slice(&pmgl);
    f.extend_from_slice(&section0);
    f
}

#[test]
fn chm_stored_and_lzx_files() {
    let scan_chm = |c: &[u8], limits| scan(&with_attachment(c), limits);
    let d = Limits::default();
    assert_eq!(scan_chm(&chm(EICAR, b"harmless", 2), d), infected());
    assert_eq!(scan_chm(&chm(b"harmless", b"clean", 2), d), Finding::Clean);
    // Damage anywhere: no panic, and what was readable is scanned.
    let whole = chm(b"harmless", EICAR, 2);
    for cut in (0..whole.len()).step_by(5) {
        let f = scan_chm(&whole[..cut], d);
        assert!(
            f == Finding::Clean || f == infected(),
            "cut at {cut}: {f:?}"
        );
    }
    for at in (0..whole.len()).step_by(3) {
        let mut bad = whole.clone();
        bad[at] ^= 0xa5;
        let _ = scan_chm(&bad, d);
    }
    // Limits: files, declared sizes (a file of 64 GiB).
    let clean = chm(b"harmless", b"clean", 2);
    let one = Limits {
        max_zip_entries: 1,
        ..d
    };
    assert_eq!(scan_chm(&clean, one), Finding::Limit(LIMIT_ENTRIES.into()));
    let at = clean.windows(11).position(|w| w == b"/packed.exe").unwrap() + 11;
    let mut bomb = clean[..at + 2].to_vec();
    // The length's ENCINT, for its one byte: 2 << 35 in six 7-bit groups.
    bomb.extend_from_slice(&[0x82, 0x80, 0x80, 0x80, 0x80, 0]);
    bomb.extend_from_slice(&clean[at + 3..]);
    assert_eq!(scan_chm(&bomb, d), Finding::Limit(LIMIT_OBJECT.into()));
}

/// The LZX section's files as decoded (in a scan, an uncompressed LZX
/// block's bytes are in the CHM as they are, so the verdict alone would
/// not tell).
#[test]
fn chm_lzx_section_across_frames() {
    use super::chm::Directory;
    let packed: Vec<u8> = (0..40_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let data = chm(b"x", &packed, 2);
    let mut r = std::io::Cursor::new(&data);
    let Directory::Files {
        files,
        section1: Some(mut s),
        ..
    } = Directory::read(&mut r, 10).unwrap()
    else {
        panic!("not read");
    };
    let f = files.iter().find(|f| f.section == 1).unwrap();
    assert_eq!(s.seek(&mut r, f.offset).unwrap(), 0);
    let mut out = Vec::new();
    s.file(&mut r, f.length).read_to_end(&mut out).unwrap();
    let differs = out.iter().zip(&packed).position(|(a, b)| a != b);
    assert_eq!((out.len(), differs), (packed.len(), None));
    // In the frame held; back to the first frame (decoded again from the
    // reset point); on to the second.
    for (at, skipped) in [(35_000, 0), (100, 100), (35_000, 35_000 - 0x8000)] {
        assert_eq!(s.seek(&mut r, at).unwrap(), skipped);
        let mut out = Vec::new();
        s.file(&mut r, 100).read_to_end(&mut out).unwrap();
        assert_eq!(out, packed[at as usize..at as usize + 100]);
    }
    // A window past LZX's 2 MiB: the section is not decoded.
    let big = chm(b"x", &packed, 128);
    let dir = Directory::read(&mut std::io::Cursor::new(&big), 10).unwrap();
    assert!(matches!(dir, Directory::Files { section1: None, .. }));
}

/// The ARJ samples in testdata/arj, made with Debian's `arj` 3.10:
/// `arj a -mN mN.arj note.txt doc.txt` for N = 0 (stored) to 4
/// (fastest), note.txt "hello\n" and doc.txt this.
fn arj_doc() -> Vec<u8> {
    let mut doc: Vec<u8> = (0..40)
        .flat_map(|i| format!("pimail arj test line {i}\n").into_bytes())
        .collect();
    doc.extend_from_slice(EICAR);
    doc.push(b'\n');
    doc
}

fn arj_sample(method: u8) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scan/testdata/arj");
    std::fs::read(dir.join(format!("m{method}.arj"))).unwrap()
}

/// What an ARJ archive's members decode to.
fn arj_files(archive: &[u8]) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    super::arj::members(&mut &archive[..], |m| {
        let mut out = Vec::new();
        if m.method == 0 {
            m.data.read_to_end(&mut out)?;
        } else {
            super::arj::ArjDecoder::new(m.data, m.method, m.original).read_to_end(&mut out)?;
        }
        files.push(out);
        Ok(true)
    })
    .unwrap();
    files
}

#[test]
fn arj_methods_0_to_4() {
    for method in 0..=4 {
        let a = arj_sample(method);
        assert_eq!(
            arj_files(&a),
            vec![b"hello\n".to_vec(), arj_doc()],
            "method {method}"
        );
        assert_eq!(
            scan(&with_attachment(&a), Limits::default()),
            infected(),
            "method {method}"
        );
    }
}

#[test]
fn arj_damage_garbling_and_limits() {
    let d = Limits::default();
    let a = arj_sample(1);
    for cut in 0..a.len() {
        let f = scan(&with_attachment(&a[..cut]), d);
        assert!(
            f == Finding::Clean || f == infected(),
            "cut at {cut}: {f:?}"
        );
    }
    for at in 0..a.len() {
        let mut bad = a.clone();
        bad[at] ^= 0xff;
        let _ = scan(&with_attachment(&bad), d);
    }
    // doc.txt's basic header: its first_hdr_size (0x2e) before the name,
    // flags 4 bytes after that, the original size at 16.
    let name = a.windows(8).position(|w| w == b"doc.txt\0").unwrap();
    let header = name - 0x2e;
    assert_eq!(a[header], 0x2e);
    let mut garbled = a.clone();
    garbled[header + 4] |= 0x01;
    assert_eq!(scan(&with_attachment(&garbled), d), Finding::Clean);
    let mut bomb = a.clone();
    bomb[header + 16..header + 20].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    assert_eq!(
        scan(&with_attachment(&bomb), d),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    let one = Limits {
        max_zip_entries: 1,
        ..d
    };
    assert_eq!(
        scan(&with_attachment(&a), one),
        Finding::Limit(LIMIT_ENTRIES.into())
    );
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A SIS (EPOC release 6) built here, in two languages: a condition
/// around a one-file record, then a record with a file per language.
/// `files` are the three files' contents, zlib-compressed unless
/// `stored`; `declared` overrides the first one's original length.
fn sis(files: [&[u8]; 3], stored: bool, declared: Option<u32>) -> Vec<u8> {
    let data: Vec<Vec<u8>> = files
        .iter()
        .map(|f| if stored { f.to_vec() } else { zlib(f) })
        .collect();
    let mut h = vec![0u8; 100];
    for (at, v) in [(0, 0x0123_4567u32), (4, 0x1000_3a12), (8, 0x1000_0419)] {
        h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    h[18] = 2; // languages
    h[20] = 4; // records
    h[36] = if stored { 8 } else { 0 };
    h[52] = 100; // file records
    let words = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|w| w.to_le_bytes()).collect() };
    let mut records = words(&[3, 4, 0]); // if, a 4-byte condition
    let single = records.len();
    records.extend(words(&[0; 12]));
    records.extend(words(&[6])); // end if
    let multi = records.len();
    records.extend(words(&[1; 15]));
    let base = (100 + records.len()) as u32;
    let mut at = base;
    let mut put = |rec: usize, i: usize, copies: usize, records: &mut Vec<u8>| {
        let lengths = rec + 28;
        let (len, orig) = (data[i].len() as u32, files[i].len() as u32);
        let orig = if i == 0 {
            declared.unwrap_or(orig)
        } else {
            orig
        };
        for (field, v) in [(0, len), (1, at), (2, orig)] {
            let o = lengths + 4 * copies * field + 4 * (i.max(1) - 1);
            records[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        at += len;
    };
    records[single + 4..single + 8].copy_from_slice(&0u32.to_le_bytes());
    put(single, 0, 1, &mut records);
    records[multi + 4..multi + 8].copy_from_slice(&0u32.to_le_bytes());
    put(multi, 1, 2, &mut records);
    put(multi, 2, 2, &mut records);
    h.extend(records);
    for d in &data {
        h.extend_from_slice(d);
    }
    h
}

#[test]
fn sis_files_compressed_and_stored() {
    let d = Limits::default();
    let s = |f, stored, declared| scan(&with_attachment(&sis(f, stored, declared)), d);
    // In the second language's file of the multi-language record.
    assert_eq!(s([b"harmless", b"x", EICAR], false, None), infected());
    assert_eq!(s([EICAR, b"x", b"y"], false, None), infected());
    assert_eq!(s([b"harmless", b"x", b"y"], true, None), Finding::Clean);
    assert_eq!(s([b"harmless", b"x", EICAR], true, None), infected());
    // Damage: no panic, what was readable is scanned.
    let whole = sis([b"harmless", b"x", EICAR], false, None);
    for cut in 0..whole.len() {
        let f = scan(&with_attachment(&whole[..cut]), d);
        assert!(
            f == Finding::Clean || f == infected(),
            "cut at {cut}: {f:?}"
        );
    }
    for at in 0..whole.len() {
        let mut bad = whole.clone();
        bad[at] ^= 0xff;
        let _ = scan(&with_attachment(&bad), d);
    }
    // Limits: files, a declared original length past the object limit.
    let two = Limits {
        max_zip_entries: 2,
        ..d
    };
    assert_eq!(
        scan(&with_attachment(&whole), two),
        Finding::Limit(LIMIT_ENTRIES.into())
    );
    assert_eq!(
        s([b"harmless", b"x", b"y"], false, Some(1 << 31)),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

/// An installed program with EICAR in it (compressed by the installers,
/// so never in the attachment's bytes).
fn installed_program() -> Vec<u8> {
    let mut file = b"MZ installed program ".repeat(40);
    file.extend_from_slice(EICAR);
    file.extend_from_slice(&[0x90; 300]);
    file
}

fn installshield_samples() -> Vec<(&'static str, Vec<u8>)> {
    use ishield::tests::{is_cabinet, msi_stream, pe, setup_stream};
    let file = installed_program();
    let (hdr, cab) = is_cabinet(&[("program.exe", file.len() as u64, &file)], &[(0, 100)]);
    let stream = setup_stream(&[
        ("setup.ini", b"[Startup]\r\n"),
        ("data1.hdr", &hdr),
        ("data1.cab", &cab),
    ]);
    let msi = msi_stream(&[("0x0409.ini", b"[0x0409]"), ("program.exe", &file)], 2);
    vec![("cabinet", pe(&stream)), ("msi", pe(&msi))]
}

#[test]
fn installshield_installer() {
    use ishield::tests::{is_cabinet, pe, setup_stream};
    let lim = Limits::default();
    for (name, f) in installshield_samples() {
        assert!(!f.windows(EICAR.len()).any(|w| w == EICAR), "{name}");
        assert_eq!(scan(&with_attachment(&f), lim), infected(), "{name}");
        // Truncated anywhere: what came before is scanned, no error.
        for cut in (0x400..f.len()).step_by(37) {
            scan(&with_attachment(&f[..cut]), lim);
        }
        // Damaged bytes through the overlay.
        for step in [7, 31, 101] {
            let mut bad = f.clone();
            for b in bad.iter_mut().skip(0x410).step_by(step) {
                *b ^= 0xa5;
            }
            scan(&with_attachment(&bad), lim);
        }
        // Two files in the MSI stream, three in the setup stream and one
        // in the cabinet: the entry limit counts each.
        let one = Limits {
            max_zip_entries: 1,
            ..lim
        };
        assert_eq!(
            scan(&with_attachment(&f), one),
            Finding::Limit(LIMIT_ENTRIES.into()),
            "{name}"
        );
    }
    // A cabinet file declared past the object limit: a verdict before
    // inflating.
    let file = installed_program();
    let (hdr, cab) = is_cabinet(&[("program.exe", 0x7fff_ffff, &file)], &[]);
    let f = pe(&setup_stream(&[("data1.hdr", &hdr), ("data1.cab", &cab)]));
    assert_eq!(
        scan(&with_attachment(&f), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
    // A bomb declared small: what inflates past the object limit is a
    // verdict, not held.
    let zeros = vec![0u8; 2 << 20];
    let (hdr, cab) = is_cabinet(&[("zeros.bin", 100, &zeros)], &[]);
    let f = pe(&setup_stream(&[("data1.hdr", &hdr), ("data1.cab", &cab)]));
    let small = Limits {
        max_object_size: 1 << 20,
        ..lim
    };
    assert_eq!(
        scan(&with_attachment(&f), small),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

/// An AutoIt executable as Aut2Exe 3.2 writes one: the interpreter (a
/// stub here), the script's data as its overlay.
fn autoit_exe(version: autoit::Version, records: &[Vec<u8>]) -> Vec<u8> {
    let mut pe = pe_stub(1024);
    pe.extend(autoit::tests::encode_script(version, records));
    pe
}

#[test]
fn autoit_compiled_script() {
    use autoit::Version;
    use autoit::tests::{encode_file, encode_record};
    let lim = Limits::default();
    let mut installed = b"MZ installed program ".repeat(30);
    installed.extend_from_slice(EICAR);
    let script = b"FileInstall(\"clam.exe\", @TempDir & \"\\clam.exe\")".repeat(10);
    for version in [Version::Ea05, Version::Ea06] {
        for compressed in [true, false] {
            let exe = autoit_exe(
                version,
                &[
                    encode_file(version, ">>>AUTOIT SCRIPT<<<", &script, true),
                    encode_file(version, "C:\\clam.exe", &installed, compressed),
                ],
            );
            let what = format!("{version:?}, compressed {compressed}");
            assert!(!exe.windows(EICAR.len()).any(|w| w == EICAR), "{what}");
            assert_eq!(scan(&with_attachment(&exe), lim), infected(), "{what}");
            // Truncated: what is there is scanned, no error.
            for cut in [exe.len() - 30, 1100, 1024 + 50] {
                assert_eq!(
                    scan(&with_attachment(&exe[..cut]), lim),
                    Finding::Clean,
                    "{what}, cut at {cut}"
                );
            }
            // Damaged bytes through the records: no panic, no error.
            for step in [7, 31, 101] {
                let mut bad = exe.clone();
                for b in bad.iter_mut().skip(1024 + 40).step_by(step) {
                    *b ^= 0xa5;
                }
                scan(&with_attachment(&bad), lim);
            }
            // Two files: the entry limit counts each.
            let one = Limits {
                max_zip_entries: 1,
                ..lim
            };
            assert_eq!(
                scan(&with_attachment(&exe), one),
                Finding::Limit(LIMIT_ENTRIES.into()),
                "{what}"
            );
        }
        // Declared sizes past the object limit, compressed or stored: a
        // verdict, before anything is decoded.
        let mut bomb = match version {
            Version::Ea05 => b"EA05".to_vec(),
            Version::Ea06 => b"EA06".to_vec(),
        };
        bomb.extend_from_slice(&0x7fff_0000u32.to_be_bytes());
        bomb.extend_from_slice(&[0x55; 64]);
        for record in [
            encode_record(version, "C:\\bomb", true, &bomb, bomb.len() as u32),
            encode_record(version, "C:\\big", false, b"short", 0x7fff_0000),
        ] {
            assert_eq!(
                scan(&with_attachment(&autoit_exe(version, &[record])), lim),
                Finding::Limit(LIMIT_OBJECT.into()),
                "{version:?}"
            );
        }
    }
    // In a resource of a UPX-packed interpreter: found in UPX's image.
    let mut img: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    img.extend(autoit::tests::encode_script(
        Version::Ea06,
        &[encode_file(Version::Ea06, "C:\\clam.exe", &installed, true)],
    ));
    let packed = upx::tests::compress(upx::Nrv::E, 32, &img);
    let pe = upx_packed(8, &packed, img.len() as u32, upx::adler32(&img));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
}

/// An ASPack 2.12-packed PE: `image()` compressed at 0x1000, the stub at
/// 0x2000 (entry point one byte in).
fn aspack_packed() -> Vec<u8> {
    let img = image();
    let packed = aspack::tests::compress(&img);
    let stub = aspack::tests::stub_bytes(&[(0x1000, img.len() as u32)]);
    peimage::tests::pe(0x2001, &[(0x1000, &packed), (0x2000, &stub)])
}

#[test]
fn aspack_packed_executable() {
    let lim = Limits::default();
    let pe = aspack_packed();
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // Truncated (the stub's tables cut off) and damaged: no panic.
    scan(&with_attachment(&pe[..pe.len() - 0x300]), lim);
    let mut damaged = pe.clone();
    for b in damaged[0x300..0x900].iter_mut().step_by(61) {
        *b ^= 0x5a;
    }
    scan(&with_attachment(&damaged), lim);
    // A declared image size past the object limit is a verdict, before
    // any allocation.
    let mut huge = pe.clone();
    huge[0x58 + 56..0x58 + 60].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert_eq!(
        scan(&with_attachment(&huge), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

/// A Petite 2.2-packed PE: `image()` compressed at 0x1000, moved to
/// 0x2000 by a record, decompressed to 0x3000; the stub at 0x4000.
fn petite_packed() -> Vec<u8> {
    let img = image();
    let packed = petite::tests::compress(&img);
    let words = packed.len().div_ceil(4) as u32;
    let mut stub = vec![0u8; 0x400];
    let code = petite::tests::stub_code(0x40_4000);
    stub[0x40..0x40 + code.len()].copy_from_slice(&code);
    let records = [
        0x8000_0000 | words,
        0x1000 + (words - 1) * 4,
        0x2000 + (words - 1) * 4,
        0x2000,
        img.len() as u32,
        0x3000,
        0,
        0,
    ];
    for (i, r) in records.iter().enumerate() {
        stub[0x1b8 + 4 * i..0x1bc + 4 * i].copy_from_slice(&r.to_le_bytes());
    }
    peimage::tests::pe(
        0x4040,
        &[
            (0x1000, &packed),
            (0x2000, &[]),
            (0x3000, &[]),
            (0x4000, &stub),
        ],
    )
}

#[test]
fn petite_packed_executable() {
    let lim = Limits::default();
    let pe = petite_packed();
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // Truncated (the stub's records cut off) and damaged: no panic.
    scan(&with_attachment(&pe[..pe.len() - 0x300]), lim);
    let mut damaged = pe.clone();
    for b in damaged[0x280..].iter_mut().step_by(53) {
        *b ^= 0x5a;
    }
    scan(&with_attachment(&damaged), lim);
    let mut huge = pe.clone();
    huge[0x58 + 56..0x58 + 60].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert_eq!(
        scan(&with_attachment(&huge), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

/// A self-extractor's zip compressed with the program is found in the
/// unpacked image.
#[test]
fn zip_in_an_unpacked_image() {
    let mut img = vec![0x90u8; 300];
    img.extend_from_slice(&zip(&[("a.com", EICAR)]));
    img.extend_from_slice(&[0; 200]);
    let packed = petite::tests::compress(&img);
    let mut stub = vec![0u8; 0x400];
    let code = petite::tests::stub_code(0x40_3000);
    stub[0x40..0x40 + code.len()].copy_from_slice(&code);
    for (i, r) in [0x1000, img.len() as u32, 0x2000, 0].iter().enumerate() {
        stub[0x1b8 + 4 * i..0x1bc + 4 * i].copy_from_slice(&r.to_le_bytes());
    }
    let pe = peimage::tests::pe(0x3040, &[(0x1000, &packed), (0x2000, &[]), (0x3000, &stub)]);
    assert_eq!(scan(&with_attachment(&pe), Limits::default()), infected());
}

/// A MEW-packed PE as MEW 11 SE lays one out: the stub in the headers
/// (at 0x180), an empty first section (0x1000, where `payload` goes), the
/// table and the compressed data in the second (0x3000), whose last
/// bytes are the entry point's jump to the stub. `image_size` may lie.
fn mew_packed(packed: &[u8], image_size: u32) -> Vec<u8> {
    let mut pe = vec![0u8; 0x200];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c] = 0x40;
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    let put =
        |pe: &mut Vec<u8>, at: usize, v: u32| pe[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut pe, 0x44, 0x0002_014c);
    put(&mut pe, 0x54, 0x010f_00e0);
    put(&mut pe, 0x58, 0x10b);
    let mut table = Vec::new();
    for v in [0x40_0100u32, 0x40_1000, 0x40_1000] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    table.extend_from_slice(packed);
    table.extend_from_slice(&[0; 4]);
    let entry = 0x3000 + table.len() as u32;
    table.push(0xe9);
    table.extend_from_slice(&0x180u32.wrapping_sub(entry + 5).to_le_bytes());
    put(&mut pe, 0x58 + 16, entry);
    put(&mut pe, 0x58 + 28, 0x40_0000);
    put(&mut pe, 0x58 + 32, 0x1000);
    put(&mut pe, 0x58 + 36, 0x200);
    put(&mut pe, 0x58 + 56, image_size);
    put(&mut pe, 0x58 + 60, 0x200);
    let sections = 0x58 + 0xe0;
    pe[sections..sections + 3].copy_from_slice(b"MEW");
    put(&mut pe, sections + 8, 0x2000);
    put(&mut pe, sections + 12, 0x1000);
    put(&mut pe, sections + 40 + 8, 0x1000);
    put(&mut pe, sections + 40 + 12, 0x3000);
    put(&mut pe, sections + 40 + 16, table.len() as u32);
    put(&mut pe, sections + 40 + 20, 0x200);
    let stub = mew::tests::stub(0x40_3000);
    pe[0x180..0x180 + stub.len()].copy_from_slice(&stub);
    pe.extend_from_slice(&table);
    pe
}

#[test]
fn mew_packed_executable() {
    let img = image();
    let lim = Limits::default();
    let packed = mew::tests::compress(&img);
    let pe = mew_packed(&packed, 0x4000);
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // A self-extractor's zip in the image (here gzip in zip, so that
    // EICAR shows only once both are opened).
    let mut sfx = b"MZ self-extractor code ".repeat(20);
    sfx.extend_from_slice(&zip(&[("e.gz", &gzip(EICAR))]));
    sfx.extend_from_slice(&[0; 100]);
    let pe_sfx = mew_packed(&mew::tests::compress(&sfx), 0x4000);
    assert_eq!(scan(&with_attachment(&pe_sfx), lim), infected());
    // Truncated: the stream ends early (or the jump is gone), what was
    // decoded is scanned, no error.
    for cut in [pe.len() - 3, 0x200 + packed.len() / 2, 0x210] {
        assert_eq!(scan(&with_attachment(&pe[..cut]), lim), Finding::Clean);
    }
    // Damaged bytes anywhere in the packed data: no panic, no error.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let mut bad = pe.clone();
        for _ in 0..3 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = 0x20c + (rng as usize) % packed.len();
            bad[at] ^= (rng >> 32) as u8 | 1;
        }
        scan(&with_attachment(&bad), lim);
    }
    // An image past the object limit is a verdict, before any allocation.
    let pe = mew_packed(&packed, 0x7fff_0000);
    assert_eq!(
        scan(&with_attachment(&pe), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn mew_random_packed_data(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..400)) {
        let pe = mew_packed(&data, 0x4000);
        scan(&with_attachment(&pe), Limits::default());
    }
}

/// A Upack-packed PE as Upack 0.39 lays one out, reduced to what its stub
/// reads: an empty first section (0x1000, where `payload` goes); in the
/// second (0x3000) the entry point's code, the copy at its jump's target
/// (0x3010), the jump to the decoder (0x3030) whose code shifts by 5
/// (0x3040), the copied block (three words, the last the compressed
/// data's address) and the output's bounds after it, then the data.
/// `image_size` may lie.
fn upack_packed(packed: &[u8], len: u32, image_size: u32) -> Vec<u8> {
    let mut pe = vec![0u8; 0x200];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c] = 0x40;
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut pe, 0x44, 0x0002_014c);
    put(&mut pe, 0x54, 0x010f_00e0);
    put(&mut pe, 0x58, 0x10b);
    put(&mut pe, 0x58 + 16, 0x3000);
    put(&mut pe, 0x58 + 28, 0x40_0000);
    put(&mut pe, 0x58 + 32, 0x1000);
    put(&mut pe, 0x58 + 36, 0x200);
    put(&mut pe, 0x58 + 56, image_size);
    put(&mut pe, 0x58 + 60, 0x200);
    let mut code = vec![0u8; 0xb0];
    code[..12].copy_from_slice(&[0xbe, 0, 0, 0, 0, 0xad, 0x50, 0xff, 0x76, 0x34, 0xeb, 4]);
    code[0x10..0x18].copy_from_slice(&[0xff, 0x76, 0x38, 0xad, 0x50, 0x8b, 0x3e, 0xbe]);
    put(&mut code, 0x18, 0x40_3060);
    code[0x1c..0x21].copy_from_slice(&[0x6a, 3, 0x59, 0xf3, 0xa5]);
    code[0x30..0x36].copy_from_slice(&[0x8b, 0x7e, 0x0c, 0x57, 0x51, 0xe9]);
    put(&mut code, 0x36, 0x3040 - 0x303a);
    code[0x48..0x4b].copy_from_slice(&[0xc1, 0xed, 5]);
    put(&mut code, 0x68, 0x40_30b0);
    put(&mut code, 0x6c + 0x0c, 0x40_1000);
    put(&mut code, 0x6c + 0x34, 0x40_1000 + len);
    code.extend_from_slice(packed);
    let sections = 0x58 + 0xe0;
    put(&mut pe, sections + 8, 0x2000);
    put(&mut pe, sections + 12, 0x1000);
    put(&mut pe, sections + 40 + 8, 0x2000);
    put(&mut pe, sections + 40 + 12, 0x3000);
    put(&mut pe, sections + 40 + 16, code.len() as u32);
    put(&mut pe, sections + 40 + 20, 0x200);
    pe.extend_from_slice(&code);
    pe
}

#[test]
fn upack_packed_executable() {
    let img = image();
    let lim = Limits::default();
    let packed = upack::tests::compress(&img);
    let len = img.len() as u32;
    let pe = upack_packed(&packed, len, 0x6000);
    assert!(!pe.windows(EICAR.len()).any(|w| w == EICAR));
    assert_eq!(scan(&with_attachment(&pe), lim), infected());
    // Truncated: the stream ends early, what was decoded is scanned.
    for cut in [0x2b0 + packed.len() / 2, 0x2b0, 0x20b, 0x205] {
        assert_eq!(scan(&with_attachment(&pe[..cut]), lim), Finding::Clean);
    }
    // An output bound past the image: not taken for Upack's.
    let pe_far = upack_packed(&packed, 0x10_0000, 0x6000);
    assert_eq!(scan(&with_attachment(&pe_far), lim), Finding::Clean);
    // Damaged bytes anywhere in the packed data: no panic, no error.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut bad = pe.clone();
        for _ in 0..3 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = 0x2b0 + (rng as usize) % packed.len();
            bad[at] ^= (rng >> 32) as u8 | 1;
        }
        scan(&with_attachment(&bad), lim);
    }
    // An image past the object limit is a verdict, before any allocation.
    let pe = upack_packed(&packed, len, 0x7fff_0000);
    assert_eq!(
        scan(&with_attachment(&pe), lim),
        Finding::Limit(LIMIT_OBJECT.into())
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn upack_random_packed_data(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..400)) {
        let pe = upack_packed(&data, 0x1000, 0x6000);
        scan(&with_attachment(&pe), Limits::default());
    }
}
