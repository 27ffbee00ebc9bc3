//! The functions' configuration from their environment (README "Deploying to AWS Lambda").
//!
//! Secrets are read through [`secret_from_env`], which is `hands-secrets`: `NAME`, `NAME_FILE`,
//! `NAME_SECRET_ARN` (Secrets Manager, or SSM by parameter ARN) or `NAME_SSM_PARAMETER`, exactly
//! one of them, resolved with the function's own AWS configuration.

use std::time::Duration;

use hands_secrets::Resolver;

/// A configuration value is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error(transparent)]
    Secret(#[from] hands_secrets::SecretError),
    #[error("{var}={value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
}

/// A non-empty variable.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A secret from whichever of its variables is set; `None` if none is.
pub async fn secret_from_env(
    resolver: &Resolver,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    Ok(resolver
        .resolve_env(name)
        .await?
        .map(|v| v.expose_secret().to_owned()))
}
/// `90`, `90s`, `1500ms`, `2m`.
pub fn duration_var(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = var(name) else {
        return Ok(default);
    };
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let invalid = |why: &str| ConfigError::Invalid {
        var: name,
        value: value.clone(),
        why: why.to_owned(),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| invalid("not a duration like 60s"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(invalid("unknown unit (use ms, s or m)")),
    }
}

/// A byte count: `1048576`, `512KiB`, `100MiB`, `2GiB`.
pub fn bytes_var(name: &'static str, default: u64) -> Result<u64, ConfigError> {
    let Some(value) = var(name) else {
        return Ok(default);
    };
    parse_bytes(value.trim()).ok_or_else(|| ConfigError::Invalid {
        var: name,
        value: value.clone(),
        why: "not a size like 500MiB (units: none, KiB, MiB, GiB)".to_owned(),
    })
}

fn parse_bytes(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_only() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("100MiB"), Some(100 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("2GB"), None);
        assert_eq!(parse_bytes("MiB"), None);
        assert_eq!(parse_bytes("99999999999GiB"), None);
    }

    #[tokio::test]
    async fn secrets_come_from_the_variable_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "from-file\n").unwrap();
        // Unique names: tests share the process environment.
        // SAFETY: no other thread reads these variables.
        unsafe {
            std::env::set_var("HANDS_T_SECRET_A", "direct");
            std::env::set_var("HANDS_T_SECRET_B_FILE", &f);
            std::env::set_var("HANDS_T_SECRET_C_FILE", dir.path().join("missing"));
        }
        let r = Resolver::new();
        assert_eq!(
            secret_from_env(&r, "HANDS_T_SECRET_A")
                .await
                .unwrap()
                .as_deref(),
            Some("direct")
        );
        assert_eq!(
            secret_from_env(&r, "HANDS_T_SECRET_B")
                .await
                .unwrap()
                .as_deref(),
            Some("from-file")
        );
        assert!(
            secret_from_env(&r, "HANDS_T_SECRET_NONE")
                .await
                .unwrap()
                .is_none()
        );
        let err = secret_from_env(&r, "HANDS_T_SECRET_C")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("HANDS_T_SECRET_C_FILE"), "{err}");
    }

    #[test]
    fn durations_parse_with_units() {
        // SAFETY: as above.
        unsafe { std::env::set_var("HANDS_T_DURATION", "1500ms") };
        assert_eq!(
            duration_var("HANDS_T_DURATION", Duration::ZERO).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            duration_var("HANDS_T_DURATION_UNSET", Duration::from_secs(3)).unwrap(),
            Duration::from_secs(3)
        );
    }
}
