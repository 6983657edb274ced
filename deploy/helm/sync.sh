#!/bin/sh
# Copy into the Helm chart the manifests it shares with deploy/ word for word: the CRDs, the
# admission policies for G1 and the user RBAC. Helm cannot read files outside its chart, so
# the chart carries copies; tests/install/test_render.py fails when they differ from these.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
chart=$here/daypass

rm -f "$chart"/crds/*.yaml "$chart"/files/admission/*.yaml
cp "$root"/crds/*.yaml "$chart/crds/"
cp "$root"/deploy/admission/*.yaml "$chart/files/admission/"
cp "$root"/deploy/user-rbac.yaml "$chart/files/user-rbac.yaml"
echo "synced $chart from crds/ and deploy/"
