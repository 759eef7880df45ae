#!/usr/bin/env bash
# Creates a realistic zhiyun dataset in the three servers the app uses:
#   PostgreSQL  database $ZHIYUN_DB (default zhiyun): customers, conversations, messages,
#               knowledge documents (connection from the usual PG* variables)
#   Qdrant      collection `knowledge` at $QDRANT_URL, one point per knowledge document
#   MinIO / S3  uploaded files in bucket $S3_BUCKET at $S3_ENDPOINT (AWS_ACCESS_KEY_ID,
#               AWS_SECRET_ACCESS_KEY, AWS_REGION), skipped when S3_BUCKET is empty
# Size: ZHIYUN_MESSAGES messages (default 200000, ~40 MB of dump), ZHIYUN_FILES files.
#
#   PGHOST=127.0.0.1 PGUSER=postgres PGPASSWORD=… QDRANT_URL=http://127.0.0.1:6333 \
#   S3_ENDPOINT=http://127.0.0.1:9000 S3_BUCKET=zhiyun AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… \
#   bash examples/zhiyun/make-dataset.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
DB="${ZHIYUN_DB:-zhiyun}"
MESSAGES="${ZHIYUN_MESSAGES:-200000}"
FILES="${ZHIYUN_FILES:-40}"
QDRANT_URL="${QDRANT_URL:-http://127.0.0.1:6333}"
CONVERSATIONS=$(( MESSAGES / 8 > 0 ? MESSAGES / 8 : 1 ))
CUSTOMERS=$(( CONVERSATIONS / 2 > 0 ? CONVERSATIONS / 2 : 1 ))
DOCS="${ZHIYUN_DOCS:-300}"
say() { printf '[zhiyun-dataset] %s\n' "$*" >&2; }

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$DB\"" 2>/dev/null || say "database $DB exists; adding to it"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$here/schema.sql"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" <<SQL
INSERT INTO customers (name, phone, channel, created_at)
SELECT 'customer ' || i, '1' || lpad((13800000000 + i)::text, 10, '0'),
       (ARRAY['wechat', 'web', 'app', 'phone'])[1 + i % 4],
       timestamptz '2026-01-01' + i * interval '7 minutes'
FROM generate_series(1, $CUSTOMERS) i;
INSERT INTO conversations (customer_id, title, status, message_count, created_at)
SELECT 1 + (i * 7919) % $CUSTOMERS, 'order question #' || i,
       (ARRAY['open', 'closed', 'closed', 'closed'])[1 + i % 4], 0,
       timestamptz '2026-01-01' + i * interval '3 minutes'
FROM generate_series(1, $CONVERSATIONS) i;
INSERT INTO messages (conversation_id, sender, body, attachment, created_at)
SELECT 1 + i % $CONVERSATIONS,
       (ARRAY['customer', 'agent', 'bot'])[1 + i % 3],
       'message ' || i || ': ' || (ARRAY['when will my order ship?', 'your parcel left the warehouse today', 'please send a photo of the damaged item', 'refund approved, 3-5 working days', 'how do I change the delivery address?'])[1 + i % 5] || ' ' || md5(i::text),
       CASE WHEN i % 50 = 0 THEN 'uploads/' || (i / 50) % $FILES || '.jpg' END,
       timestamptz '2026-01-01' + i * interval '20 seconds'
FROM generate_series(1, $MESSAGES) i;
UPDATE conversations c SET message_count = m.n FROM (SELECT conversation_id, count(*) n FROM messages GROUP BY 1) m WHERE m.conversation_id = c.id;
INSERT INTO knowledge_documents (title, content, vector_id, updated_at)
SELECT 'FAQ ' || i, repeat('Answer to frequently asked question ' || i || '. ', 20), i,
       timestamptz '2026-01-01' + i * interval '1 hour'
FROM generate_series(1, $DOCS) i;
ANALYZE;
SQL
say "PostgreSQL: $CUSTOMERS customers, $CONVERSATIONS conversations, $MESSAGES messages, $DOCS documents in $DB"

# Qdrant: the knowledge collection, an 8-dimensional embedding per document.
curl -fsS -X DELETE "$QDRANT_URL/collections/knowledge" >/dev/null || true
curl -fsS -X PUT "$QDRANT_URL/collections/knowledge" -H 'content-type: application/json' \
    -d '{"vectors": {"size": 8, "distance": "Cosine"}}' >/dev/null
psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" -c "
SELECT json_build_object('points', json_agg(json_build_object(
    'id', vector_id,
    'vector', ARRAY[sin(vector_id), cos(vector_id), sin(2*vector_id), cos(2*vector_id), sin(3*vector_id), cos(3*vector_id), 0.5, 0.25],
    'payload', json_build_object('document_id', id, 'title', title))))
FROM knowledge_documents" |
    curl -fsS -X PUT "$QDRANT_URL/collections/knowledge/points?wait=true" -H 'content-type: application/json' -d @- >/dev/null
say "Qdrant: collection knowledge with $DOCS points"

# MinIO: uploaded attachments, signed with SigV4 by curl.
if [ -n "${S3_BUCKET:-}" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # put FILE KEY: a signed PUT (S3 wants the payload's SHA-256 in x-amz-content-sha256).
    put() {
        curl -fsS --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
            --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
            -H "x-amz-content-sha256: $(sha256sum "$1" | cut -d' ' -f1)" \
            -T "$1" "$S3_ENDPOINT/$S3_BUCKET/$2"
    }
    for i in $(seq 0 $(( FILES - 1 ))); do
        head -c $(( 20000 + (i * 7919) % 200000 )) /dev/urandom > "$tmp/f"
        put "$tmp/f" "uploads/$i.jpg"
    done
    printf 'zhiyun files\n' > "$tmp/f"
    put "$tmp/f" README.txt
    say "MinIO: $(( FILES + 1 )) objects in bucket $S3_BUCKET"
fi
