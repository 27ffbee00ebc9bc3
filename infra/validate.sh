#!/usr/bin/env bash
# Validates everything under infra/ without a cloud account, a terraform binary or a Docker
# engine (none of which this project's machines have):
#   cfn-lint              the SAM template (SAM and CloudFormation resource schemas), and the
#                         CloudFormation that aws-sam-translator (the library behind the
#                         AWS::Serverless transform) turns it into
#   kubernetes-validate   the manifests against the Kubernetes schemas it ships, strict, for the
#                         oldest and newest versions named below
#   infra/consistency.py  python-hcl2 parse of every .tf file, the KEDA ScaledObject against our
#                         schema, and the cross-file checks (see its docstring)
#   infra/smoke_serve.py  `hands serve` started with the Deployment's args, env and secret files
#                         against devplane: health, readiness, the metrics KEDA queries, SIGTERM
#                         (needs a hands binary: HANDS_BIN, default $CARGO_TARGET_DIR/debug/hands
#                         or target/debug/hands; under CI
#                         a missing binary fails, alone it is skipped with a message)
#   checkov               SAM template (as written and transformed), Terraform module,
#                         manifests and Dockerfile; any failed check fails this script
#                         (findings are fixed or skipped inline with a reason)
# Tools are pinned and installed into two virtualenvs under target/ (checkov pins its own HCL
# parser, which shares the `hcl2` module name with python-hcl2, so it gets a venv of its own).
# Usage: infra/validate.sh            (from anywhere; exits non-zero on any finding)
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.58.0
SAM_TRANSLATOR_VERSION=1.115.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_HCL2_VERSION=8.1.4
CHECKOV_VERSION=3.3.30
# Oldest Kubernetes still in upstream support when written, and the newest kubernetes-validate knows.
K8S_VERSIONS=(1.33.0 1.37.0)

VENV_ROOT=${INFRA_VENV:-target/infra-venv}
LINT="$VENV_ROOT/lint"
CHECKOV="$VENV_ROOT/checkov"

# (Re)creates a venv when its recorded pins differ from the wanted ones.
ensure_venv() {
    local dir=$1
    shift
    local want="$*"
    if [[ -x "$dir/bin/python" && -f "$dir/.pins" && "$(cat "$dir/.pins")" == "$want" ]]; then
        return
    fi
    echo "installing into $dir: $want"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$want" >"$dir/.pins"
}

ensure_venv "$LINT" "cfn-lint==$CFN_LINT_VERSION" "aws-sam-translator==$SAM_TRANSLATOR_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "python-hcl2==$PYTHON_HCL2_VERSION"
ensure_venv "$CHECKOV" "checkov==$CHECKOV_VERSION"

failed=()
section() { printf '\n--- %s\n' "$1"; }

section "cfn-lint $CFN_LINT_VERSION: infra/sam/template.yaml, and its SAM transform (aws-sam-translator $SAM_TRANSLATOR_VERSION)"
if "$LINT/bin/cfn-lint" infra/sam/template.yaml; then
    echo "cfn-lint: no findings in the SAM template"
else
    failed+=(cfn-lint)
fi
mkdir -p target/tmp
translated=target/tmp/sam-translated.json
# W2001 (unused parameter) is expected in the output: the transform substitutes the parameters
# it consumes itself (EventInvokeConfig's retry settings) with their values.
if "$LINT/bin/python" infra/sam/translate_check.py infra/sam/template.yaml "$translated" \
    && "$LINT/bin/cfn-lint" --ignore-checks W2001 -- "$translated"; then
    echo "cfn-lint: no findings in the transformed template"
else
    failed+=("SAM transform")
fi

section "kubernetes-validate $KUBERNETES_VALIDATE_VERSION (strict): infra/k8s"
# The KEDA ScaledObject is a custom resource kubernetes-validate has no schema for; consistency.py
# validates it against infra/k8s/schemas/keda-scaledobject.schema.json instead.
mapfile -t manifests < <(find infra/k8s -name '*.yaml' ! -name 'keda-*.yaml' | sort)
for version in "${K8S_VERSIONS[@]}"; do
    if "$LINT/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"; then
        echo "kubernetes $version: ${#manifests[@]} manifests valid"
    else
        failed+=("kubernetes-validate $version")
    fi
done

section "python-hcl2 $PYTHON_HCL2_VERSION parse and cross-file consistency"
if ! "$LINT/bin/python" infra/consistency.py; then
    failed+=(consistency)
fi

section "smoke: hands serve as the Deployment runs it"
hands_bin=${HANDS_BIN:-${CARGO_TARGET_DIR:-target}/debug/hands}
if [[ -x "$hands_bin" ]]; then
    if ! "$LINT/bin/python" infra/smoke_serve.py "$hands_bin"; then
        failed+=(smoke)
    fi
elif [[ "${CI:-}" == "true" ]]; then
    echo "no hands binary at $hands_bin (CI builds it before this step)"
    failed+=(smoke)
else
    echo "skipped: no hands binary at $hands_bin (cargo build -p hands, or set HANDS_BIN)"
fi

section "checkov $CHECKOV_VERSION: infra/ (cloudformation, terraform, kubernetes, dockerfile)"
# --skip-download: no calls to the vendor's platform (CI has no account, and the default
# download of guidelines fails offline).
if "$CHECKOV/bin/checkov" --directory infra \
    --framework cloudformation terraform kubernetes dockerfile \
    --skip-download --compact --quiet; then
    echo "checkov: no failed checks in infra/"
else
    failed+=(checkov)
fi
# The transformed SAM template has the generated roles, permissions and URL as resources of their
# own, which the SAM-level scan cannot see (skips carried over by translate_check.py).
if [[ -f "$translated" ]] && "$CHECKOV/bin/checkov" --file "$translated" --framework cloudformation \
    --skip-download --compact --quiet; then
    echo "checkov: no failed checks in the transformed SAM template"
else
    failed+=("checkov (SAM transform)")
fi

echo
if ((${#failed[@]})); then
    echo "infra validation FAILED: ${failed[*]}"
    exit 1
fi
echo "infra validation passed (terraform validate and docker build were not run: no terraform binary or Docker engine here)"
