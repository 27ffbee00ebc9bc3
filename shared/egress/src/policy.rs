//! The operator's egress policy: a TOML file of rules, first match wins, everything else denied.
//!
//! ```toml
//! [[rule]]
//! host = "github.com"                     # exact, "*.example.com" (subdomains only), "*", or an IP
//! action = "inject"                       # "allow", "deny" or "inject"
//! basic_auth = { username = "x-access-token", password = "{secret:github}" }
//!
//! [[rule]]
//! host = "api.internal.example.com"
//! methods = ["GET"]                       # optional: any method when absent
//! path_prefix = "/v1/"                    # optional: any path when absent
//! ports = [443]                           # optional: any port when absent
//! private = true                          # may reach private addresses (exact hosts only)
//! action = "inject"
//! headers = { Authorization = "Bearer {secret:internal_api}" }
//! insecure_http = true                    # optional: inject into plain http:// too (cleartext!)
//! ```
//!
//! A secret is attached only to requests whose upstream leg is TLS (`https://`); a plain
//! `http://` request matching an inject rule is refused unless the rule says `insecure_http`.
//!
//! Parsing never resolves a secret: `{secret:NAME}` stays a name until the proxy starts, so
//! `hands egress check` works on a machine that holds none of them. Every error names the line.

use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use http::{HeaderName, Method};
use serde::Deserialize;
use toml::Spanned;

/// A policy that parsed and passed every check.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based line of the rule's `host` key, for messages.
    pub line: usize,
    pub host: HostPattern,
    pub ports: Option<Vec<u16>>,
    pub methods: Option<Vec<Method>>,
    pub path_prefix: Option<String>,
    /// Whether this rule may reach private, loopback or link-local addresses. Implied by an
    /// IP-literal host; refused on wildcard hosts, which must never open the internal network.
    pub private: bool,
    /// Whether an inject rule may attach its secret to plain `http://` requests, where it
    /// crosses the network in cleartext. Off unless the operator opts in.
    pub insecure_http: bool,
    pub action: Action,
}

/// Which hosts a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One host name, lower case, no trailing dot.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself). Holds
    /// `.example.com`.
    Subdomains(String),
    /// `*`: any host.
    Any,
    /// An IP literal; the only way to name a cloud metadata address.
    Ip(IpAddr),
}

/// What a rule does to a matching request.
#[derive(Debug, Clone)]
pub enum Action {
    Allow,
    Deny,
    Inject(Injection),
}

/// Headers the proxy adds (replacing any the client sent under the same name).
#[derive(Debug, Clone)]
pub struct Injection {
    pub headers: Vec<(HeaderName, Template)>,
    /// HTTP basic auth, sent as `Authorization: Basic ...` (what git understands).
    pub basic_auth: Option<(Template, Template)>,
}

/// A header value with `{secret:NAME}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Secret(String),
}

/// The facts of one request that rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Lower case, no brackets around IPv6, no trailing dot.
    pub host: &'a str,
    pub port: u16,
    pub method: &'a Method,
    /// The path without the query.
    pub path: &'a str,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        rule: usize,
    },
    Inject {
        rule: usize,
    },
    /// `rule` is `None` when nothing matched (the default).
    Deny {
        rule: Option<usize>,
    },
    /// The path prefix rule `rule` had to judge a path that may mean something else upstream
    /// (see [`normalize_path`]): refused, whether that rule allows or denies.
    AmbiguousPath {
        rule: usize,
    },
}

/// What happens to a CONNECT, where only host and port are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectVerdict {
    /// Relay bytes untouched: the first rule for this host allows everything.
    Tunnel {
        rule: usize,
    },
    /// Terminate TLS and decide each request: a rule injects, or looks at methods or paths.
    Intercept,
    Deny {
        rule: Option<usize>,
    },
}

