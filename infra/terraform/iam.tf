# One role per function, each with only what that function does.

# The same trust policy SAM generates. No confused-deputy condition: an execution role can only be
# given to a function by someone allowed iam:PassRole on it, which never crosses accounts.
data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

locals {
  # Built from the names: the session role must allow invoking its own function (the
  # continuation) and the webhook function (its on-failure destination), and referencing either
  # function would make the role depend on it: a cycle.
  function_arn_prefix  = "arn:${data.aws_partition.current.partition}:lambda:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:function"
  session_function_arn = "${local.function_arn_prefix}:${local.session_name}"
  webhook_function_arn = "${local.function_arn_prefix}:${local.webhook_name}"
}

# --- session ---------------------------------------------------------------------------------

resource "aws_iam_role" "session" {
  name               = "${local.session_name}-role"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "session" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.session.arn}:*"]
  }

  statement {
    sid       = "ReadEnvironmentKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.environment_key_secret_arn]
  }

  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [var.secrets_kms_key_arn]
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${data.aws_region.current.region}.amazonaws.com"]
      }
    }
  }

  statement {
    sid       = "InvokeContinuation"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.session_function_arn]
  }

  # Lambda delivers to the on-failure destination with the function's own role.
  statement {
    sid       = "InvokeFailureDestination"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.webhook_function_arn]
  }

  # Snapshots are workspaces/<session id>.tar.gz; a failed save deletes the previous one so
  # an older workspace is never restored as current.
  dynamic "statement" {
    for_each = var.workspace_snapshots ? [aws_s3_bucket.workspace[0].arn] : []
    content {
      sid       = "WorkspaceSnapshots"
      # AbortMultipartUpload: a failed multipart snapshot upload is aborted.
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      resources = ["${statement.value}/workspaces/*"]
    }
  }

  # ListBucket turns a missing snapshot (a session's first turn) into a 404 instead of a 403.
  dynamic "statement" {
    for_each = var.workspace_snapshots ? [aws_s3_bucket.workspace[0].arn] : []
    content {
      sid       = "WorkspaceSnapshotsList"
      actions   = ["s3:ListBucket"]
      resources = [statement.value]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["workspaces/*"]
      }
    }
  }
}

resource "aws_iam_role_policy" "session" {
  name   = "hands-session"
  role   = aws_iam_role.session.id
  policy = data.aws_iam_policy_document.session.json
}

# --- webhook ---------------------------------------------------------------------------------

resource "aws_iam_role" "webhook" {
  name               = "${local.webhook_name}-role"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "webhook" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.webhook.arn}:*"]
  }

  statement {
    sid     = "ReadSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      var.environment_key_secret_arn,
      var.webhook_signing_key_secret_arn,
    ]
  }

  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [var.secrets_kms_key_arn]
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${data.aws_region.current.region}.amazonaws.com"]
      }
    }
  }

  statement {
    sid       = "HandOff"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.session.arn]
  }

  # Lambda delivers to the on-failure destination with the function's own role.
  statement {
    sid       = "SendToFailureQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failure.arn]
  }
}

resource "aws_iam_role_policy" "webhook" {
  name   = "hands-webhook"
  role   = aws_iam_role.webhook.id
  policy = data.aws_iam_policy_document.webhook.json
}
