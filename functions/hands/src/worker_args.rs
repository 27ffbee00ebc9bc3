//! Flags shared by every command that serves work (`poll`, `run`, `serve`), named like the
//! `ant beta:worker` ones (PROTOCOL.md §9.1-§9.2). The environment key may come from a flag or
//! exactly one of `ANTHROPIC_ENVIRONMENT_KEY`, `_FILE`, `_SECRET_ARN`, `_SSM_PARAMETER`
//! (`hands-secrets`); clap never echoes its value in `--help` and `Debug` never prints it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_sandbox::{
    DEFAULT_HIDDEN, HostProbe, Isolation, IsolationMode, LimitSetting, LimitSettings, Tier,
    Tier1Options, Tier2Options,
};
use hands_secrets::{Resolver, SecretSource, SecretValue, SecretVars};
use hands_worker::{CustomTools, WorkdirTemplate, WorkerConfig, default_worker_id};

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The self-hosted environment to serve.
    #[arg(long, env = "ANTHROPIC_ENVIRONMENT_ID")]
    pub environment_id: Option<String>,
    /// The environment key (prefer the env var or a file: flags show up in `ps`).
    #[arg(long, env = "ANTHROPIC_ENVIRONMENT_KEY", hide_env_values = true, value_parser = secret_value)]
    pub environment_key: Option<SecretValue>,
    /// A file holding the environment key.
    #[arg(long, env = "ANTHROPIC_ENVIRONMENT_KEY_FILE")]
    pub environment_key_file: Option<PathBuf>,
    /// A Secrets Manager secret holding the key (`arn:...:secret:NAME[:JSON_KEY[:STAGE[:ID]]]`),
    /// or an SSM parameter ARN.
    #[arg(long, env = "ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN", value_name = "ARN")]
    pub environment_key_secret_arn: Option<String>,
    /// An SSM parameter (name or ARN) holding the key, read with decryption.
    #[arg(
        long,
        env = "ANTHROPIC_ENVIRONMENT_KEY_SSM_PARAMETER",
        value_name = "NAME"
    )]
    pub environment_key_ssm_parameter: Option<String>,
    /// The control plane.
    #[arg(long, env = "ANTHROPIC_BASE_URL", default_value = hands_client::DEFAULT_BASE_URL)]
    pub base_url: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Where tools run. May contain `{session_id}` for a fresh directory per session.
    #[arg(long, env = "HANDS_WORKDIR", default_value = ".")]
    pub workdir: String,
    /// Stop serving a session this long after its turn ended (`0` = never). E.g. `60s`, `2m`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub max_idle: Duration,
    /// Sessions served at once by this process.
    #[arg(long, default_value_t = 4)]
    pub max_sessions: usize,
    /// Sent as `Anthropic-Worker-ID` (default: hostname plus random hex).
    #[arg(long, env = "ANTHROPIC_WORKER_ID")]
    pub worker_id: Option<String>,
    /// A TOML file declaring custom tools this worker serves (name, command, timeout). Calls of
    /// other custom tools are left to their owner.
    #[arg(long, env = "HANDS_CUSTOM_TOOLS", value_name = "FILE")]
    pub custom_tools: Option<PathBuf>,
    /// An egress policy (TOML): start the egress proxy and send each session's tools through it
    /// with their own credential (`hands egress check FILE` validates the file).
    #[arg(long, env = "HANDS_EGRESS_POLICY", value_name = "FILE")]
    pub egress_policy: Option<PathBuf>,
    /// PEM roots the egress proxy trusts upstream besides Mozilla's (internal CAs).
    #[arg(long, env = "HANDS_EGRESS_UPSTREAM_CA", value_name = "FILE")]
    pub egress_upstream_ca: Option<PathBuf>,
    /// Isolation of tool processes: `auto` (the strongest tier this host allows: bwrap, else
    /// landlock, else none), `none` (tier 0), `landlock` (tier 1), `bwrap` (tier 2). The host
    /// probe and the chosen tier are logged at start.
    #[arg(long, env = "HANDS_ISOLATION", default_value = "auto", value_parser = parse_isolation)]
    pub isolation: IsolationMode,
    /// Refuse to start when the asked tier cannot be fully enforced (with `auto`: when nothing
    /// above tier 0 can). Also set by `REQUIRE_ISOLATION=1`.
    #[arg(long, env = "HANDS_REQUIRE_ISOLATION", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub require_isolation: bool,
    /// Largest file a tool process may write (RLIMIT_FSIZE), e.g. `512MiB`, or `off`. Default
    /// 4GiB. A command that reaches it ends with "File size limit exceeded".
    #[arg(long, env = "HANDS_LIMIT_FILE_SIZE", value_name = "BYTES|off", value_parser = LimitSetting::parse_bytes)]
    pub limit_file_size: Option<LimitSetting>,
    /// Open files per tool process (RLIMIT_NOFILE), or `off`. Default 4096, or this worker's
    /// own hard limit if lower.
    #[arg(long, env = "HANDS_LIMIT_OPEN_FILES", value_name = "N|off", value_parser = LimitSetting::parse_count)]
    pub limit_open_files: Option<LimitSetting>,
    /// CPU seconds per tool process (RLIMIT_CPU; killed a second later if it ignores SIGXCPU).
    /// Default off: the call's timeout already bounds a command's CPU.
    #[arg(long, env = "HANDS_LIMIT_CPU_SECONDS", value_name = "S|off", value_parser = LimitSetting::parse_count)]
    pub limit_cpu_seconds: Option<LimitSetting>,
    /// Address space per tool process (RLIMIT_AS), e.g. `4GiB`. Default off: JVMs, Go programs
    /// and node reserve far more than they use and fail under a cap that would matter.
    #[arg(long, env = "HANDS_LIMIT_MEMORY", value_name = "BYTES|off", value_parser = LimitSetting::parse_bytes)]
    pub limit_memory: Option<LimitSetting>,
    /// Processes and threads a tool process tree may hold at once (fork bombs). Default `auto`:
    /// 1024, through a pids cgroup where this worker can create one, else (not root)
    /// RLIMIT_NPROC of tool processes, counted over every task of this user; else (root without
    /// a writable cgroup) none, with a warning at start. An explicit N that cannot be enforced
    /// fails the start. The mechanism is logged with the isolation probe.
    #[arg(long, env = "HANDS_LIMIT_PROCESSES", value_name = "auto|N|off", value_parser = LimitSetting::parse_processes)]
    pub limit_processes: Option<LimitSetting>,
    /// Memory stores: `on` mounts each store a session attaches at its mount path and keeps it
    /// in sync; `off` runs such sessions without them (logged).
    #[arg(long, env = "HANDS_MEMORY", default_value = "on", value_parser = ["on", "off"])]
    pub memory: String,
    /// How often a session's memory stores are synced while it runs (at least 5s); a tool call
    /// that changed a store also syncs it.
    #[arg(long, env = "HANDS_MEMORY_SYNC_INTERVAL", default_value = "15s", value_parser = hands_memory::parse_sync_interval)]
    pub memory_sync_interval: Duration,
    /// Whether a file deleted from a store folder deletes its memory on the server (after 30s of
    /// corroboration): `enabled`, `log_only` (log what would be deleted), `disabled`.
    #[arg(long, env = "HANDS_MEMORY_SYNC_DELETIONS", default_value = "enabled", value_parser = parse_delete_mode)]
    pub memory_sync_deletions: hands_memory::DeleteMode,
}

