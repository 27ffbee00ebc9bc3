//! `hands verify`: checks a captured delivery against signing secrets, for operators debugging
//! signatures. Unlike the server, it says exactly which check failed: the operator holds the
//! secret already.
//!
//! The delivery comes on stdin, either as a raw HTTP request (head, blank line, body) or as the
//! JSON of `events/webhooks/*.json`: `{"headers": {"webhook-id": "...", ...}, "body": "...",
//! "now": 1773843021}` (a header given as a list is sent that many times).

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use hands_protocol::webhook::{SigningSecret, Verifier, WebhookHeaders};
use hands_protocol::webhook_event::WebhookEvent;
use hands_secrets::{Resolver, SecretValue, SecretVars};

use crate::serve::signing_key_source;
use crate::worker_args::secret_value;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Signing secret(s), separated by spaces or commas (prefer the env var: flags show in `ps`).
    #[arg(long, env = "ANTHROPIC_WEBHOOK_SIGNING_KEY", hide_env_values = true, value_parser = secret_value)]
    pub secret: Option<SecretValue>,
    /// A file holding the signing secret(s).
    #[arg(long, env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE")]
    pub secret_file: Option<PathBuf>,
    /// A Secrets Manager secret (or SSM parameter ARN) holding the signing secret(s).
    #[arg(
        long,
        env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_SECRET_ARN",
        value_name = "ARN"
    )]
    pub secret_arn: Option<String>,
    /// An SSM parameter (name or ARN) holding the signing secret(s).
    #[arg(
        long,
        env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_SSM_PARAMETER",
        value_name = "NAME"
    )]
    pub secret_ssm_parameter: Option<String>,
    /// Check the timestamp window as if it were this unix time (default: the delivery file's
    /// `now`, else the clock).
    #[arg(long)]
    pub now: Option<i64>,
    /// Accept secrets shorter than 24 bytes (some published test vectors use them).
    #[arg(long)]
    pub allow_short: bool,
}

/// A captured delivery: header lines in order, the raw body, and maybe a clock to use.
struct Captured {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    now: Option<i64>,
}

fn parse_json(input: &[u8]) -> Option<Captured> {
    let v: serde_json::Value = serde_json::from_slice(input).ok()?;
    let obj = v.as_object()?;
    let body = obj.get("body")?.as_str()?.as_bytes().to_vec();
    let mut headers = Vec::new();
    for (name, value) in obj.get("headers")?.as_object()? {
        match value {
            serde_json::Value::String(s) => headers.push((name.clone(), s.as_bytes().to_vec())),
            serde_json::Value::Array(list) => {
                for s in list.iter().filter_map(|s| s.as_str()) {
                    headers.push((name.clone(), s.as_bytes().to_vec()));
                }
            }
            _ => {}
        }
    }
    Some(Captured {
        headers,
        body,
        now: obj.get("now").and_then(|n| n.as_i64()),
    })
}

