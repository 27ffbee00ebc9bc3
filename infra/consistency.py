#!/usr/bin/env python3
"""Cross-file checks of infra/ that no linter makes: the files agree with each other and with the
code they deploy. Run by infra/validate.sh in the venv that has PyYAML, python-hcl2 and jsonschema
(the kubernetes-validate venv); prints one line per check and exits 1 if any failed.

What is checked, and why:
- every Terraform file parses with python-hcl2 (no terraform binary can be installed here), every
  variable has a type and a description, the module outputs the webhook URL to register, and
  every var./local./resource/data reference names something the module declares (the part of
  `terraform validate` that needs no provider schemas);
- the SAM template and the Terraform module give each function the same environment variable
  names and point at the same cargo-lambda build outputs, so the two deployments cannot drift;
  every HANDS_* variable they set is read by the functions' code (functions/, shared/);
- the KEDA ScaledObject matches infra/k8s/schemas/keda-scaledobject.schema.json, queries only
  metrics that shared/ingress/src/metrics.rs really exports, targets the Deployment, and its
  per-pod threshold equals the Deployment's --max-sessions;
- the Deployment's grace period covers the preStop pause plus hands' --shutdown-grace and is at
  least 30 s; the secret files it names live under the mounted Secret; the container's user,
  port and health path agree with the Dockerfile;
- every checkov skip (Terraform comment, SAM Metadata, Kubernetes annotation) carries a reason.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import hcl2
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
FUNCTIONS = ("webhook", "session")


# --- loading -------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub, ...) as plain data."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_sam() -> dict[str, Any]:
    return yaml.load((INFRA / "sam/template.yaml").read_text(), Loader=CfnLoader)


def load_k8s() -> dict[str, dict[str, Any]]:
    """Every manifest under infra/k8s by kind (one object per kind here)."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((INFRA / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = str(path.relative_to(ROOT))
                docs[doc["kind"]] = doc
    return docs


def unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def load_tf() -> dict[str, list[dict[str, Any]]]:
    """All .tf files merged: block type -> list of parsed blocks. Raises on a parse error."""
    merged: dict[str, list[dict[str, Any]]] = {}
    files = sorted((INFRA / "terraform").glob("*.tf"))
    if not files:
        raise AssertionError("no .tf files under infra/terraform")
    for path in files:
        with path.open() as f:
            try:
                parsed = hcl2.load(f)
            except Exception as e:  # the parser raises several lark error types
                raise AssertionError(f"{path.relative_to(ROOT)} does not parse: {e}") from e
        for key, blocks in parsed.items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def tf_resources(tf: dict[str, list[dict[str, Any]]], rtype: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in tf.get("resource", []):
        for t, named in block.items():
            if unquote(t) == rtype:
                for name, body in named.items():
                    out[unquote(name)] = body
    return out


# --- checks --------------------------------------------------------------------------------------

ENV_NAME = re.compile(r"\b((?:ANTHROPIC|HANDS)_[A-Z0-9_]+)\b")


def check_terraform_module(tf: dict[str, list[dict[str, Any]]]) -> str:
    variables = {unquote(k): v for block in tf.get("variable", []) for k, v in block.items()}
    bad = [n for n, v in variables.items() if "type" not in v or "description" not in v]
    assert not bad, f"variables without type or description: {bad}"
    outputs = {unquote(k) for block in tf.get("output", []) for k in block}
    assert "webhook_url" in outputs, "the module has no webhook_url output"
    functions = tf_resources(tf, "aws_lambda_function")
    assert set(functions) == set(FUNCTIONS), f"aws_lambda_function resources: {sorted(functions)}"
    return f"{len(variables)} variables, outputs {sorted(outputs)}"


TF_REF = re.compile(r"\b(var|local)\.([a-z0-9_]+)|\bdata\.([a-z0-9_]+)\.([a-z0-9_]+)|\b(aws_[a-z0-9_]+)\.([a-z0-9_]+)\b")


def check_terraform_references(tf: dict[str, list[dict[str, Any]]]) -> str:
    variables = {unquote(k) for block in tf.get("variable", []) for k in block}
    locals_ = {k for block in tf.get("locals", []) for k in block}
    resources = {(unquote(t), unquote(n)) for block in tf.get("resource", []) for t, named in block.items() for n in named}
    data = {(unquote(t), unquote(n)) for block in tf.get("data", []) for t, named in block.items() for n in named}
    used_vars: set[str] = set()
    missing: list[str] = []
    count = 0
    for path in sorted((INFRA / "terraform").glob("*.tf")):
        # Comments may mention names freely; only code counts.
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for m in TF_REF.finditer(code):
            count += 1
            kind, name, dtype, dname, rtype, rname = m.groups()
            if kind == "var":
                used_vars.add(name)
                if name not in variables:
                    missing.append(f"{path.name}: var.{name}")
            elif kind == "local" and name not in locals_:
                missing.append(f"{path.name}: local.{name}")
            elif dtype and (dtype, dname) not in data:
                missing.append(f"{path.name}: data.{dtype}.{dname}")
            elif rtype and (rtype, rname) not in resources:
                missing.append(f"{path.name}: {rtype}.{rname}")
    assert not missing, f"undeclared references: {missing}"
    unused = variables - used_vars
    assert not unused, f"variables never used: {sorted(unused)}"
    return f"{count} references resolve, every variable is used"


def code_reads(name: str) -> bool:
    """Whether non-test Rust code under functions/ or shared/ names the variable."""
    for top in ("functions", "shared"):
        for path in (ROOT / top).rglob("*.rs"):
            if "tests" in path.relative_to(ROOT).parts:
                continue
            if f'"{name}"' in path.read_text(errors="replace"):
                return True
    return False


def check_names_read_by_code(sam: dict[str, Any]) -> str:
    if not (ROOT / "functions/webhook").is_dir() or not (ROOT / "functions/session").is_dir():
        return "skipped: functions/webhook and functions/session are not in this tree"
    names = set()
    for function in FUNCTIONS:
        names |= {n for n in sam_function(sam, function)["Environment"]["Variables"] if n.startswith("HANDS_")}
    unread = sorted(n for n in names if not code_reads(n))
    assert not unread, f"set by the templates but read nowhere in functions/ or shared/: {unread}"
    return f"{sorted(names)} all read by the code"


def tf_environment(tf: dict[str, list[dict[str, Any]]], function: str) -> set[str]:
    body = tf_resources(tf, "aws_lambda_function")[function]
    text = json.dumps(body["environment"])
    names = set(ENV_NAME.findall(text))
    if "local.common_environment" in text:
        for block in tf.get("locals", []):
            common = block.get("common_environment")
            if common is not None:
                names |= set(ENV_NAME.findall(json.dumps(common)))
    return names


def sam_function(sam: dict[str, Any], function: str) -> dict[str, Any]:
    logical = {"webhook": "WebhookFunction", "session": "SessionFunction"}[function]
    return sam["Resources"][logical]["Properties"]


def check_sam_terraform_environment(sam: dict[str, Any], tf: dict[str, list[dict[str, Any]]]) -> str:
    sizes = []
    for function in FUNCTIONS:
        in_sam = set(sam_function(sam, function)["Environment"]["Variables"])
        in_tf = tf_environment(tf, function)
        assert in_sam == in_tf, (
            f"{function}: only in SAM {sorted(in_sam - in_tf)}, only in Terraform {sorted(in_tf - in_sam)}"
        )
        sizes.append(f"{function} {len(in_sam)}")
    return "same variable names per function: " + ", ".join(sizes)


def check_issue_contract(sam: dict[str, Any]) -> str:
    """The configuration names issue 6 fixes; never a secret value in a function's environment."""
    required = {
        "webhook": {"HANDS_SESSION_FUNCTION", "ANTHROPIC_ENVIRONMENT_ID", "ANTHROPIC_BASE_URL",
                    "ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN", "ANTHROPIC_WEBHOOK_SIGNING_KEY_SECRET_ARN"},
        "session": {"HANDS_WORKSPACE_BUCKET", "HANDS_WORKDIR", "ANTHROPIC_ENVIRONMENT_ID",
                    "ANTHROPIC_BASE_URL", "ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN"},
    }
    for function, names in required.items():
        env = sam_function(sam, function)["Environment"]["Variables"]
        missing = names - set(env)
        assert not missing, f"{function} lacks {sorted(missing)}"
        plain = {"ANTHROPIC_ENVIRONMENT_KEY", "ANTHROPIC_WEBHOOK_SIGNING_KEY"} & set(env)
        assert not plain, f"{function} holds a secret value in its environment: {sorted(plain)}"
    workdir = sam_function(sam, "session")["Environment"]["Variables"]["HANDS_WORKDIR"]
    assert workdir == "/tmp/hands/{session_id}", f"session HANDS_WORKDIR is {workdir!r}"
    return "issue 6 configuration names present, no secret values"


def check_build_outputs(sam: dict[str, Any], tf: dict[str, list[dict[str, Any]]]) -> str:
    locals_ = {k: v for block in tf.get("locals", []) for k, v in block.items()}
    for function in FUNCTIONS:
        code_uri = sam_function(sam, function)["CodeUri"]
        assert code_uri.rstrip("/") == f"../../target/lambda/{function}", f"SAM {function} CodeUri {code_uri}"
        tf_default = json.dumps(locals_[f"{function}_bootstrap"])
        assert f"/../../target/lambda/{function}/bootstrap" in tf_default, f"Terraform {function} bootstrap {tf_default}"
        for props in (sam["Globals"]["Function"],):
            assert props["Runtime"] == "provided.al2023" and props["Handler"] == "bootstrap"
    return "both point at target/lambda/{webhook,session} (cargo lambda build)"


def exported_metrics() -> set[str]:
    source = (ROOT / "shared/ingress/src/metrics.rs").read_text()
    return set(re.findall(r'"(hands_[a-z0-9_]+)"', source)) | set(
        re.findall(r"^(hands_[a-z0-9_]+)[ {]", source, flags=re.M)
    ) | set(re.findall(r'"(hands_[a-z0-9_]+)[ {]', source))


def check_keda(k8s: dict[str, dict[str, Any]]) -> str:
    so = {k: v for k, v in k8s["ScaledObject"].items() if k != "__file__"}
    schema = json.loads((INFRA / "k8s/schemas/keda-scaledobject.schema.json").read_text())
    jsonschema.validate(so, schema)
    deployment = k8s["Deployment"]
    assert so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], "ScaledObject targets another Deployment"
    hpa = k8s["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], "HPA targets another Deployment"
    metrics = exported_metrics()
    used = set()
    for trigger in so["spec"]["triggers"]:
        if trigger["type"] == "prometheus":
            used |= set(re.findall(r"\b(hands_[a-z0-9_]+)\b", trigger["metadata"]["query"]))
            args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            max_sessions = next(a.split("=", 1)[1] for a in args if a.startswith("--max-sessions="))
            assert trigger["metadata"]["threshold"] == max_sessions, (
                f"threshold {trigger['metadata']['threshold']} != --max-sessions {max_sessions}"
            )
    assert used, "no hands_* metric in the ScaledObject's queries"
    unknown = used - metrics
    assert not unknown, f"metrics not exported by shared/ingress/src/metrics.rs: {sorted(unknown)}"
    return f"schema ok, metrics {sorted(used)} exported, threshold = --max-sessions"


def duration_seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)s", text)
    assert m, f"unexpected duration {text!r}"
    return int(m.group(1))


