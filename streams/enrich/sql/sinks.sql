-- impressions.enriched: an append stream keyed by impression_id (a plain kafka sink with
-- key.fields; upsert-kafka refuses an append stream keyed differently from its input).
-- Its columns are EnrichedImpression's fields (rendered from the model by
-- streams/enrich/ddl.py); times are strings in the producers' exact format (ISO-8601,
-- microseconds, 'Z').

CREATE TEMPORARY TABLE enriched_sink (
${enriched_columns}
) WITH (
${sink_enriched}
);

-- One dead-letter sink per source topic, in streams/dlq.py's DeadLetter JSON, keyed like
-- DeadLetterWriter keys them ("<topic>/<partition>/<offset>").
${dlq_sinks}
