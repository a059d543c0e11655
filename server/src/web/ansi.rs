//! A job log (untrusted bytes) rendered as safe HTML, or as plain text.
//!
//! The log is cut into raw lines at `\n`. Every raw line that shows becomes
//! `<div class="line" id="L{n}">`, numbered from `first_line` without gaps: a line holding only
//! `section_end` markers shows nothing and takes no number (GitLab's viewer numbers the same
//! way). The number of a byte offset is therefore one plus the lines before it that show,
//! which [`LineCounter`] counts quickly without rendering, so `#L120` links survive rendering
//! any tail of the log. Within a line:
//! * SGR sequences change a [`Style`] kept across lines (as a terminal does); every other escape
//!   sequence (cursor moves, erase, OSC titles and links) is dropped. A sequence broken by a
//!   control byte or by the end of the line ends there; the text after it is kept.
//! * `\r` starts the line over (progress bars): only the last segment is shown.
//! * GitLab section markers `section_start:<unix>:<name>[collapsed=true]\r\e[0K<header>` and
//!   `section_end:<unix>:<name>\r\e[0K` open and close `<details class="section">`; the header
//!   is the section's `<summary>`. Sections nest; an end closes the innermost section of that
//!   name and any section opened inside it; an end for no open section is ignored.
//!
//! Streaming ([`Renderer`]) gives the same output however the bytes are chunked. A section's
//! duration is only known at its end, after its summary went out, so the streamed form carries
//! it on the end marker `<i class="section-end" data-duration="S"></i></details>` and leaves
//! `<span class="duration"></span>` in the summary empty; [`render`], which has the whole log,
//! also fills the summary's span. Live pages append streamed HTML with the small script of the
//! job page, which follows those end markers to nest lines into sections opened by earlier
//! chunks.
//!
//! Sections that end without their own end marker (an enclosing section ended, or the log did:
//! the script stopped inside them) are *stopped*: the end marker says `data-stopped`, and a
//! page that keeps the whole output ([`Renderer::recording`], [`Renderer::fill`]) marks their
//! `<details>` `stopped` and may open them (a failed job's). Given time marks (`(byte offset,
//! unix ms)` of when the server received the bytes from there on), a line whose time differs
//! from the previous line's carries it as `data-t`.
//!
//! Memory is bounded: a raw line is cut at [`MAX_LINE`] bytes (at a `\r` when it has one, so a
//! long progress bar keeps its last state; otherwise into continuation lines without an anchor),
//! and at most [`MAX_DEPTH`] sections are open at once.

use std::fmt::Write as _;

use super::sgr::{Style, escape_into};

/// Longest raw line kept in memory before it is cut.
pub const MAX_LINE: usize = 64 * 1024;
/// Most sections open at once; deeper `section_start` markers show as text.
pub const MAX_DEPTH: usize = 32;
/// Longest OSC string dropped before the rest of the line is shown again.
const MAX_OSC: usize = 4096;

/// A whole log (or a range of it) rendered by [`render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub html: String,
    /// Line numbers used: the next range starts at `first_line + lines`.
    pub lines: usize,
    pub sections: Vec<SectionInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub name: String,
    /// The header as plain text.
    pub header: String,
    pub start_line: usize,
    /// `None` when the log ended (or the range was cut) before the section did.
    pub end_line: Option<usize>,
    pub duration_s: Option<u64>,
    pub collapsed: bool,
    /// Ended without its own end marker: the script stopped inside it.
    pub stopped: bool,
}

/// One line that shows, as text (for [`Renderer::lines`], the log search).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub number: usize,
    /// Byte offset of the raw line's start.
    pub offset: u64,
    pub text: String,
}

/// Renders raw log bytes to HTML; `first_line` is the number of the first raw line (1 for the
/// start of the log, more when rendering a tail).
pub fn render(log: &[u8], first_line: usize) -> Rendered {
    let mut renderer = Renderer::recording(first_line);
    let mut html = renderer.push(log);
    html.push_str(&renderer.finish());
    let html = renderer.fill(&html, false);
    Rendered { html, lines: renderer.next_line - first_line, sections: renderer.sections }
}

