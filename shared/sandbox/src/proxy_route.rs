//! The egress proxy as the tools' way out, attached the same way by `hands poll/run/serve` and by
//! the Lambda `session` function.
//!
//! Attaching is more than setting an address, and the host probe does not cover it: at tier 1
//! the Landlock rule that keeps tools to the proxy's port needs ABI 4 (Linux 6.7) while the
//! probe's trial needs only ABI 2, and at tier 2 the relay must join the sandbox's namespaces,
//! which the probe's trial run does not do (setuid bubblewrap or a seccomp profile forbidding
//! `setns` refuse it). Where either is missing, every tool start would fail while the worker kept
//! claiming work. So [`route_to_proxy`] checks once, before any work is claimed, and applies the
//! rules of [`HostProbe::select`]: a tier the operator required fails the start with the reason;
//! otherwise the tools go down from tier 2 to tier 1 if tier 1 can keep them to the proxy, and the
//! caller logs why. Never down to tier 0: there tools have the host's network (around the policy)
//! and can read the secret files the proxy injects from, so a policy meant to restrict would
//! weaken the sandbox instead. Tier 0 with a policy is only ever the operator's explicit choice.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{
    Binds, EgressBridge, EnvPolicy, HostProbe, Isolation, IsolationError, IsolationMode,
    NET_LANDLOCK_ABI, OneShotSpec, Rlimits, Tier, Tier1Options, Tier1Sandbox, Tier2Options,
};

/// Where the egress proxy listens, and the directory tools read its CA bundle from.
#[derive(Clone, Debug)]
pub struct ProxyRoute {
    /// On the host's loopback.
    pub addr: SocketAddr,
    /// Bound read-only into tier 2, whose `/tmp` is its own.
    pub bundle_dir: Option<PathBuf>,
}

/// The isolation with its way to the proxy, and why it is weaker than the one given, if it is.
#[derive(Debug)]
pub struct Routed {
    pub isolation: Isolation,
    /// Set when the tools fell back to a lower tier: the caller logs it as a warning.
    pub fell_back: Option<String>,
}

/// Gives `isolation` its way to the proxy: tier 2 the relay at the proxy's port and the bundle's
/// directory (then `/bin/true` runs once in the sandbox with the relay), tier 1 Landlock's one
/// allowed port (after checking the kernel's ABI), tier 0 nothing. `mode` and `required` are what
/// the operator asked for (the same values `probe.select` was given): with `required`, a tier
/// asked by name that cannot reach the proxy is an error; otherwise tier 2 falls back to tier 1
/// where tier 1 works. Where nothing above tier 0 can reach the proxy the start fails, unless
/// tier 0 is what was asked (`isolation` is then tier 0 and needs nothing).
pub async fn route_to_proxy(
    isolation: Isolation,
    proxy: &ProxyRoute,
    probe: &HostProbe,
    mode: IsolationMode,
    required: bool,
) -> Result<Routed, IsolationError> {
    let hide = match &isolation {
        Isolation::Tier0 => Vec::new(),
        Isolation::Landlock(sandbox) => sandbox.options.hide.clone(),
        Isolation::Bwrap(sandbox) => sandbox.options.hide.clone(),
    };
    let mut isolation = isolation;
    let mut why_not = Vec::new();
    loop {
        let tier = isolation.tier();
        let failed = match &mut isolation {
            Isolation::Tier0 => None,
            Isolation::Landlock(sandbox) => {
                let checked = tier1_can_limit_to_the_proxy(&probe.landlock_abi);
                if checked.is_ok() {
                    sandbox.options.proxy_port = Some(proxy.addr.port());
                }
                checked.err()
            }
            Isolation::Bwrap(sandbox) => {
                bridge_into_tier2(&mut sandbox.options, proxy);
                None
            }
        };
        let failed = match failed {
            None if tier == Tier::Bwrap => trial_tier2_relay(&isolation).await.err(),
            other => other,
        };
        let Some(why) = failed else {
            break;
        };
        if required && mode == IsolationMode::Tier(tier) {
            return Err(IsolationError::NoProxyRoute(why));
        }
        why_not.push(why);
        isolation = match below(tier, probe, &hide) {
            Some(lower) => lower,
            None => return Err(only_tier0_left(&why_not)),
        };
    }
    if why_not.is_empty() {
        return Ok(Routed {
            isolation,
            fell_back: None,
        });
    }
    Ok(Routed {
        fell_back: Some(format!(
            "{}; using {}",
            why_not.join("; "),
            isolation.tier()
        )),
        isolation,
    })
}

