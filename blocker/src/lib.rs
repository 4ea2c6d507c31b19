//! Palisade blocker library (work in progress in this commit: see issue 2).
