//! `hands serve`: the container server. Webhook ingress (`POST /webhook`), `/healthz`,
//! `/readyz` and `/metrics` on one listener, sessions served in process, a periodic drain, and
//! a graceful shutdown on SIGTERM. Everything but argument handling lives in `hands-ingress`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use hands_ingress::server::{self, ServerConfig};
use hands_ingress::{Ingress, IngressConfig, parse_secret_list};
use hands_protocol::webhook::Verifier;
use hands_secrets::{Refresher, Resolver, SecretSource, SecretValue, SecretVars};
use tokio_util::sync::CancellationToken;

use crate::isolation_start::PendingProbe;
use crate::signals::cancel_on_signal;
use crate::worker_args::{NO_ENVIRONMENT_KEY, WorkerArgs, parse_duration, secret_value};

/// The signing key's variable; `_FILE`, `_SECRET_ARN` and `_SSM_PARAMETER` are its other sources.
pub const SIGNING_KEY: &str = "ANTHROPIC_WEBHOOK_SIGNING_KEY";

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
    #[arg(long, env = "ANTHROPIC_WEBHOOK_SIGNING_KEY", hide_env_values = true, value_parser = secret_value)]
    pub webhook_signing_key: Option<SecretValue>,
    /// A file holding the signing secret(s); read again every 10 s.
    #[arg(long, env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE")]
    pub webhook_signing_key_file: Option<PathBuf>,
    /// A Secrets Manager secret (or SSM parameter ARN) holding the signing secret(s); read
    /// again every 5 min.
    #[arg(
        long,
        env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_SECRET_ARN",
        value_name = "ARN"
    )]
    pub webhook_signing_key_secret_arn: Option<String>,
    /// An SSM parameter (name or ARN) holding the signing secret(s); read again every 5 min.
    #[arg(
        long,
        env = "ANTHROPIC_WEBHOOK_SIGNING_KEY_SSM_PARAMETER",
        value_name = "NAME"
    )]
    pub webhook_signing_key_ssm_parameter: Option<String>,
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

impl ServeArgs {
    fn signing_key_vars(&self) -> SecretVars {
        SecretVars {
            value: self.webhook_signing_key.clone(),
            file: self.webhook_signing_key_file.clone(),
            secret_arn: self.webhook_signing_key_secret_arn.clone(),
            ssm_parameter: self.webhook_signing_key_ssm_parameter.clone(),
        }
    }
}

/// The flags (or their variables) that may hold the signing secrets, as one source.
pub fn signing_key_source(vars: SecretVars) -> anyhow::Result<Option<SecretSource>> {
    let vars = SecretVars {
        value: vars.value.filter(|v| !v.expose_secret().is_empty()),
        file: vars.file.filter(|p| !p.as_os_str().is_empty()),
        secret_arn: vars.secret_arn.filter(|v| !v.is_empty()),
        ssm_parameter: vars.ssm_parameter.filter(|v| !v.is_empty()),
    };
    Ok(SecretSource::select(SIGNING_KEY, vars)?)
}

/// Reads the signing secrets. `None` = not configured yet: no source, or one that is empty
/// (an operator may start the server, register its URL, then fill in the key).
async fn read_verifier(
    source: Option<&SecretSource>,
    secrets: &Resolver,
) -> anyhow::Result<(Option<Verifier>, Option<SecretValue>)> {
    let Some(source) = source else {
        return Ok((None, None));
    };
    match secrets.resolve(source).await {
        Ok(value) => Ok((parse_secret_list(value.expose_secret())?, Some(value))),
        Err(e) if e.is_empty_value() => Ok((None, None)),
        Err(e) => Err(e.into()),
    }
}

/// Re-reads the signing secrets from a file or AWS so a rotation takes effect without a
/// restart. A value that fails to parse, or a source that cannot be read, keeps the previous
/// secrets; an empty one means "not configured" again (503 until it is filled in).
async fn refresh_signing_key(ingress: Ingress, mut refresher: Refresher, stop: CancellationToken) {
    loop {
        let change = tokio::select! {
            () = stop.cancelled() => return,
            change = refresher.changed() => change,
        };
        let source = refresher.source();
        match change {
            Ok(value) => match parse_secret_list(value.expose_secret()) {
                Ok(verifier) => {
                    tracing::info!(%source, configured = verifier.is_some(),
                        "webhook signing key changed; secrets reloaded");
                    ingress.set_verifier(verifier);
                }
                Err(e) => tracing::error!(%source, error = %e,
                    "webhook signing key changed but does not parse; keeping the previous secrets"),
            },
            Err(e) if e.is_empty_value() => {
                tracing::warn!(%source, "webhook signing key is now empty; deliveries are answered 503 until it is set");
                ingress.set_verifier(None);
            }
            Err(e) => tracing::error!(error = %e,
                "webhook signing key could not be read again; keeping the previous secrets"),
        }
    }
}

/// What start-up hands over to the server.
struct Started {
    ingress: Ingress,
    key_source: Option<SecretSource>,
    key_value: Option<SecretValue>,
    secrets: Resolver,
}

