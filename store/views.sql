-- Tables and derived views of the catalog. They read only the base views `spans` and `feedback`
-- (which store.catalog creates over the lake), so the same SQL runs over any backend that
-- provides those two. Keep it portable (it is transpiled to ClickHouse with sqlglot): standard
-- joins, CASE, COALESCE, window functions; ASOF LEFT JOIN (DuckDB and ClickHouse both have it).
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
-- Which price row a model name seen in the data uses (filled by the analytics layer); a model
-- missing here has no computed cost.
CREATE TABLE price_models (
    model VARCHAR PRIMARY KEY,
    price_model VARCHAR NOT NULL
)
;
-- Operations whose spans are model calls (filled from store.schema.LLM_OPERATIONS).
CREATE TABLE llm_operations (
    operation VARCHAR PRIMARY KEY
)
;
-- Model calls, with the model that answered, TPOT and cost. The price used is the latest row
-- of the call's price model whose effective_from <= start_time; a span that carries its own
-- cost_usd keeps it.
CREATE VIEW llm_calls AS
WITH calls AS (
    SELECT
        s.*,
        COALESCE(s.response_model, s.request_model) AS model
    FROM spans AS s
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
        END AS computed_cost_usd
    FROM mapped AS m
    ASOF LEFT JOIN prices AS p
        ON p.model = m.price_model AND m.start_time >= p.effective_from
)
SELECT
    c.*,
    COALESCE(c.cost_usd, c.computed_cost_usd) AS total_cost_usd
FROM costed AS c
;
-- One row per (project, trace_id) over the spans that start in [window_start, window_end):
-- `traces_between` lets a scoped query aggregate only the spans near its window instead of
-- grouping the whole lake. The root is the span without a parent (the earliest one if there
-- are several); when the root has not arrived, the earliest span stands in for it and
-- duration_ms spans the first start to the last end. One pass over the spans: the root's
-- fields are ARG_MIN over (not a root, start, span id), so no window function is needed.
CREATE MACRO traces_between(window_start, window_end) AS TABLE
WITH span_totals AS (
    SELECT
        s.project,
        s.trace_id,
        MIN(s.start_time) AS start_time,
        MAX(s.end_time) AS end_time,
        COUNT(*) AS num_spans,
        MAX(CASE WHEN s.status_code = 'ERROR' THEN 1 ELSE 0 END) AS has_error,
        ARG_MIN(s.user_id, s.start_time) FILTER (WHERE s.user_id IS NOT NULL) AS user_id,
        ARG_MIN(s.session_id, s.start_time) FILTER (WHERE s.session_id IS NOT NULL) AS session_id,
        ARG_MIN(
            STRUCT_PACK(
                name := s.name,
                service_name := s.service_name,
                status_code := s.status_code,
                start_time := s.start_time,
                end_time := s.end_time,
                duration_ms := s.duration_ms
            ),
            STRUCT_PACK(
                not_root := CASE WHEN COALESCE(s.parent_span_id, '') = '' THEN 0 ELSE 1 END,
                start_time := s.start_time,
                span_id := s.span_id
            )
        ) AS root,
        MIN(CASE WHEN COALESCE(s.parent_span_id, '') = '' THEN 0 ELSE 1 END) = 0 AS has_root
    FROM spans AS s
    WHERE s.start_time >= window_start AND s.start_time < window_end
    GROUP BY s.project, s.trace_id
),
call_totals AS (
    SELECT
        c.project,
        c.trace_id,
        COUNT(*) AS num_llm_calls,
        CAST(SUM(c.input_tokens) AS BIGINT) AS input_tokens,
        CAST(SUM(c.output_tokens) AS BIGINT) AS output_tokens,
        SUM(c.total_cost_usd) AS total_cost_usd,
        LIST_SORT(LIST_DISTINCT(LIST(c.model) FILTER (WHERE c.model IS NOT NULL))) AS models
    FROM llm_calls AS c
    WHERE c.start_time >= window_start AND c.start_time < window_end
    GROUP BY c.project, c.trace_id
)
SELECT
    t.project,
    t.trace_id,
    t.root.name AS name,
    t.root.service_name AS service_name,
    t.start_time,
    t.end_time,
    CASE
        WHEN t.has_root
        THEN COALESCE(
            t.root.duration_ms, DATE_DIFF('microsecond', t.root.start_time, t.root.end_time) / 1000.0
        )
        ELSE DATE_DIFF('microsecond', t.start_time, t.end_time) / 1000.0
    END AS duration_ms,
    t.has_root,
    t.num_spans,
    COALESCE(l.num_llm_calls, 0) AS num_llm_calls,
    COALESCE(l.input_tokens, 0) AS input_tokens,
    COALESCE(l.output_tokens, 0) AS output_tokens,
    CASE WHEN l.num_llm_calls IS NULL THEN 0.0 ELSE l.total_cost_usd END AS total_cost_usd,
    t.has_error = 1 AS has_error,
    t.root.status_code AS status_code,
    t.user_id,
    t.session_id,
    COALESCE(l.models, ARRAY[]::VARCHAR[]) AS models
FROM span_totals AS t
LEFT JOIN call_totals AS l
    ON l.project = t.project AND l.trace_id = t.trace_id
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
