//! Regex literals (`/pattern/flags`) with GitLab's RE2 semantics on top of the `regex` crate.
//!
//! GitLab compiles patterns with RE2 (`Gitlab::UntrustedRegexp`), prefixing the literal's flags
//! as `(?flags)`; only `i`, `m`, `s` and `U` exist. The `regex` crate has the same syntax for
//! nearly everything and also runs in linear time. The differences that could change a match
//! are rewritten by [`translate`]:
//!
//! * `\d`, `\w`, `\s`, `\b` are ASCII-only in RE2 but Unicode-aware in `regex`;
//! * inside `[...]`, RE2 treats `[`, `&&`, `~~` as plain characters, `regex` as set operators;
//! * `\Q...\E` (literal text) and octal escapes (`\101`, `\0`) exist only in RE2.
//!
//! Patterns come from untrusted YAML, so the
//! compiled size, the lazy DFA and the nesting depth are capped; a pattern over the cap is
//! reported as invalid rather than allowed to use memory.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// Largest compiled program one pattern may have, in bytes (RE2's own default budget is 8 MiB
/// for everything; 1 MiB is far above any real `rules:if` pattern).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Largest lazy DFA cache one pattern may use, in bytes.
pub const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
/// Deepest nesting of groups and repetitions in one pattern.
const REGEX_NEST_LIMIT: u32 = 100;

/// GitLab's lexer pattern for a regex literal (`Lexeme::Pattern::PATTERN`): at least two
/// characters between the slashes, `\/` allowed inside, and the character before the closing
/// slash must not be a backslash. The `regex` crate reports the same match a backtracking
/// engine would (leftmost-first), so this is the exact token GitLab's Ruby lexer takes.
pub(super) static LITERAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/(?:[^/]|\\/)+[^\\]/[ismU]*").expect("static regex"));

/// A compiled regex as written in an expression.
#[derive(Clone)]
pub struct Pattern {
    /// The literal as written, e.g. `/^v\/[0-9]+/i` (used to print the expression back).
    literal: Box<str>,
    /// What GitLab hands to RE2: `(?flags)` + body with `\/` turned into `/`. Two patterns are
    /// equal when these are (`UntrustedRegexp#==` compares sources).
    source: Box<str>,
    regex: Regex,
}

impl Pattern {
    /// Compiles a literal token taken by [`LITERAL`]; the error is a short human reason.
    pub fn from_literal(literal: &str) -> Result<Pattern, String> {
        let unescaped = literal.replace("\\/", "/");
        let (body, flags) = split_ruby_syntax(&unescaped).ok_or_else(|| "not a `/pattern/flags` literal".to_string())?;
        let source = ruby_source(body, flags);
        let regex = compile(body, flags)?;
        Ok(Pattern { literal: literal.into(), source: source.into(), regex })
    }

    pub fn literal(&self) -> &str {
        &self.literal
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.literal == other.literal
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.literal)
    }
}

/// Whether two patterns are equal for `==`: GitLab compares the RE2 sources.
pub fn same_source(a: &Pattern, b: &Pattern) -> bool {
    a.source == b.source
}

/// A variable's value used on the right of `=~`: GitLab (`Pattern.build_and_evaluate`) turns
/// `\/` into `/` and accepts it when a line of it reads `/pattern/flags` (Ruby's `^`, `$` and
/// `.` are line-based) and the pattern compiles. `None` means "use the value as a plain
/// string", which `=~` then treats as a substring test.
pub fn from_variable(value: &str) -> Option<Regex> {
    if !value.contains('/') {
        return None;
    }
    let unescaped = value.replace("\\/", "/");
    let (body, flags) = unescaped.split('\n').find_map(split_ruby_syntax)?;
    compile(body, flags).ok()
}

/// `^/(?<regexp>.*)/(?<flags>[ismU]*)$` on one line: body and flags.
fn split_ruby_syntax(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('/')?;
    let close = rest.rfind('/')?;
    let (body, flags) = (&rest[..close], &rest[close + 1..]);
    flags.bytes().all(|b| matches!(b, b'i' | b'm' | b's' | b'U')).then_some((body, flags))
}

fn ruby_source(body: &str, flags: &str) -> String {
    if flags.is_empty() { body.to_string() } else { format!("(?{flags}){body}") }
}

/// Compiles an RE2 pattern and its flags with the untrusted-input limits.
fn compile(body: &str, flags: &str) -> Result<Regex, String> {
    let translated = ruby_source(&translate(body)?, flags);
    RegexBuilder::new(&translated)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| short_reason(&e))
}

