//! Streaming and robustness: chunking never changes the output, no input panics, long lines
//! stay bounded, a 10 MB log renders in one pass.

use proptest::prelude::*;
use server::web::ansi::{LineCounter, MAX_LINE, Renderer, render};

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

/// `render`'s output without what it fills in once sections ended (streaming cannot): the
/// durations of summaries and the `stopped` class.
fn without_summary_durations(html: &str) -> String {
    let html = html.replace("<details class=\"section stopped\"", "<details class=\"section\"");
    let mut out = String::new();
    let mut rest = html.as_str();
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
        Just(b"\x1b[0Ksection_end:5:a\r\x1b[0K\n".to_vec()),
        Just(b"section_start:6:b[collapsed=true]\r\x1b[0Kh\n".to_vec()),
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
    }

    /// The counter behind `line_at` gives the numbers the renderer gives, however the bytes
    /// arrive, and the numbers have no gap.
    #[test]
    fn the_line_counter_agrees_with_the_renderer(log in log_bytes(), chunks in prop::collection::vec(1usize..9, 1..5), first in 1usize..50) {
        let html = render(&log, first).html;
        let numbers: Vec<usize> = html.match_indices("<div class=\"line\" id=\"L").map(|(at, m)| {
            let rest = &html[at + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        }).collect();
        prop_assert_eq!(&numbers, &(first..first + numbers.len()).collect::<Vec<_>>(), "contiguous numbers");
        let mut counter = LineCounter::new();
        let mut rest = &log[..];
        for &size in chunks.iter().cycle() {
            if rest.is_empty() { break; }
            let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
            counter.push(chunk);
            rest = tail;
        }
        prop_assert_eq!(counter.finish(), numbers.len());
        let mut whole = LineCounter::new();
        whole.push(&log);
        prop_assert_eq!(whole.finish(), numbers.len());
    }

    /// Log search reads the same lines, numbers and all.
    #[test]
    fn lines_mode_numbers_lines_as_the_page_does(log in log_bytes()) {
        let html = render(&log, 1).html;
        let mut lines = Renderer::lines(1);
        lines.push(&log);
        lines.finish();
        let mut numbers: Vec<usize> = lines.take_lines().iter().map(|l| l.number).collect();
        numbers.dedup();
        prop_assert_eq!(numbers.len(), html.matches("<div class=\"line\" id=\"L").count());
    }
}

/// Lines longer than the renderer's buffer (progress bars and plain long lines), around end
/// markers: the counter still agrees.
#[test]
fn the_line_counter_agrees_on_long_lines() {
    let end = "\x1b[0Ksection_end:1:a\r\x1b[0K";
    let cases = [
        format!("{}\r{end}\nnext\n", "x".repeat(MAX_LINE + 10)),
        format!("{}{end}\nnext\n", "x".repeat(MAX_LINE + 10)),
        format!("{}\r{end}\n{end}\n", "p\r".repeat(MAX_LINE)),
        format!("{end}{}\n", "\r".repeat(MAX_LINE * 2)),
        format!("a\n{end}\n{end}{end}\n\x1b[0K{end}x\nb"),
    ];
    for log in cases {
        let expected = render(log.as_bytes(), 1).html.matches("id=\"L").count();
        for size in [1, 7, 4096, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, log.len()] {
            let mut counter = LineCounter::new();
            for chunk in log.as_bytes().chunks(size) {
                counter.push(chunk);
            }
            assert_eq!(counter.finish(), expected, "chunks of {size} of {:?}…", &log[..log.len().min(40)]);
        }
    }
}

/// Lines carry the time of the mark at or before their first byte, once per change; a range
/// starting inside the log counts offsets from there.
#[test]
fn lines_carry_time_marks() {
    let mut r = Renderer::recording(10).starting_at(100);
    r.add_times([(90, 1_000), (104, 2_000), (104, 2_500), (300, 9_000)]);
    let html = r.push(b"one\ntwo\nthree\n");
    assert!(html.contains("id=\"L10\" data-t=\"1000\""), "{html}");
    assert!(html.contains("id=\"L11\" data-t=\"2500\""), "the last of equal offsets: {html}");
    assert!(html.contains("id=\"L12\"><a"), "unchanged time, no attribute: {html}");
    let mut lines = Renderer::lines(1).starting_at(100);
    lines.push(b"one\ntwo\n");
    let offsets: Vec<u64> = lines.take_lines().iter().map(|l| l.offset).collect();
    assert_eq!(offsets, [100, 104]);
}

/// A section the script stopped in is marked, and opened when asked (a failed job's page);
/// a range that ends inside a section does not stop it.
#[test]
fn stopped_sections_are_marked_and_opened_on_request() {
    let log = b"section_start:1:step_script\r\x1b[0Kscript\nsection_start:2:deps[collapsed=true]\r\x1b[0Kdeps\nboom\nsection_end:5:step_script\r\x1b[0K\nERROR: Job failed\n";
    let mut r = Renderer::recording(1);
    let mut html = r.push(log);
    html.push_str(&r.finish());
    assert!(html.contains("<i class=\"section-end\" data-stopped=\"true\"></i>"), "{html}");
    let closed = r.fill(&html, false);
    assert!(closed.contains("<details class=\"section stopped\" data-name=\"deps\">"), "{closed}");
    assert!(closed.contains("<details class=\"section\" data-name=\"step_script\" open>"), "{closed}");
    assert!(closed.contains("<span class=\"duration\">4s</span>"), "{closed}");
    let opened = r.fill(&html, true);
    assert!(opened.contains("<details class=\"section stopped\" data-name=\"deps\" open>"), "{opened}");
    let mut r = Renderer::recording(1);
    let mut html = r.push(&log[..60]);
    html.push_str(&r.finish_range());
    assert!(!r.fill(&html, true).contains("stopped"), "cut, not stopped");
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
    assert_eq!(rendered.lines, log.matches('\n').count() - log.matches("section_end").count(), "end marker lines take no number");
    assert_eq!(rendered.sections.len(), log.matches("section_start").count());
    let mut counter = LineCounter::new();
    counter.push(log.as_bytes());
    assert_eq!(counter.numbered(), rendered.lines);
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