/// The log as plain text: escape sequences and section markers removed, section headers kept as
/// lines, `\r` progress reduced to its last state; every line ends with `\n`.
pub fn strip(log: &[u8]) -> String {
    let mut renderer = Renderer::plain();
    let mut text = renderer.push(log);
    text.push_str(&renderer.finish());
    text
}

/// `12s`, `3m 04s`, `1h 02m 03s`.
pub fn format_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Html,
    Plain,
    Lines,
}

struct OpenSection {
    name: String,
    started: u64,
    /// Index into `sections` when they are recorded.
    index: Option<usize>,
}

/// A place in the output that [`Renderer::fill`] rewrites once a section has ended.
#[derive(Clone, Copy)]
struct Patch {
    /// Output bytes `at..end` (empty for an insertion).
    at: usize,
    end: usize,
    section: usize,
    kind: PatchKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    /// The section's `<details …>` tag.
    Tag,
    /// Where the summary's duration goes.
    Duration,
}

/// Renders a log fed in chunks: each [`push`](Self::push) returns the HTML of the raw lines it
/// completed; [`finish`](Self::finish) renders the unterminated last line and closes open
/// sections. ANSI state and open sections carry across chunks.
pub struct Renderer {
    mode: Mode,
    buf: Vec<u8>,
    next_line: usize,
    /// Whether the current raw line already took its number (its first piece was written).
    numbered: bool,
    style: Style,
    open: Vec<OpenSection>,
    /// Only when recording: every section, and the places [`Self::fill`] rewrites.
    record: bool,
    sections: Vec<SectionInfo>,
    patches: Vec<Patch>,
    /// Bytes of output returned so far (patch positions are absolute).
    emitted: usize,
    finished: bool,
    /// Absolute offset of the next byte pushed, and of the current raw line's start.
    pos: u64,
    line_start: u64,
    /// Time marks not reached yet, the time of the current line, the last one written.
    marks: std::collections::VecDeque<(u64, i64)>,
    time: Option<i64>,
    shown_time: Option<i64>,
    /// [`Mode::Lines`]: lines completed and not yet taken.
    lines: Vec<LogLine>,
}

impl Renderer {
    pub fn new(first_line: usize) -> Self {
        Self::with_mode(first_line, Mode::Html, false)
    }

    /// A streaming [`strip`], for terminals without colour.
    pub fn plain() -> Self {
        Self::with_mode(1, Mode::Plain, false)
    }

    /// HTML that keeps track of its sections, for a caller that keeps the whole output and
    /// calls [`Self::fill`] on it.
    pub fn recording(first_line: usize) -> Self {
        Self::with_mode(first_line, Mode::Html, true)
    }

    /// Plain lines with their numbers and offsets, taken with [`Self::take_lines`].
    pub fn lines(first_line: usize) -> Self {
        Self::with_mode(first_line, Mode::Lines, false)
    }

