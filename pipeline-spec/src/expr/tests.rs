use super::*;
use proptest::prelude::*;

/// The variables every evaluation case sees (the first five are GitLab's own spec fixtures).
const VARS: &[(&str, &str)] = &[
    ("PRESENT", "my variable"),
    ("EMPTY", ""),
    ("PATH_VARIABLE", "a/path/variable/value"),
    ("FULL_PATH", "/a/full/path/variable/value"),
    ("SPACES", "  \t"),
    ("TEXT", "abcde"),
    ("PATTERN", "/^ab.*/"),
    ("PATTERN_I", "/AB/i"),
    ("PATTERN_ESC", r"/a\/b/"),
    ("SLASHED", "x/a/b/y"),
    ("RE_LINES", "junk\n/^ab/"),
    ("DOT1", "/./"),
    ("NOT_RE", "1234"),
    ("SHORT", "23"),
    ("BAD_RE", "/a(/"),
    ("TRUE_S", "true"),
    ("FALSE_S", "false"),
    ("MULTI", "first line\nsecond line"),
    ("BRANCH", "feature/Login-UI"),
    ("UNICODE", "café٣"),
    ("BACKSLASH", r"a\n"),
    ("QUOTED", "say \"hi\""),
    ("APOS", "it's"),
    ("AMP", "a&b"),
];

fn check(src: &str, vars: &dyn Lookup, expected: bool) {
    let expr = Expr::parse(src).unwrap_or_else(|e| panic!("{src:?} failed to parse at {}: {e}", e.offset));
    assert_eq!(expr.eval(vars), expected, "{src:?} (printed as `{expr}`)");
}

