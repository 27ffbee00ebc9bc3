//! The worker configuration both functions build from their environment: the runner's
//! `ANTHROPIC_*` variables (secrets through [`secret_from_env`]) and the `HANDS_*` ones.

use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_sandbox::{LimitSetting, LimitSettings, Rlimits};
use hands_secrets::Resolver;
use hands_worker::{WorkdirTemplate, WorkerConfig, default_worker_id};

use crate::env_config::{ConfigError, duration_var, secret_from_env, var};

/// The Lambda default: a fresh directory per session under the function's `/tmp`.
pub const DEFAULT_WORKDIR: &str = "/tmp/hands/{session_id}";

/// The control plane and the worker configuration.
pub struct WorkerSetup {
    pub control_plane: ControlPlane,
    pub worker: WorkerConfig,
}

/// Reads `ANTHROPIC_ENVIRONMENT_ID`, `ANTHROPIC_ENVIRONMENT_KEY` (any form of
/// [`secret_from_env`]),
/// `ANTHROPIC_BASE_URL`, `ANTHROPIC_WORKER_ID`, `HANDS_WORKDIR`, `HANDS_MAX_IDLE` and the
/// `HANDS_LIMIT_*` limits of tool processes.
/// `key_required`: both functions require it (the `webhook` function polls, the `session`
/// function acks the items it is handed); without it only serving with the item's sessions
/// token would work.
pub async fn worker_setup(
    resolver: &Resolver,
    key_required: bool,
) -> Result<WorkerSetup, ConfigError> {
    let environment_id =
        var("ANTHROPIC_ENVIRONMENT_ID").ok_or(ConfigError::Missing("ANTHROPIC_ENVIRONMENT_ID"))?;
    let key = secret_from_env(resolver, "ANTHROPIC_ENVIRONMENT_KEY").await?;
    if key_required && key.is_none() {
        return Err(ConfigError::Missing(
            "ANTHROPIC_ENVIRONMENT_KEY (or its _FILE, _SECRET_ARN or _SSM_PARAMETER)",
        ));
    }
    let base_url =
        var("ANTHROPIC_BASE_URL").unwrap_or_else(|| hands_client::DEFAULT_BASE_URL.to_owned());
    let control_plane =
        ControlPlane::new(ClientConfig::with_base_url(base_url.clone())).map_err(|e| {
            ConfigError::Invalid {
                var: "ANTHROPIC_BASE_URL",
                value: base_url,
                why: e.to_string(),
            }
        })?;
    let workdir = var("HANDS_WORKDIR").unwrap_or_else(|| DEFAULT_WORKDIR.to_owned());
    let mut worker = WorkerConfig::new(environment_id, WorkdirTemplate::new(workdir));
    worker.environment_key = key.as_deref().map(Credential::environment_key);
    let max_idle = duration_var("HANDS_MAX_IDLE", Duration::from_secs(60))?;
    worker.max_idle = (!max_idle.is_zero()).then_some(max_idle);
    worker.worker_id = var("ANTHROPIC_WORKER_ID").unwrap_or_else(default_worker_id);
    worker.toolset.rlimits = tool_limits(var)?;
    Ok(WorkerSetup {
        control_plane,
        worker,
    })
}

/// The limits of tool processes from `HANDS_LIMIT_FILE_SIZE`, `_OPEN_FILES`, `_CPU_SECONDS`,
/// `_MEMORY` and `_PROCESSES`: the variables of `hands poll`'s `--limit-*` flags, with the same
/// defaults (file size 4 GiB, open files 4096, processes `auto`; the rest off). Lambda has no
/// pids cgroup the function can write and runs it as a user other than root, so `auto` is
/// `RLIMIT_NPROC` of tool processes there, below the sandbox user's own 1024 less the worker's
/// reserve (see `hands_sandbox::process_limit`).
fn tool_limits(get: impl Fn(&str) -> Option<String>) -> Result<Rlimits, ConfigError> {
    let setting = |name: &'static str, parse: fn(&str) -> Result<LimitSetting, String>| {
        get(name)
            .map(|value| {
                parse(&value).map_err(|why| ConfigError::Invalid {
                    var: name,
                    value,
                    why,
                })
            })
            .transpose()
    };
    let settings = LimitSettings {
        file_size: setting("HANDS_LIMIT_FILE_SIZE", LimitSetting::parse_bytes)?,
        open_files: setting("HANDS_LIMIT_OPEN_FILES", LimitSetting::parse_count)?,
        cpu_seconds: setting("HANDS_LIMIT_CPU_SECONDS", LimitSetting::parse_count)?,
        memory: setting("HANDS_LIMIT_MEMORY", LimitSetting::parse_bytes)?,
        processes: setting("HANDS_LIMIT_PROCESSES", LimitSetting::parse_processes)?,
    };
    settings.rlimits().map_err(|why| ConfigError::Invalid {
        var: "HANDS_LIMIT_*",
        value: String::new(),
        why,
    })
}

/// `HANDS_TENANT_ISOLATION=1|true`: invoke the session function with `TenantId = session id`.
pub fn tenant_isolation() -> bool {
    matches!(
        var("HANDS_TENANT_ISOLATION")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("1" | "true" | "yes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(vars: &[(&str, &str)]) -> Result<Rlimits, ConfigError> {
        tool_limits(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn tool_limits_come_from_the_variables_with_the_binarys_defaults() {
        let defaults = limits(&[]).unwrap();
        assert_eq!(defaults, LimitSettings::default().rlimits().unwrap());
        assert_eq!(
            defaults.file_size_bytes,
            Some(hands_sandbox::DEFAULT_FILE_SIZE_BYTES)
        );
        assert_eq!(defaults.cpu_seconds, None);
        let set = limits(&[
            ("HANDS_LIMIT_FILE_SIZE", "64MiB"),
            ("HANDS_LIMIT_OPEN_FILES", "100"),
            ("HANDS_LIMIT_CPU_SECONDS", "20"),
            ("HANDS_LIMIT_MEMORY", "2GiB"),
        ])
        .unwrap();
        assert_eq!(set.file_size_bytes, Some(64 << 20));
        assert_eq!(set.max_open_files, Some(100));
        assert_eq!(set.cpu_seconds, Some(20));
        assert_eq!(set.address_space_bytes, Some(2 << 30));
        // Processes stay `auto`: the defaults' mechanism and count.
        assert_eq!(
            (set.max_pids, set.nproc),
            (defaults.max_pids, defaults.nproc)
        );
        assert_eq!(
            limits(&[("HANDS_LIMIT_PROCESSES", "auto")]).unwrap(),
            defaults
        );
        let off = limits(&[("HANDS_LIMIT_PROCESSES", "off")]).unwrap();
        assert_eq!((off.max_pids, off.nproc), (None, None));
        let err = limits(&[("HANDS_LIMIT_PROCESSES", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("HANDS_LIMIT_PROCESSES=\"many\": "), "{err}");
        let err = limits(&[("HANDS_LIMIT_FILE_SIZE", "4GB")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("HANDS_LIMIT_FILE_SIZE=\"4GB\": "), "{err}");
    }
}
