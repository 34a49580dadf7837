//! Sources: where events come from. Files only for now ([`file`]), with the pieces they use:
//! [`multiline`] joining and the [`kubernetes`] container-log shorthand.

pub mod file;
pub mod kubernetes;
pub mod multiline;