    /// The first byte pushed is at `offset` of the log (for line offsets and time marks).
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.pos = offset;
        self.line_start = offset;
        self
    }

    fn with_mode(first_line: usize, mode: Mode, record: bool) -> Self {
        Renderer {
            mode,
            buf: Vec::new(),
            next_line: first_line,
            numbered: false,
            style: Style::default(),
            open: Vec::new(),
            record,
            sections: Vec::new(),
            patches: Vec::new(),
            emitted: 0,
            finished: false,
            pos: 0,
            line_start: 0,
            marks: std::collections::VecDeque::new(),
            time: None,
            shown_time: None,
            lines: Vec::new(),
        }
    }

    /// Adds time marks `(offset, unix ms)`, in offset order, after those already given: a line
    /// gets the time of the last mark at or before its first byte.
    pub fn add_times(&mut self, marks: impl IntoIterator<Item = (u64, i64)>) {
        for (offset, ms) in marks {
            if self.marks.back().is_some_and(|&(last, _)| offset < last) {
                continue;
            }
            self.marks.push_back((offset, ms));
        }
    }

    /// The number the next line that shows will get.
    pub fn next_line(&self) -> usize {
        self.next_line
    }

    /// Bytes pushed but not yet rendered (the incomplete last line): a client resuming a live
    /// tail should resume at `bytes pushed - pending()`.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The sections seen so far (when recording).
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// [`Mode::Lines`]: the lines completed since the last call.
    pub fn take_lines(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.lines)
    }

    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut out = String::new();
        if self.finished {
            return out;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = MAX_LINE - self.buf.len();
            let take = &rest[..rest.len().min(room)];
            if let Some(i) = memchr::memchr(b'\n', take) {
                self.buf.extend_from_slice(&take[..i]);
                rest = &rest[i + 1..];
                self.pos += i as u64 + 1;
                self.end_raw_line(&mut out);
                self.line_start = self.pos;
            } else {
                self.buf.extend_from_slice(take);
                rest = &rest[take.len()..];
                self.pos += take.len() as u64;
                if self.buf.len() == MAX_LINE {
                    self.cut_long_line(&mut out);
                }
            }
        }
        self.emitted += out.len();
        out
    }

    /// The end of the log: renders the unterminated last line and closes the sections still
    /// open, as stopped.
    pub fn finish(&mut self) -> String {
        self.close_all(true)
    }

    /// The end of a range of the log that goes on: renders the unterminated last line and
    /// closes the sections still open without marking them stopped.
    pub fn finish_range(&mut self) -> String {
        self.close_all(false)
    }

    fn close_all(&mut self, stopped: bool) -> String {
        let mut out = String::new();
        if self.finished {
            return out;
        }
        self.finished = true;
        if !self.buf.is_empty() {
            self.end_raw_line(&mut out);
        }
        while !self.open.is_empty() {
            self.close_section(&mut out, None, None, stopped);
        }
        self.emitted += out.len();
        out
    }

    /// The whole output of a recording renderer (everything `push` and `finish` returned, in
    /// order) with what is known now: section durations in their summaries, stopped sections
    /// marked `stopped` (and open, when `open_stopped`: a failed job's).
    pub fn fill(&self, html: &str, open_stopped: bool) -> String {
        let mut filled = String::with_capacity(html.len() + self.patches.len() * 8);
        let mut from = 0;
        for p in &self.patches {
            let Some(section) = self.sections.get(p.section) else { continue };
            if p.at < from || p.end > html.len() {
                continue;
            }
            match p.kind {
                PatchKind::Duration => {
                    if let Some(d) = section.duration_s {
                        filled.push_str(&html[from..p.at]);
                        filled.push_str(&format_duration(d));
                        from = p.at;
                    }
                }
                PatchKind::Tag => {
                    if section.stopped {
                        filled.push_str(&html[from..p.at]);
                        section_tag(&mut filled, &section.name, " stopped", !section.collapsed || open_stopped);
                        from = p.end;
                    }
                }
            }
        }
        filled.push_str(&html[from..]);
        filled
    }

    fn end_raw_line(&mut self, out: &mut String) {
        let line = std::mem::take(&mut self.buf);
        self.process_line(out, &line);
        self.buf = line;
        self.buf.clear();
        if self.numbered {
            self.next_line += 1;
        }
        self.numbered = false;
    }

    /// The buffer is full without a `\n`: drop everything before its last `\r` (a progress
    /// bar's old states, keeping their colour changes), or else render it as a piece of line.
    fn cut_long_line(&mut self, out: &mut String) {
        if let Some(cr) = last_cr(&self.buf) {
            let head: Vec<u8> = self.buf.drain(..cr).collect();
            self.spans(&head);
            return;
        }
        // Cut before an incomplete UTF-8 sequence at the end, so no character is split.
        let len = self.buf.len();
        let mut cut = len;
        for back in 1..=3.min(len) {
            let b = self.buf[len - back];
            if b & 0xC0 == 0xC0 {
                let width = if b >= 0xF0 {
                    4
                } else if b >= 0xE0 {
                    3
                } else {
                    2
                };
                if width > back {
                    cut = len - back;
                }
                break;
            }
            if b & 0xC0 != 0x80 {
                break;
            }
        }
        let tail = self.buf.split_off(cut);
        let piece = std::mem::replace(&mut self.buf, tail);
        let spans = self.spans(&piece);
        self.write_line(out, &spans);
    }

    fn process_line(&mut self, out: &mut String, line: &[u8]) {
        let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
        let line = &line[..end];
        let mut rest = line;
        let mut had_marker = false;
        while let Some((at, marker)) = find_marker(rest) {
            if marker.start && self.open.len() >= MAX_DEPTH {
                break;
            }
            had_marker = true;
            let before = trim_erase(&rest[..at]);
            let spans = self.spans(before);
            if !spans.is_empty() {
                self.write_line(out, &spans);
            }
            rest = &rest[at + marker.len..];
            if marker.start {
                let header_len = find_marker(rest).map_or(rest.len(), |(next, _)| next);
                let header = self.spans(trim_erase(&rest[..header_len]));
                rest = &rest[header_len..];
                self.open_section(out, &marker, &header);
            } else {
                self.end_section(out, &marker);
            }
        }
        let spans = self.spans(rest);
        if !had_marker || !spans.is_empty() {
            self.write_line(out, &spans);
        }
    }

    fn open_section(&mut self, out: &mut String, marker: &Marker<'_>, header: &[Span]) {
        let name = String::from_utf8_lossy(marker.name).into_owned();
        let index = self.record.then(|| {
            self.sections.push(SectionInfo {
                name: name.clone(),
                header: header.iter().map(|s| s.text.as_str()).collect(),
                start_line: self.next_line,
                end_line: None,
                duration_s: None,
                collapsed: marker.collapsed,
                stopped: false,
            });
            self.sections.len() - 1
        });
        match self.mode {
            Mode::Html => {
                let at = out.len();
                section_tag(out, &name, "", !marker.collapsed);
                if let Some(index) = index {
                    self.patches.push(Patch { at: self.emitted + at, end: self.emitted + out.len(), section: index, kind: PatchKind::Tag });
                }
                out.push_str("<summary>");
                self.write_line(out, header);
                out.push_str("<span class=\"duration\">");
                if let Some(index) = index {
                    let at = self.emitted + out.len();
                    self.patches.push(Patch { at, end: at, section: index, kind: PatchKind::Duration });
                }
                out.push_str("</span></summary>\n");
            }
            Mode::Plain | Mode::Lines => self.write_line(out, header),
        }
        self.open.push(OpenSection { name, started: marker.time, index });
    }

    fn end_section(&mut self, out: &mut String, marker: &Marker<'_>) {
        let Some(depth) = self.open.iter().rposition(|s| s.name.as_bytes() == marker.name) else {
            return;
        };
        while self.open.len() > depth + 1 {
            self.close_section(out, None, None, true);
        }
        let duration = marker.time.saturating_sub(self.open[depth].started);
        self.close_section(out, Some(duration), Some(self.next_line), false);
    }

    fn close_section(&mut self, out: &mut String, duration: Option<u64>, end_line: Option<usize>, stopped: bool) {
        let Some(section) = self.open.pop() else { return };
        if let Some(info) = section.index.and_then(|i| self.sections.get_mut(i)) {
            info.end_line = end_line;
            info.duration_s = duration;
            info.stopped = stopped;
        }
        if self.mode == Mode::Html {
            out.push_str("<i class=\"section-end\"");
            if let Some(d) = duration {
                let _ = write!(out, " data-duration=\"{}\"", format_duration(d));
            }
            if stopped {
                out.push_str(" data-stopped=\"true\"");
            }
            out.push_str("></i></details>\n");
        }
    }

    /// The time of the current line, from the marks.
    fn line_time(&mut self) -> Option<i64> {
        while let Some(&(offset, ms)) = self.marks.front() {
            if offset > self.line_start {
                break;
            }
            self.time = Some(ms);
            self.marks.pop_front();
        }
        self.time
    }

    fn write_line(&mut self, out: &mut String, spans: &[Span]) {
        let first_piece = !self.numbered;
        self.numbered = true;
        match self.mode {
            Mode::Plain => {
                for span in spans {
                    out.push_str(&span.text);
                }
                out.push('\n');
                return;
            }
            Mode::Lines => {
                let text = spans.iter().map(|s| s.text.as_str()).collect();
                self.lines.push(LogLine { number: self.next_line, offset: self.line_start, text });
                return;
            }
            Mode::Html if !first_piece => out.push_str("<div class=\"line\"><span class=\"ln\"></span>"),
            Mode::Html => {
                let n = self.next_line;
                let _ = write!(out, "<div class=\"line\" id=\"L{n}\"");
                let time = self.line_time();
                if time != self.shown_time {
                    if let Some(ms) = time {
                        let _ = write!(out, " data-t=\"{ms}\"");
                    }
                    self.shown_time = time;
                }
                let _ = write!(out, "><a class=\"ln\" href=\"#L{n}\">{n}</a>");
            }
        }
        for span in spans {
            if span.style.is_plain() {
                escape_into(out, &span.text);
            } else {
                span.style.write_open_tag(out);
                escape_into(out, &span.text);
                out.push_str("</span>");
            }
        }
        out.push_str("</div>\n");
    }

    /// The visible text of one piece of a line, applying its escape sequences to the style.
    fn spans(&mut self, bytes: &[u8]) -> Vec<Span> {
        let mut spans = Vec::new();
        let mut text: Vec<u8> = Vec::new();
        let mut text_style = self.style;
        let flush = |spans: &mut Vec<Span>, text: &mut Vec<u8>, style: Style| {
            if !text.is_empty() {
                spans.push(Span { style, text: String::from_utf8_lossy(text).into_owned() });
                text.clear();
            }
        };
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                0x1b => {
                    let (len, sgr) = escape_sequence(&bytes[i..]);
                    if let Some(params) = sgr {
                        self.style.apply_sgr(params);
                    }
                    i += len;
                    continue;
                }
                b'\r' => {
                    text.clear();
                    spans.clear();
                }
                b'\t' => {}
                0..=0x1f | 0x7f => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            if b != b'\r' {
                if self.style != text_style {
                    flush(&mut spans, &mut text, text_style);
                    text_style = self.style;
                }
                text.push(b);
            }
            i += 1;
        }
        flush(&mut spans, &mut text, text_style);
        spans
    }
}

