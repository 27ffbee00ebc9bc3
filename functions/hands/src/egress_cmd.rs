//! `hands egress check POLICY` and `hands egress test POLICY URL`: the operator's view of an
//! egress policy, without starting a proxy or touching a secret.

use std::path::PathBuf;

use anyhow::Context as _;

use hands_egress::explain::{explain, summary};
use hands_egress::{Policy, Resolver};

#[derive(Debug, clap::Args)]
pub struct EgressArgs {
    #[command(subcommand)]
    pub command: EgressCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum EgressCommand {
    /// Validate a policy file and list its rules; an error names the line (exit 1).
    Check {
        /// The policy TOML file.
        policy: PathBuf,
    },
    /// Say what the proxy would do with one request (exit 0 if it would go out, 1 if not).
    Test {
        /// The policy TOML file.
        policy: PathBuf,
        /// The request URL (http:// or https://).
        url: String,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Do not resolve the host (skip the private/loopback/metadata address check).
        #[arg(long)]
        no_resolve: bool,
    },
}

/// Prints the answer; `Ok(false)` for an invalid policy or a request that would be refused.
pub async fn run(args: EgressArgs) -> anyhow::Result<bool> {
    match args.command {
        EgressCommand::Check { policy } => {
            let p = match Policy::load(&policy) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(false);
                }
            };
            let secrets = p.secret_names();
            println!(
                "{}: {} rule(s), first match wins, anything else denied; secrets used: {}",
                policy.display(),
                p.rules().len(),
                if secrets.is_empty() {
                    "none".to_string()
                } else {
                    secrets.join(", ")
                }
            );
            for line in summary(&p) {
                println!("  {line}");
            }
            Ok(true)
        }
        EgressCommand::Test {
            policy,
            url,
            method,
            no_resolve,
        } => {
            let p = match Policy::load(&policy) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(false);
                }
            };
            let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| anyhow::anyhow!("{method:?} is not an HTTP method"))?;
            let resolver = Resolver::system();
            let e = explain(&p, &method, &url, (!no_resolve).then_some(&resolver))
                .await
                .map_err(anyhow::Error::msg)?;
            print!("{e}");
            Ok(e.goes_out)
        }
    }
}

/// `--egress-policy`: starts the egress proxy for this worker process and hands it to the
/// worker, which gives every session its own credential. `{secret:NAME}` comes from exactly one
/// of `NAME`, `NAME_FILE`, `NAME_SECRET_ARN` or `NAME_SSM_PARAMETER` (upper case) in the
/// worker's environment; a missing or doubly set one stops the start.
pub async fn attach(
    args: &crate::worker_args::WorkerArgs,
    config: &mut hands_worker::WorkerConfig,
) -> anyhow::Result<()> {
    let Some(path) = &args.egress_policy else {
        return Ok(());
    };
    let policy = Policy::load(path)?;
    let upstream_roots = match &args.egress_upstream_ca {
        Some(ca) => hands_egress::UpstreamRoots::WebpkiAnd(ca.clone()),
        None => hands_egress::UpstreamRoots::Webpki,
    };
    let proxy = hands_egress::EgressProxy::start(
        hands_egress::EgressConfig {
            policy,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream_roots,
            resolver: Resolver::system(),
            // Outside every workspace; tools read the CA certificate (never a key) from here
            // (tier 2 binds it into the sandbox read-only: see `bridge_into_tier2`).
            bundle_dir: std::env::temp_dir().join(format!("hands-egress-{}", std::process::id())),
        },
        &hands_egress::WorkerSecrets::from_env(hands_secrets::Resolver::new()),
    )
    .await
    .with_context(|| format!("egress proxy ({})", path.display()))?;
    match &mut config.toolset.isolation {
        hands_sandbox::Isolation::Tier0 => tracing::warn!("{}", hands_egress::TIER0_NOTICE),
        hands_sandbox::Isolation::Bwrap(sandbox) => {
            bridge_into_tier2(&mut sandbox.options, &proxy);
            // Custom tools were given a copy of the isolation when they were loaded.
            config.custom_tools = std::sync::Arc::new(
                (*config.custom_tools)
                    .clone()
                    .with_sandbox(config.toolset.isolation.clone()),
            );
        }
        // Tier 1 shares the host's network and files: the proxy URL and the bundle work as they
        // are, and Landlock lets tools connect to the proxy's port and no other.
        hands_sandbox::Isolation::Landlock(sandbox) => {
            sandbox.options.proxy_port = Some(proxy.addr().port());
            config.custom_tools = std::sync::Arc::new(
                (*config.custom_tools)
                    .clone()
                    .with_sandbox(config.toolset.isolation.clone()),
            );
        }
    }
    config.egress = Some(std::sync::Arc::new(proxy));
    Ok(())
}

