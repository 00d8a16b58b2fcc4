#![no_main]
libfuzzer_sys::fuzz_target!(|line: &[u8]| {
    let _ = pimail::smtp::command::parse(line);
});
