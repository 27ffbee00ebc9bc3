//! The environment a tool process starts with.
//!
//! Children never inherit the worker's environment: they start from nothing and get only the
//! names on an allow-list, minus the names on a deny-list (the deny-list wins, so a careless
//! `*` in the allow-list still cannot let a credential through), plus a few fixed values that
//! keep programs from waiting for a terminal that is not there (CATALOGUE T1, T8).

use std::ffi::{OsStr, OsString};

/// Names passed through from the worker's environment by default. A trailing `*` matches a
/// prefix.
pub const DEFAULT_ALLOW: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR",
];

/// Names never passed, whatever the allow-list says: the worker's own credentials
/// (`ANTHROPIC_*`), cloud credentials (`AWS_*`, including the Lambda execution role's), and the
/// variables that would let a child load code into programs the worker runs later.
pub const DEFAULT_DENY: &[&str] = &[
    "ANTHROPIC_*",
    "AWS_*",
    "HANDS_*",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "ENV",
];

/// Used when the worker itself has no `PATH` (Lambda sets one; a bare `env -i` does not).
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which variables a tool process sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvPolicy {
    /// Names (or `PREFIX*`) copied from the worker's environment.
    pub allow: Vec<String>,
    /// Names (or `PREFIX*`) never copied and never set, checked after `allow` and `set`.
    pub deny: Vec<String>,
    /// Values set regardless of the worker's environment (after `allow`, before `deny`).
    pub set: Vec<(String, String)>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        EnvPolicy {
            allow: DEFAULT_ALLOW.iter().map(|s| (*s).to_owned()).collect(),
            deny: DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect(),
            set: [
                // The reference shell's values (PROTOCOL.md §8.3): no prompts in the output, and
                // programs that colour or page for a terminal fall back to plain text.
                ("TERM", "dumb"),
                ("PS1", ""),
                ("PS2", ""),
                // A prompt for credentials or confirmation would hang until the timeout (T8).
                ("GIT_TERMINAL_PROMPT", "0"),
                ("DEBIAN_FRONTEND", "noninteractive"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        }
    }
}

fn matches(pattern: &str, name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == pattern.as_bytes(),
    }
}

impl EnvPolicy {
    /// Whether `name` may reach a tool process at all.
    pub fn denies(&self, name: &OsStr) -> bool {
        self.deny.iter().any(|p| matches(p, name))
    }

    /// Builds the child environment from `source` (normally `std::env::vars_os()`), in a stable
    /// order. The deny-list is applied last, so neither `allow` nor `set` can re-introduce a
    /// denied name.
    pub fn build(
        &self,
        source: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        let mut out: Vec<(OsString, OsString)> = source
            .into_iter()
            .filter(|(k, _)| self.allow.iter().any(|p| matches(p, k)))
            .collect();
        for (k, v) in self
            .set
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        {
            out.retain(|(existing, _)| existing != &k);
            out.push((k, v));
        }
        if !out.iter().any(|(k, _)| k == "PATH") {
            out.push(("PATH".into(), FALLBACK_PATH.into()));
        }
        out.retain(|(k, _)| !self.denies(k));
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn credentials_never_pass_even_when_allowed() {
        let policy = EnvPolicy {
            allow: vec!["*".into()],
            deny: DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect(),
            set: vec![],
        };
        let env = policy.build(vars(&[
            ("ANTHROPIC_ENVIRONMENT_KEY", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("LD_PRELOAD", "x.so"),
            ("HOME", "/root"),
        ]));
        assert_eq!(env, vars(&[("HOME", "/root"), ("PATH", FALLBACK_PATH)]));
    }

    #[test]
    fn only_allowed_names_pass_and_fixed_values_win() {
        let env = EnvPolicy::default().build(vars(&[
            ("PATH", "/bin"),
            ("TERM", "xterm-256color"),
            ("LC_ALL", "C.UTF-8"),
            ("SERVICE_KEY", "canary"),
        ]));
        let names: Vec<_> = env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "DEBIAN_FRONTEND",
                "GIT_TERMINAL_PROMPT",
                "LC_ALL",
                "PATH",
                "PS1",
                "PS2",
                "TERM"
            ]
        );
        assert!(env.contains(&("TERM".into(), "dumb".into())));
    }

    #[test]
    fn configured_deny_names_are_removed_from_set_values_too() {
        let mut policy = EnvPolicy::default();
        policy.deny.push("GIT_TERMINAL_PROMPT".into());
        policy.deny.push("SERVICE_KEY".into());
        policy.allow.push("SERVICE_KEY".into());
        let env = policy.build(vars(&[("SERVICE_KEY", "canary")]));
        assert!(
            env.iter()
                .all(|(k, _)| k != "GIT_TERMINAL_PROMPT" && k != "SERVICE_KEY")
        );
    }
}
