//! The egress proxy of a Lambda function: started when `HANDS_EGRESS_POLICY` names a policy
//! file, the way `hands poll --egress-policy` starts it (same secrets, same upstream roots
//! variable). Where the isolation selected afterwards ([`crate::isolation::select`]) is tier 0,
//! tool code can connect around the proxy, and that step says so plainly in the log; at tier 1
//! or 2 the proxy is the tools' only way out. The secrets never enter the tools' environment.

use std::path::PathBuf;
use std::sync::Arc;

use hands_egress::{
    EgressConfig, EgressProxy, Policy, Resolver as DnsResolver, UpstreamRoots, WorkerSecrets,
};
use hands_worker::WorkerConfig;

use crate::env_config::ConfigError;

/// Starts the proxy when `HANDS_EGRESS_POLICY` is set and hands it to the worker (each session's
/// tools then get their own proxy credential and the CA bundle). `HANDS_EGRESS_UPSTREAM_CA`:
/// PEM roots trusted upstream besides Mozilla's. `{secret:NAME}` comes from exactly one of
/// `NAME`, `NAME_FILE`, `NAME_SECRET_ARN` or `NAME_SSM_PARAMETER`, through `secrets`.
pub async fn start_from_env(
    worker: &mut WorkerConfig,
    secrets: &hands_secrets::Resolver,
) -> Result<(), ConfigError> {
    start(
        worker,
        secrets,
        crate::env_config::var,
        std::env::temp_dir(),
    )
    .await
}

/// [`start_from_env`] with the variables from `lookup`; the CA bundle goes under `tmp`.
async fn start(
    worker: &mut WorkerConfig,
    secrets: &hands_secrets::Resolver,
    lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    tmp: PathBuf,
) -> Result<(), ConfigError> {
    let Some(path) = lookup("HANDS_EGRESS_POLICY") else {
        return Ok(());
    };
    let invalid = |why: String| ConfigError::Invalid {
        var: "HANDS_EGRESS_POLICY",
        value: path.clone(),
        why,
    };
    let policy = Policy::load(std::path::Path::new(&path)).map_err(|e| invalid(e.to_string()))?;
    let upstream_roots = match lookup("HANDS_EGRESS_UPSTREAM_CA") {
        Some(ca) => UpstreamRoots::WebpkiAnd(ca.into()),
        None => UpstreamRoots::Webpki,
    };
    let proxy = EgressProxy::start(
        EgressConfig {
            policy,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream_roots,
            resolver: DnsResolver::system(),
            // Lambda's only writable place; outside every workspace (`/tmp/hands/...`).
            bundle_dir: tmp,
        },
        &WorkerSecrets::with_lookup(secrets.clone(), lookup),
    )
    .await
    .map_err(|e| invalid(format!("the egress proxy did not start: {e}")))?;
    worker.egress = Some(Arc::new(proxy));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use hands_worker::WorkdirTemplate;

    use super::*;

    const POLICY: &str = r#"
[[rule]]
host = "api.example.com"
action = "inject"
headers = { Authorization = "Bearer {secret:api_token}" }
"#;

    fn config() -> WorkerConfig {
        WorkerConfig::new("env_test", WorkdirTemplate::new("/tmp/hands/{session_id}"))
    }

    async fn started(vars: &[(&str, &str)], tmp: &std::path::Path) -> Result<WorkerConfig, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut worker = config();
        start(
            &mut worker,
            &hands_secrets::Resolver::new(),
            move |k| map.get(k).cloned(),
            tmp.to_path_buf(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(worker)
    }

    #[tokio::test]
    async fn a_policy_starts_the_proxy_and_its_secret_comes_from_the_usual_variables() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("egress.toml");
        std::fs::write(&policy, POLICY).unwrap();
        let policy = policy.to_str().unwrap();

        // No policy: no proxy.
        assert!(started(&[], dir.path()).await.unwrap().egress.is_none());

        let token = dir.path().join("token");
        std::fs::write(&token, "api-token-0123456789\n").unwrap();
        let worker = started(
            &[
                ("HANDS_EGRESS_POLICY", policy),
                ("API_TOKEN_FILE", token.to_str().unwrap()),
            ],
            dir.path(),
        )
        .await
        .unwrap();
        let proxy = worker.egress.expect("a proxy");
        // Serving: a session gets the proxy URL and the bundle, which exists.
        let session = proxy.open_session("sesn_lambda");
        let url = &session
            .env
            .iter()
            .find(|(k, _)| k == "HTTPS_PROXY")
            .unwrap()
            .1;
        assert!(url.ends_with(&format!("@{}", proxy.addr())), "{url}");
        assert!(proxy.ca_bundle().starts_with(dir.path()));
        assert!(proxy.ca_bundle().is_file());

        // A missing secret and a bad policy stop the start, naming what is wrong.
        let err = started(&[("HANDS_EGRESS_POLICY", policy)], dir.path())
            .await
            .err()
            .unwrap();
        assert!(
            err.starts_with("HANDS_EGRESS_POLICY=") && err.contains("API_TOKEN is not set"),
            "{err}"
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[rule]]\nhost = \"x\"\naction = \"maybe\"\n").unwrap();
        let err = started(
            &[("HANDS_EGRESS_POLICY", bad.to_str().unwrap())],
            dir.path(),
        )
        .await
        .err()
        .unwrap();
        assert!(err.contains("bad.toml:3"), "{err}");
    }
}
