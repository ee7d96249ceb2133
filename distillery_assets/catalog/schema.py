"""DDL of the catalogue: four tables and the views that answer lineage and usage questions.

Tables
  artifacts        one row per registered file or directory (path relative to data_dir when inside it)
  artifact_inputs  artifact id -> each input it was made from (path, sha256, asset key when known)
  llm_calls        one row per LLM request (cache hits included), as reported by the LLM client;
                   ``attempts`` = the provider calls it took (HTTP retries, length and JSON re-asks; 0 when cached)
  runs             training and evaluation runs: parameters in, metrics out
  llm_batches      provider batches (LLM batch mode): one row when a batch is sent (before anything waits on
                   it) and one when it ends, with its counts by outcome; ``llm_calls.extra`` names the batch ids
                   that answered each request
  spool_applied    ids of the spool lines already committed (bookkeeping of the write-ahead spool, see .spool)
Views
  latest_artifacts the newest row per (asset_key, partition)
  lineage          artifact -> input edges, each input resolved to the artifact row that produced it
Sources: files a person edits (under inputs_dir() / config_dir()) are rows of ``artifacts`` too, with asset
keys ``source:<inputs|config>/<relative path>`` and no inputs of their own: the leaves of every lineage.
  llm_usage        requests ("calls"), cache hits, errors, provider calls and retries, tokens and cost per
                   provider / model / tag
"""

TABLES = """
CREATE SEQUENCE IF NOT EXISTS artifact_id_seq START 1;
CREATE TABLE IF NOT EXISTS artifacts (
    id BIGINT PRIMARY KEY DEFAULT nextval('artifact_id_seq'),
    asset_key VARCHAR NOT NULL,
    partition VARCHAR,
    path VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    bytes BIGINT NOT NULL,
    files INTEGER NOT NULL,
    record_count BIGINT,
    run_id VARCHAR,
    created_at TIMESTAMP NOT NULL,
    metadata JSON
);
CREATE TABLE IF NOT EXISTS artifact_inputs (
    artifact_id BIGINT NOT NULL,
    input_path VARCHAR NOT NULL,
    input_sha256 VARCHAR,
    input_asset_key VARCHAR
);
CREATE SEQUENCE IF NOT EXISTS llm_call_id_seq START 1;
CREATE TABLE IF NOT EXISTS llm_calls (
    id BIGINT PRIMARY KEY DEFAULT nextval('llm_call_id_seq'),
    request_key VARCHAR NOT NULL,
    provider VARCHAR,
    model VARCHAR,
    tag VARCHAR,
    ok BOOLEAN,
    error VARCHAR,
    finish_reason VARCHAR,
    input_tokens BIGINT,
    output_tokens BIGINT,
    latency_s DOUBLE,
    cost_usd DOUBLE,
    cached BOOLEAN,
    created_at TIMESTAMP NOT NULL,
    run_id VARCHAR,
    extra JSON,
    attempts INTEGER
);
-- files made before the attempts column: add it (NULL for their rows)
ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS attempts INTEGER;
-- the ids of spool lines (catalog.spool) already committed, by spool file; written in the transaction that
-- commits them, so a spool replayed after a crash never adds a row twice (pruned once the file is gone)
CREATE TABLE IF NOT EXISTS spool_applied (
    id VARCHAR NOT NULL,
    spool VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS llm_batch_row_seq START 1;
CREATE TABLE IF NOT EXISTS llm_batches (
    id BIGINT PRIMARY KEY DEFAULT nextval('llm_batch_row_seq'),
    batch_id VARCHAR NOT NULL,
    event VARCHAR NOT NULL,
    provider VARCHAR,
    model VARCHAR,
    endpoint VARCHAR,
    tag VARCHAR,
    run_id VARCHAR,
    status VARCHAR,
    requests INTEGER,
    succeeded INTEGER,
    errored INTEGER,
    expired INTEGER,
    canceled INTEGER,
    created_at TIMESTAMP NOT NULL,
    extra JSON
);
CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1;
CREATE TABLE IF NOT EXISTS runs (
    id BIGINT PRIMARY KEY DEFAULT nextval('run_id_seq'),
    kind VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    partition VARCHAR,
    run_id VARCHAR,
    params JSON,
    metrics JSON,
    created_at TIMESTAMP NOT NULL
);
"""