/// `<details class="section{extra}" data-name="…"[ open]>`.
fn section_tag(out: &mut String, name: &str, extra_class: &str, open: bool) {
    out.push_str("<details class=\"section");
    out.push_str(extra_class);
    out.push_str("\" data-name=\"");
    escape_into(out, name);
    out.push_str(if open { "\" open>" } else { "\">" });
}

/// Where a full line buffer is cut to keep a progress bar's last state: its last `\r`, unless
/// that is the first byte.
fn last_cr(buf: &[u8]) -> Option<usize> {
    memchr::memrchr(b'\r', buf).filter(|&cr| cr > 0)
}

/// Counts the numbers [`Renderer`] gives to the lines of a log, without rendering: every raw
/// line but those holding only `section_end` markers. Fast (newlines and the rare marker are
/// found with `memchr`); memory is one line of at most [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct LineCounter {
    numbered: usize,
    /// The unterminated line so far (as the renderer's buffer holds it).
    partial: Vec<u8>,
    /// The unterminated line already showed a piece: it has its number whatever follows.
    cut: bool,
}

const END_MARKER: &[u8] = b"section_end:";

impl LineCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Numbers given to the complete lines pushed so far: the next line's number is one more.
    pub fn numbered(&self) -> usize {
        self.numbered
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', bytes) else {
                self.extend(bytes);
                return;
            };
            if !self.partial.is_empty() || self.cut {
                self.extend(&bytes[..nl]);
                self.end_line();
                bytes = &bytes[nl + 1..];
                continue;
            }
            let last = memchr::memrchr(b'\n', bytes).unwrap_or(nl);
            let whole = &bytes[..=last];
            let mut numbered = memchr::memchr_iter(b'\n', whole).count();
            let mut checked = 0;
            for at in memchr::memmem::find_iter(whole, END_MARKER) {
                if at < checked {
                    continue;
                }
                let start = memchr::memrchr(b'\n', &whole[..at]).map_or(0, |i| i + 1);
                let end = at + memchr::memchr(b'\n', &whole[at..]).unwrap_or(whole.len() - at);
                if line_is_hidden(&whole[start..end]) {
                    numbered -= 1;
                }
                checked = end + 1;
            }
            self.numbered += numbered;
            bytes = &bytes[last + 1..];
        }
    }

    /// The end of the log: its unterminated last line counts too.
    pub fn finish(&mut self) -> usize {
        if !self.partial.is_empty() || self.cut {
            self.end_line();
        }
        self.numbered
    }

    /// Adds to the unterminated line as the renderer's buffer would (cut at [`MAX_LINE`]).
    fn extend(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.cut {
            let room = MAX_LINE - self.partial.len();
            let take = bytes.len().min(room);
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == MAX_LINE {
                match last_cr(&self.partial) {
                    Some(cr) => {
                        self.partial.drain(..cr);
                    }
                    None => {
                        self.cut = true;
                        self.partial.clear();
                    }
                }
            }
        }
    }

    fn end_line(&mut self) {
        let hidden = !self.cut && memchr::memmem::find(&self.partial, END_MARKER).is_some() && line_is_hidden(&self.partial);
        if !hidden {
            self.numbered += 1;
        }
        self.partial.clear();
        self.cut = false;
    }
}

