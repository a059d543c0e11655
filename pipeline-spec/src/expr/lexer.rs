//! Tokens of the `rules:if` language, read like GitLab's `Expression::Lexer`.
//!
//! GitLab tries, at each position after skipping ASCII whitespace, these lexemes in order:
//! `(`, `)`, `$[[ inputs.x ]]`, `$name` (`\w+`, ASCII), `"..."` / `'...'` (shortest, no escapes,
//! no newline), `/regex/flags`, `null`, `true` / `false`, `==`, `=~`, `!=`, `!~`, `&&`, `||`;
//! anything else is "Unknown lexeme found!", and a 100th token is "Too many tokens!". This lexer
//! accepts exactly the same tokens but explains each refusal.

use super::ExprError;
use super::pattern::LITERAL;

/// GitLab refuses an expression once its lexer reaches 100 tokens (`Lexer::MAX_TOKENS`), so at
/// most 99 are accepted; keeping the same limit keeps `piste` and GitLab in agreement.
pub const MAX_TOKENS: usize = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
    And,
    Or,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Match => "=~",
            Op::NoMatch => "!~",
            Op::And => "&&",
            Op::Or => "||",
        }
    }

    pub fn is_comparison(self) -> bool {
        !matches!(self, Op::And | Op::Or)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    LParen,
    RParen,
    /// Variable name without the `$`.
    Var(&'a str),
    /// String contents without the quotes.
    Str(&'a str),
    /// Regex literal as written, slashes and flags included.
    Regex(&'a str),
    Null,
    Bool(bool),
    Op(Op),
}

#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub tok: Tok<'a>,
    /// Byte offsets of the token in the expression.
    pub start: usize,
    pub end: usize,
}

pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    count: usize,
}

fn err(offset: usize, message: impl Into<String>) -> ExprError {
    ExprError { offset, message: message.into() }
}

/// Ruby's `\s`: ASCII whitespace including vertical tab; a no-break space is not whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0B' | b'\x0C')
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `text` in backticks, shortened for messages.
pub fn quoted(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        format!("`{text}`")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("`{head}…`")
    }
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0, count: 0 }
    }

    /// The next token, `None` at the end.
    pub fn next_token(&mut self) -> Result<Option<Token<'a>>, ExprError> {
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() && is_space(bytes[self.pos]) {
            self.pos += 1;
        }
        if self.pos >= bytes.len() {
            return Ok(None);
        }
        let start = self.pos;
        if self.count == MAX_TOKENS {
            return Err(err(
                start,
                format!(
                    "the expression has more than {MAX_TOKENS} tokens, which GitLab refuses; \
                     split it into several `rules` entries"
                ),
            ));
        }
        let (tok, len) = self.scan(start)?;
        self.pos = start + len;
        self.count += 1;
        Ok(Some(Token { tok, start, end: self.pos }))
    }

    fn scan(&self, at: usize) -> Result<(Tok<'a>, usize), ExprError> {
        let rest = &self.src[at..];
        let b = rest.as_bytes();
        let two = |tok| Ok((tok, 2));
        match b[0] {
            b'(' => Ok((Tok::LParen, 1)),
            b')' => Ok((Tok::RParen, 1)),
            b'$' => self.variable(at),
            b'"' | b'\'' => self.string(at),
            b'/' => self.regex(at),
            b'=' if b.get(1) == Some(&b'=') => two(Tok::Op(Op::Eq)),
            b'=' if b.get(1) == Some(&b'~') => two(Tok::Op(Op::Match)),
            b'!' if b.get(1) == Some(&b'=') => two(Tok::Op(Op::Ne)),
            b'!' if b.get(1) == Some(&b'~') => two(Tok::Op(Op::NoMatch)),
            b'&' if b.get(1) == Some(&b'&') => two(Tok::Op(Op::And)),
            b'|' if b.get(1) == Some(&b'|') => two(Tok::Op(Op::Or)),
            b'=' => Err(err(at, "use `==` to compare (a single `=` is not an operator)")),
            b'!' => Err(err(at, "`!` alone is not an operator: use `!=` or `!~`, or test `$VAR == null` / `$VAR == \"\"`")),
            b'&' => Err(err(at, "use `&&` for \"and\" (a single `&` is not an operator)")),
            b'|' => Err(err(at, "use `||` for \"or\" (a single `|` is not an operator)")),
            b'<' | b'>' => Err(err(at, "there is no `<` or `>` in GitLab expressions; compare with `==`, `!=`, `=~` or `!~`")),
            c if is_word(c) => self.word(at),
            _ => {
                let c = rest.chars().next().unwrap_or_default();
                let code = u32::from(c);
                let message = if c.is_whitespace() {
                    format!("unexpected space character U+{code:04X}: use a plain space")
                } else if c.is_control() {
                    format!("unexpected control character U+{code:04X}")
                } else {
                    format!("unexpected character `{c}` (U+{code:04X})")
                };
                Err(err(at, message))
            }
        }
    }

    fn variable(&self, at: usize) -> Result<(Tok<'a>, usize), ExprError> {
        let rest = &self.src[at + 1..];
        let len = rest.bytes().take_while(|&c| is_word(c)).count();
        if len > 0 {
            return Ok((Tok::Var(&rest[..len]), len + 1));
        }
        if rest.starts_with("[[") {
            return Err(err(at, "`$[[ inputs.… ]]` must be replaced by the input's value before the expression is evaluated"));
        }
        if let Some(inner) = rest.strip_prefix('{') {
            let name: String = inner.chars().take_while(|&c| c != '}').collect();
            return Err(err(at, format!("write `${name}` without braces: `${{…}}` is not allowed in expressions")));
        }
        Err(err(at, "expected a variable name after `$` (letters, digits and `_`)"))
    }

    fn string(&self, at: usize) -> Result<(Tok<'a>, usize), ExprError> {
        let quote = self.src.as_bytes()[at] as char;
        let rest = &self.src[at + 1..];
        let close = rest.find(quote);
        let newline = rest.find('\n');
        match close {
            Some(end) if newline.is_none_or(|nl| end < nl) => Ok((Tok::Str(&rest[..end]), end + 2)),
            _ if newline.is_some() && close.is_some() => {
                Err(err(at, format!("string starting here runs past the end of the line: close it with `{quote}` on the same line")))
            }
            _ => Err(err(at, format!("unterminated string: add the closing `{quote}`"))),
        }
    }

    fn regex(&self, at: usize) -> Result<(Tok<'a>, usize), ExprError> {
        let rest = &self.src[at..];
        if let Some(m) = LITERAL.find(rest) {
            let literal = m.as_str();
            if literal.contains('\n') {
                return Err(err(at, "a regex literal cannot span lines"));
            }
            if let Some(flag) = rest[m.end()..].chars().next().filter(char::is_ascii_alphanumeric) {
                return Err(err(at + m.end(), format!("unknown regex flag `{flag}`: GitLab supports `i`, `m`, `s` and `U`")));
            }
            return Ok((Tok::Regex(literal), m.end()));
        }
        // Explain why GitLab's pattern does not match: find the closing slash it would need.
        let body = &rest[1..];
        let mut chars = body.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '/' => {
                    close = Some(i);
                    break;
                }
                '\n' => break,
                _ => {}
            }
        }
        let Some(close) = close else {
            return Err(err(at, "unterminated regex: add the closing `/`"));
        };
        let inner = &body[..close];
        if inner.chars().count() < 2 {
            return Err(err(
                at,
                format!(
                    "GitLab needs at least two characters between the slashes of a regex; \
                     write `/(?:{inner})/` for the same pattern"
                ),
            ));
        }
        Err(err(at, "GitLab cannot read this regex: the character before the closing `/` must not be `\\`"))
    }

    fn word(&self, at: usize) -> Result<(Tok<'a>, usize), ExprError> {
        let rest = &self.src[at..];
        let len = rest.bytes().take_while(|&c| is_word(c)).count();
        let word = &rest[..len];
        let tok = match word {
            "null" => Tok::Null,
            "true" => Tok::Bool(true),
            "false" => Tok::Bool(false),
            _ => {
                let message = match word.to_ascii_lowercase().as_str() {
                    "and" => "use `&&` instead of `and`".to_string(),
                    "or" => "use `||` instead of `or`".to_string(),
                    "not" => "there is no `not`: use `!=` or `!~`".to_string(),
                    "nil" | "none" | "undefined" => format!("use `null` instead of `{word}`"),
                    _ if word.bytes().all(|c| c.is_ascii_digit()) => {
                        format!("numbers must be quoted: write `\"{word}\"`")
                    }
                    _ => format!("unknown word `{word}`: variables start with `$` (`${word}`) and strings are quoted (`\"{word}\"`)"),
                };
                return Err(err(at, message));
            }
        };
        Ok((tok, len))
    }
}