/// Tier 2 has no network and a fresh `/tmp`: tools reach the proxy through the relay on the
/// sandbox's own loopback, at the proxy's port (so the proxy URL is the same as at tier 0), and
/// see the CA bundle's directory read-only where the worker wrote it.
fn bridge_into_tier2(options: &mut hands_sandbox::Tier2Options, proxy: &hands_egress::EgressProxy) {
    let addr = proxy.addr();
    options.egress = Some(hands_sandbox::EgressBridge::new(addr.port(), addr));
    if let Some(dir) = proxy.ca_bundle().parent() {
        options.read_only.push(dir.to_path_buf());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use hands_sandbox::{
        BwrapSandbox, EgressBridge, Isolation, Tier1Options, Tier1Sandbox, Tier2Options,
    };
    use hands_worker::{WorkdirTemplate, WorkerConfig};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: crate::worker_args::WorkerArgs,
    }

    /// `attach` with a policy, on a configuration whose isolation is `isolation`.
    async fn attached(isolation: Isolation, policy: &std::path::Path) -> WorkerConfig {
        use clap::Parser as _;
        let args = Cli::parse_from([
            "hands",
            "--environment-id",
            "env_test",
            "--egress-policy",
            policy.to_str().unwrap(),
        ])
        .worker;
        let mut config = WorkerConfig::new("env_test", WorkdirTemplate::new("."));
        config.toolset.isolation = isolation;
        attach(&args, &mut config).await.unwrap();
        config
    }

    #[tokio::test]
    async fn each_tier_gets_its_way_to_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("egress.toml");
        std::fs::write(
            &policy,
            "[[rule]]\nhost = \"example.com\"\naction = \"allow\"\n",
        )
        .unwrap();

        // Tier 2: the relay at the proxy's port, and the bundle's directory bound in.
        let bwrap = Isolation::Bwrap(BwrapSandbox {
            program: "/usr/bin/bwrap".into(),
            options: Tier2Options::default(),
        });
        let config = attached(bwrap, &policy).await;
        let proxy = config.egress.clone().expect("a proxy");
        let Isolation::Bwrap(sandbox) = &config.toolset.isolation else {
            panic!("not tier 2")
        };
        let addr = proxy.addr();
        assert_eq!(
            sandbox.options.egress,
            Some(EgressBridge::new(addr.port(), addr))
        );
        let bundle_dir = proxy.ca_bundle().parent().unwrap();
        assert!(sandbox.options.read_only.iter().any(|p| p == bundle_dir));

        // Tier 1: Landlock's one port is the proxy's.
        let landlock = Isolation::Landlock(Tier1Sandbox {
            helper: "/proc/self/exe".into(),
            options: Tier1Options::default(),
        });
        let config = attached(landlock, &policy).await;
        let port = config.egress.as_ref().unwrap().addr().port();
        let Isolation::Landlock(sandbox) = &config.toolset.isolation else {
            panic!("not tier 1")
        };
        assert_eq!(sandbox.options.proxy_port, Some(port));
    }
}