/// Whether the renderer shows nothing for this raw line (without its `\n`): it holds only
/// `section_end` markers and no visible text. Mirrors [`Renderer::push`] and `process_line`.
fn line_is_hidden(line: &[u8]) -> bool {
    let mut s = 0;
    while line.len() - s >= MAX_LINE {
        match last_cr(&line[s..s + MAX_LINE]) {
            Some(cr) => s += cr,
            None => return false,
        }
    }
    let line = &line[s..];
    let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
    let mut rest = &line[..end];
    let mut had_marker = false;
    while let Some((at, marker)) = find_marker(rest) {
        if marker.start {
            return false;
        }
        had_marker = true;
        if has_text(trim_erase(&rest[..at])) {
            return false;
        }
        rest = &rest[at + marker.len..];
    }
    had_marker && !has_text(rest)
}

/// Whether [`Renderer::spans`] would find visible text in `bytes` (text after the last `\r`,
/// escape sequences and control bytes other than tab left out).
fn has_text(bytes: &[u8]) -> bool {
    let mut text = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x1b => {
                i += escape_sequence(&bytes[i..]).0;
                continue;
            }
            b'\r' => text = false,
            b'\t' => text = true,
            0..=0x1f | 0x7f => {}
            _ => text = true,
        }
        i += 1;
    }
    text
}