/// A policy that does not parse or does not make sense, pointing at its line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    host: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
    methods: Option<Vec<Spanned<String>>>,
    path_prefix: Option<Spanned<String>>,
    ports: Option<Vec<Spanned<i64>>>,
    private: Option<Spanned<bool>>,
    insecure_http: Option<Spanned<bool>>,
    headers: Option<Spanned<toml::Table>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: Spanned<String>,
    password: Spanned<String>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the policy file: {e}"),
        })?;
        Policy::parse(&text, &origin)
    }

    /// Parses and checks policy text; `origin` names it in errors (usually the file path).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
            PolicyError {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().trim_end().to_string()))?;
        let mut rules = Vec::with_capacity(raw.rule.len());
        for spanned in raw.rule {
            let rule_span = spanned.span();
            let raw = spanned.into_inner();
            rules.push(check_rule(raw, rule_span, &at)?);
        }
        Ok(Policy { rules })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every secret name the policy refers to, in order of first use, without repeats.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if let Action::Inject(inj) = &rule.action {
                for t in inj.templates() {
                    for p in &t.pieces {
                        if let Piece::Secret(n) = p
                            && !names.contains(&n.as_str())
                        {
                            names.push(n);
                        }
                    }
                }
            }
        }
        names
    }

    /// The first rule that matches the request decides; nothing matching means deny.
    pub fn decide(&self, req: &RequestFacts<'_>) -> Verdict {
        // Prefixes are compared with the path as the upstream will read it; a path that cannot
        // be read one way only is refused by the first prefix rule it reaches, so neither a
        // deny can be stepped around nor an allow stretched.
        let path = normalize_path(req.path);
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches_destination(req.host, req.port) || !rule.matches_method(req.method) {
                continue;
            }
            let path_matches = match (&rule.path_prefix, &path) {
                (None, _) => true,
                (Some(_), None) => return Verdict::AmbiguousPath { rule: i },
                (Some(prefix), Some(path)) => path.starts_with(prefix.as_str()),
            };
            if path_matches {
                return match rule.action {
                    Action::Allow => Verdict::Allow { rule: i },
                    Action::Deny => Verdict::Deny { rule: Some(i) },
                    Action::Inject(_) => Verdict::Inject { rule: i },
                };
            }
        }
        Verdict::Deny { rule: None }
    }

    /// Decides a CONNECT. Tunnels only when the first rule for the destination is an
    /// unconditional allow, so a tunnel can never carry a request a later rule would deny.
    pub fn decide_connect(&self, host: &str, port: u16) -> ConnectVerdict {
        let mut candidates = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches_destination(host, port))
            .peekable();
        let Some(&(first_index, first)) = candidates.peek() else {
            return ConnectVerdict::Deny { rule: None };
        };
        if first.is_unconditional() {
            return match first.action {
                Action::Allow => ConnectVerdict::Tunnel { rule: first_index },
                Action::Deny => ConnectVerdict::Deny {
                    rule: Some(first_index),
                },
                Action::Inject(_) => ConnectVerdict::Intercept,
            };
        }
        // Conditional rules first: worth looking inside only if something could be let through
        // before an unconditional rule ends the search.
        let mut any_pass = false;
        for (i, r) in candidates {
            any_pass |= !matches!(r.action, Action::Deny);
            if r.is_unconditional() {
                return if any_pass {
                    ConnectVerdict::Intercept
                } else {
                    ConnectVerdict::Deny { rule: Some(i) }
                };
            }
        }
        if any_pass {
            ConnectVerdict::Intercept
        } else {
            ConnectVerdict::Deny { rule: None }
        }
    }
}

impl Rule {
    fn is_unconditional(&self) -> bool {
        self.methods.is_none() && self.path_prefix.is_none()
    }

    /// Host and port: all a CONNECT shows.
    pub fn matches_destination(&self, host: &str, port: u16) -> bool {
        if let Some(ports) = &self.ports
            && !ports.contains(&port)
        {
            return false;
        }
        self.host.matches(host)
    }

    fn matches_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// Whether the rule names `host` itself (not through a wildcard).
    pub fn names_exactly(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Exact(h) => h == host,
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            _ => false,
        }
    }
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostPattern::Any => true,
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*{s}"),
            HostPattern::Any => f.write_str("*"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Injection {
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.headers
            .iter()
            .map(|(_, t)| t)
            .chain(self.basic_auth.iter().flat_map(|(u, p)| [u, p]))
    }

    /// Header names this injection sets, for `hands egress test`.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.headers.iter().map(|(n, _)| n.to_string()).collect();
        if self.basic_auth.is_some() {
            names.push("authorization (basic)".to_string());
        }
        names
    }
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{secret:") {
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + "{secret:".len()..];
            let Some(end) = after.find('}') else {
                return Err("unterminated {secret:NAME} placeholder".to_string());
            };
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "secret name {name:?} must be letters, digits and underscores"
                ));
            }
            pieces.push(Piece::Secret(name.to_string()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    pub fn has_secret(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Secret(_)))
    }
}