VIEWS = """
CREATE OR REPLACE VIEW latest_artifacts AS
SELECT * FROM artifacts
QUALIFY row_number() OVER (PARTITION BY asset_key, coalesce(partition, '') ORDER BY id DESC) = 1;

CREATE OR REPLACE VIEW lineage AS
SELECT a.id AS artifact_id, a.asset_key, a.partition, a.path, a.sha256,
       i.input_path, i.input_sha256,
       coalesce(i.input_asset_key, p.asset_key) AS input_asset_key,
       p.partition AS input_partition,
       p.id AS input_artifact_id
FROM artifacts a
JOIN artifact_inputs i ON i.artifact_id = a.id
LEFT JOIN (
    SELECT path, sha256, max(id) AS id FROM artifacts GROUP BY path, sha256
) producer ON producer.path = i.input_path AND producer.sha256 = i.input_sha256
LEFT JOIN artifacts p ON p.id = producer.id;

CREATE OR REPLACE VIEW llm_usage AS
SELECT provider, model, tag,
       count(*) AS calls,
       count(*) FILTER (WHERE cached) AS cached,
       count(*) FILTER (WHERE NOT ok) AS errors,
       coalesce(sum(attempts) FILTER (WHERE NOT cached), 0) AS provider_calls,
       coalesce(sum(greatest(attempts - 1, 0)) FILTER (WHERE NOT cached), 0) AS retries,
       coalesce(sum(input_tokens) FILTER (WHERE NOT cached), 0) AS input_tokens,
       coalesce(sum(output_tokens) FILTER (WHERE NOT cached), 0) AS output_tokens,
       round(coalesce(sum(cost_usd) FILTER (WHERE NOT cached), 0), 6) AS cost_usd,
       round(avg(latency_s) FILTER (WHERE NOT cached), 3) AS avg_latency_s
FROM llm_calls GROUP BY ALL ORDER BY provider, model, tag;
"""

# Every artefact that went into the newest artefact(s) of one asset, transitively.
# Parameter: the asset key. depth 1 = direct inputs.
LINEAGE_QUERY = """
WITH RECURSIVE walk(depth, artifact_id, asset_key, partition, path, input_path, input_sha256,
                    input_asset_key, input_partition, input_artifact_id) AS (
    SELECT 1, l.artifact_id, l.asset_key, l.partition, l.path, l.input_path, l.input_sha256,
           l.input_asset_key, l.input_partition, l.input_artifact_id
    FROM lineage l JOIN latest_artifacts a ON a.id = l.artifact_id
    WHERE a.asset_key = ?
    UNION
    SELECT w.depth + 1, l.artifact_id, l.asset_key, l.partition, l.path, l.input_path, l.input_sha256,
           l.input_asset_key, l.input_partition, l.input_artifact_id
    FROM walk w JOIN lineage l ON l.artifact_id = w.input_artifact_id
    WHERE w.depth < 64
)
SELECT min(depth) AS depth, asset_key, partition, path, input_asset_key, input_partition, input_path,
       input_sha256
FROM walk
GROUP BY ALL
ORDER BY depth, asset_key, partition, input_asset_key, input_partition, input_path
"""

# The edited files (sources, asset keys "source:...") that lineage reaches, one row per file version, with
# the assets that read it. Parameter: the asset key.
SOURCES_QUERY = f"""
SELECT w.input_asset_key AS source, w.input_path AS path, w.input_sha256 AS sha256, max(s.bytes) AS bytes,
       string_agg(DISTINCT w.asset_key, ', ' ORDER BY w.asset_key) AS read_by
FROM ({LINEAGE_QUERY}) w
LEFT JOIN artifacts s ON s.asset_key = w.input_asset_key AND s.path = w.input_path AND s.sha256 = w.input_sha256
WHERE starts_with(w.input_asset_key, 'source:')
GROUP BY w.input_asset_key, w.input_path, w.input_sha256
ORDER BY source, sha256
"""

# Everything made from one asset's artefacts or one input path, transitively (the reverse of lineage).
# Parameters: the asset key, the stored path.
DERIVED_QUERY = """
WITH RECURSIVE walk(depth, artifact_id, asset_key, partition, path, input_asset_key, input_path) AS (
    SELECT 1, l.artifact_id, l.asset_key, l.partition, l.path, l.input_asset_key, l.input_path
    FROM lineage l
    WHERE l.input_asset_key = ? OR l.input_path = ?
    UNION
    SELECT w.depth + 1, l.artifact_id, l.asset_key, l.partition, l.path, l.input_asset_key, l.input_path
    FROM walk w JOIN lineage l ON l.input_artifact_id = w.artifact_id
    WHERE w.depth < 64
)
SELECT min(depth) AS depth, asset_key, partition, path, input_asset_key, input_path
FROM walk
GROUP BY ALL
ORDER BY depth, asset_key, partition, path, input_path
"""
