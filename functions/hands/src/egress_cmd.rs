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
            bundle_dir: std::env::temp_dir(),
        },
        &hands_egress::WorkerSecrets::from_env(hands_secrets::Resolver::new()),
    )
    .await
    .with_context(|| format!("egress proxy ({})", path.display()))?;
    match &mut config.toolset.isolation {
        hands_sandbox::Isolation::Tier0 => tracing::warn!(
            secret_files = ?hands_secrets::secret_files(),
            "{}",
            hands_egress::TIER0_NOTICE
        ),
        hands_sandbox::Isolation::Bwrap(sandbox) => {
            bridge_into_tier2(&mut sandbox.options, &proxy);
            trial_tier2_relay(&config.toolset.isolation).await?;
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
            tier1_can_limit_to_the_proxy(&hands_sandbox::landlock_abi())?;
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

/// Runs `/bin/true` once in tier 2 with the relay bridged in. The probe's trial run has no
/// relay, and where joining the sandbox's user namespace is refused (setuid bubblewrap, a
/// seccomp profile forbidding setns) every spawn would fail while the worker kept claiming
/// work: the start fails instead, with the reason.
async fn trial_tier2_relay(isolation: &hands_sandbox::Isolation) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let context = "the egress proxy's relay into isolation tier 2 does not work on this host \
                   (use --isolation landlock or none, or no egress policy)";
    let spec = hands_sandbox::OneShotSpec {
        program: "/bin/true".into(),
        args: Vec::new(),
        cwd: "/".into(),
        env: hands_sandbox::EnvPolicy::default().build(std::iter::empty()),
        rlimits: hands_sandbox::Rlimits::default(),
        isolation: isolation.clone(),
        binds: hands_sandbox::Binds::default(),
    };
    let mut p = hands_sandbox::spawn_oneshot(&spec).context(context)?;
    drop(p.stdin);
    let mut stderr = String::new();
    let _ = (&mut p.stderr).take(4096).read_to_string(&mut stderr).await;
    let status = p.child.wait().await.context(context)?;
    if !status.success() {
        anyhow::bail!(
            "{context}: /bin/true in the sandbox ended with {status}: {}",
            stderr.trim()
        );
    }
    Ok(())
}

/// Tier 1 keeps tools to the proxy with Landlock's TCP rules, which need ABI 4 (Linux 6.7).
/// The probe's trial run sets no port, so tier 1 can be selected on an older kernel (6.2-6.6),
/// where every tool start would then fail while the worker kept claiming work: the start fails
/// instead, saying what to do.
fn tier1_can_limit_to_the_proxy(abi: &Result<u32, String>) -> anyhow::Result<()> {
    let need = hands_sandbox::NET_LANDLOCK_ABI;
    match abi {
        Ok(abi) if *abi >= need => Ok(()),
        Ok(abi) => anyhow::bail!(
            "the egress proxy at isolation tier 1 needs Landlock ABI {need} (Linux 6.7) to keep \
             tools to the proxy's port, and this kernel has ABI {abi}: use --isolation bwrap \
             (tier 2), a newer kernel, or no egress policy"
        ),
        Err(why) => anyhow::bail!(
            "the egress proxy at isolation tier 1 needs Landlock ABI {need} (Linux 6.7): {why}"
        ),
    }
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
    use hands_sandbox::{EgressBridge, Isolation, Tier1Options, Tier1Sandbox, Tier2Options};
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

    #[test]
    fn tier_1_with_the_proxy_needs_landlock_network_rules() {
        assert!(tier1_can_limit_to_the_proxy(&Ok(4)).is_ok());
        assert!(tier1_can_limit_to_the_proxy(&Ok(7)).is_ok());
        let err = tier1_can_limit_to_the_proxy(&Ok(3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs Landlock ABI 4") && err.contains("this kernel has ABI 3"),
            "{err}"
        );
        assert!(err.contains("--isolation bwrap"), "{err}");
        let err = tier1_can_limit_to_the_proxy(&Err("no Landlock".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no Landlock"), "{err}");
    }

    async fn tier2_attached(bwrap: Isolation, policy: &std::path::Path) {
        let config = attached(bwrap, policy).await;
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

        // Tier 2 (where this host runs it: attaching runs the relay once): the relay at the
        // proxy's port, and the bundle's directory bound in.
        let probe = hands_sandbox::HostProbe::run();
        if let Some(bwrap) = probe
            .select(
                hands_sandbox::IsolationMode::Tier(hands_sandbox::Tier::Bwrap),
                true,
            )
            .ok()
            .and_then(|_| probe.bwrap_sandbox(Tier2Options::default()))
        {
            tier2_attached(Isolation::Bwrap(bwrap), &policy).await;
        } else if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") {
            panic!("REQUIRE_ISOLATION=1 but tier 2 cannot run here");
        }

        // Tier 1: Landlock's one port is the proxy's (where the kernel has network rules).
        if tier1_can_limit_to_the_proxy(&hands_sandbox::landlock_abi()).is_err() {
            return;
        }
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
