//! Tests of `server::web`: log rendering and pages.

mod ansi;
mod pages;
mod stream;

/// Renders a log from line 1 and returns its HTML, for snapshots.
fn html(log: &str) -> String {
    server::web::render(log.as_bytes(), 1).html
}