/// The next tier down from `tier` that the probe found usable, not yet routed; `None` when only
/// tier 0 is left, which is never taken without being asked (see the module's doc).
fn below(tier: Tier, probe: &HostProbe, hide: &[PathBuf]) -> Option<Isolation> {
    (tier == Tier::Bwrap && probe.check(Tier::Landlock).is_ok()).then(|| {
        Isolation::Landlock(Tier1Sandbox::this_binary(Tier1Options {
            hide: hide.to_vec(),
            proxy_port: None,
        }))
    })
}

/// The start's failure when no tier above 0 can keep tools to the proxy: what is missing, and
/// the ways out.
fn only_tier0_left(why_not: &[String]) -> IsolationError {
    IsolationError::OnlyTier0Left(format!(
        "with an egress policy no isolation tier on this host can keep tools to the proxy ({}), \
         and tier 0 is not taken without being asked: install bubblewrap and use isolation bwrap, \
         run on a kernel with Landlock ABI {NET_LANDLOCK_ABI} (Linux 6.7 or newer), or ask for \
         isolation none to accept that tool code can bypass the proxy and read the secret files \
         it injects from",
        why_not.join("; and ")
    ))
}

/// Tier 1 keeps tools to the proxy with Landlock's TCP rules, which need ABI 4 (Linux 6.7). The
/// probe's trial run sets no port, so tier 1 can be selected on an older kernel (6.2-6.6).
fn tier1_can_limit_to_the_proxy(abi: &Result<u32, String>) -> Result<(), String> {
    let need = NET_LANDLOCK_ABI;
    match abi {
        Ok(abi) if *abi >= need => Ok(()),
        Ok(abi) => Err(format!(
            "the egress proxy at isolation tier 1 needs Landlock ABI {need} (Linux 6.7) to keep \
             tools to the proxy's port, and this kernel has ABI {abi} (use isolation bwrap, a \
             newer kernel, or no egress policy)"
        )),
        Err(why) => Err(format!(
            "the egress proxy at isolation tier 1 needs Landlock ABI {need} (Linux 6.7): {why}"
        )),
    }
}

/// Tier 2 has no network and a fresh `/tmp`: tools reach the proxy through the relay on the
/// sandbox's own loopback, at the proxy's port (so the proxy URL is the same as at tier 0), and
/// see the CA bundle's directory read-only where the worker wrote it.
fn bridge_into_tier2(options: &mut Tier2Options, proxy: &ProxyRoute) {
    options.egress = Some(EgressBridge::new(proxy.addr.port(), proxy.addr));
    if let Some(dir) = &proxy.bundle_dir
        && !options.read_only.contains(dir)
    {
        options.read_only.push(dir.clone());
    }
}

