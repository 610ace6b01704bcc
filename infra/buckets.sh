#!/usr/bin/env bash
# Buckets a deployment needs: one for scans (read), one for the Parquet corpus (write).
# Uses the standard AWS chain; set AWS_ENDPOINT_URL for an S3-compatible store (MinIO, Ceph, R2...).
#   infra/buckets.sh my-scans my-corpus
set -euo pipefail
scans=${1:?scans bucket}; corpus=${2:?corpus bucket}
for b in "$scans" "$corpus"; do
  aws s3api head-bucket --bucket "$b" 2>/dev/null || aws s3api create-bucket --bucket "$b"
done
aws s3api put-bucket-versioning --bucket "$corpus" --versioning-configuration Status=Enabled
# Workers need: s3:ListBucket + s3:GetObject on the scans bucket; s3:ListBucket, s3:GetObject,
# s3:PutObject, s3:DeleteObject (removal of uncommitted parts) on the corpus prefix.
