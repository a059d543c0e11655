use super::*;
use proptest::prelude::*;

fn vars() -> Vec<(&'static str, &'static str)> {
    vec![("A", "a"), ("B", "bee"), ("EMPTY", ""), ("PATH_1", "/p"), ("N", "1"), ("A", "last-a")]
}

#[test]
fn expand_follows_the_runner() {
    let cases: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("$A", "last-a"),
        ("${A}", "last-a"),
        ("x$B-y", "xbee-y"),
        ("$B$B", "beebee"),
        ("${B}c", "beec"),
        ("$Bc", ""),
        ("$UNKNOWN", ""),
        ("<${UNKNOWN}>", "<>"),
        ("$EMPTY|", "|"),
        ("$PATH_1/bin", "/p/bin"),
        ("$$", "$"),
        ("$$A", "$A"),
        ("$$$A", "$last-a"),
        ("a$", "a$"),
        ("$", "$"),
        ("$ x", "$ x"),
        ("$.x", "$.x"),
        ("$/", "$/"),
        ("é$Bé", "ébeeé"),
        ("$1x", "x"),
        ("$*$#$@$!$?$-", ""),
        ("${1}", ""),
        ("${$}", "$"),
        ("${}x", "x"),
        ("a${B", "aB"),
        ("${A:-d}", ""),
        ("${ A }", ""),
        ("$N$N", "11"),
    ];
    let v = vars();
    for (input, want) in cases {
        assert_eq!(expand(input, &v), *want, "expand({input:?})");
    }
}

#[test]
fn expand_keep_unknown_follows_gitlab_server() {
    let cases: &[(&str, &str)] = &[
        ("$A/$UNKNOWN", "last-a/$UNKNOWN"),
        ("${B}/${NOPE}", "bee/${NOPE}"),
        ("%B%/%NOPE%", "bee/%NOPE%"),
        ("$$A", "$last-a"),
        ("$1/$", "$1/$"),
        ("${A", "${A"),
        ("100%", "100%"),
        ("$EMPTY-x", "-x"),
        ("docs/**/*.md", "docs/**/*.md"),
        ("$_x", "$_x"),
    ];
    let v = vars();
    for (input, want) in cases {
        assert_eq!(expand_keep_unknown(input, &v), *want, "expand_keep_unknown({input:?})");
    }
}

#[test]
fn references_lists_each_name_once_in_order() {
    assert_eq!(references("$B ${A} $B $$C $1 %D% ${X:-y}"), vec!["B", "A", "X:-y"]);
    assert!(references("no refs $ $$").is_empty());
}

#[test]
fn lookups_agree() {
    let pairs = vec![("K".to_string(), "1".to_string()), ("K".to_string(), "2".to_string())];
    let hash: HashMap<String, String> = pairs.iter().cloned().collect();
    let btree: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let index: IndexMap<String, String> = pairs.iter().cloned().collect();
    for lookup in [&pairs as &dyn Lookup, &hash, &btree, &index, &[("K", "2")]] {
        assert_eq!(lookup.lookup("K"), Some("2"));
        assert_eq!(lookup.lookup("k"), None);
    }
    let strong = [("A", "strong")];
    let weak = [("A", "weak"), ("B", "weak-b")];
    let layered = Layered(vec![&strong, &weak]);
    assert_eq!(layered.lookup("A"), Some("strong"));
    assert_eq!(layered.lookup("B"), Some("weak-b"));
    assert_eq!(layered.lookup("C"), None);
}