#[test]
fn evaluates_like_gitlab() {
    let cases: &[(&str, bool)] = &[
        // Presence.
        ("$PRESENT", true),
        ("$EMPTY", false),
        ("$UNDEFINED", false),
        ("$SPACES", false),
        // Equality, null, empty, either order, both quotes.
        ("$PRESENT == \"my variable\"", true),
        ("$PRESENT == 'my variable'", true),
        ("\"my variable\" == $PRESENT", true),
        ("$PRESENT == null", false),
        ("$EMPTY == null", false),
        ("$UNDEFINED == null", true),
        ("null == $UNDEFINED", true),
        ("$EMPTY == \"\"", true),
        ("\"\" == $EMPTY", true),
        ("$UNDEFINED == \"\"", false),
        ("$PRESENT != \"my variable\"", false),
        ("$PRESENT != null", true),
        ("$EMPTY != null", true),
        ("$UNDEFINED != null", false),
        ("$UNDEFINED != \"\"", true),
        ("$PRESENT == $PRESENT", true),
        ("$PRESENT == $TEXT", false),
        ("$UNDEFINED == $ALSO_UNDEFINED", true),
        ("null == null", true),
        ("'a' == \"a\"", true),
        // Strings are verbatim: no escapes.
        (r#"$BACKSLASH == "a\n""#, true),
        (r#"'say "hi"' == $QUOTED"#, true),
        (r#""it's" == $APOS"#, true),
        // Booleans compare to "true"/"false" strings.
        ("$TRUE_S == true", true),
        ("true == $TRUE_S", true),
        ("$FALSE_S == false", true),
        ("$TRUE_S == false", false),
        ("$PRESENT != true", true),
        ("true", true),
        ("false", false),
        ("$UNDEFINED == false", false),
        ("($PRESENT == \"my variable\") == true", true),
        ("($PRESENT == \"x\") == \"false\"", true),
        ("$U1 == $U2 == $U3", false),
        ("$U1 == $U2 == true", true),
        // Regex literals and flags.
        ("$PRESENT =~ /var.*e$/", true),
        ("$PRESENT =~ /^var.*/", false),
        ("$EMPTY =~ /var.*/", false),
        ("$UNDEFINED =~ /var.*/", false),
        ("$UNDEFINED =~ /^$/", true),
        ("$UNDEFINED !~ /var.*/", true),
        ("$EMPTY !~ /var.*/", true),
        ("$PRESENT =~ /VAR.*/i", true),
        ("$PRESENT !~ /VAR.*/i", false),
        ("$PRESENT =~ /VAR.*/", false),
        (r"$PATH_VARIABLE =~ /path\/variable/", true),
        (r"$FULL_PATH =~ /^\/a\/full\/path\/variable\/value$/", true),
        (r"$PRESENT =~ /va\r.*e$/", false),
        ("$MULTI =~ /^second/", false),
        ("$MULTI =~ /^second/m", true),
        ("$MULTI =~ /line.second/", false),
        ("$MULTI =~ /line.second/s", true),
        ("$TEXT =~ /ab+/U", true),
        ("$TEXT =~ /AB/im", true),
        (r"$BRANCH =~ /^feature\//", true),
        // RE2, not Unicode-aware Perl classes.
        (r"$UNICODE =~ /^caf\w/", false),
        (r"$UNICODE =~ /\d$/", false),
        (r"$UNICODE =~ /\W/", true),
        ("$UNICODE =~ /^CAFÉ/i", true),
        ("$BRANCH =~ /[[:upper:]]/", true),
        ("$BRANCH =~ /^[^[:^alpha:]]+\\//", true),
        ("$AMP =~ /[&&x]/", true),
        (r"$TEXT =~ /\Qab\E/", true),
        (r"$TEXT =~ /\Qa.\E/", false),
        (r"$TEXT =~ /\x61b/", true),
        (r"$TEXT =~ /\141b/", true),
        (r"$TEXT =~ /b\b/", false),
        (r"$PRESENT =~ /y\b/", true),
        // A variable (or string) holding `/pattern/flags` is a regex, otherwise a substring test.
        ("$TEXT =~ $PATTERN", true),
        ("$PRESENT =~ $PATTERN", false),
        ("$TEXT !~ $PATTERN", false),
        ("$TEXT =~ $PATTERN_I", true),
        ("$SLASHED =~ $PATTERN_ESC", true),
        ("$TEXT =~ $RE_LINES", true),
        ("$TEXT =~ $DOT1", true),
        ("$TEXT =~ \"/^ab/\"", true),
        ("$SHORT =~ $NOT_RE", true),
        ("$NOT_RE =~ $SHORT", false),
        ("$NOT_RE !~ $SHORT", true),
        ("$SHORT =~ \"1234\"", true),
        ("$TEXT =~ $BAD_RE", false),
        ("\"a(\" =~ $BAD_RE", true),
        ("$TEXT =~ $EMPTY", false),
        ("$EMPTY =~ $EMPTY", true),
        ("$TEXT =~ $FALSE_S", false),
        // No regexp on the right: `=~` false, `!~` true.
        ("$TEXT =~ $UNDEFINED", false),
        ("$TEXT !~ $UNDEFINED", true),
        ("$TEXT =~ null", false),
        ("$TEXT !~ null", true),
        ("$TEXT =~ ($UNDEFINED != null)", false),
        ("$TEXT !~ ($UNDEFINED != null)", true),
        ("\"ru\" =~ ($UNDEFINED == null)", true),
        ("$TEXT =~ (/^ab/)", true),
        // `&&` / `||` pass values, with Ruby truthiness inside and `present?` at the end.
        ("$PRESENT && \"string\"", true),
        ("$PRESENT && $EMPTY", false),
        ("$EMPTY && $PRESENT", true),
        ("$EMPTY || $PRESENT", false),
        ("$UNDEFINED || $PRESENT", true),
        ("$UNDEFINED && $PRESENT", false),
        ("null && null", false),
        ("$SPACES && $PRESENT", true),
        ("$PRESENT && $SPACES", false),
        ("$PRESENT && null || $EMPTY == \"\"", true),
        ("$PRESENT || $UNDEFINED == null", true),
        // Precedence and grouping.
        ("$PRESENT || $UNDEFINED && $UNDEFINED", true),
        ("$UNDEFINED && $UNDEFINED || $PRESENT", true),
        ("($PRESENT || $UNDEFINED) && $UNDEFINED", false),
        ("$EMPTY == \"\" && $PRESENT != \"nope\"", true),
        ("(\"string\" || \"test\") == \"string\"", true),
        ("(null || (\"test\" == \"string\"))", false),
        ("(\"string\" == (\"test\" && \"string\"))", true),
        ("(\"string\" == (\"test\" || \"string\"))", false),
        ("(\"string\" == \"test\" || \"string\")", true),
        ("((($PRESENT)))", true),
        // Whitespace is free.
        ("  $PRESENT\t==\n'my variable'  ", true),
        ("$PRESENT==\"my variable\"&&$TEXT=~/^a/", true),
    ];
    for &(src, expected) in cases {
        check(src, &VARS, expected);
    }
}

fn check_err(src: &str, offset: usize, message: &str) {
    match Expr::parse(src) {
        Ok(expr) => panic!("{src:?} parsed as `{expr}`, expected an error"),
        Err(err) => {
            assert_eq!(err.offset, offset, "offset for {src:?}: {}", err.message);
            assert!(err.message.contains(message), "message for {src:?}: {:?} lacks {message:?}", err.message);
        }
    }
}

#[test]
fn errors_say_what_and_where() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "the expression is empty"),
        ("   ", 3, "the expression is empty"),
        ("$A ==", 5, "expected a variable, string, `null` or regex after `==`"),
        ("== \"x\"", 0, "`==` needs a value on its left"),
        ("$A \"text\"", 3, "missing operator before `\"text\"`"),
        ("\"a\" \"b\"", 4, "missing operator"),
        ("$A and $B", 3, "use `&&` instead of `and`"),
        ("$A OR $B", 3, "use `||` instead of `or`"),
        ("$A = \"x\"", 3, "use `==` to compare"),
        ("!$A", 0, "`!` alone is not an operator"),
        ("$A & $B", 3, "use `&&`"),
        ("$A | $B", 3, "use `||`"),
        ("$A < \"1\"", 3, "no `<` or `>`"),
        ("$A == \"x", 6, "unterminated string: add the closing `\"`"),
        ("$A == 'x", 6, "unterminated string: add the closing `'`"),
        ("$A == \"x\ny\"", 6, "runs past the end of the line"),
        ("$A =~ /abc", 6, "unterminated regex"),
        (r"$A =~ /a\/", 6, "unterminated regex"),
        ("$A =~ /a/", 6, "at least two characters"),
        ("$A =~ //", 6, "at least two characters"),
        ("$A =~ /ab/x", 10, "unknown regex flag `x`"),
        ("$A =~ /ab/ig", 11, "unknown regex flag `g`"),
        (r"$A =~ /ab\\/", 6, "must not be `\\`"),
        ("$A =~ /a(b/", 6, "invalid regex `/a(b/`: unclosed group"),
        ("$A =~ /(?<!x)y/", 6, "look-around"),
        (r"$A =~ /(a)\1/", 6, "backreferences are not supported"),
        ("$A =~ /(((a{100}){100}){100})/", 6, "too large"),
        ("$A =~ /[[:foo:]]/", 6, "invalid character class `[:foo:]`"),
        ("$", 0, "expected a variable name after `$`"),
        ("$A == $", 6, "expected a variable name after `$`"),
        ("${A} == \"x\"", 0, "write `$A` without braces"),
        ("$[[ inputs.x ]] == \"y\"", 0, "inputs"),
        ("main", 0, "unknown word `main`: variables start with `$` (`$main`)"),
        ("$A == 12", 6, "numbers must be quoted: write `\"12\"`"),
        ("$A == nil", 6, "use `null` instead of `nil`"),
        ("$A == nullx", 6, "unknown word `nullx`"),
        ("($A", 0, "this `(` is never closed"),
        ("$A)", 2, "unmatched `)`"),
        ("()", 1, "empty parentheses"),
        ("($A ==)", 6, "expected a variable, string, `null` or regex after `==`, found `)`"),
        ("($A $B)", 4, "missing operator before `$B`"),
        ("$A && ", 6, "expected a condition after `&&`"),
        ("$A && && $B", 6, "expected a condition after `&&`, found `&&`"),
        ("( == $A)", 2, "expected a condition after `(`, found `==`"),
        ("$A == /ab/", 6, "a regex cannot be compared with `==`"),
        ("/ab/ != $A", 0, "a regex cannot be compared with `!=`"),
        ("/ab/ =~ $A", 0, "the regex goes on the right"),
        ("/ab/", 0, "a regex alone is not a condition"),
        ("$A || /ab/", 6, "a regex alone is not a condition"),
        ("$A\u{a0}== \"x\"", 2, "unexpected space character U+00A0: use a plain space"),
        ("$A == \"x\" é", 10, "`é`"),
    ];
    for &(src, offset, message) in cases {
        check_err(src, offset, message);
    }
}

