//! ANSI SGR ("select graphic rendition") state and its HTML form.
//!
//! A [`Style`] is only ever written out as fixed class names and `#rrggbb` colours formatted
//! from numbers, so nothing from the log can reach an attribute.

use std::fmt::Write as _;

/// A foreground or background colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Color {
    #[default]
    Default,
    /// 0–15 are the themeable palette (CSS classes); 16–255 the xterm cube and greys.
    Indexed(u8),
    Rgb(u8, u8, u8),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Style {
    fg: Color,
    bg: Color,
    bold: bool,
    faint: bool,
    italic: bool,
    underline: bool,
    strike: bool,
    inverse: bool,
}

impl Style {
    pub(crate) fn is_plain(&self) -> bool {
        *self == Style::default()
    }

    /// Applies the parameters of one `ESC [ ... m` sequence. `params` holds only bytes
    /// `0x30..=0x3F`; anything it does not understand is ignored, never an error.
    pub(crate) fn apply_sgr(&mut self, params: &[u8]) {
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        let groups: Vec<&[u8]> = params.split(|&b| b == b';').collect();
        let mut i = 0;
        while i < groups.len() {
            let group = groups[i];
            i += 1;
            if group.contains(&b':') {
                // ITU T.416 sub-parameters: `38:5:n`, `38:2:r:g:b` or `38:2:cs:r:g:b`, `4:3`.
                let sub: Vec<Option<u32>> = group.split(|&b| b == b':').map(number).collect();
                match sub[0] {
                    Some(code @ (38 | 48 | 58)) => {
                        let color = match (sub.get(1).copied().flatten(), sub.len()) {
                            (Some(5), 3) => indexed(sub[2]),
                            (Some(2), 5) => rgb(sub[2], sub[3], sub[4]),
                            (Some(2), 6) => rgb(sub[3], sub[4], sub[5]),
                            _ => None,
                        };
                        if let Some(color) = color {
                            self.set_extended(code, color);
                        }
                    }
                    Some(4) => self.underline = sub.get(1).copied().flatten().unwrap_or(1) != 0,
                    _ => {}
                }
                continue;
            }
            let code = number(group);
            match code {
                Some(0) => *self = Style::default(),
                Some(1) => self.bold = true,
                Some(2) => self.faint = true,
                Some(3) => self.italic = true,
                Some(4 | 21) => self.underline = true,
                Some(7) => self.inverse = true,
                Some(9) => self.strike = true,
                Some(22) => (self.bold, self.faint) = (false, false),
                Some(23) => self.italic = false,
                Some(24) => self.underline = false,
                Some(27) => self.inverse = false,
                Some(29) => self.strike = false,
                Some(n @ 30..=37) => self.fg = Color::Indexed((n - 30) as u8),
                Some(n @ 40..=47) => self.bg = Color::Indexed((n - 40) as u8),
                Some(n @ 90..=97) => self.fg = Color::Indexed((n - 90 + 8) as u8),
                Some(n @ 100..=107) => self.bg = Color::Indexed((n - 100 + 8) as u8),
                Some(39) => self.fg = Color::Default,
                Some(49) => self.bg = Color::Default,
                Some(code @ (38 | 48 | 58)) => {
                    // `38;5;n` or `38;2;r;g;b`: the arguments are consumed even when invalid,
                    // as terminals do, so in `38;5;300;1` only the `1` is a code.
                    let arg = |k: usize| groups.get(i + k).and_then(|g| number(g));
                    let color = match arg(0) {
                        Some(5) => {
                            let c = indexed(arg(1));
                            i += 2;
                            c
                        }
                        Some(2) => {
                            let c = rgb(arg(1), arg(2), arg(3));
                            i += 4;
                            c
                        }
                        _ => {
                            i += 1;
                            None
                        }
                    };
                    if let Some(color) = color {
                        self.set_extended(code, color);
                    }
                }
                _ => {}
            }
        }
    }

    fn set_extended(&mut self, code: u32, color: Color) {
        match code {
            38 => self.fg = color,
            48 => self.bg = color,
            _ => {} // 58: underline colour, not shown
        }
    }

