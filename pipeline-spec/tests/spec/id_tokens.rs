//! `id_tokens:` as GitLab's `Entry::IdTokens` / `Entry::IdToken` read it: NAME → `{aud}`, `aud`
//! required, a string or a list of strings; the job keeps them for the server to sign.

use pipeline_spec::load::{LoadOptions, load};
use pipeline_spec::model::{Audience, IdToken};

use crate::{assert_error, diagnostics, load_main, resolver};

fn on_server(yml: &str) -> pipeline_spec::load::Loaded {
    let opts = LoadOptions { id_tokens_issued: true, ..LoadOptions::default() };
    load(".gitlab-ci.yml", ".gitlab-ci.yml", yml, &resolver(&[]), &opts)
}

const VAULT: &str = r#"
default:
  id_tokens:
    DEFAULT_TOKEN:
      aud: https://default.example.test
vault:
  id_tokens:
    VAULT_ID_TOKEN:
      aud: $VAULT_SERVER_URL
    MULTI:
      aud: [https://a.example.test, https://b.example.test]
  script: vault write auth/jwt/login role=default-ci jwt=$VAULT_ID_TOKEN
inherited:
  script: [x]
none:
  inherit:
    default: false
  script: [x]
"#;

/// The job keeps its tokens as written (`aud` expanded when signed); a job without its own
/// `id_tokens:` gets `default:`'s, as GitLab's `default` keywords (and `inherit:default`).
#[test]
fn tokens_are_kept_as_written_and_default_applies() {
    let loaded = on_server(VAULT);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let jobs = loaded.pipeline.unwrap().jobs;
    assert_eq!(
        jobs["vault"].id_tokens,
        [
            IdToken { name: "VAULT_ID_TOKEN".into(), aud: Audience::One("$VAULT_SERVER_URL".into()) },
            IdToken { name: "MULTI".into(), aud: Audience::Many(vec!["https://a.example.test".into(), "https://b.example.test".into()]) },
        ]
    );
    assert_eq!(
        jobs["inherited"].id_tokens,
        [IdToken { name: "DEFAULT_TOKEN".into(), aud: Audience::One("https://default.example.test".into()) }]
    );
    assert!(jobs["none"].id_tokens.is_empty());
}

/// A server issues the tokens: no warning. Locally the job's key (and `default:`'s, once) is
/// warned about with what to do instead.
#[test]
fn only_where_no_token_is_issued_is_it_a_warning() {
    let server = on_server(VAULT);
    assert!(server.diagnostics.is_empty(), "{}", diagnostics(&server));

    let local = load_main(VAULT);
    let all = diagnostics(&local);
    assert!(!local.has_errors(), "{all}");
    let warnings: Vec<&str> = all.lines().filter(|l| l.contains("no ID token is issued here")).collect();
    assert_eq!(warnings.len(), 2, "the job's, and `default:`'s once:\n{all}");
    for (at, expected) in [
        (".gitlab-ci.yml:3:3: warning: ", "no ID token is issued here, so `$DEFAULT_TOKEN` stays unset"),
        (".gitlab-ci.yml:7:3: warning: ", "no ID token is issued here, so `$VAULT_ID_TOKEN`, `$MULTI` stay unset"),
    ] {
        assert!(warnings.iter().any(|w| w.starts_with(at) && w.ends_with(expected)), "{at}{expected}:\n{all}");
    }
    assert!(all.contains("give each value with `piste run --secret VAULT_ID_TOKEN=…`"), "{all}");
}

/// GitLab: `aud` is required (`presence`), `array_of_strings_or_string`, and no other key is
/// allowed; the names are variable names.
#[test]
fn bad_entries_are_errors_at_their_position() {
    let yml = r#"
j:
  script: [x]
  id_tokens:
    NO_AUD:
      audience: https://x.example.test
    NUMBER:
      aud: 42
    MAP:
      aud: {url: https://x.example.test}
    EMPTY:
      aud: []
    BLANK:
      aud: ""
    "BAD-NAME":
      aud: https://x.example.test
    NOT_A_MAP: https://x.example.test
    IN_LIST:
      aud: [https://a.example.test, 7]
"#;
    let loaded = on_server(yml);
    assert_error(&loaded, 5, 5, "ID token `NO_AUD` needs `aud:`");
    assert_error(&loaded, 6, 7, "unknown key `audience` in `id_tokens:NO_AUD`");
    assert_error(&loaded, 8, 12, "expected an audience (a string), found");
    assert_error(&loaded, 10, 12, "expected an audience (a string), found a map");
    assert_error(&loaded, 12, 12, "`aud` is an empty list");
    assert_error(&loaded, 14, 12, "`aud` is empty");
    assert_error(&loaded, 15, 5, "invalid ID token name `BAD-NAME`");
    assert_error(&loaded, 17, 16, "expected a map, found");
    assert_error(&loaded, 19, 37, "expected an audience (a string), found");
    assert!(loaded.pipeline.unwrap().jobs["j"].id_tokens.is_empty(), "no bad entry is kept");

    let loaded = on_server("j:\n  script: [x]\n  id_tokens: [A, B]\n");
    assert_error(&loaded, 3, 14, "expected a map, found");
}

#[test]
fn too_many_tokens_is_an_error() {
    let max = pipeline_spec::parse::MAX_ID_TOKENS;
    let entries: String = (0..=max).map(|i| format!("    T{i}:\n      aud: https://x.example.test\n")).collect();
    let loaded = on_server(&format!("j:\n  script: [x]\n  id_tokens:\n{entries}"));
    assert_error(&loaded, 4, 5, &format!("`id_tokens` names {} tokens; at most {max} are allowed", max + 1));
}
