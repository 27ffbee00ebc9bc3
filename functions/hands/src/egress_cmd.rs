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
/// worker's environment; a missing or doubly set one stops the start. The tools' way to the
/// proxy is set and checked by `hands_sandbox::route_to_proxy`, as on Lambda; `probe` is the
/// host probe's result (absent only when tier 0 was asked and not required).
pub async fn attach(
    args: &crate::worker_args::WorkerArgs,
    config: &mut hands_worker::WorkerConfig,
    probe: Option<&hands_sandbox::HostProbe>,
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
            // (tier 2 binds it into the sandbox read-only).
            bundle_dir: std::env::temp_dir(),
        },
        &hands_egress::WorkerSecrets::from_env(hands_secrets::Resolver::new()),
    )
    .await
    .with_context(|| format!("egress proxy ({})", path.display()))?;
    let isolation = std::mem::take(&mut config.toolset.isolation);
    let routed = match (probe, isolation) {
        (_, hands_sandbox::Isolation::Tier0) => hands_sandbox::Routed {
            isolation: hands_sandbox::Isolation::Tier0,
            fell_back: None,
        },
        (Some(probe), isolation) => {
            let route = hands_sandbox::ProxyRoute {
                addr: proxy.addr(),
                bundle_dir: proxy.ca_bundle().parent().map(std::path::Path::to_path_buf),
            };
            hands_sandbox::route_to_proxy(
                isolation,
                &route,
                probe,
                args.isolation,
                args.isolation_required(),
            )
            .await?
        }
        (None, isolation) => anyhow::bail!(
            "attaching the egress proxy to {} needs the host probe's result",
            isolation.tier()
        ),
    };
    if let Some(why) = &routed.fell_back {
        tracing::warn!("isolation: {why}");
    }
    if routed.isolation == hands_sandbox::Isolation::Tier0 {
        tracing::warn!(
            secret_files = ?hands_secrets::secret_files(),
            "{}",
            hands_egress::TIER0_NOTICE
        );
    }
    config.toolset.isolation = routed.isolation.clone();
    // Custom tools were given a copy of the isolation when they were loaded.
    config.custom_tools = std::sync::Arc::new(
        (*config.custom_tools)
            .clone()
            .with_sandbox(routed.isolation),
    );
    config.egress = Some(std::sync::Arc::new(proxy));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use hands_sandbox::{
        EgressBridge, HostProbe, Isolation, NET_LANDLOCK_ABI, Tier1Options, Tier1Sandbox,
        Tier2Options, Trial,
    };
    use hands_worker::{WorkdirTemplate, WorkerConfig};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: crate::worker_args::WorkerArgs,
    }

    /// `attach` with a policy and the flags `extra`, on a configuration whose isolation is
    /// `isolation`, with `probe` as the host probe's result.
    async fn attached(
        isolation: Isolation,
        policy: &std::path::Path,
        probe: &HostProbe,
        extra: &[&str],
    ) -> anyhow::Result<WorkerConfig> {
        use clap::Parser as _;
        let mut argv = vec![
            "hands",
            "--environment-id",
            "env_test",
            "--egress-policy",
            policy.to_str().unwrap(),
        ];
        argv.extend_from_slice(extra);
        let args = Cli::parse_from(argv).worker;
        let mut config = WorkerConfig::new("env_test", WorkdirTemplate::new("."));
        config.toolset.isolation = isolation;
        attach(&args, &mut config, Some(probe)).await?;
        Ok(config)
    }

    fn policy_file(dir: &std::path::Path) -> std::path::PathBuf {
        let policy = dir.join("egress.toml");
        std::fs::write(
            &policy,
            "[[rule]]\nhost = \"example.com\"\naction = \"allow\"\n",
        )
        .unwrap();
        policy
    }

    #[tokio::test]
    async fn each_tier_gets_its_way_to_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_file(dir.path());

        // Tier 2 (where this host runs it: attaching runs the relay once): the relay at the
        // proxy's port, and the bundle's directory bound in.
        let probe = HostProbe::run();
        if let Some(bwrap) = probe
            .select(
                hands_sandbox::IsolationMode::Tier(hands_sandbox::Tier::Bwrap),
                true,
            )
            .ok()
            .and_then(|_| probe.bwrap_sandbox(Tier2Options::default()))
        {
            let config = attached(Isolation::Bwrap(bwrap), &policy, &probe, &[])
                .await
                .unwrap();
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
        } else if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") {
            panic!("REQUIRE_ISOLATION=1 but tier 2 cannot run here");
        }

        // Tier 1: Landlock's one port is the proxy's (where the kernel has network rules).
        if !probe
            .landlock_abi
            .as_ref()
            .is_ok_and(|&abi| abi >= NET_LANDLOCK_ABI)
        {
            return;
        }
        let landlock = Isolation::Landlock(Tier1Sandbox {
            helper: "/proc/self/exe".into(),
            options: Tier1Options::default(),
        });
        let config = attached(landlock, &policy, &probe, &[]).await.unwrap();
        let port = config.egress.as_ref().unwrap().addr().port();
        let Isolation::Landlock(sandbox) = &config.toolset.isolation else {
            panic!("not tier 1")
        };
        assert_eq!(sandbox.options.proxy_port, Some(port));
    }

    /// The CLI goes through the same check as the Lambda function (`route_to_proxy`, tested
    /// in hands-sandbox): here a kernel whose Landlock has no network rules.
    #[tokio::test]
    async fn tier_1_without_network_rules_fails_the_start_unless_tier_0_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_file(dir.path());
        let probe = HostProbe {
            landlock_abi: Ok(3),
            seccomp_filter: true,
            user_namespaces: Err("not needed".into()),
            bwrap: Trial::done(Err("not needed".into())),
            tier1: Trial::done(Ok(())),
        };
        let landlock = Isolation::Landlock(Tier1Sandbox::this_binary(Tier1Options::default()));
        let required = ["--isolation", "landlock", "--require-isolation"];
        let err = attached(landlock.clone(), &policy, &probe, &required)
            .await
            .err()
            .expect("the start fails")
            .to_string();
        assert!(
            err.contains("needs Landlock ABI 4") && err.contains("this kernel has ABI 3"),
            "{err}"
        );
        if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") {
            return; // every start is required then
        }
        // Not required: still no tier 0, whose tools could go around the policy.
        let err = attached(landlock, &policy, &probe, &["--isolation", "landlock"])
            .await
            .err()
            .expect("the start fails")
            .to_string();
        assert!(
            err.contains("this kernel has ABI 3") && err.contains("install bubblewrap"),
            "{err}"
        );
        // `--isolation none`: the operator's choice, the proxy without a sandbox.
        let config = attached(Isolation::Tier0, &policy, &probe, &["--isolation", "none"])
            .await
            .unwrap();
        assert_eq!(config.toolset.isolation, Isolation::Tier0);
        assert!(config.egress.is_some());
    }
}