#[test]
fn limits_are_enforced_with_errors() {
    // 99 tokens pass (GitLab's limit), the 100th is refused where it starts.
    let ok = vec!["$A"; 50].join(" && ");
    assert!(Expr::parse(&ok).is_ok());
    let too_many = format!("{ok} && $A");
    check_err(&too_many, ok.len() + 1, "more than 99 tokens");

    let deep = format!("{}$A{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    check_err(&deep, MAX_DEPTH, "nested more than 64 deep");

    let long = format!("$A{}", " ".repeat(MAX_EXPR_LEN));
    check_err(&long, MAX_EXPR_LEN, "the limit is 65536");
}

#[test]
fn prints_canonically() {
    let cases: &[(&str, &str)] = &[
        ("$A==\"x\"&&($B||$C)", "$A == \"x\" && ($B || $C)"),
        ("(($A))", "$A"),
        ("$A || $B && $C", "$A || $B && $C"),
        ("($A || $B) && $C", "($A || $B) && $C"),
        ("$A || ($B || $C)", "$A || ($B || $C)"),
        ("($A || $B) || $C", "$A || $B || $C"),
        ("'say \"hi\"' == $Q", "'say \"hi\"' == $Q"),
        ("'x' == $Q", "\"x\" == $Q"),
        (r"$A =~ /a\/b/i", r"$A =~ /a\/b/i"),
        ("$A == ($B == $C)", "$A == ($B == $C)"),
        ("null != true", "null != true"),
        ("$A =~ (/ab/)", "$A =~ /ab/"),
    ];
    for &(src, printed) in cases {
        let expr = Expr::parse(src).unwrap();
        assert_eq!(expr.to_string(), printed, "{src:?}");
        assert_eq!(Expr::parse(printed).unwrap(), expr, "{printed:?} re-parses to the same tree");
    }
}

#[test]
fn lists_variables_in_order() {
    let expr = Expr::parse("$B == $A || ($B =~ $C && null == $D_1)").unwrap();
    assert_eq!(expr.variables(), vec!["B", "A", "C", "D_1"]);
    assert!(Expr::parse("\"a\" == 'b'").unwrap().variables().is_empty());
}

#[test]
fn evaluates_with_any_lookup() {
    let expr = Expr::parse("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH || $FORCE").unwrap();
    let pipeline = vec![("CI_COMMIT_BRANCH".to_string(), "main".to_string())];
    let project = std::collections::HashMap::from([("CI_DEFAULT_BRANCH", "main")]);
    assert!(expr.eval(&crate::expand::Layered(vec![&pipeline, &project])));
    assert!(!expr.eval(&project));
    assert!(expr.eval(&[("FORCE", "1")]));
}

#[test]
fn a_parsed_expression_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expr>();
}