/// `hands serve`, with the host probe started for `args` (see `cli::prepare`).
pub async fn run(args: ServeArgs, probe: PendingProbe) -> anyhow::Result<()> {
    // The host probe runs on its own thread; the listener answers /healthz at once and
    // everything else `starting` until the isolation is chosen, so no delivery drains the
    // queue (no item is claimed) before the tier is known.
    let server_config = ServerConfig {
        header_timeout: args.header_timeout,
        max_connections: args.max_connections,
        shutdown_grace: args.shutdown_grace,
        drain_interval: (!args.drain_interval.is_zero()).then_some(args.drain_interval),
    };
    let listener = server::bind(&args.listen).await?;
    let Started {
        ingress,
        key_source,
        key_value,
        secrets,
    } = hands_ingress::starting::serve_while(&listener, &server_config, start(&args, probe))
        .await?;

    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    if let Some(source) = key_source.filter(|s| s.refresh_interval().is_some()) {
        let refresher = Refresher::new(source, secrets, key_value);
        tokio::spawn(refresh_signing_key(
            ingress.clone(),
            refresher,
            stop.clone(),
        ));
    }
    let outcome = server::serve(listener, ingress, server_config, stop).await;
    if !outcome.sessions_finished {
        tracing::warn!(
            "some sessions were aborted at the end of the grace period; their items are left to lease expiry"
        );
    }
    Ok(())
}

/// Reads the secrets while the probe runs, then waits for the isolation and builds the ingress.
async fn start(args: &ServeArgs, probe: PendingProbe) -> anyhow::Result<Started> {
    // Session temporary directories of workers that were killed (P3, P4); live ones stay.
    hands_worker::startup::sweep_leftover_tmp_dirs();
    // One resolver: the AWS configuration is loaded once for both secrets.
    let secrets = Resolver::new();
    let environment_key = args.worker.connect.environment_key(&secrets).await?;
    if environment_key.is_none() {
        bail!(NO_ENVIRONMENT_KEY);
    }
    let key_source = signing_key_source(args.signing_key_vars())?;
    if let Some(source) = &key_source {
        tracing::info!(%source, "webhook signing key source");
    }
    let (verifier, key_value) = read_verifier(key_source.as_ref(), &secrets).await?;
    // The client before the wait: building it (and, for an `https://` base URL, starting the
    // TLS roots' load) overlaps the probe's trial run instead of following it.
    let control_plane = args.worker.connect.control_plane()?;
    let (isolation, probe) = crate::isolation_start::select(&args.worker, probe).await?;
    let mut worker = args.worker.worker_config(isolation)?;
    crate::egress_cmd::attach(&args.worker, &mut worker, probe.as_ref()).await?;
    worker.environment_key = environment_key;
    // Every secret is read by now (a rotation re-reads the same file): tool code must not read
    // their files either.
    crate::secret_files::hide_from_tools(&mut worker);
    let config = IngressConfig {
        max_sessions: args.worker.max_sessions.max(1),
        body_timeout: args.body_timeout,
        reply_budget: args.reply_budget,
        ..IngressConfig::default()
    };
    if !worker.workdir.is_per_session() && args.worker.max_sessions > 1 {
        tracing::warn!(workdir = %worker.workdir.as_str(),
            "several sessions may share this workdir; use a {{session_id}} template to give each its own");
    }
    tracing::info!(environment_id = %worker.environment_id, worker_id = %worker.worker_id,
        workdir = %worker.workdir.as_str(), listen = %args.listen, "serving webhooks");
    let ingress = Ingress::new(control_plane, worker, config);
    if verifier.is_none() {
        tracing::warn!(
            "no webhook signing key yet: deliveries are answered 503 until ANTHROPIC_WEBHOOK_SIGNING_KEY (or its _FILE, _SECRET_ARN or _SSM_PARAMETER) holds one"
        );
    }
    ingress.set_verifier(verifier);
    Ok(Started {
        ingress,
        key_source,
        key_value,
        secrets,
    })
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

    #[tokio::test]
    async fn the_signing_key_has_one_source_and_an_empty_one_means_not_configured_yet() {
        if std::env::vars().any(|(k, _)| k.starts_with(super::SIGNING_KEY)) {
            eprintln!("skipping: the environment sets {}*", super::SIGNING_KEY);
            return;
        }
        const A: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key");
        let file = path.to_str().unwrap();
        let secrets = hands_secrets::Resolver::new();
        let read = |a: super::ServeArgs| {
            let secrets = secrets.clone();
            async move {
                let source = super::signing_key_source(a.signing_key_vars())?;
                super::read_verifier(source.as_ref(), &secrets).await
            }
        };

        std::fs::write(&path, "\n").unwrap();
        let (verifier, value) = read(serve(&["--webhook-signing-key-file", file]))
            .await
            .unwrap();
        assert!(verifier.is_none() && value.is_none());
        std::fs::write(&path, format!("{A}\n")).unwrap();
        let (verifier, value) = read(serve(&["--webhook-signing-key-file", file]))
            .await
            .unwrap();
        assert!(verifier.is_some() && value.is_some());
        let (verifier, _) = read(serve(&[])).await.unwrap();
        assert!(verifier.is_none());

        let err = read(serve(&[
            "--webhook-signing-key",
            A,
            "--webhook-signing-key-file",
            file,
        ]))
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "both ANTHROPIC_WEBHOOK_SIGNING_KEY and ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE are set; set exactly one of them"
        );
        std::fs::remove_file(&path).unwrap();
        let err = read(serve(&["--webhook-signing-key-file", file]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE: cannot read"),
            "{err}"
        );
        let err = read(serve(&["--webhook-signing-key-secret-arn", "whsec_oops"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("looks like a secret value") && !err.contains("oops"),
            "{err}"
        );
    }

    #[test]
    fn the_signing_key_never_shows_in_debug_output() {
        let a = serve(&["--webhook-signing-key", "whsec_canarycanarycanary"]);
        assert!(!format!("{a:?}").contains("canary"));
        assert_eq!(serve(&[]).listen, "0.0.0.0:8080");
    }
}