fn check_all(vars: &[Var], want: &[(&str, &str)]) {
    let got = expand_all(vars);
    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn expand_all_follows_chains_in_any_order() {
    check_all(
        &[
            Var::new("IMAGE", "$REGISTRY/app:$TAG"),
            Var::new("TAG", "${CI_COMMIT_REF_SLUG}-1"),
            Var::new("REGISTRY", "reg.local"),
            Var::new("CI_COMMIT_REF_SLUG", "main"),
        ],
        &[("IMAGE", "reg.local/app:main-1"), ("TAG", "main-1"), ("REGISTRY", "reg.local"), ("CI_COMMIT_REF_SLUG", "main")],
    );
}

#[test]
fn expand_all_overrides_and_self_references() {
    check_all(
        &[Var::new("OPTS", "-a"), Var::new("USE", "[$OPTS]"), Var::new("OPTS", "$OPTS -b"), Var::new("SELF", "x$SELF")],
        // GitLab: the server keeps the unknown `$SELF`, the runner then substitutes SELF's own value.
        &[("OPTS", "-a -b"), ("USE", "[-a -b]"), ("SELF", "xx$SELF")],
    );
}

#[test]
fn expand_all_raw_unknown_and_dollar() {
    check_all(
        &[
            Var::new("A", "normal"),
            Var::raw("B", "raw-$A $$"),
            Var::new("C", "$B"),
            Var::new("D", "$NOPE|$$A|$$$A"),
            Var::new("WIN", "%A%|%%A%%|%NOPE%"),
            Var::new("LIT", "${A}$"),
            Var::new("REEXPANDED", "${LIT}ZZ"),
        ],
        &[
            ("A", "normal"),
            ("B", "raw-$A $$"),
            ("C", "raw-$A $$"),
            ("D", "|$A|$normal"),
            ("WIN", "normal|%%A%%|%NOPE%"),
            ("LIT", "normal$"),
            // The server writes `normal$ZZ`, which the runner expands once more.
            ("REEXPANDED", "normal"),
        ],
    );
}

#[test]
fn expand_all_leaves_cycles_as_written_and_reports_them() {
    let vars = [
        Var::new("A", "$B"),
        Var::new("B", "x$A"),
        Var::new("C", "[$A]"),
        Var::new("D", "$E"),
        Var::new("E", "$D"),
        Var::new("OK", "fine"),
    ];
    let report = expand_all_report(&vars);
    assert_eq!(report.values["A"], "$B");
    assert_eq!(report.values["B"], "x$A");
    // Step 1 copies A as written, step 2 expands that copy once more.
    assert_eq!(report.values["C"], "[x$A]");
    assert_eq!(report.values["OK"], "fine");
    let mut cycles = report.cycles.clone();
    cycles.sort();
    assert_eq!(cycles, vec![vec!["A".to_string(), "B".to_string()], vec!["D".to_string(), "E".to_string()]]);
    assert!(report.truncated.is_empty());
}

#[test]
fn expand_all_survives_exponential_blow_up() {
    let mut vars = vec![Var::new("V0", "0123456789abcdef")];
    for i in 1..=40 {
        vars.push(Var::new(format!("V{i}"), format!("$V{p}$V{p}", p = i - 1)));
    }
    for i in 0..100 {
        vars.push(Var::new(format!("USE{i}"), "$V40"));
    }
    let report = expand_all_report(&vars);
    assert_eq!(report.values["V10"].len(), 16 << 10);
    assert_eq!(report.values["V40"].len(), MAX_EXPANDED_LEN);
    let total: usize = report.values.values().map(String::len).sum();
    assert!(total <= MAX_TOTAL_EXPANDED_LEN, "{total}");
    assert!(report.truncated.contains(&"V40".to_string()));
    assert!(report.truncated.contains(&"USE99".to_string()));
    assert!(report.cycles.is_empty());
}

#[test]
fn expand_all_handles_a_long_chain_without_recursion() {
    let mut vars: Vec<Var> = (1..50_000).map(|i| Var::new(format!("V{i}"), format!("$V{}", i - 1))).collect();
    vars.push(Var::new("V0", "end"));
    assert_eq!(expand_all(&vars)["V49999"], "end");
}

#[test]
fn expand_is_bounded() {
    let big = "x".repeat(MAX_EXPANDED_LEN / 2 + 1);
    let v = [("BIG", big.as_str())];
    assert_eq!(expand("$BIG$BIG$BIG", &v).len(), MAX_EXPANDED_LEN);
    assert_eq!(expand_keep_unknown("$BIG$BIG$BIG", &v).len(), MAX_EXPANDED_LEN);
    let multi = "é".repeat(MAX_EXPANDED_LEN);
    let v = [("M", multi.as_str())];
    let out = expand("a$M", &v);
    assert!(out.len() <= MAX_EXPANDED_LEN && out.len() >= MAX_EXPANDED_LEN - 1);
}

proptest! {
    #[test]
    fn expand_never_panics_and_stays_bounded(input in ".{0,200}", value in ".{0,50}") {
        let v = [("A", value.as_str()), ("B", "$A$A")];
        let out = expand(&input, &v);
        prop_assert!(out.len() <= MAX_EXPANDED_LEN);
        let _ = expand_keep_unknown(&input, &v);
        let _ = references(&input);
        // Without `$`, expansion is the identity.
        if !input.contains('$') {
            prop_assert_eq!(out, input);
        }
    }

    #[test]
    fn expand_all_never_panics(entries in proptest::collection::vec(("[A-C]", "[$A-C{}x]{0,8}", any::<bool>()), 0..12)) {
        let vars: Vec<Var> = entries.into_iter().map(|(n, v, raw)| Var { name: n, value: v, raw }).collect();
        let report = expand_all_report(&vars);
        for var in &vars {
            prop_assert!(report.values.contains_key(&var.name));
        }
    }
}
