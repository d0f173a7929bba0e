//! Shared by the fuzz targets. `props.rs` is also included by `tests/fuzz_corpus.rs`.
pub mod props;

/// BLAST_FUZZ_SKIP_KNOWN is set: fuzz past the known head re-scan bug until its fix lands.
pub fn skip_known_from_env() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("BLAST_FUZZ_SKIP_KNOWN").is_some())
}
