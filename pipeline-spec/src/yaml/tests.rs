use super::*;

fn load(text: &str) -> Result<Node, Diagnostic> {
    let mut w = Vec::new();
    parse(text, FileId(0), &Limits::default(), &mut w).map(|d| d.root)
}

fn load_with(text: &str, limits: Limits) -> Result<Node, Diagnostic> {
    let mut w = Vec::new();
    parse(text, FileId(0), &limits, &mut w).map(|d| d.root)
}

#[test]
fn plain_scalars_follow_yaml_1_1_like_psych() {
    let cases: &[(&str, Value)] = &[
        ("yes", Value::Bool(true)),
        ("On", Value::Bool(true)),
        ("OFF", Value::Bool(false)),
        ("no", Value::Bool(false)),
        ("y", Value::Str("y".into())),
        ("~", Value::Null),
        ("null", Value::Null),
        ("0755", Value::Int(493, "0755".into())),
        ("0x1F", Value::Int(31, "0x1F".into())),
        ("0b101", Value::Int(5, "0b101".into())),
        ("1_000", Value::Int(1000, "1_000".into())),
        ("1,000", Value::Int(1000, "1,000".into())),
        ("1:30", Value::Int(90, "1:30".into())),
        ("-42", Value::Int(-42, "-42".into())),
        ("1.10", Value::Float(1.1, "1.10".into())),
        ("1e3", Value::Str("1e3".into())),
        ("1.5e+3", Value::Float(1500.0, "1.5e+3".into())),
        ("3.", Value::Float(3.0, "3.".into())),
        ("0o17", Value::Str("0o17".into())),
        ("1.2.3", Value::Str("1.2.3".into())),
        ("v1", Value::Str("v1".into())),
        ("08", Value::Str("08".into())),
    ];
    for (text, want) in cases {
        assert_eq!(&resolve_plain(text), want, "plain scalar {text:?}");
    }
}

#[test]
fn quoted_scalars_stay_strings() {
    let n = load("a: 'yes'\nb: \"0755\"\nc: !!str 12\n").unwrap();
    assert_eq!(n.get("a").unwrap().as_str(), Some("yes"));
    assert_eq!(n.get("b").unwrap().as_str(), Some("0755"));
    assert_eq!(n.get("c").unwrap().as_str(), Some("12"));
}

#[test]
fn spans_are_one_based() {
    let n = load("job:\n  script:\n    - echo hi\n").unwrap();
    let job = n.as_map().unwrap().get("job").unwrap();
    assert_eq!((job.key_span.line, job.key_span.col), (1, 1));
    let script = job.value.as_map().unwrap().get("script").unwrap();
    assert_eq!((script.key_span.line, script.key_span.col), (2, 3));
    let item = &script.value.as_seq().unwrap()[0];
    assert_eq!((item.span.line, item.span.col), (3, 7));
}

#[test]
fn merge_keys_explicit_wins_and_earlier_source_wins() {
    let text = "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 9\n";
    let n = load(text).unwrap();
    let c = n.get("c").unwrap();
    assert_eq!(c.get("x").unwrap().scalar_string().as_deref(), Some("9"));
    assert_eq!(c.get("y").unwrap().scalar_string().as_deref(), Some("1"));
    assert_eq!(c.get("z").unwrap().scalar_string().as_deref(), Some("2"));
}

#[test]
fn merge_keys_follow_psych_textual_order() {
    // A `<<` read after an explicit key replaces it; several `<<` keys all merge, later wins.
    let text = "a: &a {x: 1, y: 1}\nb: &b {y: 2}\nc:\n  x: 0\n  <<: *a\n  <<: *b\n";
    let n = load(text).unwrap();
    let c = n.get("c").unwrap();
    assert_eq!(c.get("x").unwrap().scalar_string().as_deref(), Some("1"));
    assert_eq!(c.get("y").unwrap().scalar_string().as_deref(), Some("2"));
}