/// Runs `/bin/true` once in tier 2 with the relay bridged in, and says why it failed if it did.
async fn trial_tier2_relay(isolation: &Isolation) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let failed = |why: String| {
        format!(
            "the egress proxy's relay into isolation tier 2 does not work on this host ({why}; \
             use isolation landlock or none, or no egress policy)"
        )
    };
    let spec = OneShotSpec {
        program: "/bin/true".into(),
        args: Vec::new(),
        cwd: "/".into(),
        env: EnvPolicy::default().build(std::iter::empty()),
        rlimits: Rlimits::default(),
        isolation: isolation.clone(),
        binds: Binds::default(),
    };
    let mut p = crate::spawn_oneshot(&spec)
        .await
        .map_err(|e| failed(e.to_string()))?;
    drop(p.stdin);
    let mut stderr = String::new();
    let _ = (&mut p.stderr).take(4096).read_to_string(&mut stderr).await;
    let status = p.child.wait().await.map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        return Err(failed(format!(
            "/bin/true in the sandbox ended with {status}: {}",
            stderr.trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BwrapSandbox, Trial};

    fn route() -> ProxyRoute {
        ProxyRoute {
            addr: "127.0.0.1:3128".parse().unwrap(),
            bundle_dir: Some("/tmp/hands-egress-test".into()),
        }
    }

    /// A host whose tier 1 works (with Landlock ABI `abi`) and whose "bubblewrap" is `bwrap`.
    fn host(abi: Result<u32, String>, bwrap: Result<PathBuf, String>) -> HostProbe {
        HostProbe {
            landlock_abi: abi,
            seccomp_filter: true,
            user_namespaces: Ok(()),
            bwrap: Trial::done(bwrap),
            tier1: Trial::done(Ok(())),
        }
    }

    fn tier1() -> Isolation {
        Isolation::Landlock(Tier1Sandbox::this_binary(Tier1Options::default()))
    }

    /// A "bubblewrap" that exits at once without reporting a sandbox: the relay cannot start.
    fn broken_tier2() -> Isolation {
        Isolation::Bwrap(BwrapSandbox {
            program: "/bin/false".into(),
            options: Tier2Options {
                hide: vec!["/srv/secret".into()],
                ..Tier2Options::default()
            },
        })
    }

    fn asked(tier: Tier) -> IsolationMode {
        IsolationMode::Tier(tier)
    }

    #[tokio::test]
    async fn tier_1_with_the_proxy_needs_landlock_network_rules() {
        for abi in [4, 7] {
            let probe = host(Ok(abi), Err("none".into()));
            let routed = route_to_proxy(tier1(), &route(), &probe, asked(Tier::Landlock), true)
                .await
                .unwrap();
            let Isolation::Landlock(sandbox) = &routed.isolation else {
                panic!("ABI {abi}: not tier 1: {routed:?}")
            };
            assert_eq!(sandbox.options.proxy_port, Some(3128));
            assert_eq!(routed.fell_back, None);
        }
        // ABI 3, required: the start fails, saying what to do.
        let probe = host(Ok(3), Err("none".into()));
        let err = route_to_proxy(tier1(), &route(), &probe, asked(Tier::Landlock), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs Landlock ABI 4") && err.contains("this kernel has ABI 3"),
            "{err}"
        );
        assert!(err.contains("use isolation bwrap"), "{err}");
        // Not required, tier 1 by name or auto: still no tier 0 (it would bypass the policy);
        // the start fails naming what is missing and the ways out. Auto, required: the same.
        for (mode, required) in [
            (asked(Tier::Landlock), false),
            (IsolationMode::Auto, false),
            (IsolationMode::Auto, true),
        ] {
            let err = route_to_proxy(tier1(), &route(), &probe, mode, required)
                .await
                .unwrap_err();
            assert!(matches!(err, IsolationError::OnlyTier0Left(_)), "{err:?}");
            assert_only_tier0_left(&err.to_string());
            assert!(err.to_string().contains("this kernel has ABI 3"), "{err}");
        }
        // No Landlock at all: the reason is passed on.
        let probe = host(Err("no Landlock".into()), Err("none".into()));
        let err = route_to_proxy(tier1(), &route(), &probe, asked(Tier::Landlock), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no Landlock"), "{err}");
    }

    /// The refusal to drop to tier 0 names both ways out and the explicit choice.
    fn assert_only_tier0_left(err: &str) {
        for part in [
            "no isolation tier on this host can keep tools to the proxy",
            "install bubblewrap and use isolation bwrap",
            "Landlock ABI 4 (Linux 6.7 or newer)",
            "ask for isolation none to accept that tool code can bypass the proxy",
        ] {
            assert!(err.contains(part), "{part:?} not in {err}");
        }
    }

    #[tokio::test]
    async fn a_tier_2_relay_that_cannot_start_fails_the_start_or_falls_back() {
        let probe = host(Ok(6), Ok("/bin/false".into()));
        // Required by name: the start fails with the relay's reason.
        let err = route_to_proxy(broken_tier2(), &route(), &probe, asked(Tier::Bwrap), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("relay into isolation tier 2 does not work")
                && err.contains("bubblewrap exited before it reported the sandbox"),
            "{err}"
        );
        // Auto, required: tier 1 can still keep tools to the proxy, with the same hidden paths.
        let routed = route_to_proxy(broken_tier2(), &route(), &probe, IsolationMode::Auto, true)
            .await
            .unwrap();
        let Isolation::Landlock(sandbox) = &routed.isolation else {
            panic!("not tier 1: {routed:?}")
        };
        assert_eq!(sandbox.options.proxy_port, Some(3128));
        assert_eq!(sandbox.options.hide, vec![PathBuf::from("/srv/secret")]);
        assert!(
            routed
                .fell_back
                .unwrap()
                .ends_with("using tier 1 (landlock)")
        );
        // And where tier 1 cannot either, not required: no tier 0, the start fails with both
        // reasons.
        let probe = host(Ok(3), Ok("/bin/false".into()));
        for mode in [asked(Tier::Bwrap), IsolationMode::Auto] {
            let err = route_to_proxy(broken_tier2(), &route(), &probe, mode, false)
                .await
                .unwrap_err()
                .to_string();
            assert_only_tier0_left(&err);
            assert!(
                err.contains("relay into isolation tier 2") && err.contains("ABI 3"),
                "{err}"
            );
        }
        // Where tier 1 does not work at all, the same.
        let probe = HostProbe {
            tier1: Trial::done(Err("no Landlock".into())),
            ..host(Err("no Landlock".into()), Ok("/bin/false".into()))
        };
        let err = route_to_proxy(broken_tier2(), &route(), &probe, IsolationMode::Auto, false)
            .await
            .unwrap_err()
            .to_string();
        assert_only_tier0_left(&err);
    }

    /// A worker's probe leaves out tier 1's trial when tier 2 passed; falling back from tier 2
    /// makes it then, and its outcome on this host decides.
    #[tokio::test]
    async fn a_fall_back_to_tier_1_makes_its_trial_when_the_probe_left_it_out() {
        let probe = HostProbe {
            tier1: Trial::default(),
            ..host(Ok(6), Ok("/bin/false".into()))
        };
        let routed =
            route_to_proxy(broken_tier2(), &route(), &probe, IsolationMode::Auto, false).await;
        match probe
            .tier1
            .made()
            .expect("the fall-back made tier 1's trial")
        {
            Ok(()) => {
                let routed = routed.unwrap();
                assert_eq!(routed.isolation.tier(), Tier::Landlock, "{routed:?}");
            }
            Err(why) => {
                let err = routed.unwrap_err().to_string();
                assert_only_tier0_left(&err);
                assert!(err.contains(why.as_str()), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn tier_0_needs_nothing() {
        let probe = host(Err("none".into()), Err("none".into()));
        let routed = route_to_proxy(Isolation::Tier0, &route(), &probe, asked(Tier::None), true)
            .await
            .unwrap();
        assert_eq!(routed.isolation, Isolation::Tier0);
        assert_eq!(routed.fell_back, None);
    }

    /// The relay's trial run on this host's real bubblewrap (where tier 2 runs).
    #[tokio::test]
    async fn a_working_tier2_relay_passes_its_trial_with_the_bundle_bound_in() {
        let probe = HostProbe::run();
        let Some(sandbox) = probe
            .select(asked(Tier::Bwrap), true)
            .ok()
            .and_then(|_| probe.bwrap_sandbox(Tier2Options::default()))
        else {
            if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") {
                panic!("REQUIRE_ISOLATION=1 but tier 2 cannot run here");
            }
            eprintln!("skipping: no tier 2 here");
            return;
        };
        let dir = crate::tier1::tests::tempdir();
        let proxy = ProxyRoute {
            addr: "127.0.0.1:3128".parse().unwrap(),
            bundle_dir: Some(dir.clone()),
        };
        let routed = route_to_proxy(
            Isolation::Bwrap(sandbox),
            &proxy,
            &probe,
            asked(Tier::Bwrap),
            true,
        )
        .await
        .unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let Isolation::Bwrap(sandbox) = &routed.isolation else {
            panic!("not tier 2: {routed:?}")
        };
        assert_eq!(
            sandbox.options.egress,
            Some(EgressBridge::new(3128, proxy.addr))
        );
        assert!(sandbox.options.read_only.contains(&dir));
        assert_eq!(routed.fell_back, None);
    }
}
