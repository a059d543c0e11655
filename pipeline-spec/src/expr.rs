//! The `rules:if` / `only:variables` expression language, with GitLab's exact semantics.
//!
//! Sources: GitLab's `lib/gitlab/ci/pipeline/expression/` (lexer, parser, lexemes, statement)
//! and their specs, and the "CI/CD variable expressions" page of the CI docs.
//!
//! **Values, not booleans.** GitLab evaluates every node to a Ruby value and only asks
//! `present?` of the final one:
//!
//! * `$VAR` is its string, or `null` when undefined; `"x"` / `'x'` are strings taken verbatim
//!   (no escapes: `"a\n"` is `a`, `\`, `n`); `null`, `true`, `false` are themselves.
//! * `==` / `!=` compare values: undefined `== null` is true, empty `== null` is false,
//!   `"" == $EMPTY` is true, and a boolean equals the string `"true"` / `"false"`.
//! * `a && b` is Ruby's: `a` when `a` is `null`/`false`, else `b`; `a || b` is `a` unless `a`
//!   is `null`/`false`. An empty string counts as *true* there, so `$EMPTY && $SET` is true and
//!   `$EMPTY || $SET` is false (GitLab's own spec asserts both).
//! * The result is true when it is `present?`: not `null`, not `false`, and not a string made
//!   only of whitespace (so `$VAR` is false for `""` and for `"  "`).
//! * `l =~ r` (and `!~`, its negation): when `r` is `null` or `false` the result is false
//!   (`!~`: true). A regex matches anywhere in `l` as text (`null` reads as `""`, so
//!   `$UNDEFINED =~ /^$/` is true and `$UNDEFINED =~ /x/` false). A string `r` is used as a
//!   regex when it reads `/pattern/flags` and compiles (GitLab 15.1+); otherwise `=~` tests
//!   whether `l` is a **substring** of `r`, as GitLab documents.
//! * Regexes are RE2 with flags `i`, `m`, `s`, `U`, run by the `regex` crate with RE2's
//!   ASCII `\d \w \s \b`, POSIX classes, `\Q…\E` and octal escapes; a literal needs two
//!   characters or more between its slashes, and `\/` stands for `/`.
//! * Precedence: comparisons, then `&&`, then `||`, all left-associative; parentheses group.
//!
//! **Stricter than GitLab, on purpose.** GitLab's shunting-yard parser never checks where
//! operands sit, so it accepts nonsense such as `== $A $B`, and it silently evaluates a regex
//! used with `==`, on the left of `=~`, or alone. These are always mistakes, so [`Expr::parse`]
//! reports them instead. `$[[ inputs.x ]]` must be interpolated before parsing.
//!
//! **Bounded.** An expression is at most [`MAX_EXPR_LEN`] bytes and [`MAX_TOKENS`] tokens
//! (GitLab's own limit), parentheses nest at most [`MAX_DEPTH`] deep, and every regex is
//! compiled once, at parse time, under [`REGEX_SIZE_LIMIT`] and [`REGEX_DFA_SIZE_LIMIT`]. The
//! parser, evaluator and printer recurse at most once per token, so the stack stays small.

mod lexer;
mod pattern;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::expand::Lookup;
pub use lexer::MAX_TOKENS;
use lexer::{Lexer, Op, Tok, Token, quoted};
use pattern::Pattern;
pub use pattern::{REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT};

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 64 * 1024;
/// Deepest nesting of parentheses accepted.
pub const MAX_DEPTH: usize = 64;

/// A refused expression: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// Byte offset into the expression text of the offending token (the text's length when
    /// something is missing at the end).
    pub offset: usize,
    pub message: String,
}

/// A parsed expression, ready to evaluate many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// Nodes in post-order (children before parents, left before right); the last is the root.
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Var(Box<str>),
    Str(Box<str>),
    Null,
    Bool(bool),
    Regex(Box<Pattern>),
    Binary(Op, usize, usize),
}

impl Node {
    /// Binding strength when printing: higher binds tighter.
    fn precedence(&self) -> u8 {
        match self {
            Node::Binary(Op::Or, ..) => 1,
            Node::Binary(Op::And, ..) => 2,
            Node::Binary(..) => 3,
            _ => 4,
        }
    }
}

