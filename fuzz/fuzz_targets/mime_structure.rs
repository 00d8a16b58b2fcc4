#![no_main]
// Scanning, encoding, decoding and rendering any message never panics, and
// the stored form decodes to what was encoded.
libfuzzer_sys::fuzz_target!(|msg: &[u8]| {
    use pimail::message::{MessageMeta, ScanLimits, StructureScanner, render_bodystructure, render_envelope};
    let mut s = StructureScanner::new(ScanLimits::default());
    s.feed(msg);
    let meta = s.finish();
    let encoded = meta.encode();
    let decoded = MessageMeta::decode(&encoded).expect("own encoding decodes");
    assert_eq!(decoded, meta);
    let mut out = Vec::new();
    render_bodystructure(&meta.root, true, &mut out);
    if let Some(env) = &meta.root.envelope {
        render_envelope(env, &mut out);
    }
    let _ = MessageMeta::decode(msg);
});