fn parse_isolation(s: &str) -> Result<IsolationMode, String> {
    s.parse()
}

fn parse_delete_mode(s: &str) -> Result<hands_memory::DeleteMode, String> {
    s.parse()
}

/// Wraps a secret flag's value as soon as clap has it, so `Debug` of the arguments never shows it.
pub fn secret_value(s: &str) -> Result<SecretValue, std::convert::Infallible> {
    Ok(SecretValue::new(s))
}

/// Keeps an empty flag or variable from counting as a source (compose files leave them so).
fn non_empty<T: AsRef<str>>(v: &Option<T>) -> Option<String> {
    v.as_ref()
        .map(|v| v.as_ref().to_owned())
        .filter(|v| !v.is_empty())
}

/// The error when a command that needs the environment key has none.
pub const NO_ENVIRONMENT_KEY: &str = "no environment key: set ANTHROPIC_ENVIRONMENT_KEY, or its _FILE, _SECRET_ARN or _SSM_PARAMETER";

impl ConnectArgs {
    pub fn environment_id(&self) -> anyhow::Result<String> {
        match &self.environment_id {
            Some(id) if !id.is_empty() => Ok(id.clone()),
            _ => bail!("no environment id: set ANTHROPIC_ENVIRONMENT_ID or --environment-id"),
        }
    }