def check_deployment(k8s: dict[str, dict[str, Any]]) -> str:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = pod["terminationGracePeriodSeconds"]
    shutdown = next(duration_seconds(a.split("=", 1)[1]) for a in container["args"] if a.startswith("--shutdown-grace="))
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert grace >= 30, f"terminationGracePeriodSeconds {grace} < 30"
    assert grace > pre_stop + shutdown, f"grace {grace} does not cover preStop {pre_stop} + shutdown {shutdown}"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    secret_dir = mounts[secret_volume["name"]]
    files = {i["path"] for i in secret_volume["secret"]["items"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name in ("ANTHROPIC_ENVIRONMENT_KEY_FILE", "ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE"):
        path = env[name]
        assert path.startswith(secret_dir + "/") and path[len(secret_dir) + 1:] in files, f"{name}={path} is not a mounted secret file"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert mounts.get("tmp") == "/tmp", "no writable /tmp for the workspaces"
    return f"grace {grace}s > preStop {pre_stop}s + shutdown {shutdown}s; secret files mounted"


def check_dockerfile(k8s: dict[str, dict[str, Any]]) -> str:
    text = (INFRA / "docker/Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", text, flags=re.M)
    assert user, "no numeric USER uid:gid"
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert int(user.group(1)) == container["securityContext"]["runAsUser"], "Dockerfile USER != runAsUser"
    assert int(user.group(1)) != 0
    port = re.search(r"^EXPOSE (\d+)$", text, flags=re.M)
    assert port and int(port.group(1)) == container["ports"][0]["containerPort"], "EXPOSE != containerPort"
    assert f"HANDS_LISTEN=0.0.0.0:{port.group(1)}" in text, "HANDS_LISTEN does not match EXPOSE"
    assert re.search(r"^HEALTHCHECK .*http://127\.0\.0\.1:%s/healthz" % port.group(1), text, flags=re.M | re.S)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, flags=re.M), "no STOPSIGNAL SIGTERM"
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 2, "not a multi-stage build"
    for tool in ("bash", "git", "coreutils", "grep", "findutils", "ca-certificates"):
        assert re.search(rf"\b{tool}\b", text), f"runtime image lacks {tool}"
    return f"user {user.group(1)}, port {port.group(1)}, healthcheck /healthz, SIGTERM, multi-stage"


def check_skip_reasons(tf: dict[str, list[dict[str, Any]]], sam: dict[str, Any], k8s: dict[str, dict[str, Any]]) -> str:
    count = 0
    for path in sorted((INFRA / "terraform").glob("*.tf")):
        for m in re.finditer(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", path.read_text()):
            assert m.group(2) and len(m.group(2).strip()) >= 20, f"{path.name}: {m.group(1)} skipped without a reason"
            count += 1
    for logical, resource in sam["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "").strip()) >= 20, f"SAM {logical}: {skip['id']} skipped without a reason"
            count += 1
    for kind, doc in k8s.items():
        for key, value in doc.get("metadata", {}).get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                rule, _, reason = value.partition("=")
                assert len(reason.strip()) >= 20, f"{kind}: {rule} skipped without a reason"
                count += 1
    return f"{count} skips, each with a reason"


def main() -> int:
    sam = load_sam()
    k8s = load_k8s()
    failures = 0
    tf: dict[str, list[dict[str, Any]]] = {}

    def run(name: str, check: Callable[[], str]) -> None:
        nonlocal failures
        try:
            print(f"ok    {name}: {check()}")
        except (AssertionError, KeyError, StopIteration, jsonschema.ValidationError) as e:
            failures += 1
            message = e.message if isinstance(e, jsonschema.ValidationError) else (str(e) or repr(e))
            print(f"FAIL  {name}: {message}")

    def parse() -> str:
        tf.update(load_tf())
        return f"{len(list((INFRA / 'terraform').glob('*.tf')))} files parsed with python-hcl2"

    run("terraform parses", parse)
    run("terraform module", lambda: check_terraform_module(tf))
    run("terraform references", lambda: check_terraform_references(tf))
    run("SAM and Terraform environments", lambda: check_sam_terraform_environment(sam, tf))
    run("issue 6 configuration names", lambda: check_issue_contract(sam))
    run("names read by the functions", lambda: check_names_read_by_code(sam))
    run("Lambda build outputs", lambda: check_build_outputs(sam, tf))
    run("KEDA ScaledObject", lambda: check_keda(k8s))
    run("Deployment", lambda: check_deployment(k8s))
    run("Dockerfile", lambda: check_dockerfile(k8s))
    run("checkov skips", lambda: check_skip_reasons(tf, sam, k8s))
    print(f"consistency: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
