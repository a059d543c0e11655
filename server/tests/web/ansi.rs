//! ANSI and section rendering, snapshotted: read the `.snap` files, they are the spec.

use insta::assert_snapshot;
use server::web::{SectionInfo, render, strip};

use crate::html;

#[test]
fn colours_and_reset() {
    assert_snapshot!(html(
        "plain \x1b[31mred\x1b[0m plain \x1b[1;32mbold green\x1b[22m green\x1b[m\n\x1b[94mbright blue\x1b[39m default\n"
    ));
}

#[test]
fn style_carries_across_lines() {
    assert_snapshot!(html("\x1b[33myellow\nstill yellow\x1b[0m\nplain\n"));
}

#[test]
fn extended_colours() {
    assert_snapshot!(html(
        "\x1b[38;5;196mcube red\x1b[0m \x1b[38;5;3mpalette 3\x1b[0m \x1b[48;5;240mgrey bg\x1b[0m\n\x1b[38;2;255;128;0mtruecolor\x1b[0m \x1b[38:2::1:2:3mcolon form\x1b[0m\n"
    ));
}

#[test]
fn attribute_combinations() {
    assert_snapshot!(html("\x1b[1;3;4;9;31;47mall\x1b[23;24;29m bold only\x1b[0m \x1b[2mfaint\x1b[0m \x1b[7minverse\x1b[27m\n"));
}

#[test]
fn hostile_text_is_escaped() {
    assert_snapshot!(html(
        "<script>alert(1)</script>\n\"><img src=x onerror=alert(1)>\njavascript:alert('x') & &amp;\n\x1b[31m<b>red tag</b>\x1b[0m\n"
    ));
}

#[test]
fn escape_sequences_cannot_inject_attributes() {
    let out =
        html("\x1b[38;2;1;2;3;\"onclick=alert(1)\x1b[0m\n\x1b[31\"><script>x</script>m\n\x1b]8;;javascript:alert(1)\x07link\x1b]8;;\x07\n");
    assert!(!out.contains("onclick=\""), "{out}");
    assert!(!out.contains("<script"), "{out}");
    assert_snapshot!(out);
}

#[test]
fn broken_sequences_keep_following_text() {
    assert_snapshot!(html(
        "a\x1b[\nb\x1b[99999999999mc\nlone \x1b escape, lone\x1bx\nd\x1b[31\x1b[32mgreen\nnul\x00 bell\x07 del\x7f tab\there\n\x1b(Bcharset\x1b[2Kerased\x1b[0K\n"
    ));
}

#[test]
fn invalid_utf8_is_replaced() {
    assert_snapshot!(render(b"caf\xc3\xa9 \xff\xfe ok\n\xe2\x82", 1).html);
}

#[test]
fn carriage_return_keeps_last_segment() {
    assert_snapshot!(html("10%\r50%\r\x1b[32m100%\x1b[0m\ndone\r\nwindows line\r\n\rlead cr\n"));
}

#[test]
fn line_numbers_continue_from_first_line() {
    let rendered = render(b"a\nb\n\nc", 120);
    assert_eq!(rendered.lines, 4);
    assert_snapshot!(rendered.html);
}

#[test]
fn empty_log() {
    let rendered = render(b"", 1);
    assert_eq!((rendered.html.as_str(), rendered.lines), ("", 0));
}

/// What the GitLab runner writes, with a nested and a collapsed section.
const SECTIONS: &str = "\x1b[0Ksection_start:1700000000:prepare_script\r\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n\
    pulling image\n\
    \x1b[0Ksection_start:1700000005:fetch[collapsed=true]\r\x1b[0KFetching <sources>\n\
    fetched\n\
    \x1b[0Ksection_end:1700000070:fetch\r\x1b[0K\n\
    \x1b[0Ksection_end:1700003725:prepare_script\r\x1b[0K\n\
    after\n";

#[test]
fn sections_nested_and_collapsed() {
    let rendered = render(SECTIONS.as_bytes(), 1);
    assert_eq!(rendered.lines, 5, "the lines of end markers take no number");
    assert_eq!(
        rendered.sections,
        [
            SectionInfo {
                name: "prepare_script".into(),
                header: "Preparing".into(),
                start_line: 1,
                end_line: Some(5),
                duration_s: Some(3725),
                collapsed: false,
                stopped: false,
            },
            SectionInfo {
                name: "fetch".into(),
                header: "Fetching <sources>".into(),
                start_line: 3,
                end_line: Some(5),
                duration_s: Some(65),
                collapsed: true,
                stopped: false,
            },
        ]
    );
    assert_snapshot!(rendered.html);
}

#[test]
fn unterminated_and_mismatched_sections() {
    let rendered = render(
        b"section_start:1:outer\r\x1b[0Kouter\nsection_start:2:inner\r\x1b[0Kinner\nsection_end:9:nobody\r\x1b[0K\nsection_end:4:outer\r\x1b[0K\nsection_start:5:open\r\x1b[0Kopen\nlast line without newline",
        1,
    );
    let ends: Vec<_> = rendered.sections.iter().map(|s| (s.name.as_str(), s.end_line, s.duration_s, s.stopped)).collect();
    assert_eq!(
        ends,
        [("outer", Some(3), Some(3), false), ("inner", None, None, true), ("open", None, None, true)],
        "a section closed by its parent's end, or by the log's, stopped"
    );
    assert_snapshot!(rendered.html);
}

#[test]
fn markers_inside_lines_and_malformed_markers() {
    assert_snapshot!(html(
        "output without newline\x1b[0Ksection_start:10:s\r\x1b[0Kheader\nbody\nsection_end:12:s\r\x1b[0Ktext after end\nsection_start:x:bad\r\x1b[0Knot a marker\nsection_start:1:<img>\r\x1b[0Kbad name\n"
    ));
}

#[test]
fn deep_nesting_is_capped() {
    let log: String = (0..40).map(|i| format!("section_start:{i}:s{i}\r\x1b[0Kh{i}\n")).collect();
    let rendered = render(log.as_bytes(), 1);
    assert_eq!(rendered.sections.len(), server::web::ansi::MAX_DEPTH);
    assert_eq!(rendered.html.matches("<details").count(), rendered.html.matches("</details>").count());
}

#[test]
fn strip_removes_escapes_and_markers() {
    assert_snapshot!(strip(SECTIONS.as_bytes()), @r"
    Preparing
    pulling image
    Fetching <sources>
    fetched
    after
    ");
    assert_eq!(strip(b"\x1b[31mred\x1b[0m\n1%\r100%\nlast"), "red\n100%\nlast\n");
}