/// The one line of a `regex` error a person needs (its full text repeats the pattern with a
/// caret, which is the translated pattern, not what the user wrote).
fn short_reason(err: &regex::Error) -> String {
    match err {
        regex::Error::CompiledTooBig(limit) => {
            format!("the regex is too large once compiled (limit {limit} bytes); simplify its repetitions")
        }
        regex::Error::Syntax(text) => {
            let line = text.lines().rev().find_map(|l| l.strip_prefix("error: ")).unwrap_or(text.as_str());
            line.trim().to_string()
        }
        other => other.to_string(),
    }
}

/// Rewrites RE2 syntax into `regex` syntax with the same meaning (see the module docs).
/// Fails only for what RE2 refuses but `regex` would read differently (an unknown POSIX class).
pub fn translate(re2: &str) -> Result<String, String> {
    let mut out = String::with_capacity(re2.len() + 16);
    let mut in_class = false;
    // Just after `[` or `[^`, where a `]` is a literal member.
    let mut class_start = false;
    let mut rest = re2;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        let was_class_start = std::mem::replace(&mut class_start, false);
        match c {
            '\\' => {
                let Some(e) = rest.chars().next() else {
                    out.push('\\'); // trailing backslash: let the regex crate report it
                    break;
                };
                rest = &rest[e.len_utf8()..];
                match e {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'w' => out.push_str("[0-9A-Za-z_]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    's' => out.push_str(r"[\t\n\x0C\r ]"),
                    'S' => out.push_str(r"[^\t\n\x0C\r ]"),
                    'b' if !in_class => out.push_str(r"(?-u:\b)"),
                    'B' if !in_class => out.push_str(r"(?-u:\B)"),
                    'Q' => {
                        let end = rest.find("\\E").unwrap_or(rest.len());
                        out.push_str(&regex::escape(&rest[..end]));
                        rest = rest.get(end + 2..).unwrap_or("");
                    }
                    '0'..='7' if e == '0' || rest.starts_with(|d: char| ('0'..='7').contains(&d)) => {
                        // RE2 octal: `\0`, or `\1`-`\7` followed by another octal digit; up to
                        // three digits in all. (A lone `\1` is a backreference: passed on for the
                        // regex crate to refuse, as RE2 does.)
                        let more = rest.bytes().take(2).take_while(|d| (b'0'..=b'7').contains(d)).count();
                        let digits = format!("{e}{}", &rest[..more]);
                        rest = &rest[more..];
                        let code = u32::from_str_radix(&digits, 8).unwrap_or(0);
                        let _ = write!(out, "\\x{{{code:X}}}");
                    }
                    'p' | 'P' | 'x' if rest.starts_with('{') => {
                        let end = rest.find('}').map_or(rest.len(), |i| i + 1);
                        out.push('\\');
                        out.push(e);
                        out.push_str(&rest[..end]);
                        rest = &rest[end..];
                    }
                    _ => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if let Some(after) = rest.strip_prefix('^') {
                    out.push('^');
                    rest = after;
                }
            }
            '[' => {
                // `[:alpha:]` is a POSIX class in both; any other `[` is a literal in RE2.
                match posix_class(rest) {
                    Some(len) if POSIX_CLASSES.contains(&rest[..len].trim_start_matches([':', '^']).trim_end_matches([':', ']'])) => {
                        out.push('[');
                        out.push_str(&rest[..len]);
                        rest = &rest[len..];
                    }
                    Some(len) => return Err(format!("invalid character class `[{}`", &rest[..len])),
                    None => out.push_str(r"\["),
                }
            }
            ']' if in_class && !was_class_start => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' | '-' if in_class && rest.starts_with(c) => {
                // `&&`, `~~`, `--` are set operations in `regex` classes, plain text in RE2.
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// The POSIX classes RE2 knows (`[[:alpha:]]`).
const POSIX_CLASSES: [&str; 14] =
    ["alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper", "word", "xdigit"];

/// After a `[` inside a class: the length of `:name:]` when it is a POSIX class.
fn posix_class(rest: &str) -> Option<usize> {
    let inner = rest.strip_prefix(':')?;
    let inner = inner.strip_prefix('^').unwrap_or(inner);
    let name_len = inner.bytes().take_while(u8::is_ascii_lowercase).count();
    let after = &inner[name_len..];
    (name_len > 0 && after.starts_with(":]")).then(|| rest.len() - after.len() + 2)
}
