#!/usr/bin/env python3
"""Runs the SAM transform locally (aws-sam-translator, the library CloudFormation's
AWS::Serverless transform is built on) and writes the plain CloudFormation it yields, so cfn-lint
can check what would actually be deployed: the generated roles, permissions, URL, schedule and
destination policies, not only the SAM shorthand.

The checkov skips of a serverless function (its Metadata) are copied onto the resources the
transform generates for it (its URL, role, permissions), whose logical ids start with the
function's, so the justifications stay in the template and checkov can scan the output too.

Usage: translate_check.py TEMPLATE OUT.json. `sam deploy` uploads the code and rewrites CodeUri to
an S3 URI before the transform; placeholders stand in for those here. Parameters get sample
values; conditions stay unevaluated in the output, so both branches are linted.
"""

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

SAMPLE_PARAMETERS = {
    "EnvironmentId": "env_01EXAMPLE",
    "EnvironmentKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hands/environment-key-AbCdEf",
    "WebhookSigningKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hands/webhook-signing-key-AbCdEf",
}


class ManagedPolicies:
    """The transform looks managed policies up by name through IAM; only this one is used."""

    def load(self):
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}


def main() -> int:
    source, out = sys.argv[1], sys.argv[2]
    # The transform reads the region for ARNs it builds; no AWS call is made.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(source) as f:
        template = yaml_parse(f.read())
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://placeholder-bucket/{name}.zip"
    skips = {
        name: resource["Metadata"]["checkov"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function" and "checkov" in resource.get("Metadata", {})
    }
    translated = transform(template, SAMPLE_PARAMETERS, ManagedPolicies())
    for name, resource in translated["Resources"].items():
        for function, checkov in skips.items():
            if name.startswith(function) and name != function:
                resource.setdefault("Metadata", {})["checkov"] = checkov
    with open(out, "w") as f:
        json.dump(translated, f, indent=1)
    types = sorted({r["Type"] for r in translated["Resources"].values()})
    print(f"SAM transform: {len(translated['Resources'])} resources ({', '.join(types)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
