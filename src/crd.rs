//! The two custom resources (filled in by the foundation work).
