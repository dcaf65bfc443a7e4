-- impressions.enriched: an append stream keyed by impression_id (a plain kafka sink with
-- key.fields; upsert-kafka refuses an append stream keyed differently from its input).
-- Times are strings in the producers' exact format (ISO-8601, microseconds, 'Z').

CREATE TEMPORARY TABLE enriched_sink (
  impression_id STRING,
  request_id STRING,
  user_id STRING,
  `query` STRING,
  pin_id STRING,
  `position` INT,
  country STRING,
  locale STRING,
  event_time STRING,
  title STRING,
  description STRING,
  link_title STRING,
  link_description STRING,
  content_updated_at STRING,
  caption STRING,
  caption_updated_at STRING,
  board_titles ARRAY<STRING>,
  boards_updated_at STRING,
  top_queries ARRAY<STRING>,
  top_queries_updated_at STRING,
  enriched_at STRING
) WITH (
${sink_enriched}
);

-- One dead-letter sink per source topic, in streams/dlq.py's DeadLetter JSON, keyed like
-- DeadLetterWriter keys them ("<topic>/<partition>/<offset>").
${dlq_sinks}
