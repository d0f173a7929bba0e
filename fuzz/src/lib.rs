//! Shared by the fuzz targets. `props.rs` is also included by `tests/fuzz_corpus.rs`.
pub mod props;
