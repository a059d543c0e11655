//! `artifacts:reports:dotenv` parsing, table-driven: what GitLab accepts and what it refuses.

use runner::dotenv::{DotenvError, DotenvLimits, LineProblem, parse, parse_bytes, parse_with};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn accepted_reports() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("", &[]),
        ("\u{feff}", &[]),
        ("A=1", &[("A", "1")]),
        ("A=1\n", &[("A", "1")]),
        ("A=1\nB=2\n", &[("A", "1"), ("B", "2")]),
        ("A=1\r\nB=2\r\n", &[("A", "1"), ("B", "2")]),
        ("\u{feff}A=1", &[("A", "1")]),
        ("  A = spaced value  \n", &[("A", "spaced value")]),
        ("\tA=\ttab\t", &[("A", "tab")]),
        ("URL=https://x.example/?a=b&c=d", &[("URL", "https://x.example/?a=b&c=d")]),
        ("EMPTY=", &[("EMPTY", "")]),
        ("EMPTY=   ", &[("EMPTY", "")]),
        // Quotes and `$` are kept as they are.
        ("Q=\"quoted value\"", &[("Q", "\"quoted value\"")]),
        ("S='single'", &[("S", "'single'")]),
        ("V=$OTHER ${X}", &[("V", "$OTHER ${X}")]),
        ("H=#not-a-comment", &[("H", "#not-a-comment")]),
        ("lower_case9=x", &[("lower_case9", "x")]),
        ("9LIVES=x", &[("9LIVES", "x")]),
        ("_=x", &[("_", "x")]),
        ("U=ünïcødé ✓", &[("U", "ünïcødé ✓")]),
        // The last value wins; the key keeps its first position.
        ("A=1\nB=2\nA=3", &[("A", "3"), ("B", "2")]),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input), Ok(vars(expected)), "input {input:?}");
    }
}

#[test]
fn refused_reports() {
    let line = |line, problem| DotenvError::Line { line, problem };
    let long_key = format!("{}=x", "K".repeat(256));
    let cases: Vec<(&str, DotenvError)> = vec![
        ("\n", line(1, LineProblem::Empty)),
        ("A=1\n\nB=2", line(2, LineProblem::Empty)),
        ("A=1\n   \n", line(2, LineProblem::Empty)),
        ("A=1\r\n\r\n", line(2, LineProblem::Empty)),
        ("# a comment", line(1, LineProblem::Comment)),
        ("A=1\n#B=2", line(2, LineProblem::Comment)),
        ("export A=1", line(1, LineProblem::ExportPrefix)),
        ("A", line(1, LineProblem::MissingEquals)),
        ("A=\"multi\nline\"", line(2, LineProblem::MissingEquals)),
        ("=value", line(1, LineProblem::EmptyKey)),
        ("  =value", line(1, LineProblem::EmptyKey)),
        ("A-B=1", line(1, LineProblem::InvalidKey("A-B".into()))),
        ("A.B=1", line(1, LineProblem::InvalidKey("A.B".into()))),
        ("MY VAR=1", line(1, LineProblem::InvalidKey("MY VAR".into()))),
        ("ÜBER=1", line(1, LineProblem::InvalidKey("ÜBER".into()))),
        (&long_key, line(1, LineProblem::KeyTooLong(256))),
        ("A=x\0y", line(1, LineProblem::NulInValue)),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input), Err(expected), "input {input:?}");
    }
}

#[test]
fn limits() {
    let twenty: String = (0..20).map(|i| format!("V{i}=x\n")).collect();
    assert_eq!(parse(&twenty).unwrap().len(), 20);
    // Repeating a key does not count twice.
    assert_eq!(parse(&format!("{twenty}V0=again\n")).unwrap().len(), 20);
    let err = parse(&format!("{twenty}V20=x\n")).unwrap_err();
    assert_eq!(err, DotenvError::TooManyVariables { line: 21, limit: 20 });
    assert!(err.to_string().starts_with("line 21: more than 20 variables"), "{err}");

    let just_under = format!("A={}", "x".repeat(5117));
    assert_eq!(just_under.len(), 5119);
    assert_eq!(parse(&just_under).unwrap()[0].1.len(), 5117);
    let at_limit = format!("A={}", "x".repeat(5118));
    assert_eq!(parse(&at_limit), Err(DotenvError::TooLarge { bytes: 5120, limit: 5120 }));
    assert!(parse(&"A=1\n".repeat(100_000)).unwrap_err().to_string().contains("must be smaller than 5120 bytes"));

    // GitLab.com's Free plan allows 50 variables.
    let fifty: String = (0..50).map(|i| format!("V{i}=x\n")).collect();
    let limits = DotenvLimits { max_variables: 50, ..DotenvLimits::default() };
    assert_eq!(parse_with(&fifty, &limits).unwrap().len(), 50);
}

#[test]
fn messages_name_the_line() {
    let cases = [
        ("A=1\nexport B=2", "line 2: `export` is not allowed in a dotenv report; write `KEY=VALUE`"),
        ("A=1\nB=2\n\n", "line 3: empty lines are not allowed in a dotenv report; remove it"),
        ("not a variable", "line 1: expected `KEY=VALUE`"),
        ("A-B=1", "line 1: invalid variable name `A-B`: use only ASCII letters, digits and `_`"),
        ("# note", "line 1: comments are not allowed in a dotenv report; remove the line"),
    ];
    for (input, message) in cases {
        assert_eq!(parse(input).unwrap_err().to_string(), message);
    }
}

#[test]
fn bytes_in_other_encodings() {
    let limits = DotenvLimits::default();
    // PowerShell's `>` writes UTF-16LE with a byte order mark.
    let mut utf16le = vec![0xff, 0xfe];
    utf16le.extend("A=1\r\nB=é\r\n".encode_utf16().flat_map(u16::to_le_bytes));
    assert_eq!(parse_bytes(&utf16le, &limits), Ok(vars(&[("A", "1"), ("B", "é")])));
    let mut utf16be = vec![0xfe, 0xff];
    utf16be.extend("A=1".encode_utf16().flat_map(u16::to_be_bytes));
    assert_eq!(parse_bytes(&utf16be, &limits), Ok(vars(&[("A", "1")])));
    // Invalid UTF-8 is replaced, as GitLab does.
    assert_eq!(parse_bytes(b"A=\xff\xfe-ok", &limits), Ok(vars(&[("A", "\u{fffd}\u{fffd}-ok")])));
    // An odd trailing byte of UTF-16 does not panic.
    assert!(parse_bytes(&[0xff, 0xfe, b'A', 0, b'=', 0, b'1'], &limits).is_ok());
    let big = vec![b'x'; 5120];
    assert_eq!(parse_bytes(&big, &limits), Err(DotenvError::TooLarge { bytes: 5120, limit: 5120 }));
}

proptest::proptest! {
    /// Any text: no panic, and what is accepted is made of valid keys and NUL-free values.
    #[test]
    fn any_text_is_parsed_or_refused(text in "(?s).{0,300}", lines in proptest::collection::vec("[A-Za-z0-9_ =#\"'\\-\t]{0,20}", 0..30)) {
        for input in [text, lines.join("\n")] {
            if let Ok(vars) = parse(&input) {
                proptest::prop_assert!(vars.len() <= 20);
                for (k, v) in vars {
                    proptest::prop_assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                    proptest::prop_assert!(!v.contains('\0') && !v.contains('\n'));
                }
            }
        }
    }

    #[test]
    fn any_bytes_are_parsed_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = parse_bytes(&bytes, &DotenvLimits::default());
    }
}
