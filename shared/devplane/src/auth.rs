//! Who is calling: credential classification and the endpoint-by-credential matrix of
//! PROTOCOL.md §1.1. A credential is classified by its value, never by the header it came in
//! (`x-api-key` or `Authorization: Bearer`), because the newest SDKs send API keys as bearers.

use axum::http::HeaderMap;

use crate::error::ApiError;
use crate::state::Store;

/// The beta every session route requires (§2).
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";

/// A recognised caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    ApiKey,
    EnvironmentKey {
        environment_id: String,
    },
    SessionsToken {
        work_id: String,
        session_id: String,
        environment_id: String,
    },
}

impl Principal {
    fn label(&self) -> &'static str {
        match self {
            Principal::ApiKey => "an API key",
            Principal::EnvironmentKey { .. } => "an environment key",
            Principal::SessionsToken { .. } => "a sessions token",
        }
    }
}

/// Which credential kinds an endpoint accepts.
#[derive(Clone, Copy, Debug)]
pub struct Accepts {
    pub api_key: bool,
    pub environment_key: bool,
    pub sessions_token: bool,
}

impl Accepts {
    pub const ENV_KEY: Accepts = Accepts {
        api_key: false,
        environment_key: true,
        sessions_token: false,
    };
    pub const ENV_KEY_OR_TOKEN: Accepts = Accepts {
        api_key: false,
        environment_key: true,
        sessions_token: true,
    };
    pub const ANY: Accepts = Accepts {
        api_key: true,
        environment_key: true,
        sessions_token: true,
    };
    pub const API_KEY: Accepts = Accepts {
        api_key: true,
        environment_key: false,
        sessions_token: false,
    };
    /// Memory stores: the environment key is rejected (§1.1).
    pub const API_KEY_OR_TOKEN: Accepts = Accepts {
        api_key: true,
        environment_key: false,
        sessions_token: true,
    };
    pub const API_OR_ENV_KEY: Accepts = Accepts {
        api_key: true,
        environment_key: true,
        sessions_token: false,
    };
}

fn presented_credential(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    bearer.or(api_key).map(str::to_owned)
}

/// Classifies the caller's credential, then checks it is one `accepts` allows.
pub fn authenticate(
    store: &Store,
    api_key: &str,
    headers: &HeaderMap,
    accepts: Accepts,
) -> Result<Principal, ApiError> {
    let Some(cred) = presented_credential(headers) else {
        return Err(ApiError::unauthorized(
            "missing credentials: send `x-api-key` or `Authorization: Bearer`",
        ));
    };
    let principal = if cred == api_key {
        Principal::ApiKey
    } else if let Some((env, _)) = store.environments.iter().find(|(_, key)| **key == cred) {
        Principal::EnvironmentKey {
            environment_id: env.clone(),
        }
    } else if let Some(work_id) = store.tokens.get(&cred) {
        let Some(rec) = store.work.get(work_id) else {
            return Err(ApiError::unauthorized("invalid credentials"));
        };
        Principal::SessionsToken {
            work_id: work_id.clone(),
            session_id: rec.item.data.id.clone(),
            environment_id: rec.item.environment_id.clone(),
        }
    } else {
        return Err(ApiError::unauthorized("invalid x-api-key or bearer token"));
    };
    let allowed = match principal {
        Principal::ApiKey => accepts.api_key,
        Principal::EnvironmentKey { .. } => accepts.environment_key,
        Principal::SessionsToken { .. } => accepts.sessions_token,
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "this endpoint does not accept {}",
            principal.label()
        )));
    }
    Ok(principal)
}

/// An environment key must belong to the environment in the path; a sessions token to the work
/// item in the path (when there is one) and its environment.
pub fn check_environment_scope(
    principal: &Principal,
    environment_id: &str,
    work_id: Option<&str>,
) -> Result<(), ApiError> {
    match principal {
        Principal::ApiKey => Ok(()),
        Principal::EnvironmentKey {
            environment_id: env,
        } if env == environment_id => Ok(()),
        Principal::SessionsToken {
            work_id: w,
            environment_id: env,
            ..
        } if env == environment_id && work_id.is_none_or(|id| id == w) => Ok(()),
        _ => Err(ApiError::forbidden(
            "credential is not valid for this environment or work item",
        )),
    }
}

/// A sessions token is bound to one session; an environment key to its environment's sessions.
pub fn check_session_scope(
    principal: &Principal,
    session_id: &str,
    session_environment: &str,
) -> Result<(), ApiError> {
    match principal {
        Principal::ApiKey => Ok(()),
        Principal::EnvironmentKey { environment_id } if environment_id == session_environment => {
            Ok(())
        }
        Principal::SessionsToken { session_id: s, .. } if s == session_id => Ok(()),
        _ => Err(ApiError::forbidden(
            "credential is not valid for this session",
        )),
    }
}

/// Session routes 404 without the managed-agents beta (§2, D-EVT).
pub fn require_beta(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers.get_all("anthropic-beta").iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|b| b.trim() == MANAGED_AGENTS_BETA))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(
            format!(
                "Not found (this route requires the `anthropic-beta: {MANAGED_AGENTS_BETA}` header)"
            ),
            "beta_required",
        ))
    }
}
