data "archive_file" "webhook" {
  type        = "zip"
  source_file = local.webhook_bootstrap
  output_path = "${path.root}/.terraform/hands-webhook.zip"
}

data "archive_file" "session" {
  type        = "zip"
  source_file = local.session_bootstrap
  output_path = "${path.root}/.terraform/hands-session.zip"
}

resource "aws_cloudwatch_log_group" "webhook" {
  # checkov:skip=CKV_AWS_158:Encrypted with the CloudWatch Logs service key. The functions never log secrets or tool output (ids, outcomes and timings only), so a customer-managed key adds a key policy to maintain and no protection.
  # checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, 30 days by default); a year of per-delivery logs is a cost, not a control.
  name              = "/aws/lambda/${local.webhook_name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "session" {
  # checkov:skip=CKV_AWS_158:Encrypted with the CloudWatch Logs service key; same reasoning as the webhook log group.
  # checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, 30 days by default).
  name              = "/aws/lambda/${local.session_name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "session" {
  # checkov:skip=CKV_AWS_116:Failed asynchronous invocations go to the failure queue through the on-failure destination (aws_lambda_function_event_invoke_config), which carries more context than a DLQ.
  # checkov:skip=CKV_AWS_117:The function only talks to the Anthropic API and AWS endpoints over TLS; a VPC would need a NAT gateway for the same egress. Add vpc_config if your policy demands it.
  # checkov:skip=CKV_AWS_173:The environment holds no secrets (ARNs, ids, a bucket name, a path template); secrets are read from Secrets Manager at start.
  # checkov:skip=CKV_AWS_272:Built from source by the operator (cargo lambda build); add code_signing_config_arn if you sign artifacts.
  # checkov:skip=CKV_AWS_115:Reserved concurrency is session_reserved_concurrency (unreserved by default so a small account is not starved).
  # checkov:skip=CKV_AWS_50:X-Ray tracing is optional; the functions log one JSON line per step with the work, session and tool-use ids.
  function_name    = local.session_name
  description      = "hands session function - serves one work item, continues before its deadline"
  role             = aws_iam_role.session.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = data.archive_file.session.output_path
  source_code_hash = data.archive_file.session.output_base64sha256
  timeout          = var.session_timeout_seconds
  memory_size      = var.session_memory_mb

  reserved_concurrent_executions = var.session_reserved_concurrency

  ephemeral_storage {
    size = var.session_ephemeral_storage_mb
  }

  dynamic "tenancy_config" {
    for_each = var.tenant_isolation ? ["PER_TENANT"] : []
    content {
      tenant_isolation_mode = tenancy_config.value
    }
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.session.name
  }

  environment {
    variables = merge(local.common_environment, {
      HANDS_WORKDIR = "/tmp/hands/{session_id}"
      }, var.workspace_snapshots ? {
      HANDS_WORKSPACE_BUCKET = aws_s3_bucket.workspace[0].bucket
    } : {})
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.session]
}

# A session invocation that kept failing (or waited too long) goes to the webhook function as a
# destination record; it force-stops the item.
resource "aws_lambda_function_event_invoke_config" "session" {
  function_name                = aws_lambda_function.session.function_name
  maximum_retry_attempts       = var.session_max_retries
  maximum_event_age_in_seconds = var.session_max_event_age_seconds

  destination_config {
    on_failure {
      destination = aws_lambda_function.webhook.arn
    }
  }
}

resource "aws_lambda_function" "webhook" {
  # checkov:skip=CKV_AWS_116:Its asynchronous events (schedule runs, destination records) go to the failure queue through the on-failure destination (aws_lambda_function_event_invoke_config.webhook); function URL calls are synchronous and retried by the sender.
  # checkov:skip=CKV_AWS_117:Same as the session function: egress is the Anthropic API and AWS endpoints over TLS.
  # checkov:skip=CKV_AWS_173:The environment holds no secrets (ARNs, ids, a function name, a queue URL).
  # checkov:skip=CKV_AWS_272:Built from source by the operator.
  # checkov:skip=CKV_AWS_115:A delivery or a schedule tick is a short, bounded drain that hands work to the session function; limiting it would only turn deliveries into retries. Sessions are limited by session_reserved_concurrency.
  # checkov:skip=CKV_AWS_50:X-Ray tracing is optional; see the session function.
  function_name    = local.webhook_name
  description      = "hands webhook function - verify, drain, hand off; backstop drain; force-stop failed items"
  role             = aws_iam_role.webhook.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = data.archive_file.webhook.output_path
  source_code_hash = data.archive_file.webhook.output_base64sha256
  # A drain is bounded in count and time (HANDS_REPLY_BUDGET, 10 s by default).
  timeout     = 60
  memory_size = 256

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.webhook.name
  }

  environment {
    variables = merge(local.common_environment, {
      ANTHROPIC_WEBHOOK_SIGNING_KEY_SECRET_ARN = var.webhook_signing_key_secret_arn
      HANDS_SESSION_FUNCTION                   = aws_lambda_function.session.function_name
    })
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.webhook]
}

# Schedule runs and destination records arrive asynchronously: after Lambda's retries, what
# still failed is kept in the failure queue.
resource "aws_lambda_function_event_invoke_config" "webhook" {
  function_name                = aws_lambda_function.webhook.function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 3600

  destination_config {
    on_failure {
      destination = aws_sqs_queue.failure.arn
    }
  }
}

# The sender authenticates with the Standard Webhooks signature, which the function verifies on
# the raw body before anything else; IAM auth is not something the sender can do.
resource "aws_lambda_function_url" "webhook" {
  # checkov:skip=CKV_AWS_258:The webhook sender cannot sign AWS requests; every delivery is verified (HMAC over the raw body, 5-minute window, constant-time) before anything else happens, and failures get a bare 401.
  function_name      = aws_lambda_function.webhook.function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

resource "aws_lambda_permission" "webhook_url" {
  # checkov:skip=CKV_AWS_301:Public by design: this is the webhook endpoint (see aws_lambda_function_url.webhook); the permission is limited to calls through the function URL.
  statement_id           = "PublicFunctionUrl"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.webhook.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

# Since October 2025 a public function URL needs lambda:InvokeFunction as well, restricted here
# to invocations that come through the URL.
resource "aws_lambda_permission" "webhook_url_invoke" {
  # checkov:skip=CKV_AWS_301:Public by design, and only through the function URL (invoked_via_function_url).
  statement_id             = "PublicFunctionUrlInvoke"
  action                   = "lambda:InvokeFunction"
  function_name            = aws_lambda_function.webhook.function_name
  principal                = "*"
  invoked_via_function_url = true
}
