//! What the proxy would do with one request, in words: `hands egress test POLICY URL`.

use std::fmt;

use http::{Method, Uri};

use crate::address::{AddressClass, classify, rule_permits};
use crate::policy::{Action, ConnectVerdict, Policy, RequestFacts, Verdict, normalize_host};
use crate::resolve::Resolver;

/// The answer, line by line; `goes_out` is the bottom line.
#[derive(Debug)]
pub struct Explanation {
    pub lines: Vec<String>,
    pub goes_out: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Explains `method url` under `policy`; with a resolver, also checks the addresses the name
/// resolves to now (the proxy checks again on every connection).
pub async fn explain(
    policy: &Policy,
    method: &Method,
    url: &str,
    resolver: Option<&Resolver>,
) -> Result<Explanation, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "{url:?}: only http:// and https:// URLs go through the proxy"
            ));
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path();
    let rules = policy.rules();
    let mut lines = vec![format!("{method} {url}")];
    let refused = |lines: &mut Vec<String>, sentence: String| {
        lines.push(format!("  => refused: 403 \"{sentence}\""));
    };
    let sentence = format!("egress to {host} is not allowed by this environment's policy");

    if tls {
        lines.push(match policy.decide_connect(&host, port) {
            ConnectVerdict::Tunnel { rule } => format!(
                "  tls: tunnelled untouched (rule at line {} allows all of {}:{port})",
                rules[rule].line, host
            ),
            ConnectVerdict::Intercept => {
                "  tls: terminated by the proxy with its per-worker CA (a rule injects a secret or looks at methods or paths)".to_string()
            }
            ConnectVerdict::Deny { rule: Some(r) } => {
                format!("  tls: no tunnel (rule at line {} denies {host})", rules[r].line)
            }
            ConnectVerdict::Deny { rule: None } => format!("  tls: no tunnel (no rule matches {host}:{port})"),
        });
    }
    let verdict = policy.decide(&RequestFacts {
        host: &host,
        port,
        method,
        path,
    });
    let rule = match verdict {
        Verdict::Deny { rule } => {
            lines.push(match rule {
                Some(r) => format!("  rule: line {} denies it", rules[r].line),
                None => "  rule: none matches, so the default applies: deny".to_string(),
            });
            refused(&mut lines, sentence);
            return Ok(Explanation {
                lines,
                goes_out: false,
            });
        }
        Verdict::AmbiguousPath { rule } => {
            lines.push(format!(
                "  rule: line {} judges paths by prefix, and this path can be read more than one way",
                rules[rule].line
            ));
            refused(&mut lines, crate::policy::ambiguous_path_refusal(&host));
            return Ok(Explanation {
                lines,
                goes_out: false,
            });
        }
        Verdict::Allow { rule } => {
            lines.push(format!(
                "  rule: line {} allows it (nothing injected)",
                rules[rule].line
            ));
            &rules[rule]
        }
        Verdict::Inject { rule } => {
            let r = &rules[rule];
            if let Action::Inject(inj) = &r.action {
                let secrets: Vec<String> = inj
                    .templates()
                    .flat_map(|t| t.pieces.iter())
                    .filter_map(|p| match p {
                        crate::policy::Piece::Secret(n) => Some(n.clone()),
                        crate::policy::Piece::Literal(_) => None,
                    })
                    .collect();
                lines.push(format!(
                    "  rule: line {} injects {} (secret {})",
                    r.line,
                    inj.header_names().join(", "),
                    if secrets.is_empty() {
                        "none".to_string()
                    } else {
                        secrets.join(", ")
                    }
                ));
            }
            if !tls && !r.insecure_http {
                lines.push(format!(
                    "  cleartext: a credential is never sent over plain http:// (the rule at line {} has no `insecure_http = true`)",
                    r.line
                ));
                refused(&mut lines, crate::policy::cleartext_refusal(&host));
                return Ok(Explanation {
                    lines,
                    goes_out: false,
                });
            }
            r
        }
    };
    let Some(resolver) = resolver else {
        lines.push("  address: not resolved (--no-resolve); private, loopback and metadata addresses are refused unless the rule allows them".to_string());
        lines.push("  => goes out, if the name resolves to a permitted address".to_string());
        return Ok(Explanation {
            lines,
            goes_out: true,
        });
    };
    let addrs = match resolver.lookup(&host, port).await {
        Ok(a) if !a.is_empty() => a,
        Ok(_) | Err(_) => {
            lines.push(format!("  address: {host} does not resolve from here"));
            lines.push("  => would fail with 502 (the name does not resolve)".to_string());
            return Ok(Explanation {
                lines,
                goes_out: false,
            });
        }
    };
    let mut chosen = None;
    for a in &addrs {
        let kind = match classify(a.ip()) {
            AddressClass::Public => "public",
            AddressClass::Internal(c) => c,
            AddressClass::Metadata => "a cloud metadata address",
        };
        let ok = rule_permits(rule, a.ip()).is_ok();
        lines.push(format!(
            "  address: {} ({kind}): {}",
            a.ip(),
            if ok { "permitted" } else { "refused" }
        ));
        if ok && chosen.is_none() {
            chosen = Some(a.ip());
        }
    }
    match chosen {
        Some(ip) => {
            lines.push(format!("  => goes out to {ip}"));
            Ok(Explanation {
                lines,
                goes_out: true,
            })
        }
        None => {
            let first = addrs[0].ip();
            let class = rule_permits(rule, first)
                .err()
                .unwrap_or("a refused address");
            refused(
                &mut lines,
                format!("{sentence}: it resolves to {class} ({first})"),
            );
            Ok(Explanation {
                lines,
                goes_out: false,
            })
        }
    }
}