/// The sentence for a plain `http://` request an inject rule matches without `insecure_http`.
pub(crate) fn cleartext_refusal(host: &str) -> String {
    format!(
        "egress to {host} over plain http:// is not allowed by this environment's policy because the request would carry a credential in cleartext: use https:// instead"
    )
}

/// The sentence for a path a prefix rule cannot judge.
pub(crate) fn ambiguous_path_refusal(host: &str) -> String {
    format!(
        "egress to {host} is not allowed by this environment's policy for this path: it has dot segments, encoded slashes, `;` parameters, `//` or double encoding, which servers read differently; send the plain path"
    )
}

/// Lower-cases a host and drops IPv6 brackets and a trailing dot, so rules compare one spelling.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let h = h.strip_suffix('.').unwrap_or(h);
    h.to_ascii_lowercase()
}

/// The path as an upstream will read it, for prefix rules: percent-encoded unreserved
/// characters decoded (`/%61dmin` is `/admin`) and dot segments resolved (`/x/../admin` is
/// `/admin`). `None` when servers disagree on what the path names, so no prefix check proves
/// anything: an encoded `/`, `\` or `;`, a literal `\` or `;` (path parameters, `/admin;x` is
/// `/admin` to some servers), an encoded `%` (decoded twice by some), an empty segment (`//`),
/// or a malformed escape.
pub fn normalize_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = path.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(hex, 16).ok()?;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(v));
                } else if matches!(v, b'/' | b'\\' | b';' | b'%') {
                    return None;
                } else {
                    // Reserved or non-ASCII: stays encoded, upper-case hex (one spelling).
                    decoded.push('%');
                    decoded.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
            }
            b'\\' | b';' => return None,
            _ => {
                // A multi-byte character is copied whole.
                let len = path[i..].chars().next().map_or(1, char::len_utf8);
                decoded.push_str(&path[i..i + len]);
                i += len;
                continue;
            }
        }
    }
    if !decoded.starts_with('/') {
        return None;
    }
    // RFC 3986 5.2.4, on whole segments; an empty segment anywhere but the end is ambiguous.
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" if n != last => return None,
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normal = format!("/{}", out.join("/"));
    // `/a/b/..` and `/a/.` name directories: keep the trailing slash.
    if matches!(segments[last], "." | "..") && !normal.ends_with('/') {
        normal.push('/');
    }
    Some(normal)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

fn check_rule(
    raw: RawRule,
    rule_span: Range<usize>,
    at: &impl Fn(Option<Range<usize>>, String) -> PolicyError,
) -> Result<Rule, PolicyError> {
    let Some(host) = raw.host else {
        return Err(at(Some(rule_span), "this rule has no `host`".to_string()));
    };
    let host_span = host.span();
    let host_pattern =
        parse_host_pattern(host.get_ref()).map_err(|m| at(Some(host_span.clone()), m))?;
    let line = at(Some(host_span.clone()), String::new()).line;

    let Some(action) = raw.action else {
        return Err(at(
            Some(host_span),
            "this rule has no `action` (one of \"allow\", \"deny\", \"inject\")".to_string(),
        ));
    };

    let methods = match raw.methods {
        None => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for m in list {
                let text = m.get_ref();
                let valid = !text.is_empty()
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
                let method = Method::from_bytes(text.as_bytes()).ok().filter(|_| valid);
                match method {
                    Some(method) => out.push(method),
                    None => {
                        return Err(at(
                            Some(m.span()),
                            format!(
                                "{text:?} is not an HTTP method (write it in capitals, e.g. \"GET\")"
                            ),
                        ));
                    }
                }
            }
            if out.is_empty() {
                return Err(at(
                    Some(host_span),
                    "`methods` is empty: the rule could never match".to_string(),
                ));
            }
            Some(out)
        }
    };

    let path_prefix = match raw.path_prefix {
        None => None,
        Some(p) => {
            if !p.get_ref().starts_with('/') {
                return Err(at(
                    Some(p.span()),
                    "`path_prefix` must start with \"/\"".to_string(),
                ));
            }
            Some(p.into_inner())
        }
    };

    let ports = match raw.ports {
        None => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for p in list {
                match u16::try_from(*p.get_ref()) {
                    Ok(port) if port != 0 => out.push(port),
                    _ => {
                        return Err(at(
                            Some(p.span()),
                            format!("{} is not a TCP port", p.get_ref()),
                        ));
                    }
                }
            }
            Some(out)
        }
    };

    let private = match raw.private {
        None => matches!(host_pattern, HostPattern::Ip(_)),
        Some(flag) => {
            if *flag.get_ref()
                && matches!(host_pattern, HostPattern::Subdomains(_) | HostPattern::Any)
            {
                return Err(at(
                    Some(flag.span()),
                    "`private = true` needs an exact host: a wildcard must never open the internal network"
                        .to_string(),
                ));
            }
            *flag.get_ref() || matches!(host_pattern, HostPattern::Ip(_))
        }
    };

    let has_injection = raw.headers.is_some() || raw.basic_auth.is_some();
    let insecure_http = match raw.insecure_http {
        Some(flag) if *flag.get_ref() && action.get_ref() != "inject" => {
            return Err(at(
                Some(flag.span()),
                "`insecure_http` only applies to action = \"inject\"".to_string(),
            ));
        }
        Some(flag) => *flag.get_ref(),
        None => false,
    };
    let action = match action.get_ref().as_str() {
        "allow" | "deny" if has_injection => {
            return Err(at(
                Some(action.span()),
                format!(
                    "`headers` and `basic_auth` need action = \"inject\" (this rule says {:?})",
                    action.get_ref()
                ),
            ));
        }
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "inject" => Action::Inject(check_injection(
            raw.headers,
            raw.basic_auth,
            action.span(),
            at,
        )?),
        other => {
            return Err(at(
                Some(action.span()),
                format!("unknown action {other:?}: use \"allow\", \"deny\" or \"inject\""),
            ));
        }
    };

    Ok(Rule {
        line,
        host: host_pattern,
        ports,
        methods,
        path_prefix,
        private,
        insecure_http,
        action,
    })
}

