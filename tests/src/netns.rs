//! (being written: see tests/src/lib.rs)
