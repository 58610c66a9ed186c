#!/usr/bin/env bash
# Launches a job from the flex template built by build.sh.
#   PROJECT=my-project REGION=europe-west1 TEMPLATE=gs://.../x.json \
#   INPUT_SUBSCRIPTION=projects/my-project/subscriptions/events \
#   HOT_SINK=bigquery:my-project.analytics COLD_PATH=gs://my-bucket/cold \
#   templates/launch.sh [extra --parameters entries, e.g. allowed_lateness=7200]
# Secrets (Redis passwords, API keys) never go in parameters: give the workers
# a service account that reads them from Secret Manager.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${TEMPLATE:?set TEMPLATE}"
: "${HOT_SINK:?set HOT_SINK}" "${COLD_PATH:?set COLD_PATH}"
PARAMETERS="hot_sink=${HOT_SINK},cold_path=${COLD_PATH}"
if [[ -n "${INPUT_SUBSCRIPTION:-}" ]]; then
  PARAMETERS="${PARAMETERS},input_subscription=${INPUT_SUBSCRIPTION}"
elif [[ -n "${INPUT:-}" ]]; then
  PARAMETERS="${PARAMETERS},input=${INPUT}"
else
  echo "set INPUT_SUBSCRIPTION (streaming) or INPUT (a gs:// file pattern)" >&2
  exit 2
fi
for extra in "$@"; do PARAMETERS="${PARAMETERS},${extra}"; done

gcloud dataflow flex-template run "beam-realtime-analytics-$(date -u +%Y%m%d-%H%M%S)" \
  --project "$PROJECT" --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE" \
  --enable-streaming-engine \
  --max-workers "${MAX_WORKERS:-10}" \
  --parameters "$PARAMETERS"