impl Expr {
    /// Parses an expression and compiles its regexes.
    ///
    /// # Errors
    ///
    /// The first problem found, with the byte offset of the offending token: an unknown or
    /// unterminated token, a missing operand or operator, an invalid regex, or a limit
    /// ([`MAX_EXPR_LEN`], [`MAX_TOKENS`], [`MAX_DEPTH`]) exceeded.
    pub fn parse(src: &str) -> Result<Expr, ExprError> {
        if src.len() > MAX_EXPR_LEN {
            return Err(ExprError {
                offset: MAX_EXPR_LEN,
                message: format!("the expression is {} bytes long; the limit is {MAX_EXPR_LEN}", src.len()),
            });
        }
        let mut parser = Parser { src, lexer: Lexer::new(src), peeked: None, prev: None, nodes: Vec::new(), offsets: Vec::new(), depth: 0 };
        if parser.peek()?.is_none() {
            return Err(ExprError {
                offset: src.len(),
                message: "the expression is empty: write a condition such as `$CI_COMMIT_BRANCH == \"main\"`".into(),
            });
        }
        let root = parser.parse_or()?;
        if let Some(extra) = parser.next()? {
            return Err(parser.unexpected_after_expression(extra));
        }
        parser.reject_bare_regex(root)?;
        debug_assert_eq!(root, parser.nodes.len() - 1, "root is the last node");
        Ok(Expr { nodes: parser.nodes })
    }

    /// Evaluates with GitLab's semantics: `true` when the result is `present?`.
    pub fn eval(&self, vars: &dyn Lookup) -> bool {
        match self.value(self.nodes.len() - 1, vars) {
            Value::Null | Value::Bool(false) => false,
            Value::Bool(true) | Value::Regex(_) => true,
            Value::Str(s) => !s.chars().all(char::is_whitespace),
        }
    }

    /// Names of the variables used, in order of first appearance, each once.
    pub fn variables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for node in &self.nodes {
            if let Node::Var(name) = node
                && !names.contains(&&**name)
            {
                names.push(name);
            }
        }
        names
    }

    fn value<'s>(&'s self, id: usize, vars: &'s dyn Lookup) -> Value<'s> {
        match &self.nodes[id] {
            Node::Var(name) => vars.lookup(name).map_or(Value::Null, Value::Str),
            Node::Str(s) => Value::Str(s),
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Regex(p) => Value::Regex(p),
            Node::Binary(op, l, r) => {
                let left = self.value(*l, vars);
                match op {
                    Op::And if left.ruby_truthy() => self.value(*r, vars),
                    Op::Or if !left.ruby_truthy() => self.value(*r, vars),
                    Op::And | Op::Or => left,
                    Op::Eq => Value::Bool(equal(left, self.value(*r, vars))),
                    Op::Ne => Value::Bool(!equal(left, self.value(*r, vars))),
                    Op::Match => Value::Bool(matches(left, self.value(*r, vars)).unwrap_or(false)),
                    Op::NoMatch => Value::Bool(matches(left, self.value(*r, vars)).is_none_or(|m| !m)),
                }
            }
        }
    }

    fn fmt_node(&self, id: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nodes[id] {
            Node::Var(name) => write!(f, "${name}"),
            Node::Str(s) if s.contains('"') => write!(f, "'{s}'"),
            Node::Str(s) => write!(f, "\"{s}\""),
            Node::Null => f.write_str("null"),
            Node::Bool(b) => write!(f, "{b}"),
            Node::Regex(p) => f.write_str(p.literal()),
            Node::Binary(op, l, r) => {
                let own = self.nodes[id].precedence();
                self.fmt_child(*l, own, f)?;
                write!(f, " {} ", op.as_str())?;
                // Left-associative: an equal-precedence right child needs parentheses.
                self.fmt_child(*r, own + 1, f)
            }
        }
    }

    fn fmt_child(&self, id: usize, min: u8, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes[id].precedence() < min {
            f.write_str("(")?;
            self.fmt_node(id, f)?;
            f.write_str(")")
        } else {
            self.fmt_node(id, f)
        }
    }
}