    /// Where the environment key comes from: at most one of the four flags/variables may be
    /// set (two is an error naming both).
    pub fn environment_key_source(&self) -> anyhow::Result<Option<SecretSource>> {
        let vars = SecretVars {
            value: self
                .environment_key
                .clone()
                .filter(|k| !k.expose_secret().is_empty()),
            file: self
                .environment_key_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            secret_arn: non_empty(&self.environment_key_secret_arn),
            ssm_parameter: non_empty(&self.environment_key_ssm_parameter),
        };
        Ok(SecretSource::select("ANTHROPIC_ENVIRONMENT_KEY", vars)?)
    }

    /// The environment key, read from its source (a file or AWS call happens here, once).
    pub async fn environment_key(&self, secrets: &Resolver) -> anyhow::Result<Option<Credential>> {
        let Some(source) = self.environment_key_source()? else {
            return Ok(None);
        };
        let key = secrets.resolve(&source).await?;
        tracing::debug!(source = %source, "environment key read");
        Ok(Some(Credential::environment_key(key.expose_secret())))
    }

    pub fn control_plane(&self) -> anyhow::Result<ControlPlane> {
        Ok(ControlPlane::new(ClientConfig::with_base_url(
            self.base_url.clone(),
        ))?)
    }
}

impl WorkerArgs {
    /// The worker's configuration, all but the environment key: that is read with
    /// [`ConnectArgs::environment_key`], which may need an AWS call. A caller that forgets it
    /// fails loudly at start ("no environment key"), never later.
    /// `isolation` comes from [`WorkerArgs::isolation`] once the host probe is done.
    pub fn worker_config(&self, isolation: Isolation) -> anyhow::Result<WorkerConfig> {
        let mut config = WorkerConfig::new(
            self.connect.environment_id()?,
            WorkdirTemplate::new(self.workdir.clone()),
        );
        config.max_idle = (!self.max_idle.is_zero()).then_some(self.max_idle);
        config.worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        config.toolset.isolation = isolation;
        config.toolset.rlimits = self.limits().rlimits().map_err(anyhow::Error::msg)?;
        config.memory = hands_memory::MemoryConfig {
            enabled: self.memory == "on",
            sync_interval: self.memory_sync_interval,
            deletions: self.memory_sync_deletions,
            ..hands_memory::MemoryConfig::default()
        };
        if let Some(path) = &self.custom_tools {
            // Loaded once at startup: a bad file stops the worker before it claims anything.
            let tools = CustomTools::load(path)?
                .with_isolation(config.toolset.env.clone(), config.toolset.rlimits.clone())
                .with_sandbox(config.toolset.isolation.clone());
            tracing::info!(tools = ?tools.names().collect::<Vec<_>>(), file = %path.display(), "custom tools loaded");
            config.custom_tools = std::sync::Arc::new(tools);
        }
        Ok(config)
    }
}

impl WorkerArgs {
    /// The `--limit-*` flags as given (unset ones take the defaults of [`LimitSettings`]).
    fn limits(&self) -> LimitSettings {
        LimitSettings {
            file_size: self.limit_file_size,
            open_files: self.limit_open_files,
            cpu_seconds: self.limit_cpu_seconds,
            memory: self.limit_memory,
            processes: self.limit_processes,
        }
    }

    /// Whether isolation must be fully enforced: the flag, `HANDS_REQUIRE_ISOLATION`, or
    /// `REQUIRE_ISOLATION=1` (what CI sets).
    pub fn isolation_required(&self) -> bool {
        self.require_isolation || std::env::var("REQUIRE_ISOLATION").is_ok_and(|v| v == "1")
    }

