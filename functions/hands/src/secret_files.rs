//! The worker's secret files, hidden from tool code: every `NAME_FILE` the worker read at start
//! (the environment key, `hands serve`'s signing key, the egress policy's `{secret:NAME}`s) is
//! masked in tier 2 and left out of tier 1's Landlock grants, with the targets of those that are
//! symlinks. Tier 0 cannot hide a file from a process of the same user.

use std::sync::Arc;

use hands_sandbox::Isolation;
use hands_worker::WorkerConfig;

/// Adds the secret files read so far to what the worker's sandboxes hide. Call it once the
/// worker has read its last secret, before it serves anything.
pub fn hide_from_tools(config: &mut WorkerConfig) {
    let files = hands_secrets::secret_files();
    if files.is_empty() {
        return;
    }
    let hide = match &mut config.toolset.isolation {
        Isolation::Bwrap(sandbox) => &mut sandbox.options.hide,
        Isolation::Landlock(sandbox) => &mut sandbox.options.hide,
        Isolation::Tier0 => return,
    };
    for file in files {
        if !hide.contains(&file) {
            hide.push(file);
        }
    }
    // Custom tools were given a copy of the isolation when they were loaded.
    config.custom_tools = Arc::new(
        (*config.custom_tools)
            .clone()
            .with_sandbox(config.toolset.isolation.clone()),
    );
}

#[cfg(test)]
mod tests {
    use hands_sandbox::{
        EnvPolicy, HostProbe, IsolationMode, OneShotSpec, Rlimits, Tier, Tier2Options,
    };
    use tokio::io::AsyncReadExt;

    use super::*;

    /// `cat FILE` in a one-shot process under `isolation`, with `dir` as the workspace.
    async fn cat(isolation: &Isolation, dir: &std::path::Path, file: &std::path::Path) -> String {
        let spec = OneShotSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), format!("cat {} 2>&1", file.display()).into()],
            cwd: dir.to_path_buf(),
            env: EnvPolicy::default().build(std::env::vars_os()),
            rlimits: Rlimits::default(),
            isolation: isolation.clone(),
            binds: Default::default(),
        };
        let mut p = hands_sandbox::spawn_oneshot(&spec).await.unwrap();
        drop(p.stdin);
        let mut out = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        p.child.wait().await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_secret_file_the_worker_read_cannot_be_read_in_tier_2() {
        let probe = HostProbe::run();
        if let Err(e) = probe.select(IsolationMode::Tier(Tier::Bwrap), true) {
            if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") {
                panic!("REQUIRE_ISOLATION=1 but tier 2 cannot engage: {e}");
            }
            eprintln!("skipping: {e}");
            return;
        }
        // In the workspace, which the sandbox shows (a file under the host's /tmp alone would
        // be out of sight anyway).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("egress-token");
        std::fs::write(&file, "canary-secret-file-5e1d\n").unwrap();
        let mut config = WorkerConfig::new("env_test", hands_worker::WorkdirTemplate::new("."));
        config.toolset.isolation =
            Isolation::Bwrap(probe.bwrap_sandbox(Tier2Options::default()).unwrap());
        // Not read yet: nothing to hide, and the sandbox shows the file (so the check below
        // can fail).
        hide_from_tools(&mut config);
        let before = cat(&config.toolset.isolation, dir.path(), &file).await;
        assert_eq!(before, "canary-secret-file-5e1d\n");

        let source = hands_secrets::SecretSource::File {
            var: "EGRESS_TOKEN_FILE".into(),
            path: file.clone(),
        };
        hands_secrets::Resolver::new()
            .resolve(&source)
            .await
            .unwrap();
        hide_from_tools(&mut config);
        let after = cat(&config.toolset.isolation, dir.path(), &file).await;
        assert!(after.contains("Permission denied"), "{after}");
        assert!(!after.contains("canary"), "{after}");
    }
}
