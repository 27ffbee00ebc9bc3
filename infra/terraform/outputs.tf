output "webhook_url" {
  description = "Register this in the Console (Manage -> Webhooks) for session.status_run_started; put the signing secret it shows into the webhook signing key secret."
  # The function URL ends with "/"; the Router serves POST /webhook, as `hands serve` does.
  value = "${aws_lambda_function_url.webhook.function_url}webhook"
}

output "webhook_function_name" {
  value = aws_lambda_function.webhook.function_name
}

output "session_function_name" {
  value = aws_lambda_function.session.function_name
}

output "session_function_arn" {
  value = aws_lambda_function.session.arn
}

output "failure_queue_url" {
  description = "Asynchronous events the webhook function failed to process after retries (a failed session's record it could not force-stop, a schedule run); alarm on its depth."
  value       = aws_sqs_queue.failure.url
}

output "workspace_bucket" {
  description = "The workspace snapshot bucket, or null when workspace_snapshots is false."
  value       = var.workspace_snapshots ? aws_s3_bucket.workspace[0].bucket : null
}