    /// Logs what the host probe found and chooses the tier tools run in (the probe runs off
    /// the start path: see `isolation_start`). Fails when isolation is required and the asked
    /// tier cannot be fully enforced.
    pub fn isolation(&self, probe: &HostProbe) -> anyhow::Result<Isolation> {
        let required = self.isolation_required();
        let selection = probe.select(self.isolation, required)?;
        tracing::info!(
            probe = %probe,
            process_limit = %hands_sandbox::process_limit_mechanism(),
            asked = %self.isolation,
            required,
            tier = %selection.tier,
            "isolation"
        );
        if let Some(why) = &selection.fell_back {
            tracing::warn!("isolation: {why}");
        }
        match selection.tier {
            Tier::None => Ok(Isolation::Tier0),
            Tier::Bwrap => {
                let options = Tier2Options {
                    hide: self.hidden_paths(),
                    ..Tier2Options::default()
                };
                probe
                    .bwrap_sandbox(options)
                    .map(Isolation::Bwrap)
                    .context("bwrap was selected but the probe found none")
            }
            Tier::Landlock => {
                let options = Tier1Options {
                    hide: self.hidden_paths(),
                    ..Tier1Options::default()
                };
                probe
                    .tier1_sandbox(options)
                    .map(Isolation::Landlock)
                    .context("tier 1 was selected but its helper failed the probe")
            }
        }
    }

    /// What tools must not read (tier 2 masks it, tier 1 leaves it out of the Landlock
    /// grants): the worker's own secret and config files, and the usual credential directories.
    fn hidden_paths(&self) -> Vec<PathBuf> {
        let mut hide: Vec<PathBuf> = DEFAULT_HIDDEN.iter().map(PathBuf::from).collect();
        hide.extend(self.connect.environment_key_file.iter().cloned());
        hide.extend(self.custom_tools.iter().cloned());
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
            for dir in [".aws", ".config/gcloud", ".azure", ".docker", ".ssh"] {
                hide.push(home.join(dir));
            }
            hide.extend([home.join(".netrc"), home.join(".git-credentials")]);
        }
        hide.retain(|p| p.is_absolute());
        hide
    }
}

