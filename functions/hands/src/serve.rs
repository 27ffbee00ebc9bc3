//! `hands serve`: the container server. Webhook ingress (`POST /webhook`), `/healthz`,
//! `/readyz` and `/metrics` on one listener, sessions served in process, a periodic drain, and
//! a graceful shutdown on SIGTERM. Everything but argument handling lives in `hands-ingress`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use hands_ingress::server::{self, ServerConfig};
use hands_ingress::{Ingress, IngressConfig, parse_secret_list};
use tokio_util::sync::CancellationToken;

use crate::signals::cancel_on_signal;
use crate::worker_args::{WorkerArgs, parse_duration};

/// How often a signing-key file is read again, so a key added or rotated in a mounted secret
/// takes effect without a restart.
const KEY_FILE_RELOAD: Duration = Duration::from_secs(10);

/// A secret given on the command line or in the environment; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretText {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretText(s.to_owned()))
    }
}

#[derive(Debug, Clone, clap::Args)]
// The runner's flags apply unchanged, except that sessions get their own directory by default.
#[command(mut_arg("workdir", |a| a.default_value("/tmp/hands/{session_id}")))]
pub struct ServeArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Address to listen on.
    #[arg(long, env = "HANDS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Webhook signing secret(s), `whsec_...`, separated by spaces or commas during a rotation
    /// (prefer the env var or the file: flags show up in `ps`).
    #[arg(long, env = "ANTHROPIC_WEBHOOK_SIGNING_KEY", hide_env_values = true)]
    pub webhook_signing_key: Option<SecretText>,
    /// A file holding the signing secret(s); read again every 10 s.
    #[arg(long, env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE")]
    pub webhook_signing_key_file: Option<PathBuf>,
    /// Drain the queue this often even without deliveries (`0` = never).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_interval: Duration,
    /// Close connections that have not sent a full request head within this.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Answer 408 to a body that has not fully arrived within this.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// The longest a delivery waits for its drain before being answered 503.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub reply_budget: Duration,
    /// Connections served at once; more are closed at accept.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Time allowed for a graceful shutdown, sessions included.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The signing secrets from the file (which wins) or the flag/env; `None` = not configured yet.
fn read_secrets(args: &ServeArgs) -> anyhow::Result<Option<hands_protocol::webhook::Verifier>> {
    let text = match &args.webhook_signing_key_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key from {}", path.display()))?,
        None => args
            .webhook_signing_key
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_default(),
    };
    Ok(parse_secret_list(&text)?)
}

/// Re-reads the key file; a file that fails to parse keeps the previous secrets.
async fn reload_key_file(ingress: Ingress, path: PathBuf, stop: CancellationToken) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(KEY_FILE_RELOAD) => {}
        }
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now.clone();
        let text = String::from_utf8_lossy(now.as_deref().unwrap_or_default()).into_owned();
        match parse_secret_list(&text) {
            Ok(verifier) => {
                tracing::info!(
                    configured = verifier.is_some(),
                    "webhook signing key file changed; secrets reloaded"
                );
                ingress.set_verifier(verifier);
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook signing key file changed but does not parse; keeping the previous secrets")
            }
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let worker = args.worker.worker_config()?;
    if worker.environment_key.is_none() {
        bail!(
            "no environment key: set ANTHROPIC_ENVIRONMENT_KEY or ANTHROPIC_ENVIRONMENT_KEY_FILE"
        );
    }
    let verifier = read_secrets(&args)?;
    let config = IngressConfig {
        max_sessions: args.worker.max_sessions.max(1),
        body_timeout: args.body_timeout,
        reply_budget: args.reply_budget,
        ..IngressConfig::default()
    };
    let server_config = ServerConfig {
        header_timeout: args.header_timeout,
        max_connections: args.max_connections,
        shutdown_grace: args.shutdown_grace,
        drain_interval: (!args.drain_interval.is_zero()).then_some(args.drain_interval),
    };
    if !worker.workdir.is_per_session() && args.worker.max_sessions > 1 {
        tracing::warn!(workdir = %worker.workdir.as_str(),
            "several sessions may share this workdir; use a {{session_id}} template to give each its own");
    }
    tracing::info!(environment_id = %worker.environment_id, worker_id = %worker.worker_id,
        workdir = %worker.workdir.as_str(), listen = %args.listen, "serving webhooks");
    let ingress = Ingress::new(args.worker.connect.control_plane()?, worker, config);
    if verifier.is_none() {
        tracing::warn!(
            "no webhook signing key yet: deliveries are answered 503 until ANTHROPIC_WEBHOOK_SIGNING_KEY or its _FILE is set"
        );
    }
    ingress.set_verifier(verifier);

    let listener = server::bind(&args.listen).await?;
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    if let Some(path) = args.webhook_signing_key_file.clone() {
        tokio::spawn(reload_key_file(ingress.clone(), path, stop.clone()));
    }
    let outcome = server::serve(listener, ingress, server_config, stop).await;
    if !outcome.sessions_finished {
        tracing::warn!(
            "some sessions were aborted at the end of the grace period; their items are left to lease expiry"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn serve(args: &[&str]) -> super::ServeArgs {
        let mut argv = vec!["hands", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serve_defaults_to_a_per_session_workdir_and_poll_keeps_dot() {
        // The env var would override both defaults; this test is about the defaults.
        if std::env::var_os("HANDS_WORKDIR").is_some() {
            return;
        }
        assert_eq!(serve(&[]).worker.workdir, "/tmp/hands/{session_id}");
        assert_eq!(serve(&["--workdir", "/srv/x"]).worker.workdir, "/srv/x");
        match Cli::try_parse_from(["hands", "poll"]).unwrap().command {
            Command::Poll(p) => assert_eq!(p.worker.workdir, "."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_signing_key_never_shows_in_debug_output() {
        let a = serve(&["--webhook-signing-key", "whsec_canarycanarycanary"]);
        assert!(!format!("{a:?}").contains("canary"));
        assert_eq!(serve(&[]).listen, "0.0.0.0:8080");
    }
}
