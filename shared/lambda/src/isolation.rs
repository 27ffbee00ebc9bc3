//! The isolation tier of the `session` function's tools, chosen like `hands poll` chooses it:
//! `HANDS_ISOLATION` (`auto` by default, `none`, `landlock`, `bwrap`) and
//! `HANDS_REQUIRE_ISOLATION` (or `REQUIRE_ISOLATION=1`), which makes a tier that cannot be
//! fully enforced fail the function's start. Lambda's runtime normally has no bubblewrap (and
//! no user namespaces), and Landlock depends on the kernel of the execution environment, so
//! `auto` usually ends at tier 1 or tier 0; the probe and the choice are logged.
//!
//! The probe runs on its own thread from the start of the function's initialisation, while
//! the SDK configuration and the secrets are read, and is awaited once they are.

use std::path::PathBuf;

use hands_sandbox::{
    DEFAULT_HIDDEN, HostProbe, Isolation, IsolationMode, ProxyRoute, Tier, Tier1Options,
    Tier2Options, route_to_proxy,
};
use hands_worker::WorkerConfig;
use tokio::sync::oneshot;

use crate::env_config::{ConfigError, var};

/// A host probe running on its own thread.
pub struct PendingProbe(oneshot::Receiver<HostProbe>);

impl PendingProbe {
    /// A probe already done (tests force what the host has).
    #[cfg(test)]
    fn ready(probe: HostProbe) -> PendingProbe {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(probe);
        PendingProbe(rx)
    }
}

/// Starts the host probe, with the trial runs that `HANDS_ISOLATION` can use; returns at once.
pub fn start_probe() -> PendingProbe {
    let (tx, rx) = oneshot::channel();
    // An unreadable mode fails the start in `select`; the probe then serves `auto`'s trials,
    // and any other a check asks for is made then.
    let mode = asked(&var).map(|(mode, _)| mode).unwrap_or_default();
    let spawned = std::thread::Builder::new()
        .name("isolation-probe".into())
        .spawn(move || {
            let _ = tx.send(HostProbe::run_for(mode));
        });
    if let Err(e) = spawned {
        // The receiver then reports the probe as missing: no tier is guessed.
        tracing::error!(error = %e, "isolation: could not start the host probe thread");
    }
    PendingProbe(rx)
}

