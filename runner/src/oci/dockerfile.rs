//! A Dockerfile parser: parser directives (`# escape=`, `# syntax=` ignored), comments,
//! continuation lines, JSON (exec) and shell forms, and the word rules of Docker's shell-like
//! lexer (quotes, escapes, `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}`) for expansion.
//! Every instruction keeps its 1-based line and column; errors carry them.

use std::collections::BTreeMap;

/// An error at a position of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The command of `CMD`, `ENTRYPOINT`, `RUN`, `SHELL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Exec(Vec<String>),
    Shell(String),
}

/// One instruction, its arguments as written (expansion happens when building).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Copy { sources: Vec<String>, dest: String, from: Option<String>, chown: Option<String>, chmod: Option<String>, add: bool },
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Maintainer(String),
    Entrypoint(Form),
    Cmd(Form),
    Shell(Vec<String>),
    Run(Form),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub col: usize,
    /// The instruction as written, for the image history (`COPY app /app`).
    pub text: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    pub col: usize,
    /// The base image as written (`scratch`, `${BASE}`, a reference or an earlier stage name).
    pub from: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Whether any stage has a `RUN` (the Docker Engine must build it).
    pub fn has_run(&self) -> bool {
        self.stages.iter().flat_map(|s| &s.instructions).any(|i| matches!(i.op, Op::Run(_)))
    }
}

/// Parses `text`.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: `# key=value` lines at the very top.
    while i < lines.len() {
        let Some(rest) = lines[i].trim_start().strip_prefix('#') else { break };
        let Some((key, value)) = rest.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(' ') {
            break;
        }
        match key.as_str() {
            "escape" => match value.trim() {
                "\\" => escape = '\\',
                "`" => escape = '`',
                v => return Err(err(i + 1, 1, format!("`escape` must be `\\` or a backtick, not `{v}`"))),
            },
            "syntax" | "check" => {}
            _ => break,
        }
        i += 1;
    }
    let mut file = Dockerfile::default();
    while i < lines.len() {
        let raw = lines[i];
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let (line, col) = (i + 1, raw.len() - trimmed.len() + 1);
        // Join continuation lines (comment lines inside are dropped, as Docker does).
        let mut joined = String::new();
        let mut current = trimmed;
        loop {
            let stripped = current.trim_end();
            if let Some(body) = stripped.strip_suffix(escape) {
                joined.push_str(body);
                i += 1;
                while i < lines.len() && lines[i].trim_start().starts_with('#') {
                    i += 1;
                }
                if i >= lines.len() {
                    break;
                }
                current = lines[i];
            } else {
                joined.push_str(current);
                i += 1;
                break;
            }
        }
        let (keyword, args) = match joined.find(char::is_whitespace) {
            Some(at) => (&joined[..at], joined[at..].trim()),
            None => (joined.as_str(), ""),
        };
        let kw = keyword.to_ascii_uppercase();
        let at = |message: String| err(line, col, message);
        if kw == "FROM" {
            let mut words = split_words(args, escape).map_err(at)?;
            let mut platform = None;
            while words.first().is_some_and(|w| w.starts_with("--")) {
                let flag = words.remove(0);
                match flag.strip_prefix("--platform=") {
                    Some(p) => platform = Some(p.to_owned()),
                    None => return Err(at(format!("`FROM` does not take `{flag}` (only `--platform=`)"))),
                }
            }
            let (from, name) = match words.as_slice() {
                [image] => (image.clone(), None),
                [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => (image.clone(), Some(name.to_ascii_lowercase())),
                _ => return Err(at("`FROM` takes an image and optionally `AS name`: `FROM image [AS name]`".into())),
            };
            file.stages.push(Stage { line, col, from, name, platform, instructions: Vec::new() });
            continue;
        }
        if kw == "ARG" && file.stages.is_empty() {
            file.global_args.extend(parse_arg(args, escape).map_err(at)?);
            continue;
        }
        let Some(stage) = file.stages.last_mut() else {
            return Err(at(format!(
                "`{keyword}` before the first `FROM`: a Dockerfile starts with `FROM` (only `ARG` may come before it)"
            )));
        };
        let op = parse_op(&kw, keyword, args, escape).map_err(at)?;
        stage.instructions.push(Instruction { line, col, text: format!("{kw} {args}"), op });
    }
    if file.stages.is_empty() {
        return Err(err(lines.len().max(1), 1, "the Dockerfile has no `FROM`".into()));
    }
    Ok(file)
}

