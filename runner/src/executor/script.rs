//! The shell scripts a job runs, built as gitlab-runner builds them for `sh`/`bash`.
//!
//! A script starts with `pipefail` (when the shell has it: bash, busybox ash, zsh, ksh; not
//! older dash) and `errexit`, then for each command prints a green `$ command` line and runs the
//! command. The shell stops at the first failing command and exits with its status.
//!
//! # Why this is safe for any content
//!
//! - Commands are written verbatim, one after the other, exactly as the user wrote them: they
//!   are shell code by definition. Nothing from Rust is interpolated into them.
//! - The echoed text is a single-quoted word (`'` written as `'\''`), printed with
//!   `printf '%s\n'`, so nothing in it is expanded, executed or taken as a format.
//! - Variables never appear in the script: the executors pass them as the process
//!   environment. A branch name like `$(touch /tmp/x)` stays data.
//!
//! Multi-line commands are echoed by their first line followed by
//! `# collapsed multi-line command`, as GitLab does; blank commands are skipped.

use super::log::{ANSI_BOLD_GREEN, ANSI_RESET};

/// First lines of every script: `pipefail` where the shell supports it, then `errexit`.
/// A shell without `pipefail` (dash) fails the `set` builtin, and a failing special builtin
/// ends a non-interactive shell; run through `command` it only returns a status (POSIX takes
/// the special properties away). This costs no process: testing it in a subshell first, as
/// this prelude once did, forked the shell once per script, ≈ 0.3 ms of CPU per job.
const PRELUDE: &str = "command set -o pipefail 2>/dev/null || :\nset -e\n";

/// Command line of a container that runs the script file given as `$1`: with `bash` when the
/// image has it (as gitlab-runner does), else with `sh`. stderr goes to stdout, so that the
/// Engine forwards one stream in the order the job wrote it (it forwards two streams
/// independently, which reorders them).
pub const SHELL_DETECT: &str =
    "exec 2>&1; if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc \"$1\"; fi; exec sh \"$1\"";

/// [`SHELL_DETECT`] for a script passed inline as `$1` (`-c`), which spares a copy into the
/// container for every job.
pub const SHELL_DETECT_INLINE: &str =
    "exec 2>&1; if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc -c \"$1\"; fi; exec sh -c \"$1\"";

/// Scripts up to this size travel inline (Linux caps one argument at 128 KiB).
pub const INLINE_MAX: usize = 64 * 1024;

/// The script that runs `commands` in order, stopping at the first failure.
pub fn job_script<S: AsRef<str>>(commands: &[S]) -> String {
    let mut out = String::from(PRELUDE);
    for command in commands {
        let command = command.as_ref();
        if command.trim().is_empty() {
            continue;
        }
        out.push_str("printf '%s\\n' ");
        out.push_str(&single_quote(&format!("{ANSI_BOLD_GREEN}$ {}{ANSI_RESET}", echo_text(command))));
        out.push('\n');
        out.push_str(command);
        out.push('\n');
    }
    out
}

/// What the `$ ` line shows for a command: the command itself, or the first line of a
/// multi-line command followed by `# collapsed multi-line command`.
pub fn echo_text(command: &str) -> String {
    let command = command.trim_end_matches(['\n', '\r']);
    match command.split_once('\n') {
        None => command.to_owned(),
        Some((first, _)) => format!("{} # collapsed multi-line command", first.trim_end_matches('\r')),
    }
}

/// Quotes `s` as one POSIX shell word that expands to exactly `s`.
pub fn single_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    fn run_sh(script: &str) -> (Option<i32>, String) {
        let out = Command::new("sh").arg("-c").arg(script).env_clear().env("PATH", "/usr/bin:/bin").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn script_echoes_then_runs_each_command() {
        let script = job_script(&["echo one", "", "  ", "echo two"]);
        assert_eq!(
            script,
            format!(
                "{PRELUDE}printf '%s\\n' '\x1b[32;1m$ echo one\x1b[0;m'\necho one\nprintf '%s\\n' '\x1b[32;1m$ echo two\x1b[0;m'\necho two\n"
            )
        );
        let (code, out) = run_sh(&script);
        assert_eq!(code, Some(0));
        assert_eq!(out, "\x1b[32;1m$ echo one\x1b[0;m\none\n\x1b[32;1m$ echo two\x1b[0;m\ntwo\n");
    }

    /// `pipefail` is on in the shells that have it, and a shell without it (dash) runs the
    /// script anyway, quietly; the prelude starts no process of its own.
    #[test]
    fn the_prelude_sets_pipefail_where_the_shell_has_it() {
        let script = job_script(&["false | true", "echo survived"]);
        let run = |shell: &[&str]| {
            let out =
                Command::new(shell[0]).args(&shell[1..]).arg("-c").arg(&script).env_clear().env("PATH", "/usr/bin:/bin").output().unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        for shell in [&["bash", "--noprofile", "--norc"][..], &["busybox", "sh"]] {
            let (code, out, err) = run(shell);
            assert_eq!(code, Some(1), "{shell:?}: a failing pipeline stage fails the script: {out}{err}");
            assert!(!out.contains("survived"), "{shell:?}: {out}");
            assert_eq!(err, "", "{shell:?}");
        }
        let (code, out, err) = run(&["dash"]);
        assert_eq!((code, err.as_str()), (Some(0), ""), "dash has no pipefail and says nothing about it: {out}");
        assert!(out.ends_with("survived\n"), "{out}");
        assert!(!PRELUDE.contains('('), "no subshell: {PRELUDE}");
    }

    #[test]
    fn first_failure_stops_the_script_with_its_code() {
        let (code, out) = run_sh(&job_script(&["echo a", "(exit 7)", "echo never"]));
        assert_eq!(code, Some(7));
        assert!(!out.contains("never"), "{out}");
    }

    #[test]
    fn multi_line_commands_echo_their_first_line() {
        assert_eq!(echo_text("if true; then\n  echo x\nfi\n"), "if true; then # collapsed multi-line command");
        assert_eq!(echo_text("echo x\n"), "echo x");
        let (code, out) = run_sh(&job_script(&["if true; then\n  echo inside\nfi"]));
        assert_eq!(code, Some(0));
        assert!(out.ends_with("collapsed multi-line command\x1b[0;m\ninside\n"), "{out:?}");
    }

    #[test]
    fn hostile_commands_are_echoed_without_running_the_echo() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        // The command is user code and does run once; the echo must not run it a second time.
        let cmd = format!("echo '$(touch {m})' \"`true`\" 'it'\\''s' >/dev/null; echo ran", m = marker.display());
        let (code, out) = run_sh(&job_script(&[cmd.as_str()]));
        assert_eq!(code, Some(0));
        assert!(out.contains(&format!("$ {cmd}")), "{out}");
        assert!(!marker.exists());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn single_quote_round_trips_through_sh(s in "[^\0]{0,40}") {
            let (code, out) = run_sh(&format!("printf '%s' {}", single_quote(&s)));
            prop_assert_eq!(code, Some(0));
            prop_assert_eq!(out, s);
        }
    }
}