/// The variable that required isolation, and its value: an error about the requirement names it.
type RequiredBy = Option<(&'static str, String)>;

/// What the variables ask for.
fn asked(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(IsolationMode, RequiredBy), ConfigError> {
    let mode = match lookup("HANDS_ISOLATION") {
        None => IsolationMode::Auto,
        Some(v) => v.parse().map_err(|why| ConfigError::Invalid {
            var: "HANDS_ISOLATION",
            value: v.clone(),
            why,
        })?,
    };
    let hands_required = lookup("HANDS_REQUIRE_ISOLATION");
    let required = match hands_required
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
        Some(v) => {
            return Err(ConfigError::Invalid {
                var: "HANDS_REQUIRE_ISOLATION",
                value: v,
                why: "use 1/true or 0/false".into(),
            });
        }
    };
    let required_by = if required {
        hands_required.map(|v| ("HANDS_REQUIRE_ISOLATION", v))
    } else if lookup("REQUIRE_ISOLATION").as_deref() == Some("1") {
        Some(("REQUIRE_ISOLATION", "1".into()))
    } else {
        None
    };
    Ok((mode, required_by))
}

/// Waits for the probe and sets the tier of `worker`'s tools (and of its custom tools). Call it
/// once every secret is read: their files are hidden from tools at tiers 1 and 2. With the
/// egress proxy started, tier 1 lets tools connect to its port and tier 2 relays to it, after
/// the checks `hands_sandbox::route_to_proxy` makes (the same as `hands poll`'s).
pub async fn select(worker: &mut WorkerConfig, probe: PendingProbe) -> Result<(), ConfigError> {
    select_with(worker, probe, &var).await
}

async fn select_with(
    worker: &mut WorkerConfig,
    probe: PendingProbe,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let (mode, required_by) = asked(lookup)?;
    let required = required_by.is_some();
    // An isolation error names the variable that required isolation, else the one that chose
    // the tier.
    let invalid = |why: String| match &required_by {
        Some((var, value)) => ConfigError::Invalid {
            var,
            value: value.clone(),
            why,
        },
        None => ConfigError::Invalid {
            var: "HANDS_ISOLATION",
            value: mode.to_string(),
            why,
        },
    };
    let probe = probe.0.await.map_err(|_| ConfigError::Invalid {
        var: "HANDS_ISOLATION",
        value: mode.to_string(),
        why: "the host probe ended without a result".into(),
    })?;
    let selection = probe
        .select(mode, required)
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(
        probe = %probe,
        process_limit = %hands_sandbox::process_limit_mechanism(),
        asked = %mode,
        required,
        tier = %selection.tier,
        "isolation"
    );
    if let Some(why) = &selection.fell_back {
        tracing::warn!("isolation: {why}");
    }
    let mut hide: Vec<PathBuf> = DEFAULT_HIDDEN.iter().map(PathBuf::from).collect();
    hide.extend(hands_secrets::secret_files());
    let isolation = match selection.tier {
        Tier::None => Some(Isolation::Tier0),
        Tier::Landlock => probe
            .tier1_sandbox(Tier1Options {
                hide,
                proxy_port: None,
            })
            .map(Isolation::Landlock),
        Tier::Bwrap => probe
            .bwrap_sandbox(Tier2Options {
                hide,
                ..Tier2Options::default()
            })
            .map(Isolation::Bwrap),
    };
    let Some(mut isolation) = isolation else {
        return Err(ConfigError::Invalid {
            var: "HANDS_ISOLATION",
            value: mode.to_string(),
            why: format!(
                "{} was selected but the probe did not find it usable",
                selection.tier
            ),
        });
    };
    if let Some(proxy) = &worker.egress {
        // The same check as `hands poll --egress-policy`: tier 1 needs Landlock's network
        // rules, tier 2 a relay that works; a required tier fails the start, else tier 2 falls
        // back to tier 1, never to tier 0 unless HANDS_ISOLATION=none.
        let route = ProxyRoute {
            addr: proxy.addr(),
            bundle_dir: proxy.ca_bundle().parent().map(PathBuf::from),
        };
        let routed = route_to_proxy(isolation, &route, &probe, mode, required)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        if let Some(why) = &routed.fell_back {
            tracing::warn!("isolation: {why}");
        }
        isolation = routed.isolation;
        if isolation.tier() == Tier::None {
            // Only at tier 0 can tool code connect around the proxy; say so plainly.
            tracing::warn!("{}", hands_egress::TIER0_NOTICE);
        } else {
            tracing::info!(tier = %isolation.tier(),
                "egress: tools reach the network only through the proxy at this tier");
        }
    }
    worker.toolset.isolation = isolation.clone();
    worker.custom_tools =
        std::sync::Arc::new((*worker.custom_tools).clone().with_sandbox(isolation));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use hands_sandbox::Trial;
    use hands_worker::WorkdirTemplate;

    use super::*;

    async fn selected(vars: &[(&str, &str)]) -> Result<Isolation, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut worker =
            WorkerConfig::new("env_test", WorkdirTemplate::new("/tmp/hands/{session_id}"));
        select_with(&mut worker, start_probe(), &move |k: &str| {
            map.get(k).cloned()
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(worker.toolset.isolation)
    }

    #[tokio::test]
    async fn the_variables_choose_the_tier_and_a_required_one_fails_closed() {
        let probe = HostProbe::run();
        assert_eq!(
            selected(&[("HANDS_ISOLATION", "none")]).await.unwrap(),
            Isolation::Tier0
        );
        // auto: the strongest this host allows.
        assert_eq!(selected(&[]).await.unwrap().tier(), probe.strongest());
        let err = selected(&[("HANDS_ISOLATION", "sometimes")])
            .await
            .unwrap_err();
        assert!(err.starts_with("HANDS_ISOLATION=\"sometimes\""), "{err}");
        let err = selected(&[("HANDS_REQUIRE_ISOLATION", "maybe")])
            .await
            .unwrap_err();
        assert!(
            err.starts_with("HANDS_REQUIRE_ISOLATION=\"maybe\""),
            "{err}"
        );
        for tier in [Tier::Landlock, Tier::Bwrap] {
            let got = selected(&[
                ("HANDS_ISOLATION", tier.name()),
                ("HANDS_REQUIRE_ISOLATION", "1"),
            ])
            .await;
            match probe.check(tier) {
                Ok(()) => assert_eq!(got.unwrap().tier(), tier),
                Err(why) => {
                    let err = got.unwrap_err();
                    assert!(
                        err.contains("cannot be fully enforced") && err.contains(&why),
                        "{err}"
                    );
                }
            }
        }
    }

    /// A worker with the egress proxy started (an allow-only policy, so no secret is needed).
    async fn worker_with_proxy(dir: &std::path::Path) -> WorkerConfig {
        let mut worker =
            WorkerConfig::new("env_test", WorkdirTemplate::new("/tmp/hands/{session_id}"));
        let proxy = hands_egress::EgressProxy::start(
            hands_egress::EgressConfig {
                policy: hands_egress::Policy::parse(
                    "[[rule]]\nhost = \"example.com\"\naction = \"allow\"\n",
                    "egress.toml",
                )
                .unwrap(),
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream_roots: hands_egress::UpstreamRoots::Webpki,
                resolver: hands_egress::Resolver::system(),
                bundle_dir: dir.to_path_buf(),
            },
            &hands_egress::StaticSecrets::new(),
        )
        .await
        .unwrap();
        worker.egress = Some(std::sync::Arc::new(proxy));
        worker
    }

    /// Tier 1 works on this forced host, with Landlock ABI `abi`; `bwrap` is its "bubblewrap".
    fn forced(abi: u32, bwrap: Result<PathBuf, String>) -> HostProbe {
        HostProbe {
            landlock_abi: Ok(abi),
            seccomp_filter: true,
            user_namespaces: Ok(()),
            bwrap: Trial::done(bwrap),
            tier1: Trial::done(Ok(())),
        }
    }

    async fn selected_with_proxy(
        probe: HostProbe,
        vars: &[(&str, &str)],
    ) -> Result<(Isolation, u16), String> {
        let dir = tempfile::tempdir().unwrap();
        let mut worker = worker_with_proxy(dir.path()).await;
        let port = worker.egress.as_ref().unwrap().addr().port();
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        select_with(&mut worker, PendingProbe::ready(probe), &move |k: &str| {
            map.get(k).cloned()
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok((worker.toolset.isolation, port))
    }

    /// The egress proxy's start checks run here as in `hands poll` (`route_to_proxy`): tier 1
    /// needs Landlock ABI 4, tier 2 a relay that starts.
    #[tokio::test]
    async fn with_the_egress_proxy_the_tier_is_checked_like_the_cli_does() {
        let landlock = [("HANDS_ISOLATION", "landlock")];
        let required = [
            ("HANDS_ISOLATION", "landlock"),
            ("HANDS_REQUIRE_ISOLATION", "1"),
        ];
        // ABI 4: tier 1, tools kept to the proxy's port.
        let (isolation, port) = selected_with_proxy(forced(4, Err("none".into())), &landlock)
            .await
            .unwrap();
        let Isolation::Landlock(sandbox) = isolation else {
            panic!("not tier 1: {isolation:?}")
        };
        assert_eq!(sandbox.options.proxy_port, Some(port));
        // ABI 3: required, the start fails naming the ABI and the variable that required it.
        let err = selected_with_proxy(forced(3, Err("none".into())), &required)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("HANDS_REQUIRE_ISOLATION=\"1\"")
                && err.contains("this kernel has ABI 3"),
            "{err}"
        );
        let err = selected_with_proxy(
            forced(3, Err("none".into())),
            &[("HANDS_ISOLATION", "landlock"), ("REQUIRE_ISOLATION", "1")],
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("REQUIRE_ISOLATION=\"1\""), "{err}");
        // Not required, by name or auto: no tier 0 either (tools would go around the policy).
        for vars in [&landlock[..], &[]] {
            let err = selected_with_proxy(forced(3, Err("none".into())), vars)
                .await
                .unwrap_err();
            assert!(
                err.starts_with("HANDS_ISOLATION=")
                    && err.contains("this kernel has ABI 3")
                    && err.contains("ask for isolation none"),
                "{err}"
            );
        }
        // HANDS_ISOLATION=none: tier 0, the operator's choice, with nothing to check.
        let (isolation, _) = selected_with_proxy(
            forced(3, Err("none".into())),
            &[("HANDS_ISOLATION", "none")],
        )
        .await
        .unwrap();
        assert_eq!(isolation, Isolation::Tier0);
        // A "bubblewrap" whose sandbox never reports: the relay's trial fails the required
        // start, and otherwise the tools fall back to tier 1 with the proxy's port.
        let broken = || forced(6, Ok(PathBuf::from("/bin/false")));
        let err = selected_with_proxy(
            broken(),
            &[
                ("HANDS_ISOLATION", "bwrap"),
                ("HANDS_REQUIRE_ISOLATION", "1"),
            ],
        )
        .await
        .unwrap_err();
        assert!(err.contains("relay into isolation tier 2"), "{err}");
        let (isolation, port) = selected_with_proxy(broken(), &[("HANDS_ISOLATION", "bwrap")])
            .await
            .unwrap();
        let Isolation::Landlock(sandbox) = isolation else {
            panic!("not tier 1: {isolation:?}")
        };
        assert_eq!(sandbox.options.proxy_port, Some(port));
    }
}