/// A raw HTTP/1.1 request: the request line is skipped, header values are trimmed like an HTTP
/// parser does, and the body is every byte after the blank line.
fn parse_http(input: &[u8]) -> anyhow::Result<Captured> {
    let (head, body) = match find(input, b"\r\n\r\n") {
        Some(i) => (&input[..i], &input[i + 4..]),
        None => match find(input, b"\n\n") {
            Some(i) => (&input[..i], &input[i + 2..]),
            None => bail!("no blank line between the headers and the body"),
        },
    };
    let mut headers = Vec::new();
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
        headers.push((name, line[colon + 1..].trim_ascii().to_vec()));
    }
    Ok(Captured {
        headers,
        body: body.to_vec(),
        now: None,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn verifier(args: &VerifyArgs) -> anyhow::Result<Verifier> {
    let source = signing_key_source(SecretVars {
        value: args.secret.clone(),
        file: args.secret_file.clone(),
        secret_arn: args.secret_arn.clone(),
        ssm_parameter: args.secret_ssm_parameter.clone(),
    })?;
    let Some(source) = source else {
        bail!(
            "no secret: pass --secret, --secret-file, --secret-arn or --secret-ssm-parameter \
             (or set ANTHROPIC_WEBHOOK_SIGNING_KEY or its _FILE, _SECRET_ARN or _SSM_PARAMETER)"
        )
    };
    let value = Resolver::new().resolve(&source).await?;
    let text = value.expose_secret();
    if !args.allow_short {
        return hands_ingress::parse_secret_list(text)?.context("the secret list is empty");
    }
    let secrets = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, p)| SigningSecret::parse_allow_short(p).with_context(|| format!("secret #{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Verifier::new(secrets)?)
}

/// Verifies stdin; prints the verdict; true when the delivery is authentic.
pub async fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    let verifier = verifier(&args).await?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the delivery from stdin")?;
    let captured = match parse_json(&input) {
        Some(c) => c,
        None => parse_http(&input)?,
    };
    Ok(check(&verifier, &captured, args.now))
}

fn check(verifier: &Verifier, captured: &Captured, now: Option<i64>) -> bool {
    let now = now.or(captured.now).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let headers = WebhookHeaders::from_pairs(
        captured
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice())),
    );
    match verifier.verify(&headers, &captured.body, now) {
        Ok(v) => {
            let event = match serde_json::from_slice::<WebhookEvent>(&captured.body) {
                Ok(e) => format!("event type {}, resource {}", e.data.kind, e.data.id),
                Err(e) => {
                    format!("but the body is not a webhook event ({e}): the server answers 422")
                }
            };
            println!(
                "valid: webhook-id {}, timestamp {}, signed with secret #{}; {event}",
                v.id, v.timestamp, v.secret_index
            );
            true
        }
        Err(e) => {
            println!("invalid: {} (the server answers 401)", e.reason());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../events/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    }

    fn verifier_for(text: &str) -> Verifier {
        let secret = serde_json::from_str::<serde_json::Value>(text).unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        Verifier::new([SigningSecret::parse_allow_short(&secret).unwrap()]).unwrap()
    }

    #[test]
    fn the_event_fixtures_give_their_expected_verdicts() {
        for name in [
            "example_a_standard_webhooks.json",
            "example_b_anthropic_short_key.json",
            "example_c_production_shape.json",
            "example_c_rotated_keys.json",
            "reject_w11_replay_after_window.json",
            "reject_w1_duplicate_signature.json",
            "reject_w5_trailing_newline.json",
            "reject_w9_plus_timestamp.json",
        ] {
            let raw = fixture(name);
            let text = String::from_utf8(raw.clone()).unwrap();
            let expect = serde_json::from_str::<serde_json::Value>(&text).unwrap()["expect"]
                .as_str()
                .unwrap()
                .to_owned();
            let captured = parse_json(&raw).unwrap();
            let ok = check(&verifier_for(&text), &captured, None);
            assert_eq!(ok, expect == "accept", "{name}");
        }
    }

    #[test]
    fn a_raw_http_capture_verifies_byte_for_byte() {
        let text = String::from_utf8(fixture("example_c_production_shape.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let h = &v["headers"];
        let raw = format!(
            "POST /webhook HTTP/1.1\r\nHost: x\r\nWebhook-Id: {}\r\nwebhook-timestamp:  {}\r\nwebhook-signature: {}\r\n\r\n{}",
            h["webhook-id"].as_str().unwrap(),
            h["webhook-timestamp"].as_str().unwrap(),
            h["webhook-signature"].as_str().unwrap(),
            v["body"].as_str().unwrap()
        );
        let captured = parse_http(raw.as_bytes()).unwrap();
        assert!(check(&verifier_for(&text), &captured, v["now"].as_i64()));
        let mut changed = raw.into_bytes();
        changed.push(b'\n');
        let captured = parse_http(&changed).unwrap();
        assert!(!check(&verifier_for(&text), &captured, v["now"].as_i64()));
    }
}