fn check_injection(
    headers: Option<Spanned<toml::Table>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
    action_span: Range<usize>,
    at: &impl Fn(Option<Range<usize>>, String) -> PolicyError,
) -> Result<Injection, PolicyError> {
    let mut out = Vec::new();
    if let Some(table) = headers {
        let span = table.span();
        for (name, value) in table.into_inner() {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                at(
                    Some(span.clone()),
                    format!("{name:?} is not a valid header name"),
                )
            })?;
            if is_hop_by_hop(&header) || header == http::header::HOST {
                return Err(at(
                    Some(span.clone()),
                    format!("the proxy cannot inject {name:?}"),
                ));
            }
            let toml::Value::String(text) = value else {
                return Err(at(
                    Some(span.clone()),
                    format!("header {name:?} must be a string"),
                ));
            };
            let template = Template::parse(&text)
                .map_err(|m| at(Some(span.clone()), format!("header {name:?}: {m}")))?;
            out.push((header, template));
        }
    }
    let basic = match basic_auth {
        None => None,
        Some(b) => {
            let b = b.into_inner();
            let user = Template::parse(b.username.get_ref())
                .map_err(|m| at(Some(b.username.span()), m))?;
            if b.username.get_ref().contains(':') {
                return Err(at(
                    Some(b.username.span()),
                    "a basic-auth username cannot contain ':'".to_string(),
                ));
            }
            let pass = Template::parse(b.password.get_ref())
                .map_err(|m| at(Some(b.password.span()), m))?;
            if out.iter().any(|(n, _)| n == http::header::AUTHORIZATION) {
                return Err(at(
                    Some(b.password.span()),
                    "both `basic_auth` and an Authorization header: choose one".to_string(),
                ));
            }
            Some((user, pass))
        }
    };
    let injection = Injection {
        headers: out,
        basic_auth: basic,
    };
    if injection.headers.is_empty() && injection.basic_auth.is_none() {
        return Err(at(
            Some(action_span),
            "action = \"inject\" needs `headers` or `basic_auth`".to_string(),
        ));
    }
    Ok(injection)
}