/// Pieces that make mostly-valid expressions when joined with spaces.
fn token() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("$A"),
        Just("$B"),
        Just("$UNDEFINED"),
        Just("\"x\""),
        Just("'a b'"),
        Just("\"\""),
        Just("null"),
        Just("true"),
        Just("false"),
        Just("/^x+/i"),
        Just("/a.b/"),
        Just("=="),
        Just("!="),
        Just("=~"),
        Just("!~"),
        Just("&&"),
        Just("||"),
        Just("("),
        Just(")"),
    ]
}

fn any_vars() -> impl Strategy<Value = Vec<(String, String)>> {
    let value = prop_oneof![Just(String::new()), "[a-z ]{0,4}", "/[a-z(.*]{0,4}/[imsUx]{0,2}", ".{0,6}"];
    (value.clone(), value).prop_map(|(a, b)| vec![("A".to_string(), a), ("B".to_string(), b)])
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(src in ".{0,120}", vars in any_vars()) {
        if let Ok(expr) = Expr::parse(&src) {
            let _ = expr.eval(&vars);
            let printed = expr.to_string();
            let reparsed = Expr::parse(&printed);
            prop_assert_eq!(reparsed.as_ref(), Ok(&expr), "printed as {}", printed);
        }
    }

    #[test]
    fn token_soup_round_trips(tokens in proptest::collection::vec(token(), 0..40), vars in any_vars()) {
        let src = tokens.join(" ");
        match Expr::parse(&src) {
            Ok(expr) => {
                let printed = expr.to_string();
                let reparsed = Expr::parse(&printed);
                prop_assert_eq!(reparsed.as_ref(), Ok(&expr), "{} printed as {}", src, printed);
                prop_assert_eq!(reparsed.unwrap().eval(&vars), expr.eval(&vars));
            }
            Err(err) => prop_assert!(err.offset <= src.len() && !err.message.is_empty()),
        }
    }

    #[test]
    fn error_offsets_are_on_char_boundaries(src in "[$a-z\"'/()=!~&| é\u{a0}]{0,40}") {
        if let Err(err) = Expr::parse(&src) {
            prop_assert!(src.is_char_boundary(err.offset), "{:?} at {}", src, err.offset);
        }
    }
}
