-- Tables and derived views of the catalog. They read only the base views `spans` and `feedback`
-- and the table macro `spans_between(lo, hi)` (which store.catalog creates over the lake), so
-- the same SQL runs over any backend that provides those. Keep it portable (it is transpiled
-- to ClickHouse with sqlglot): standard joins, CASE, COALESCE, window functions; ASOF LEFT JOIN
-- (DuckDB and ClickHouse both have it); table macros over a named relation (`query_table`)
-- become ClickHouse parameterized views.
-- Statements are separated by a line holding only ";".

-- Versioned prices, USD per million tokens. A cache price that is NULL falls back to the
-- input price.
CREATE TABLE prices (
    model VARCHAR NOT NULL,
    effective_from TIMESTAMP WITH TIME ZONE NOT NULL,
    input_usd_per_mtok DOUBLE NOT NULL,
    output_usd_per_mtok DOUBLE NOT NULL,
    cache_read_usd_per_mtok DOUBLE,
    cache_write_usd_per_mtok DOUBLE
)
;
-- Which price row a model name seen in the data uses (filled by the analytics layer): NULL for
-- a name that matches no price. A call whose model has no price has no computed cost.
CREATE TABLE price_models (
    model VARCHAR PRIMARY KEY,
    price_model VARCHAR
)
;
-- Operations whose spans are model calls (filled from store.schema.LLM_OPERATIONS).
CREATE TABLE llm_operations (
    operation VARCHAR PRIMARY KEY
)
;
-- Model calls among the span rows of the relation named `src` (a table, view or common table
-- expression), with the model that answered, TPOT and cost. The price used is the latest row
-- of the call's price model whose effective_from <= start_time; a span that carries its own
-- cost_usd keeps it (as reported_cost_usd; the computed parts are then NULL). The computed
-- cost splits into input (uncached), cache-read, cache-write and output parts; a call that
-- reports tokens but has no price is `unpriced`.
CREATE MACRO llm_calls_of(src) AS TABLE
WITH calls AS (
    SELECT
        s.*,
        COALESCE(s.response_model, s.request_model) AS model
    FROM query_table(src) AS s
    WHERE s.operation IN (SELECT o.operation FROM llm_operations AS o)
),
mapped AS (
    SELECT
        c.*,
        pm.price_model
    FROM calls AS c
    LEFT JOIN price_models AS pm ON pm.model = c.model
),
costed AS (
    SELECT
        m.*,
        CASE
            WHEN m.ttft_ms IS NOT NULL AND m.output_tokens >= 2
            THEN (m.duration_ms - m.ttft_ms) / (m.output_tokens - 1)
        END AS tpot_ms,
        CASE
            WHEN p.model IS NOT NULL AND (m.input_tokens IS NOT NULL OR m.output_tokens IS NOT NULL)
            THEN (
                GREATEST(
                    COALESCE(m.input_tokens, 0)
                    - COALESCE(m.cache_read_tokens, 0)
                    - COALESCE(m.cache_write_tokens, 0),
                    0
                ) * p.input_usd_per_mtok
                + COALESCE(m.cache_read_tokens, 0)
                * COALESCE(p.cache_read_usd_per_mtok, p.input_usd_per_mtok)
                + COALESCE(m.cache_write_tokens, 0)
                * COALESCE(p.cache_write_usd_per_mtok, p.input_usd_per_mtok)
                + COALESCE(m.output_tokens, 0) * p.output_usd_per_mtok
            ) / 1000000.0
        END AS computed_cost_usd,
        p.input_usd_per_mtok,
        p.output_usd_per_mtok,
        p.cache_read_usd_per_mtok,
        p.cache_write_usd_per_mtok
    FROM mapped AS m
    ASOF LEFT JOIN prices AS p
        ON p.model = m.price_model AND m.start_time >= p.effective_from
)
SELECT
    c.*,
    COALESCE(c.cost_usd, c.computed_cost_usd) AS total_cost_usd,
    CASE WHEN c.cost_usd IS NULL AND c.computed_cost_usd IS NOT NULL THEN
        GREATEST(
            COALESCE(c.input_tokens, 0)
            - COALESCE(c.cache_read_tokens, 0)
            - COALESCE(c.cache_write_tokens, 0),
            0
        ) * c.input_usd_per_mtok / 1e6
    END AS input_cost_usd,
    CASE WHEN c.cost_usd IS NULL AND c.computed_cost_usd IS NOT NULL THEN
        COALESCE(c.cache_read_tokens, 0)
        * COALESCE(c.cache_read_usd_per_mtok, c.input_usd_per_mtok) / 1e6
    END AS cache_read_cost_usd,
    CASE WHEN c.cost_usd IS NULL AND c.computed_cost_usd IS NOT NULL THEN
        COALESCE(c.cache_write_tokens, 0)
        * COALESCE(c.cache_write_usd_per_mtok, c.input_usd_per_mtok) / 1e6
    END AS cache_write_cost_usd,
    CASE WHEN c.cost_usd IS NULL AND c.computed_cost_usd IS NOT NULL THEN
        COALESCE(c.output_tokens, 0) * c.output_usd_per_mtok / 1e6
    END AS output_cost_usd,
    c.cost_usd AS reported_cost_usd,
    COALESCE(c.cost_usd, c.computed_cost_usd) IS NULL
        AND (c.input_tokens IS NOT NULL OR c.output_tokens IS NOT NULL) AS unpriced
