//! Logs of both functions: to stderr (Lambda sends it to CloudWatch), JSON when the function's
//! log format is JSON (`AWS_LAMBDA_LOG_FORMAT`) or `HANDS_LOG_FORMAT=json`; level from
//! `RUST_LOG` (default `info`).

/// Installs the global subscriber once.
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
        || std::env::var("HANDS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