fn parse_host_pattern(raw: &str) -> Result<HostPattern, String> {
    let host = normalize_host(raw.trim());
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(ip));
    }
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{raw:?} is not a host: write a name (\"github.com\"), \"*.example.com\", \"*\" or an IP address"
        ));
    }
    Ok(if wild {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

/// Connection-level headers belong to one hop; injecting them would be meaningless or harmful.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn get(host: &str, path: &str) -> RequestFacts<'static> {
        RequestFacts {
            host: Box::leak(host.to_string().into_boxed_str()),
            port: 443,
            method: &Method::GET,
            path: Box::leak(path.to_string().into_boxed_str()),
        }
    }

    const SAMPLE: &str = r#"
[[rule]]
host = "github.com"
action = "inject"
basic_auth = { username = "x-access-token", password = "{secret:github}" }

[[rule]]
host = "api.example.com"
methods = ["GET"]
path_prefix = "/v1/"
action = "inject"
headers = { Authorization = "Bearer {secret:api}" }

[[rule]]
host = "bad.pypi.org"
action = "deny"

[[rule]]
host = "*.pypi.org"
action = "allow"
"#;

    #[test]
    fn first_match_wins_and_default_denies() {
        let p = Policy::parse(SAMPLE, "p.toml").unwrap();
        assert_eq!(
            p.decide(&get("github.com", "/x/y.git/info/refs")),
            Verdict::Inject { rule: 0 }
        );
        assert_eq!(
            p.decide(&get("files.pypi.org", "/")),
            Verdict::Allow { rule: 3 }
        );
        assert_eq!(
            p.decide(&get("bad.pypi.org", "/")),
            Verdict::Deny { rule: Some(2) }
        );
        // the wildcard covers subdomains only
        assert_eq!(
            p.decide(&get("pypi.org", "/")),
            Verdict::Deny { rule: None }
        );
        assert_eq!(
            p.decide(&get("evilpypi.org", "/")),
            Verdict::Deny { rule: None }
        );
        assert_eq!(
            p.decide(&get("example.org", "/")),
            Verdict::Deny { rule: None }
        );
        assert_eq!(p.secret_names(), vec!["github", "api"]);
    }

    #[test]
    fn paths_are_judged_as_the_upstream_reads_them() {
        let p = Policy::parse(
            "[[rule]]\nhost = \"api.test\"\npath_prefix = \"/admin\"\naction = \"deny\"\n\n[[rule]]\nhost = \"api.test\"\naction = \"inject\"\nheaders = { Authorization = \"Bearer {secret:t}\" }\n",
            "p.toml",
        )
        .unwrap();
        for path in [
            "/admin",
            "/x/../admin",
            "/%61dmin",
            "/./admin/x",
            "/%2e%2e/admin",
            "/%2E/admin",
        ] {
            assert_eq!(
                p.decide(&get("api.test", path)),
                Verdict::Deny { rule: Some(0) },
                "{path}"
            );
        }
        for path in [
            "/admin;x",
            "/x/..;/admin",
            "/%2fadmin",
            "//admin",
            "/a%5cb",
            "/%252e%252e/admin",
            "/%zz",
        ] {
            assert_eq!(
                p.decide(&get("api.test", path)),
                Verdict::AmbiguousPath { rule: 0 },
                "{path}"
            );
        }
        for path in ["/", "/users/admin", "/x/..", "/%7Euser/a%20b"] {
            assert_eq!(
                p.decide(&get("api.test", path)),
                Verdict::Inject { rule: 1 },
                "{path}"
            );
        }
        assert_eq!(normalize_path("/x/.."), Some("/".to_string()));
        assert_eq!(normalize_path("/a/b/../c/"), Some("/a/c/".to_string()));
        assert_eq!(normalize_path("/a/./b/."), Some("/a/b/".to_string()));
        assert_eq!(
            normalize_path("/%7euser/a%2bb"),
            Some("/~user/a%2Bb".to_string())
        );
        assert_eq!(
            normalize_path("/caf\u{e9}/%C3%A9"),
            Some("/caf\u{e9}/%C3%A9".to_string())
        );
    }

    #[test]
    fn method_and_path_prefix() {
        let p = Policy::parse(SAMPLE, "p.toml").unwrap();
        assert_eq!(
            p.decide(&get("api.example.com", "/v1/users")),
            Verdict::Inject { rule: 1 }
        );
        assert_eq!(
            p.decide(&get("api.example.com", "/v2/users")),
            Verdict::Deny { rule: None }
        );
        assert_eq!(
            p.decide(&get("api.example.com", "/v1/../admin")),
            Verdict::Deny { rule: None }
        );
        assert_eq!(
            p.decide(&get("api.example.com", "/v1/%2e%2e/admin")),
            Verdict::Deny { rule: None }
        );
        let post = RequestFacts {
            method: &Method::POST,
            ..get("api.example.com", "/v1/users")
        };
        assert_eq!(p.decide(&post), Verdict::Deny { rule: None });
    }

    #[test]
    fn connect_verdicts() {
        let p = Policy::parse(SAMPLE, "p.toml").unwrap();
        assert_eq!(
            p.decide_connect("github.com", 443),
            ConnectVerdict::Intercept
        );
        assert_eq!(
            p.decide_connect("api.example.com", 443),
            ConnectVerdict::Intercept
        );
        assert_eq!(
            p.decide_connect("files.pypi.org", 443),
            ConnectVerdict::Tunnel { rule: 3 }
        );
        assert_eq!(
            p.decide_connect("bad.pypi.org", 443),
            ConnectVerdict::Deny { rule: Some(2) }
        );
        assert_eq!(
            p.decide_connect("nowhere.test", 443),
            ConnectVerdict::Deny { rule: None }
        );
    }

    #[test]
    fn conditional_deny_then_allow_is_intercepted_not_tunnelled() {
        let text = r#"
[[rule]]
host = "h.example"
methods = ["POST"]
action = "deny"

[[rule]]
host = "h.example"
action = "allow"
"#;
        let p = Policy::parse(text, "p").unwrap();
        assert_eq!(
            p.decide_connect("h.example", 443),
            ConnectVerdict::Intercept
        );
        let only_deny = "[[rule]]\nhost = \"h.example\"\nmethods = [\"POST\"]\naction = \"deny\"\n";
        let p = Policy::parse(only_deny, "p").unwrap();
        assert_eq!(
            p.decide_connect("h.example", 443),
            ConnectVerdict::Deny { rule: None }
        );
    }

    #[test]
    fn ports_and_ips() {
        let text = "[[rule]]\nhost = \"10.0.0.5\"\nports = [8443]\naction = \"allow\"\n";
        let p = Policy::parse(text, "p").unwrap();
        assert!(
            p.rules()[0].private,
            "an IP literal names the address explicitly"
        );
        assert_eq!(
            p.decide_connect("10.0.0.5", 8443),
            ConnectVerdict::Tunnel { rule: 0 }
        );
        assert_eq!(
            p.decide_connect("10.0.0.5", 443),
            ConnectVerdict::Deny { rule: None }
        );
    }

    fn err(text: &str) -> PolicyError {
        Policy::parse(text, "policy.toml").unwrap_err()
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = err("[[rule]]\nhost = \"github.com\"\naction = \"alow\"\n");
        assert_eq!(
            (e.line, e.message.contains("unknown action \"alow\"")),
            (3, true),
            "{e}"
        );
        assert!(e.to_string().starts_with("policy.toml:3:"), "{e}");

        let e = err(
            "[[rule]]\nhost = \"a.com\"\naction = \"allow\"\n\n[[rule]]\nhost = \"b.com\"\nmethod = [\"GET\"]\naction = \"allow\"\n",
        );
        assert_eq!(e.line, 7, "an unknown key names its line: {e}");

        let e = err("[[rule]]\nhost = \"a.com\"\naction = \"allow\"\n[[rule]\n");
        assert_eq!(e.line, 4, "a syntax error names its line: {e}");

        let e = err("[[rule]]\nhost = \"*.corp.example\"\nprivate = true\naction = \"allow\"\n");
        assert_eq!(e.line, 3, "{e}");

        let e = err("[[rule]]\nhost = \"a.com\"\naction = \"allow\"\ninsecure_http = true\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.message.contains("only applies to action = \"inject\""),
            "{e}"
        );

        let e = err(
            "[[rule]]\nhost = \"a.com\"\naction = \"inject\"\nheaders = { Authorization = \"Bearer {secret:bad-name}\" }\n",
        );
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("bad-name"), "{e}");

        let e = err("[[rule]]\nhost = \"a.com\"\naction = \"inject\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("needs `headers` or `basic_auth`"), "{e}");

        let e = err("[[rule]]\nhost = \"a.com\"\naction = \"allow\"\nmethods = [\"get\"]\n");
        assert_eq!(e.line, 4, "{e}");

        let e = err("[[rule]]\nhost = \"not a host\"\naction = \"allow\"\n");
        assert_eq!(e.line, 2, "{e}");

        let e = err("\n\n[[rule]]\naction = \"allow\"\n");
        assert_eq!(e.line, 3, "a rule without a host points at the rule: {e}");

        let e = err("[[rule]]\nhost = \"a.com\"\naction = \"allow\"\npath_prefix = \"v1\"\n");
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn templates() {
        let t = Template::parse("Bearer {secret:gh}!").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Literal("Bearer ".into()),
                Piece::Secret("gh".into()),
                Piece::Literal("!".into())
            ]
        );
        assert!(Template::parse("{secret:gh").is_err());
        assert!(!Template::parse("plain").unwrap().has_secret());
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("GitHub.COM."), "github.com");
        assert_eq!(normalize_host("[fd00:ec2::254]"), "fd00:ec2::254");
    }
}
