#![no_main]
//! See fuzz/src/props.rs for the input layout and the property.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) =
        blast_fuzz::props::check_target("response_parser", data, blast_fuzz::skip_known_from_env())
    {
        panic!("property broken: {e}");
    }
});
