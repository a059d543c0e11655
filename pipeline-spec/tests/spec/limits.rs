//! Hostile input: every case ends quickly with an error, never a panic, hang or memory blow-up.

use proptest::prelude::*;

use crate::{diagnostics, load_main, load_with};

#[test]
fn a_100_mb_file_is_refused_before_parsing() {
    let big = "a: b\n".repeat(20 * 1024 * 1024);
    let loaded = load_main(&big);
    let d = diagnostics(&loaded);
    assert!(d.contains("more than the limit of 2097152 bytes"), "{}", &d[..d.len().min(300)]);
}

#[test]
fn alias_bombs_stop_at_the_node_limit() {
    let mut yml = String::from("a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        yml.push_str(&format!("{cur}: &{cur} [{refs}]\n"));
    }
    let d = diagnostics(&load_main(&yml));
    assert!(d.contains("expands to more than 1000000 nodes"), "{d}");
}

#[test]
fn reference_bombs_are_bounded() {
    let mut yml = String::from(".l0:\n  s: [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..10 {
        let refs = vec![format!("!reference [.l{}, s]", i - 1); 10].join(", ");
        yml.push_str(&format!(".l{i}:\n  s: [{refs}]\n"));
    }
    yml.push_str("j:\n  script: !reference [.l9, s]\n");
    let loaded = load_main(&yml);
    assert!(loaded.has_errors(), "a reference bomb must be refused");
}

#[test]
fn deep_nesting_is_refused() {
    let d = diagnostics(&load_main(&("a: ".to_string() + &"[".repeat(100_000))));
    assert!(d.contains("nesting is deeper than the limit"), "{d}");
}

#[test]
fn too_many_includes() {
    let mut files: Vec<(String, String)> = Vec::new();
    let mut main = String::from("include:\n");
    for i in 0..160 {
        main.push_str(&format!("  - local: f{i}.yml\n"));
        files.push((format!("f{i}.yml"), format!("j{i}:\n  script: [x]\n")));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let d = diagnostics(&load_with(&main, &refs, &[]));
    assert!(d.contains("more than 150 included files"), "{d}");
}

#[test]
fn too_many_needs() {
    let mut yml = String::new();
    for i in 0..51 {
        yml.push_str(&format!("j{i}:\n  script: [x]\n"));
    }
    let needs: Vec<String> = (0..51).map(|i| format!("j{i}")).collect();
    yml.push_str(&format!("last:\n  script: [x]\n  needs: [{}]\n", needs.join(", ")));
    let d = diagnostics(&load_main(&yml));
    assert!(d.contains("51 needs; at most 50 are allowed per job"), "{d}");
    assert!(d.contains("raise the limit with `--max-needs 51`"), "{d}");
}

#[test]
fn garbage_inputs_give_errors() {
    for input in ["\0\0\0", "{{{{", "- - - : : :", "a: *", "\u{feff}a: [", "a: !!int x", "job: |\n bad\n\tindent"] {
        let loaded = load_main(input);
        assert!(loaded.has_errors(), "{input:?} should be an error");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the loader.
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        let _ = load_main(&s);
    }

    /// Arbitrary YAML-ish text built from GitLab vocabulary never panics the loader or planner.
    #[test]
    fn gitlab_shaped_text_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("job:\n"), Just("  script: [x]\n"), Just("  extends: .t\n"), Just(".t:\n"), Just("  needs: [job]\n"),
        Just("  rules:\n    - if: $A == \"b\"\n"), Just("  stage: build\n"), Just("stages: [build]\n"), Just("  <<: *a\n"),
        Just("x: &a {y: 1}\n"), Just("  variables: {A: !reference [.t, script]}\n"), Just("  parallel: 3\n"), Just("include: x.yml\n"),
        Just("  when: manual\n"), Just("  - "), Just(": "), Just("\n"), Just("  "),
    ], 0..40)) {
        let text: String = parts.concat();
        let loaded = load_main(&text);
        if let Some(p) = loaded.pipeline.as_ref().filter(|_| !loaded.has_errors()) {
            let _ = pipeline_spec::plan::plan(p, &pipeline_spec::plan::PlanContext::default());
        }
    }
}
