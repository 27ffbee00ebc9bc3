locals {
  webhook_name = "${var.name}-webhook"
  session_name = "${var.name}-session"

  # The workspace root is infra/terraform/../..: cargo lambda writes target/lambda/<fn>/bootstrap.
  webhook_bootstrap = coalesce(var.webhook_bootstrap_path, "${path.module}/../../target/lambda/webhook/bootstrap")
  session_bootstrap = coalesce(var.session_bootstrap_path, "${path.module}/../../target/lambda/session/bootstrap")

  # Both functions read these at start; neither environment holds a secret value. With tenant
  # isolation, every invoke of the session function (hand-off and continuation) must carry a
  # TenantId, and HANDS_TENANT_ISOLATION=1 tells both functions so.
  common_environment = merge({
    ANTHROPIC_ENVIRONMENT_ID             = var.environment_id
    ANTHROPIC_BASE_URL                   = var.base_url
    ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN = var.environment_key_secret_arn
    HANDS_LOG_FORMAT                     = "json"
    }, var.tenant_isolation ? {
    HANDS_TENANT_ISOLATION = "1"
  } : {})
}

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