fn err(line: usize, col: usize, message: String) -> ParseError {
    ParseError { line, col, message }
}

const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

fn parse_op(kw: &str, keyword: &str, args: &str, escape: char) -> Result<Op, String> {
    let need = |what: &str| if args.is_empty() { Err(format!("`{kw}` needs {what}")) } else { Ok(()) };
    Ok(match kw {
        "COPY" | "ADD" => {
            need("sources and a destination")?;
            if args.contains("<<") {
                return Err(format!("here-documents in `{kw}` are not supported"));
            }
            let mut words = if args.starts_with('[') { parse_json(args)? } else { split_words(args, escape)? };
            let (mut from, mut chown, mut chmod) = (None, None, None);
            while words.first().is_some_and(|w| w.starts_with("--")) {
                let flag = words.remove(0);
                let (name, value) = flag.split_once('=').ok_or_else(|| format!("`{flag}` needs a value: `{flag}=…`"))?;
                match name {
                    "--from" if kw == "COPY" => from = Some(value.to_owned()),
                    "--chown" => chown = Some(value.to_owned()),
                    "--chmod" => chmod = Some(value.to_owned()),
                    "--link" | "--parents" | "--exclude" | "--checksum" | "--keep-git-dir" => {
                        return Err(format!("`{kw} {name}` is not supported by piste's builder"));
                    }
                    _ => return Err(format!("`{kw}` does not take `{name}` (it takes `--from`, `--chown`, `--chmod`)")),
                }
            }
            if words.len() < 2 {
                return Err(format!("`{kw}` needs at least one source and a destination: `{kw} SRC... DEST`"));
            }
            let dest = words.pop().expect("two words");
            Op::Copy { sources: words, dest, from, chown, chmod, add: kw == "ADD" }
        }
        "ENV" => {
            need("`NAME=value` pairs")?;
            Op::Env(parse_pairs(kw, args, escape, true)?)
        }
        "LABEL" => {
            need("`key=value` pairs")?;
            Op::Label(parse_pairs(kw, args, escape, false)?)
        }
        "ARG" => {
            need("a name")?;
            Op::Arg(parse_arg(args, escape)?)
        }
        "WORKDIR" => {
            need("a path")?;
            Op::Workdir(args.to_owned())
        }
        "USER" => {
            need("a user")?;
            Op::User(args.to_owned())
        }
        "EXPOSE" => {
            need("ports")?;
            Op::Expose(split_words(args, escape)?)
        }
        "VOLUME" => {
            need("paths")?;
            Op::Volume(if args.starts_with('[') { parse_json(args)? } else { split_words(args, escape)? })
        }
        "STOPSIGNAL" => {
            need("a signal")?;
            Op::StopSignal(args.to_owned())
        }
        "MAINTAINER" => Op::Maintainer(args.to_owned()),
        "ENTRYPOINT" => Op::Entrypoint(form(args)),
        "CMD" => Op::Cmd(form(args)),
        "RUN" => {
            need("a command")?;
            Op::Run(form(args))
        }
        "SHELL" => match form(args) {
            Form::Exec(words) if !words.is_empty() => Op::Shell(words),
            _ => return Err("`SHELL` takes a JSON array: `SHELL [\"/bin/sh\", \"-c\"]`".into()),
        },
        "ONBUILD" | "HEALTHCHECK" => return Err(format!("`{kw}` is not supported by piste's builder")),
        _ => {
            let hint = KNOWN.iter().min_by_key(|k| distance(k, kw)).filter(|k| distance(k, kw) <= 2);
            return Err(match hint {
                Some(k) => format!("unknown instruction `{keyword}`; did you mean `{k}`?"),
                None => format!("unknown instruction `{keyword}`"),
            });
        }
    })
}

