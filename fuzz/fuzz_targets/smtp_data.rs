#![no_main]
// DATA decoding must not depend on how the input is split into reads.
libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    use pimail::smtp::data::DotDecoder;
    let split = input.first().map_or(1, |b| *b as usize % 17 + 1);
    let (mut a, mut b) = (DotDecoder::new(), DotDecoder::new());
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    let used_a = a.decode(input, &mut out_a);
    let mut used_b = 0;
    for piece in input.chunks(split) {
        used_b += b.decode(piece, &mut out_b);
        if b.is_done() {
            break;
        }
    }
    assert_eq!((used_a, &out_a, a.is_done(), a.bare_line_ending), (used_b, &out_b, b.is_done(), b.bare_line_ending));
});