#[test]
fn reference_tag_is_kept() {
    let n = load("a:\n  script: !reference [.setup, script]\n").unwrap();
    let r = n.get("a").unwrap().get("script").unwrap();
    match &r.value {
        Value::Reference(parts) => assert_eq!(parts.iter().map(|p| p.as_str().unwrap()).collect::<Vec<_>>(), [".setup", "script"]),
        other => panic!("expected a reference, got {other:?}"),
    }
}

#[test]
fn unknown_tag_is_an_error_with_position() {
    let e = load("a: !include foo.yml\n").unwrap_err();
    assert!(e.message.contains("unknown YAML tag `!include`"), "{}", e.message);
    assert_eq!((e.span.line, e.span.col), (1, 4));
}

#[test]
fn alias_bomb_stops_at_the_node_limit() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        text.push_str(&format!(
            "{}: &{} [*{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}]\n",
            w[1], w[1], w[0], w[0], w[0], w[0], w[0], w[0], w[0], w[0], w[0], w[0]
        ));
    }
    let e = load(&text).unwrap_err();
    assert!(e.message.contains("more than 1000000 nodes"), "{}", e.message);
}

#[test]
fn deep_nesting_stops_at_the_depth_limit() {
    let text = "[".repeat(10_000) + &"]".repeat(10_000);
    let e = load(&text).unwrap_err();
    assert!(e.message.contains("deeper than the limit of 100"), "{}", e.message);
    let deep_maps: String = (0..200).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
    let r = load(&deep_maps);
    assert!(r.is_err(), "{:?}", r.map(|n| n.size()));
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let e = load_with("a: b\n", Limits { max_bytes: 3, ..Limits::default() }).unwrap_err();
    assert!(e.message.contains("more than the limit of 3 bytes"));
}

#[test]
fn binary_garbage_is_an_error_not_a_panic() {
    assert!(load("\0\x01\x02").is_err());
    assert!(load("a: [1, 2").is_err());
    assert!(load("a: b\n  c: d\n").is_err());
}

#[test]
fn duplicate_keys_warn_and_last_wins() {
    let mut w = Vec::new();
    let d = parse("a: 1\na: 2\n", FileId(0), &Limits::default(), &mut w).unwrap();
    assert_eq!(d.root.get("a").unwrap().scalar_string().as_deref(), Some("2"));
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("duplicate key `a`"));
}

#[test]
fn a_key_overriding_a_merge_is_not_a_duplicate() {
    // YAML merge keys exist to be overridden (Psych, so GitLab, says nothing); writing the key
    // twice by hand still warns.
    let mut w = Vec::new();
    let text = "a: &a {x: 1, y: 1}\nb:\n  <<: *a\n  x: 2\n  y: 3\n  y: 4\n";
    let d = parse(text, FileId(0), &Limits::default(), &mut w).unwrap();
    let b = d.root.get("b").unwrap();
    assert_eq!(b.get("x").unwrap().scalar_string().as_deref(), Some("2"));
    assert_eq!(b.get("y").unwrap().scalar_string().as_deref(), Some("4"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].message.contains("duplicate key `y`: this value replaces the one at line 5"), "{w:?}");
}

#[test]
fn spec_header_document_is_split_off() {
    let d = parse("spec:\n  inputs:\n    x:\n---\njob:\n  script: [a]\n", FileId(0), &Limits::default(), &mut Vec::new()).unwrap();
    assert!(d.header.is_some());
    assert!(d.root.get("job").is_some());
    let e = load("a: 1\n---\nb: 2\n").unwrap_err();
    assert!(e.message.contains("second YAML document"));
}

#[test]
fn ruby_float_formatting() {
    assert_eq!(ruby_float(1.1), "1.1");
    assert_eq!(ruby_float(3.0), "3.0");
    assert_eq!(ruby_float(1e20), "1.0e+20");
    assert_eq!(ruby_float(1.5e-5), "1.5e-05");
}

#[test]
fn undefined_alias_is_an_error() {
    assert!(load("a: *nope\n").is_err());
}

#[test]
fn nodes_stay_small() {
    // Nodes are moved around a lot while building; maps are boxed to keep scalars cheap.
    assert!(std::mem::size_of::<Node>() <= 48, "Node is {} bytes", std::mem::size_of::<Node>());
}