struct Span {
    style: Style,
    text: String,
}

/// The length of the escape sequence at the start of `bytes` (which starts with ESC), and the
/// parameters when it is an SGR sequence. A sequence interrupted by a byte that cannot belong
/// to it ends before that byte, which is then read as text.
fn escape_sequence(bytes: &[u8]) -> (usize, Option<&[u8]>) {
    match bytes.get(1) {
        Some(b'[') => {
            let mut i = 2;
            while i < bytes.len() && (0x30..=0x3f).contains(&bytes[i]) {
                i += 1;
            }
            let params_end = i;
            while i < bytes.len() && (0x20..=0x2f).contains(&bytes[i]) {
                i += 1;
            }
            match bytes.get(i) {
                Some(b'm') if params_end == i && bytes[2..params_end].iter().all(|&b| b.is_ascii_digit() || b == b';' || b == b':') => {
                    (i + 1, Some(&bytes[2..params_end]))
                }
                Some(0x40..=0x7e) => (i + 1, None),
                _ => (i, None),
            }
        }
        Some(b']') => {
            // OSC: ends at BEL or ST (`ESC \`); a control byte or the length cap breaks it.
            let mut i = 2;
            while i < bytes.len() && i < MAX_OSC {
                match bytes[i] {
                    0x07 => return (i + 1, None),
                    0x1b if bytes.get(i + 1) == Some(&b'\\') => return (i + 2, None),
                    0..=0x1f => return (i, None),
                    _ => i += 1,
                }
            }
            (i, None)
        }
        Some(0x21..=0x2f) => {
            // nF sequences such as `ESC ( B` (character set); a space after ESC is text.
            let mut i = 1;
            while i < bytes.len() && (0x21..=0x2f).contains(&bytes[i]) {
                i += 1;
            }
            match bytes.get(i) {
                Some(0x30..=0x7e) => (i + 1, None),
                _ => (i, None),
            }
        }
        // C1 controls as `ESC @`..`ESC _`, and the private or common ones (`ESC 7`, `ESC 8`,
        // `ESC =`, `ESC >`, `ESC c`); other letters after a stray ESC are text.
        Some(0x40..=0x5f | b'7' | b'8' | b'=' | b'>' | b'c') => (2, None),
        _ => (1, None),
    }
}

