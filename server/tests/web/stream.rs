//! Streaming and robustness: chunking never changes the output, no input panics, long lines
//! stay bounded, a 10 MB log renders in one pass.

use proptest::prelude::*;
use server::web::ansi::{MAX_LINE, Renderer, render};

fn streamed(log: &[u8], chunks: &[usize], first_line: usize) -> String {
    let mut renderer = Renderer::new(first_line);
    let mut out = String::new();
    let mut rest = log;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        out.push_str(&renderer.push(chunk));
        rest = tail;
    }
    out.push_str(&renderer.finish());
    out
}

/// `render`'s output without the durations it fills into summaries (streaming cannot).
fn without_summary_durations(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(at) = rest.find("<span class=\"duration\">") {
        let open_end = at + "<span class=\"duration\">".len();
        out.push_str(&rest[..open_end]);
        rest = &rest[open_end..];
        rest = &rest[rest.find("</span>").unwrap()..];
    }
    out.push_str(rest);
    out
}

/// Bytes that are mostly the interesting ones: escapes, brackets, digits, `\r`, markers.
fn log_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\x1b[".to_vec()),
        Just(b"\x1b]".to_vec()),
        Just(b"\r\x1b[0K".to_vec()),
        Just(b"section_start:1:a".to_vec()),
        Just(b"section_start:2:b[collapsed=true]".to_vec()),
        Just(b"section_end:3:a".to_vec()),
        Just(b"section_end:4:b".to_vec()),
        Just(b"38;5;".to_vec()),
        Just(b"\xe2\x82\xac".to_vec()),
        prop::sample::select(b"\n\r\x1b[;:0123456789mK<>&\"' ab\x07\\\xff".to_vec()).prop_map(|b| vec![b]),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn chunking_does_not_change_output(log in log_bytes(), chunks in prop::collection::vec(1usize..9, 1..5), first in 1usize..1000) {
        let whole = render(&log, first);
        let bytewise = streamed(&log, &[1], first);
        prop_assert_eq!(&bytewise, &streamed(&log, &chunks, first));
        prop_assert_eq!(without_summary_durations(&whole.html), bytewise);
    }

    #[test]
    fn arbitrary_bytes_render_balanced(log in prop::collection::vec(any::<u8>(), 0..512)) {
        let rendered = render(&log, 1);
        prop_assert_eq!(rendered.html.matches("<details").count(), rendered.html.matches("</details>").count());
        prop_assert!(!rendered.html.contains("<script"));
    }

    #[test]
    fn structured_logs_render_balanced(log in log_bytes()) {
        let rendered = render(&log, 1);
        prop_assert_eq!(rendered.html.matches("<details").count(), rendered.html.matches("</details>").count());
        prop_assert_eq!(rendered.lines, log.split(|&b| b == b'\n').count() - usize::from(log.ends_with(b"\n") || log.is_empty()));
    }
}

#[test]
fn long_line_is_cut_into_bounded_pieces() {
    let mut log = vec![b'x'; MAX_LINE * 2 + 10];
    log[MAX_LINE - 1] = 0xe2; // a '€' straddling the first cut stays whole
    log[MAX_LINE] = 0x82;
    log[MAX_LINE + 1] = 0xac;
    log.extend_from_slice(b"\nnext\n");
    let rendered = render(&log, 1);
    assert_eq!(rendered.lines, 2);
    assert_eq!(rendered.html.matches("<div class=\"line\"").count(), 4, "three pieces and the next line");
    assert_eq!(rendered.html.matches("id=\"L1\"").count(), 1);
    assert!(rendered.html.contains("id=\"L2\""));
    assert!(rendered.html.contains('€') && !rendered.html.contains('\u{fffd}'));
}

#[test]
fn long_progress_line_keeps_its_last_state() {
    let mut log = Vec::new();
    for i in 0..20_000 {
        log.extend_from_slice(format!("\x1b[32mprogress {i}%\x1b[0m\r").as_bytes());
    }
    log.extend_from_slice(b"\x1b[1mdone\n");
    let rendered = render(&log, 1);
    assert_eq!(rendered.html, "<div class=\"line\" id=\"L1\"><a class=\"ln\" href=\"#L1\">1</a><span class=\"bold\">done</span></div>\n");
}

#[test]
fn ten_megabytes_render_in_one_pass() {
    let line = "\x1b[0Ksection_start:1:s\r\x1b[0K\x1b[36mstep\x1b[0m <b>&\n\x1b[31merror\x1b[0m: something \x1b[1mhappened\x1b[0m 50%\r100%\n\x1b[0Ksection_end:2:s\r\x1b[0K\n";
    let log = line.repeat(10 * 1024 * 1024 / line.len() + 1);
    let rendered = render(log.as_bytes(), 1);
    assert_eq!(rendered.lines, log.matches('\n').count());
    assert_eq!(rendered.sections.len(), log.matches("section_start").count());
}

#[test]
fn pending_bytes_are_the_incomplete_line() {
    let mut renderer = Renderer::new(1);
    assert!(renderer.push(b"one\ntw").contains("one"));
    assert_eq!((renderer.pending(), renderer.next_line()), (2, 2));
    assert!(renderer.push(b"o\n").contains("id=\"L2\""));
    assert_eq!(renderer.pending(), 0);
    assert_eq!(renderer.finish(), "");
    assert_eq!(renderer.push(b"after finish\n"), "");
}