fn form(args: &str) -> Form {
    if args.starts_with('[')
        && let Ok(words) = parse_json(args)
    {
        return Form::Exec(words);
    }
    Form::Shell(args.to_owned())
}

fn parse_json(args: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(args).map_err(|e| format!("`{args}` is not a JSON array of strings ({e})"))
}

fn parse_arg(args: &str, escape: char) -> Result<Vec<(String, Option<String>)>, String> {
    split_words(args, escape)?
        .into_iter()
        .map(|w| {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_owned(), Some(d.to_owned())),
                None => (w.clone(), None),
            };
            check_name(&name, "ARG")?;
            Ok((name, default))
        })
        .collect()
}

fn check_name(name: &str, kw: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("`{kw}` name `{name}` is not valid (letters, digits, `_`)"));
    }
    Ok(())
}

/// `k=v k2="v 2"` (or the legacy `ENV k the rest`). Values stay raw (quotes included) for
/// expansion at build time.
fn parse_pairs(kw: &str, args: &str, escape: char, legacy: bool) -> Result<Vec<(String, String)>, String> {
    let words = split_words(args, escape)?;
    if legacy && !words[0].contains('=') {
        let (name, rest) = args.split_once(char::is_whitespace).ok_or_else(|| format!("`{kw} {args}` has no value: `{kw} NAME=value`"))?;
        check_name(name, kw)?;
        return Ok(vec![(name.to_owned(), rest.trim().to_owned())]);
    }
    words
        .into_iter()
        .map(|w| {
            let (k, v) = w.split_once('=').ok_or_else(|| format!("`{w}` is not `key=value` in `{kw}`"))?;
            if k.is_empty() {
                return Err(format!("`{w}` has an empty key in `{kw}`"));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Splits on whitespace outside quotes, keeping quotes and escapes (expansion removes them).
pub fn split_words(text: &str, escape: char) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), _) => {}
            (_, c) if c == escape => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
                continue;
            }
            _ => {}
        }
        word.push(c);
        in_word = true;
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote in `{text}`"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Expands variables in `word` and removes its quotes and escapes, as Docker's lexer does:
/// nothing inside single quotes; `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:+alt}`, `${VAR+alt}` elsewhere. Unknown variables are empty.
pub fn expand(word: &str, vars: &BTreeMap<String, String>, escape: char) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (q, c) if c == escape && i + 1 < chars.len() => {
                let next = chars[i + 1];
                if q == Some('"') && !['"', '$', escape].contains(&next) {
                    out.push(c);
                }
                out.push(next);
                i += 1;
            }
            (_, '$') if i + 1 < chars.len() => {
                let (value, used) = variable(&chars[i + 1..], vars, escape)?;
                out.push_str(&value);
                i += used;
            }
            (_, c) => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// The value of the variable reference after a `$` and how many characters it used.