/// Canonical form: single spaces around operators, parentheses only where needed.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_node(self.nodes.len() - 1, f)
    }
}

/// A Ruby value during evaluation.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Null,
    Str(&'a str),
    Bool(bool),
    Regex(&'a Pattern),
}

impl Value<'_> {
    /// Ruby truthiness, used by `&&` / `||`: only `nil` and `false` are false.
    fn ruby_truthy(self) -> bool {
        !matches!(self, Value::Null | Value::Bool(false))
    }

    /// `to_s`, which `=~` applies to its left side.
    fn text(&self) -> &str {
        match self {
            Value::Null => "",
            Value::Str(s) => s,
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Regex(p) => p.literal(),
        }
    }
}

/// `==` with GitLab's coercion: a boolean compares to a string as `"true"` / `"false"`.
fn equal(l: Value<'_>, r: Value<'_>) -> bool {
    match (l, r) {
        (Value::Null, Value::Null) => true,
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Bool(b), Value::Str(s)) | (Value::Str(s), Value::Bool(b)) => s == if b { "true" } else { "false" },
        (Value::Regex(a), Value::Regex(b)) => pattern::same_source(a, b),
        _ => false,
    }
}

/// `l =~ r`; `None` when `r` is `null`/`false` ("no regexp": `=~` false, `!~` true).
fn matches(l: Value<'_>, r: Value<'_>) -> Option<bool> {
    let text = l.text();
    match r {
        Value::Null | Value::Bool(false) => None,
        Value::Regex(p) => Some(p.is_match(text)),
        // GitLab crashes on `true` here; reading it as the string "true" is the kind choice.
        Value::Bool(true) => Some("true".contains(text)),
        Value::Str(s) => Some(match pattern::from_variable(s) {
            Some(re) => re.is_match(text),
            None => s.contains(text),
        }),
    }
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// The last token consumed, to say what an error follows.
    prev: Option<Token<'a>>,
    nodes: Vec<Node>,
    /// Byte offset where each node starts.
    offsets: Vec<usize>,
    depth: usize,
}