    /// Writes `<span class=".." style="..">` for a non-plain style.
    pub(crate) fn write_open_tag(&self, out: &mut String) {
        let mut classes: Vec<&str> = Vec::new();
        let mut class_buf = String::new();
        if let Color::Indexed(n @ 0..=15) = self.fg {
            let _ = write!(class_buf, "fg-{n}");
        }
        if let Color::Indexed(n @ 0..=15) = self.bg {
            if !class_buf.is_empty() {
                class_buf.push(' ');
            }
            let _ = write!(class_buf, "bg-{n}");
        }
        for (on, name) in [
            (self.bold, "bold"),
            (self.faint, "faint"),
            (self.italic, "italic"),
            (self.underline, "underline"),
            (self.strike, "strike"),
            (self.inverse, "inverse"),
        ] {
            if on {
                classes.push(name);
            }
        }
        for name in classes {
            if !class_buf.is_empty() {
                class_buf.push(' ');
            }
            class_buf.push_str(name);
        }
        let mut style = String::new();
        if let Some((r, g, b)) = css_rgb(self.fg) {
            let _ = write!(style, "color:#{r:02x}{g:02x}{b:02x}");
        }
        if let Some((r, g, b)) = css_rgb(self.bg) {
            if !style.is_empty() {
                style.push(';');
            }
            let _ = write!(style, "background-color:#{r:02x}{g:02x}{b:02x}");
        }
        out.push_str("<span");
        if !class_buf.is_empty() {
            let _ = write!(out, " class=\"{class_buf}\"");
        }
        if !style.is_empty() {
            let _ = write!(out, " style=\"{style}\"");
        }
        out.push('>');
    }
}

/// A decimal parameter; empty means 0 (as in `ESC[;1m`); too long or not digits means none.
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

fn indexed(n: Option<u32>) -> Option<Color> {
    u8::try_from(n?).ok().map(Color::Indexed)
}

fn rgb(r: Option<u32>, g: Option<u32>, b: Option<u32>) -> Option<Color> {
    let c = |v: Option<u32>| u8::try_from(v?).ok();
    Some(Color::Rgb(c(r)?, c(g)?, c(b)?))
}

/// Colours the stylesheet does not name: the 256-colour cube, greys and truecolor.
fn css_rgb(color: Color) -> Option<(u8, u8, u8)> {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    match color {
        Color::Default => None,
        Color::Indexed(0..=15) => None,
        Color::Indexed(n @ 16..=231) => {
            let n = n - 16;
            Some((LEVELS[usize::from(n / 36)], LEVELS[usize::from(n / 6 % 6)], LEVELS[usize::from(n % 6)]))
        }
        Color::Indexed(n) => {
            let grey = 8 + 10 * (n - 232);
            Some((grey, grey, grey))
        }
        Color::Rgb(r, g, b) => Some((r, g, b)),
    }
}

/// Escapes text for HTML element content and double-quoted attribute values: maud's escape, the
/// server's only one (pages interpolate through maud too).
pub(crate) fn escape_into(out: &mut String, text: &str) {
    use std::fmt::Write;
    let _ = maud::Escaper::new(out).write_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(params: &str) -> String {
        let mut style = Style::default();
        style.apply_sgr(params.as_bytes());
        let mut out = String::new();
        if !style.is_plain() {
            style.write_open_tag(&mut out);
        }
        out
    }

    #[test]
    fn sgr_forms() {
        assert_eq!(tag("31"), r#"<span class="fg-1">"#);
        assert_eq!(tag("1;92;44"), r#"<span class="fg-10 bg-4 bold">"#);
        assert_eq!(tag("38;5;196"), r#"<span style="color:#ff0000">"#);
        assert_eq!(tag("38;5;244"), r#"<span style="color:#808080">"#);
        assert_eq!(tag("38:2::1:2:3"), r#"<span style="color:#010203">"#);
        assert_eq!(tag("48;2;255;128;0"), r#"<span style="background-color:#ff8000">"#);
        assert_eq!(tag("1;0"), "");
        assert_eq!(tag("31;39"), "");
        assert_eq!(tag("38;5;300;1"), r#"<span class="bold">"#, "an invalid index is consumed, not read as a code");
        assert_eq!(tag("38;2;1;2"), "");
        assert_eq!(tag("99999999999"), "");
        assert_eq!(tag("4:0"), "");
        assert_eq!(tag("4:3"), r#"<span class="underline">"#);
    }
}