/// One line per rule, for `hands egress check`.
pub fn summary(policy: &Policy) -> Vec<String> {
    policy
        .rules()
        .iter()
        .map(|r| {
            let mut s = format!(
                "line {:>3}: {:<7}",
                r.line,
                match &r.action {
                    Action::Allow => "allow",
                    Action::Deny => "deny",
                    Action::Inject(_) => "inject",
                }
            );
            s.push_str(&format!(" {}", r.host));
            if let Some(p) = &r.ports {
                let p: Vec<String> = p.iter().map(u16::to_string).collect();
                s.push_str(&format!(" ports {}", p.join(",")));
            }
            if let Some(m) = &r.methods {
                let m: Vec<&str> = m.iter().map(Method::as_str).collect();
                s.push_str(&format!(" {}", m.join(",")));
            }
            if let Some(p) = &r.path_prefix {
                s.push_str(&format!(" {p}*"));
            }
            if let Action::Inject(inj) = &r.action {
                s.push_str(&format!(" -> {}", inj.header_names().join(", ")));
            }
            if r.private {
                s.push_str(" (may reach private addresses)");
            }
            s
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const P: &str = "[[rule]]\nhost = \"github.com\"\naction = \"inject\"\nbasic_auth = { username = \"x-access-token\", password = \"{secret:github}\" }\n\n[[rule]]\nhost = \"*.example.com\"\naction = \"allow\"\n";

    #[tokio::test]
    async fn explains_each_outcome() {
        let p = Policy::parse(P, "p").unwrap();
        let r = Resolver::system()
            .pin("github.com", vec!["140.82.112.3".parse().unwrap()])
            .pin("in.example.com", vec!["10.0.0.8".parse().unwrap()]);
        let e = explain(
            &p,
            &Method::GET,
            "https://github.com/o/r.git/info/refs",
            Some(&r),
        )
        .await
        .unwrap();
        assert!(e.goes_out, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("rule: line 2 injects authorization (basic) (secret github)"),
            "{text}"
        );
        assert!(text.contains("tls: terminated by the proxy"), "{text}");
        assert!(text.contains("=> goes out to 140.82.112.3"), "{text}");

        let e = explain(&p, &Method::GET, "https://in.example.com/", Some(&r))
            .await
            .unwrap();
        assert!(!e.goes_out);
        assert!(e.to_string().contains("egress to in.example.com is not allowed by this environment's policy: it resolves to a private address (10.0.0.8)"), "{e}");

        let e = explain(&p, &Method::GET, "http://elsewhere.org/", None)
            .await
            .unwrap();
        assert!(!e.goes_out);
        assert!(
            e.to_string()
                .contains("none matches, so the default applies: deny"),
            "{e}"
        );
        let e = explain(&p, &Method::GET, "http://github.com/o/r.git", None)
            .await
            .unwrap();
        assert!(!e.goes_out, "{e}");
        assert!(
            e.to_string().contains("carry a credential in cleartext"),
            "{e}"
        );
        assert!(explain(&p, &Method::GET, "ftp://x/", None).await.is_err());
        assert_eq!(summary(&p)[1], "line   7: allow   *.example.com");
    }
}