FROM costed AS c
;
CREATE VIEW llm_calls AS
SELECT * FROM llm_calls_of('spans')
;
-- Requests are built in two steps, so that the first can be kept (store.derived keeps it for
-- every lake segment) and only the second runs per query:
--
-- 1. `trace_parts_of(src)`: one row per (project, trace_id, hour) over the span rows of the
--    relation `src`, holding what can be merged: first start, last end, span count, error
--    flag, the first user and session with the time they were first seen, the root candidate
--    (name, service, status, duration) with its rank, and the model calls' counts, tokens,
--    cost and models.
-- 2. `traces_from_parts(parts)`: one row per (project, trace_id), merging any set of parts of
--    disjoint span rows. The root is the span without a parent (the earliest one if there are
--    several; within a microsecond, by a hash of the span id); when the root has not arrived, the
--    earliest span stands in for it and duration_ms spans the first start to the last end.
CREATE MACRO trace_parts_of(src) AS TABLE
WITH span_parts AS (
    SELECT
        s.project,
        s.trace_id,
        DATE_TRUNC('hour', s.start_time) AS hour,
        MIN(s.start_time) AS start_time,
        MAX(s.end_time) AS end_time,
        COUNT(*) AS num_spans,
        MAX(CASE WHEN s.status_code = 'ERROR' THEN 1 ELSE 0 END) AS has_error,
        ARG_MIN(s.user_id, s.start_time) FILTER (WHERE s.user_id IS NOT NULL) AS user_id,
        MIN(s.start_time) FILTER (WHERE s.user_id IS NOT NULL) AS user_seen_at,
        ARG_MIN(s.session_id, s.start_time) FILTER (WHERE s.session_id IS NOT NULL) AS session_id,
        MIN(s.start_time) FILTER (WHERE s.session_id IS NOT NULL) AS session_seen_at,
        ARG_MIN(s.name, s.root_rank) AS root_name,
        ARG_MIN(s.service_name, s.root_rank) AS root_service_name,
        ARG_MIN(s.status_code, s.root_rank) AS root_status_code,
        ARG_MIN(
            COALESCE(s.duration_ms, DATE_DIFF('microsecond', s.start_time, s.end_time) / 1000.0),
            s.root_rank
        ) AS root_duration_ms,
        MIN(s.root_rank) AS root_rank
    FROM (
        -- The root candidate's rank, one BIGINT so that parts merge with a scalar ARG_MIN:
        -- bit 62 says "not a root", bits 10-61 hold the start in microseconds (to 2112), the
        -- low 10 bits a hash of the span id (the tie-break).
        SELECT
            r.*,
            (
                ((CASE WHEN COALESCE(r.parent_span_id, '') = '' THEN 0 ELSE 1 END)::BIGINT << 62)
                + (LEAST(GREATEST(EPOCH_NS(r.start_time) // 1000, 0), (1::BIGINT << 52) - 1) << 10)
                + (HASH(r.span_id) & 1023)::BIGINT
            ) AS root_rank
        FROM query_table(src) AS r
    ) AS s
    GROUP BY s.project, s.trace_id, DATE_TRUNC('hour', s.start_time)
),
call_parts AS (
    SELECT
        c.project,
        c.trace_id,
        DATE_TRUNC('hour', c.start_time) AS hour,
        COUNT(*) AS num_llm_calls,
        CAST(SUM(c.input_tokens) AS BIGINT) AS input_tokens,
        CAST(SUM(c.output_tokens) AS BIGINT) AS output_tokens,
        SUM(c.total_cost_usd) AS total_cost_usd,
        LIST_DISTINCT(LIST(c.model) FILTER (WHERE c.model IS NOT NULL)) AS models
    FROM llm_calls_of(src) AS c
    GROUP BY c.project, c.trace_id, DATE_TRUNC('hour', c.start_time)
)
SELECT
    t.*,
    l.num_llm_calls,
    l.input_tokens,
    l.output_tokens,
    l.total_cost_usd,
    l.models
FROM span_parts AS t
LEFT JOIN call_parts AS l
    ON l.project = t.project AND l.trace_id = t.trace_id AND l.hour = t.hour
;
CREATE MACRO traces_from_parts(parts) AS TABLE
WITH merged AS (
    SELECT
        p.project,
        p.trace_id,
        MIN(p.start_time) AS start_time,
        MAX(p.end_time) AS end_time,
        CAST(SUM(p.num_spans) AS BIGINT) AS num_spans,
        MAX(p.has_error) AS has_error,
        ARG_MIN(p.user_id, p.user_seen_at) FILTER (WHERE p.user_id IS NOT NULL) AS user_id,
        ARG_MIN(p.session_id, p.session_seen_at) FILTER (WHERE p.session_id IS NOT NULL)
            AS session_id,
        ARG_MIN(p.root_name, p.root_rank) AS root_name,
        ARG_MIN(p.root_service_name, p.root_rank) AS root_service_name,
        ARG_MIN(p.root_status_code, p.root_rank) AS root_status_code,
        ARG_MIN(p.root_duration_ms, p.root_rank) AS root_duration_ms,
        MIN(p.root_rank) >> 62 = 0 AS has_root,
        CAST(SUM(p.num_llm_calls) AS BIGINT) AS num_llm_calls,
        CAST(SUM(p.input_tokens) AS BIGINT) AS input_tokens,
        CAST(SUM(p.output_tokens) AS BIGINT) AS output_tokens,
        SUM(p.total_cost_usd) AS total_cost_usd,
        LIST_SORT(LIST_DISTINCT(FLATTEN(LIST(p.models) FILTER (WHERE p.models IS NOT NULL))))
            AS models
    FROM query_table(parts) AS p
    GROUP BY p.project, p.trace_id
)
SELECT
    t.project,
    t.trace_id,
    t.root_name AS name,
    t.root_service_name AS service_name,
    t.start_time,
    t.end_time,
    CASE
        WHEN t.has_root THEN t.root_duration_ms
        ELSE DATE_DIFF('microsecond', t.start_time, t.end_time) / 1000.0
    END AS duration_ms,
    t.has_root,
    t.num_spans,
    COALESCE(t.num_llm_calls, 0) AS num_llm_calls,
    COALESCE(t.input_tokens, 0) AS input_tokens,
    COALESCE(t.output_tokens, 0) AS output_tokens,
    CASE WHEN t.num_llm_calls IS NULL THEN 0.0 ELSE t.total_cost_usd END AS total_cost_usd,
    t.has_error = 1 AS has_error,
    t.root_status_code AS status_code,
    t.user_id,
    t.session_id,
    COALESCE(t.models, ARRAY[]::VARCHAR[]) AS models
FROM merged AS t
;
-- One row per (project, trace_id) over the spans that start in [window_start, window_end):
-- `traces_between` lets a scoped query aggregate only the spans near its window instead of
-- grouping the whole lake.
CREATE MACRO traces_between(window_start, window_end) AS TABLE
WITH window_spans AS NOT MATERIALIZED (
    SELECT * FROM spans_between(window_start, window_end)
),
window_parts AS (
    SELECT * FROM trace_parts_of('window_spans')
)
SELECT * FROM traces_from_parts('window_parts')
;
CREATE VIEW traces AS
SELECT * FROM traces_between(TIMESTAMPTZ '-infinity', TIMESTAMPTZ 'infinity')
;
-- One row per (project, session_id) over traces that carry a session.
CREATE VIEW sessions AS
SELECT
    t.project,
    t.session_id,
    MIN(t.start_time) AS start_time,
    MAX(t.end_time) AS end_time,
    DATE_DIFF('microsecond', MIN(t.start_time), MAX(t.end_time)) / 1000.0 AS duration_ms,
    COUNT(*) AS num_traces,
    COUNT(DISTINCT t.user_id) AS num_users,
    ARG_MIN(t.user_id, t.start_time) FILTER (WHERE t.user_id IS NOT NULL) AS user_id,
    CAST(SUM(t.num_llm_calls) AS BIGINT) AS num_llm_calls,
    CAST(SUM(t.input_tokens) AS BIGINT) AS input_tokens,
    CAST(SUM(t.output_tokens) AS BIGINT) AS output_tokens,
    SUM(t.total_cost_usd) AS total_cost_usd,
    MAX(CASE WHEN t.has_error THEN 1 ELSE 0 END) = 1 AS has_error
FROM traces AS t
WHERE t.session_id IS NOT NULL
GROUP BY t.project, t.session_id
;