fn error(offset: usize, message: impl Into<String>) -> ExprError {
    ExprError { offset, message: message.into() }
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<Option<Token<'a>>, ExprError> {
        if self.peeked.is_none() {
            self.peeked = self.lexer.next_token()?;
        }
        Ok(self.peeked)
    }

    fn next(&mut self) -> Result<Option<Token<'a>>, ExprError> {
        let token = match self.peeked.take() {
            Some(t) => Some(t),
            None => self.lexer.next_token()?,
        };
        if token.is_some() {
            self.prev = token;
        }
        Ok(token)
    }

    fn text(&self, token: Token<'_>) -> String {
        quoted(&self.src[token.start..token.end])
    }

    fn push(&mut self, node: Node, offset: usize) -> usize {
        self.nodes.push(node);
        self.offsets.push(offset);
        self.nodes.len() - 1
    }

    /// Consumes the next token when it is one of `ops`.
    fn eat(&mut self, ops: &[Op]) -> Result<Option<Op>, ExprError> {
        match self.peek()? {
            Some(Token { tok: Tok::Op(op), .. }) if ops.contains(&op) => {
                self.next()?;
                Ok(Some(op))
            }
            _ => Ok(None),
        }
    }

    fn parse_or(&mut self) -> Result<usize, ExprError> {
        let mut left = self.parse_and()?;
        while let Some(op) = self.eat(&[Op::Or])? {
            let right = self.parse_and()?;
            left = self.binary(op, left, right)?;
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<usize, ExprError> {
        let mut left = self.parse_comparison()?;
        while let Some(op) = self.eat(&[Op::And])? {
            let right = self.parse_comparison()?;
            left = self.binary(op, left, right)?;
        }
        Ok(left)
    }

    fn parse_comparison(&mut self) -> Result<usize, ExprError> {
        let mut left = self.parse_operand()?;
        while let Some(op) = self.eat(&[Op::Eq, Op::Ne, Op::Match, Op::NoMatch])? {
            let right = self.parse_operand()?;
            left = self.binary(op, left, right)?;
        }
        Ok(left)
    }

    fn parse_operand(&mut self) -> Result<usize, ExprError> {
        let after = self.prev;
        let Some(token) = self.next()? else {
            return Err(error(self.src.len(), Self::expected_after(after)));
        };
        let node = match token.tok {
            Tok::Var(name) => Node::Var(name.into()),
            Tok::Str(s) => Node::Str(s.into()),
            Tok::Null => Node::Null,
            Tok::Bool(b) => Node::Bool(b),
            Tok::Regex(literal) => {
                let pattern = Pattern::from_literal(literal)
                    .map_err(|why| error(token.start, format!("invalid regex {}: {why}", quoted(literal))))?;
                Node::Regex(Box::new(pattern))
            }
            Tok::LParen => {
                if self.depth == MAX_DEPTH {
                    return Err(error(token.start, format!("parentheses are nested more than {MAX_DEPTH} deep")));
                }
                self.depth += 1;
                let inner = self.parse_or()?;
                self.depth -= 1;
                match self.next()? {
                    Some(Token { tok: Tok::RParen, .. }) => return Ok(inner),
                    Some(other) => return Err(self.unexpected_after_expression(other)),
                    None => return Err(error(token.start, "this `(` is never closed: add a `)`")),
                }
            }
            Tok::RParen if matches!(after, Some(Token { tok: Tok::LParen, .. })) => {
                return Err(error(token.start, "empty parentheses: put a condition between `(` and `)`"));
            }
            Tok::RParen | Tok::Op(_) => {
                let message = match after {
                    None => format!("{} needs a value on its left, e.g. `$VAR == \"x\"`", self.text(token)),
                    Some(Token { tok: Tok::LParen, .. }) => {
                        format!("expected a condition after `(`, found {}", self.text(token))
                    }
                    _ => format!("{}, found {}", Self::expected_after(after), self.text(token)),
                };
                return Err(error(token.start, message));
            }
        };
        Ok(self.push(node, token.start))
    }

    /// "expected … after X" for a missing operand.
    fn expected_after(after: Option<Token<'_>>) -> String {
        match after.map(|t| t.tok) {
            Some(Tok::Op(op)) if op.is_comparison() => {
                format!("expected a variable, string, `null` or regex after `{}`", op.as_str())
            }
            Some(Tok::Op(op)) => format!("expected a condition after `{}`", op.as_str()),
            Some(Tok::LParen) => "expected a condition after `(`".to_string(),
            _ => "expected a condition".to_string(),
        }
    }

    /// A token where an operator or the end was expected.
    fn unexpected_after_expression(&self, token: Token<'_>) -> ExprError {
        let message = match token.tok {
            Tok::RParen => "unmatched `)`: there is no `(` before it".to_string(),
            _ => format!(
                "missing operator before {}: join conditions with `&&` or `||`, or compare with `==`, `!=`, `=~`, `!~`",
                self.text(token)
            ),
        };
        error(token.start, message)
    }

    fn binary(&mut self, op: Op, left: usize, right: usize) -> Result<usize, ExprError> {
        let is_regex = |id: usize| matches!(self.nodes[id], Node::Regex(_));
        match op {
            Op::Eq | Op::Ne if is_regex(left) || is_regex(right) => {
                let at = if is_regex(left) { self.offsets[left] } else { self.offsets[right] };
                return Err(error(at, format!("a regex cannot be compared with `{}`: use `=~` or `!~` to match it", op.as_str())));
            }
            Op::Match | Op::NoMatch if is_regex(left) => {
                return Err(error(self.offsets[left], format!("the regex goes on the right: write `$VAR {} /pattern/`", op.as_str())));
            }
            Op::And | Op::Or => {
                self.reject_bare_regex(left)?;
                self.reject_bare_regex(right)?;
            }
            _ => {}
        }
        let offset = self.offsets[left];
        Ok(self.push(Node::Binary(op, left, right), offset))
    }

    fn reject_bare_regex(&self, id: usize) -> Result<(), ExprError> {
        match &self.nodes[id] {
            Node::Regex(p) => {
                Err(error(self.offsets[id], format!("a regex alone is not a condition: match it with `$VAR =~ {}`", p.literal())))
            }
            _ => Ok(()),
        }
    }
}