fn variable(rest: &[char], vars: &BTreeMap<String, String>, escape: char) -> Result<(String, usize), String> {
    if rest[0] == '{' {
        let close = rest.iter().position(|c| *c == '}').ok_or("`${` without a closing `}`")?;
        let inner: String = rest[1..close].iter().collect();
        let name_end = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let (name, op) = inner.split_at(name_end);
        if name.is_empty() {
            return Err(format!("`${{{inner}}}` has no variable name"));
        }
        let value = vars.get(name);
        let result = match op {
            "" => value.cloned().unwrap_or_default(),
            _ => {
                let (kind, word) = if let Some(w) = op.strip_prefix(":-") {
                    ("-", Some((w, true)))
                } else if let Some(w) = op.strip_prefix(":+") {
                    ("+", Some((w, true)))
                } else if let Some(w) = op.strip_prefix('-') {
                    ("-", Some((w, false)))
                } else if let Some(w) = op.strip_prefix('+') {
                    ("+", Some((w, false)))
                } else {
                    return Err(format!("`${{{inner}}}`: piste expands `${{VAR}}`, `${{VAR:-word}}` and `${{VAR:+word}}` only"));
                };
                let (word, colon) = word.expect("set");
                let set = value.is_some_and(|v| !colon || !v.is_empty());
                let word = expand(word, vars, escape)?;
                match kind {
                    "-" if set => value.cloned().unwrap_or_default(),
                    "-" => word,
                    _ if set => word,
                    _ => String::new(),
                }
            }
        };
        return Ok((result, close + 1));
    }
    let len = rest.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').count();
    if len == 0 {
        return Ok(("$".to_owned(), 0));
    }
    let name: String = rest[..len].iter().collect();
    Ok((vars.get(&name).cloned().unwrap_or_default(), len))
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stages_continuations_and_forms() {
        let text = "# syntax=docker/dockerfile:1\nARG BASE=scratch\nFROM $BASE AS build\n# a comment\nCOPY --chown=10:20 --chmod=0755 \\\n  a.txt \\\n  # inside\n  b.txt /app/\nENV A=1 B=\"two words\"\nENV LEGACY some value\nFROM scratch\nCOPY --from=build /app /app\nCMD [\"/app/run\", \"x\"]\nENTRYPOINT echo hi\n";
        let f = parse(text).unwrap();
        assert_eq!(f.global_args, vec![("BASE".into(), Some("scratch".into()))]);
        assert_eq!(f.stages.len(), 2);
        assert_eq!((f.stages[0].from.as_str(), f.stages[0].name.as_deref()), ("$BASE", Some("build")));
        let copy = &f.stages[0].instructions[0];
        assert_eq!((copy.line, copy.col), (5, 1));
        assert_eq!(
            copy.op,
            Op::Copy {
                sources: vec!["a.txt".into(), "b.txt".into()],
                dest: "/app/".into(),
                from: None,
                chown: Some("10:20".into()),
                chmod: Some("0755".into()),
                add: false
            }
        );
        assert_eq!(f.stages[0].instructions[1].op, Op::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())]));
        assert_eq!(f.stages[0].instructions[2].op, Op::Env(vec![("LEGACY".into(), "some value".into())]));
        assert_eq!(f.stages[1].instructions[1].op, Op::Cmd(Form::Exec(vec!["/app/run".into(), "x".into()])));
        assert_eq!(f.stages[1].instructions[2].op, Op::Entrypoint(Form::Shell("echo hi".into())));
        assert!(!f.has_run());
    }

    #[test]
    fn errors_have_positions_and_suggestions() {
        let e = parse("FROM scratch\n  COPPY a /a\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 3));
        assert!(e.message.contains("did you mean `COPY`"), "{}", e.message);
        let e = parse("COPY a b\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("before the first `FROM`"));
        assert!(parse("FROM scratch\nCOPY a\n").unwrap_err().message.contains("at least one source"));
        assert!(parse("FROM scratch\nLABEL \"x\n").unwrap_err().message.contains("unterminated"));
        assert!(parse("# just a comment\n").unwrap_err().message.contains("no `FROM`"));
        let e = parse("# escape=`\nFROM scratch\nCOPY a `\n b /\nHEALTHCHECK NONE\n").unwrap_err();
        assert_eq!(e.line, 5);
    }

    #[test]
    fn expands_like_docker() {
        let vars: BTreeMap<String, String> = [("A".to_owned(), "x".to_owned()), ("E".to_owned(), String::new())].into();
        let e = |w: &str| expand(w, &vars, '\\').unwrap();
        assert_eq!(e("$A/${A}b"), "x/xb");
        assert_eq!(e("'$A'\"$A\""), "$Ax");
        assert_eq!(e("${E:-d}${E-d}${A:+y}${NO:+y}${NO:-$A}"), "dyx");
        assert_eq!(e("a\\ b\\$A"), "a b$A");
        assert_eq!(e("\"two words\""), "two words");
        assert!(expand("${A", &vars, '\\').is_err());
        assert_eq!(split_words("a \"b c\" 'd e'", '\\').unwrap(), vec!["a", "\"b c\"", "'d e'"]);
    }
}