struct Marker<'a> {
    start: bool,
    time: u64,
    name: &'a [u8],
    collapsed: bool,
    /// Bytes from `section_` through the closing `\r\e[0K`.
    len: usize,
}

/// The first well-formed section marker in `line`, with its offset.
fn find_marker(line: &[u8]) -> Option<(usize, Marker<'_>)> {
    let mut from = 0;
    while let Some(found) = line[from..].windows(8).position(|w| w == b"section_") {
        let at = from + found;
        if let Some(marker) = parse_marker(&line[at..]) {
            return Some((at, marker));
        }
        from = at + 1;
    }
    None
}

fn parse_marker(bytes: &[u8]) -> Option<Marker<'_>> {
    let (start, mut i) = if bytes.starts_with(b"section_start:") {
        (true, 14)
    } else if bytes.starts_with(b"section_end:") {
        (false, 12)
    } else {
        return None;
    };
    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let time = std::str::from_utf8(&bytes[i..i + digits]).ok()?.parse().ok()?;
    i += digits;
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let name_len = bytes[i..].iter().take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')).take(256).count();
    if name_len == 0 {
        return None;
    }
    let name = &bytes[i..i + name_len];
    i += name_len;
    let mut collapsed = false;
    if start && bytes.get(i) == Some(&b'[') {
        let close = bytes[i..].iter().take(256).position(|&b| b == b']')?;
        let options = &bytes[i + 1..i + close];
        collapsed = options.split(|&b| b == b',').any(|o| o == b"collapsed=true");
        i += close + 1;
    }
    if !bytes[i..].starts_with(b"\r\x1b[0K") {
        return None;
    }
    Some(Marker { start, time, name, collapsed, len: i + 5 })
}

/// Removes the erase-line sequences (`ESC[0K`, `ESC[K`) the runner puts around markers.
fn trim_erase(mut bytes: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = bytes.strip_suffix(b"\x1b[0K").or_else(|| bytes.strip_suffix(b"\x1b[K")) {
            bytes = rest;
        } else if let Some(rest) = bytes.strip_prefix(b"\x1b[0K").or_else(|| bytes.strip_prefix(b"\x1b[K")) {
            bytes = rest;
        } else {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        let m = parse_marker(b"section_start:10:a.b-c_1[collapsed=true]\r\x1b[0Kx").unwrap();
        assert!(m.start && m.collapsed && m.time == 10 && m.name == b"a.b-c_1" && m.len == 45);
        assert!(parse_marker(b"section_start:10:a\r").is_none());
        assert!(parse_marker(b"section_start::a\r\x1b[0K").is_none());
        assert!(parse_marker(b"section_end:1:\r\x1b[0K").is_none());
        assert_eq!(find_marker(b"xsection_section_end:5:n\r\x1b[0K").map(|(at, _)| at), Some(9));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(65), "1m 05s");
        assert_eq!(format_duration(3723), "1h 02m 03s");
    }
}
