//! The worker configuration both functions build from their environment: the runner's
//! `ANTHROPIC_*` variables (secrets through [`secret_from_env`]) and the `HANDS_*` ones.

use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
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
/// `ANTHROPIC_BASE_URL`, `ANTHROPIC_WORKER_ID`, `HANDS_WORKDIR` and `HANDS_MAX_IDLE`.
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
    Ok(WorkerSetup {
        control_plane,
        worker,
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
