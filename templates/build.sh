#!/usr/bin/env bash
# Builds the image and the flex template spec.
#   PROJECT=my-project REGION=europe-west1 BUCKET=my-bucket templates/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
REPOSITORY="${REPOSITORY:-analytics}"
TAG="${TAG:-$(git rev-parse --short HEAD)}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/beam-realtime-analytics:${TAG}"
TEMPLATE="gs://${BUCKET}/templates/beam-realtime-analytics-${TAG}.json"

gcloud builds submit --project "$PROJECT" --region "$REGION" \
  --config /dev/stdin . <<YAML
steps:
- name: gcr.io/cloud-builders/docker
  args: [build, -f, templates/Dockerfile, -t, "$IMAGE", .]
images: ["$IMAGE"]
YAML

gcloud dataflow flex-template build "$TEMPLATE" \
  --project "$PROJECT" \
  --image "$IMAGE" \
  --sdk-language PYTHON \
  --metadata-file templates/metadata.json

echo "template: $TEMPLATE"
