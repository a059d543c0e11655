//! What the server shows to people: job logs rendered as HTML ([`ansi`]) and the
//! server-rendered pages ([`pages`]). Pure functions from bytes and plain data to strings: no
//! I/O, no store, no clock; `server` maps store rows to these inputs and serves the results.

pub mod ansi;
pub mod job;
pub mod pages;
mod sgr;

pub use ansi::{Rendered, Renderer, SectionInfo, render, strip};
