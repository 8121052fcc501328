#!/bin/sh
# Installs kubeconform and prepares Kubernetes JSON schemas for offline validation.
# kubeconform fetches schemas from GitHub by default; here they come from the PyPI package
# kubernetes-validate (it ships per-version schemas whose $refs point at one shared
# _definitions.json), rewritten into self-contained "standalone" files kubeconform reads
# straight from the cache folder. Idempotent: a step already done is skipped.
#
# Settings (environment): KUBE_VERSION (1.25.0 .. 1.37.0, default 1.30.0),
# KUBECONFORM_VERSION (default v0.8.0), KUBE_SCHEMA_CACHE (default ~/.cache/kube-schemas),
# KUBECONFORM_BIN (default /usr/local/bin).
# Use: kubeconform -strict -kubernetes-version "$KUBE_VERSION" -schema-location \
#   "$KUBE_SCHEMA_CACHE/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
set -eu

KUBE_VERSION=${KUBE_VERSION:-1.30.0}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.8.0}
VALIDATE_VERSION=1.37.0
CACHE=${KUBE_SCHEMA_CACHE:-${HOME:-/root}/.cache/kube-schemas}
BIN=${KUBECONFORM_BIN:-/usr/local/bin}

say() { printf 'kube-schemas: %s\n' "$*"; }
die() { printf 'kube-schemas: error: %s\n' "$*" >&2; exit 1; }

case $KUBE_VERSION in
    1.2[5-9].0 | 1.3[0-7].0) ;;
    *) die "KUBE_VERSION=$KUBE_VERSION: schemas exist for 1.25.0 to 1.37.0 (x.y.0 only)" ;;
esac

if go version -m "$BIN/kubeconform" 2>/dev/null | grep -q "mod[[:space:]]*github.com/yannh/kubeconform[[:space:]]*$KUBECONFORM_VERSION"; then
    say "kubeconform $KUBECONFORM_VERSION already in $BIN"
else
    command -v go >/dev/null 2>&1 || die "go is needed to install kubeconform (apt-get install golang-go)"
    log=$(mktemp) || die "cannot create a temporary file"
    if ! GOBIN=$BIN go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" >"$log" 2>&1; then
        tail -n 3 "$log" >&2
        rm -f "$log"
        die "go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION failed"
    fi
    rm -f "$log"
    say "kubeconform $KUBECONFORM_VERSION installed in $BIN"
fi

target="$CACHE/v$KUBE_VERSION-standalone-strict"
stamp="$CACHE/.v$KUBE_VERSION-from-kubernetes-validate-$VALIDATE_VERSION"
if [ -f "$stamp" ] && [ -f "$target/deployment-apps-v1.json" ]; then
    say "schemas v$KUBE_VERSION already in $CACHE"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is needed to prepare the schemas"
mkdir -p "$CACHE" || die "cannot create $CACHE"
work=$(mktemp -d "$CACHE/.work.XXXXXX") || die "cannot create a work folder in $CACHE"
trap 'rm -rf "$work"' EXIT INT TERM

python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$work" "kubernetes-validate==$VALIDATE_VERSION" \
    || die "pip download kubernetes-validate==$VALIDATE_VERSION failed"
say "kubernetes-validate $VALIDATE_VERSION downloaded"

python3 - "$work" "v$KUBE_VERSION" <<'EOF' || die "converting the schemas failed"
"""Make each kind's schema self-contained: copy the definitions it reaches into its own $defs."""
import glob
import json
import re
import sys
import zipfile
from pathlib import Path

work, version = Path(sys.argv[1]), sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(str(work / "kubernetes_validate-*.whl"))[0])
ref = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")
for variant, suffix in (("local", ""), ("local-strict", "-strict")):
    base = f"kubernetes_validate/kubernetes-json-schema/{version}-{variant}/"
    names = [n for n in wheel.namelist() if n.startswith(base) and n.endswith(".json")]
    if not names:
        sys.exit(f"no {variant} schemas for {version} in the package")
    defs = json.loads(wheel.read(base + "_definitions.json"))["$defs"]
    out = work / f"{version}-standalone{suffix}"
    out.mkdir()

    def rewrite(node, reached):
        if isinstance(node, dict):
            target = node.get("$ref")
            found = ref.match(target) if isinstance(target, str) else None
            if found:
                name = found.group(1)
                node = {**node, "$ref": f"#/$defs/{name}"}
                if name not in reached:
                    reached[name] = None
                    reached[name] = rewrite(defs[name], reached)
            return {key: value if isinstance(value, str) else rewrite(value, reached)
                    for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item, reached) for item in node]
        return node

    for name in names:
        leaf = name[len(base):]
        if leaf == "_definitions.json":
            continue
        reached = {}
        schema = rewrite(json.loads(wheel.read(name)), reached)
        if reached:
            schema["$defs"] = reached
        (out / leaf).write_text(json.dumps(schema))
EOF
for dir in "$work/v$KUBE_VERSION-standalone" "$work/v$KUBE_VERSION-standalone-strict"; do
    rm -rf "${CACHE:?}/${dir##*/}"
    mv "$dir" "$CACHE/" || die "cannot move the schemas into $CACHE"
done
: >"$stamp"
say "schemas v$KUBE_VERSION ready in $CACHE ($(find "$target" -name '*.json' | wc -l) kinds)"