/// `90`, `90s`, `1500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 2m or 1500ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    impl WorkerArgs {
        /// The configuration with the isolation chosen from a fresh probe of this host.
        fn config(&self) -> anyhow::Result<WorkerConfig> {
            self.worker_config(self.isolation(&HostProbe::run())?)
        }
    }

    fn args(extra: &[&str]) -> WorkerArgs {
        use clap::Parser;
        let mut argv = vec!["hands", "--environment-id", "env_test"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).worker
    }

    #[tokio::test]
    async fn the_environment_key_comes_from_exactly_one_source_and_never_prints() {
        if std::env::vars().any(|(k, _)| k.starts_with("ANTHROPIC_ENVIRONMENT_KEY")) {
            eprintln!("skipping: the environment sets ANTHROPIC_ENVIRONMENT_KEY*");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-ant-oat01-canary\n").unwrap();
        let file = path.to_str().unwrap();
        let secrets = Resolver::new();

        assert!(
            args(&[])
                .connect
                .environment_key(&secrets)
                .await
                .unwrap()
                .is_none()
        );
        let a = args(&["--environment-key-file", file]);
        let key = a.connect.environment_key(&secrets).await.unwrap().unwrap();
        assert!(!format!("{key:?}").contains("canary"));
        let a = args(&["--environment-key", "sk-ant-oat01-canary"]);
        assert!(!format!("{a:?}").contains("canary"));
        assert!(a.connect.environment_key(&secrets).await.unwrap().is_some());

        let err = args(&[
            "--environment-key",
            "sk-canary",
            "--environment-key-file",
            file,
        ])
        .connect
        .environment_key(&secrets)
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "both ANTHROPIC_ENVIRONMENT_KEY and ANTHROPIC_ENVIRONMENT_KEY_FILE are set; set exactly one of them"
        );
        std::fs::write(&path, " \n").unwrap();
        let err = args(&["--environment-key-file", file])
            .connect
            .environment_key(&secrets)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ANTHROPIC_ENVIRONMENT_KEY_FILE: the secret")
                && err.ends_with("is empty"),
            "{err}"
        );
        let err = args(&["--environment-key-ssm-parameter", "a b"])
            .connect
            .environment_key(&secrets)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ANTHROPIC_ENVIRONMENT_KEY_SSM_PARAMETER: "),
            "{err}"
        );
    }

    #[test]
    fn memory_flags_parse_with_the_reference_defaults_and_floor() {
        use clap::Parser;
        let config = args(&[]).config().unwrap().memory;
        assert!(config.enabled);
        assert_eq!(config.sync_interval, Duration::from_secs(15));
        assert_eq!(config.deletions, hands_memory::DeleteMode::Enabled);
        let config = args(&[
            "--memory",
            "off",
            "--memory-sync-interval",
            "5s",
            "--memory-sync-deletions",
            "log_only",
        ])
        .config()
        .unwrap()
        .memory;
        assert!(!config.enabled);
        assert_eq!(config.sync_interval, Duration::from_secs(5));
        assert_eq!(config.deletions, hands_memory::DeleteMode::LogOnly);
        for bad in [
            &["--memory-sync-interval", "4s"][..],
            &["--memory-sync-deletions", "sometimes"],
            &["--memory", "maybe"],
        ] {
            let mut argv = vec!["hands", "--environment-id", "env_test"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn custom_tools_file_is_loaded_at_startup_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("hands-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("tools.toml");
        std::fs::write(
            &good,
            "[[tool]]\nname = \"lookup_order\"\ncommand = [\"/bin/cat\"]\n",
        )
        .unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "[[tool]]\nname = \"bash\"\ncommand = [\"/bin/cat\"]\n",
        )
        .unwrap();

        let config = args(&["--custom-tools", good.to_str().unwrap()])
            .config()
            .unwrap();
        assert!(config.custom_tools.owns("lookup_order"));
        assert!(args(&[]).config().unwrap().custom_tools.is_empty());
        let err = args(&["--custom-tools", bad.to_str().unwrap()])
            .config()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("bad.toml") && err.contains("\"bash\""),
            "{err}"
        );
        let err = args(&["--custom-tools", "/nonexistent/tools.toml"])
            .config()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/tools.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limit_flags_reach_the_toolset_with_safe_defaults() {
        use clap::Parser;
        if std::env::vars().any(|(k, _)| k.starts_with("HANDS_LIMIT_")) {
            eprintln!("skipping: the environment sets HANDS_LIMIT_*");
            return;
        }
        let defaults = args(&["--isolation", "none"]).config().unwrap();
        let r = &defaults.toolset.rlimits;
        assert_eq!(
            r.file_size_bytes,
            Some(hands_sandbox::DEFAULT_FILE_SIZE_BYTES)
        );
        // This process's hard limit of open files, as the kernel shows it (`unlimited` or N).
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let hard: Option<u64> = line.split_whitespace().nth(4).unwrap().parse().ok();
        let open = hard.map_or(hands_sandbox::DEFAULT_OPEN_FILES, |h| {
            h.min(hands_sandbox::DEFAULT_OPEN_FILES)
        });
        assert_eq!(r.max_open_files, Some(open));
        assert_eq!((r.cpu_seconds, r.address_space_bytes), (None, None));
        // The process limit is on by default, by whatever this host allows.
        let tasks = hands_sandbox::DEFAULT_PROCESSES;
        match hands_sandbox::process_limit_mechanism() {
            hands_sandbox::ProcessLimitMechanism::Cgroup => {
                assert_eq!((r.max_pids, r.nproc), (Some(tasks), None));
            }
            hands_sandbox::ProcessLimitMechanism::Nproc { uid_tasks, .. } => {
                assert_eq!(r.max_pids, None);
                assert!(r.nproc.is_some_and(|n| n > *uid_tasks), "{r:?}");
            }
            hands_sandbox::ProcessLimitMechanism::Unavailable(_) => {
                assert_eq!((r.max_pids, r.nproc), (None, None));
            }
        }
        let auto = args(&["--isolation", "none", "--limit-processes", "auto"])
            .config()
            .unwrap();
        assert_eq!(&auto.toolset.rlimits, r);

        let config = args(&[
            "--isolation",
            "none",
            "--limit-file-size",
            "1MiB",
            "--limit-open-files",
            "200",
            "--limit-cpu-seconds",
            "30",
            "--limit-memory",
            "off",
            "--limit-processes",
            "off",
        ])
        .config()
        .unwrap();
        let r = &config.toolset.rlimits;
        assert_eq!(r.file_size_bytes, Some(1 << 20));
        assert_eq!(r.max_open_files, Some(200));
        assert_eq!(r.cpu_seconds, Some(30));
        assert_eq!(r.address_space_bytes, None);
        assert_eq!((r.max_pids, r.nproc), (None, None));
        let off = args(&["--isolation", "none", "--limit-file-size", "off"])
            .config()
            .unwrap();
        assert_eq!(off.toolset.rlimits.file_size_bytes, None);
        // An explicit count goes to the host's mechanism, or fails the start naming the flag.
        let explicit = args(&["--isolation", "none", "--limit-processes", "64"]).config();
        match hands_sandbox::process_limit_mechanism() {
            hands_sandbox::ProcessLimitMechanism::Cgroup => {
                assert_eq!(explicit.unwrap().toolset.rlimits.max_pids, Some(64));
            }
            hands_sandbox::ProcessLimitMechanism::Nproc { uid_tasks, .. } => {
                let r = explicit.unwrap().toolset.rlimits;
                assert_eq!(r.nproc, Some(uid_tasks + 64));
            }
            hands_sandbox::ProcessLimitMechanism::Unavailable(_) => {
                let err = explicit.err().unwrap().to_string();
                assert!(err.contains("--limit-processes"), "{err}");
            }
        }

        for bad in [
            &["--limit-file-size", "4GB"][..],
            &["--limit-open-files", "0"],
            &["--limit-cpu-seconds", "soon"],
        ] {
            let mut argv = vec!["hands", "--environment-id", "env_test"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
        if let Some(h) = hard {
            let above = (h + 1).to_string();
            let err = args(&["--isolation", "none", "--limit-open-files", &above])
                .config()
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("--limit-open-files"), "{err}");
        }
    }

    #[test]
    fn isolation_flags_parse_and_fail_closed() {
        let a = args(&["--isolation", "bwrap", "--require-isolation"]);
        assert_eq!(a.isolation, IsolationMode::Tier(Tier::Bwrap));
        assert!(a.require_isolation && a.isolation_required());
        assert_eq!(
            args(&["--isolation", "auto"]).isolation,
            IsolationMode::Auto
        );
        // The default is auto.
        assert_eq!(args(&[]).isolation, IsolationMode::Auto);
        let config = args(&["--isolation", "none", "--require-isolation"])
            .config()
            .unwrap();
        assert_eq!(config.toolset.isolation, Isolation::Tier0);
    }

    #[test]
    fn isolation_landlock_is_used_when_the_host_allows_it() {
        let probe = HostProbe::run();
        match probe.check(Tier::Landlock) {
            Ok(()) => {
                let key = std::env::temp_dir().join("hands-args-key");
                let key = key.to_str().unwrap();
                let config = args(&[
                    "--isolation",
                    "landlock",
                    "--require-isolation",
                    "--environment-key-file",
                    key,
                ])
                .config()
                .unwrap();
                let Isolation::Landlock(sandbox) = &config.toolset.isolation else {
                    panic!("not tier 1: {:?}", config.toolset.isolation);
                };
                // The worker's key file is among the hidden paths, with the defaults.
                assert!(sandbox.options.hide.iter().any(|p| p.to_str() == Some(key)));
                assert!(
                    sandbox
                        .options
                        .hide
                        .iter()
                        .any(|p| p.ends_with("etc/hands"))
                );
                assert_eq!(sandbox.helper, PathBuf::from("/proc/self/exe"));
            }
            Err(why) if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") => {
                panic!("REQUIRE_ISOLATION=1 but tier 1 cannot engage: {why}")
            }
            Err(why) => {
                eprintln!("skipping: {why}");
                let err = args(&["--isolation", "landlock", "--require-isolation"])
                    .config()
                    .err()
                    .unwrap()
                    .to_string();
                assert!(err.contains("tier 1 (landlock)"), "{err}");
            }
        }
    }

    #[test]
    fn isolation_bwrap_is_used_when_the_host_allows_it() {
        let probe = HostProbe::run();
        match probe.check(Tier::Bwrap) {
            Ok(()) => {
                let config = args(&["--isolation", "bwrap", "--require-isolation"])
                    .config()
                    .unwrap();
                assert_eq!(config.toolset.isolation.tier(), Tier::Bwrap);
            }
            Err(why) if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") => {
                panic!("REQUIRE_ISOLATION=1 but tier 2 cannot engage: {why}")
            }
            Err(why) => {
                eprintln!("skipping: {why}");
                let err = args(&["--isolation", "bwrap", "--require-isolation"])
                    .config()
                    .err()
                    .unwrap()
                    .to_string();
                assert!(err.contains("tier 2 (bwrap)"), "{err}");
            }
        }
    }
}
