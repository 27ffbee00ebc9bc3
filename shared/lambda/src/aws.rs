//! The AWS SDK configuration both functions use: the standard chain (environment, the
//! execution role's credentials, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` overrides).

use aws_config::BehaviorVersion;

/// Loads the shared SDK configuration.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// Whether an endpoint override is set for S3: a local fake (moto) answers only path-style
/// requests (`http://host/bucket/key`), having no DNS for `bucket.host`.
pub fn s3_endpoint_overridden() -> bool {
    std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some()
}
