-- One source table reads every input topic plus the clock topic, so the whole job runs on
-- ONE watermark: the minimum over all active partitions of their newest event time, minus
-- watermark_delay + allowed_lateness (see docs/enrichment.md). Windows, versioned tables,
-- joins and the late-record check below all see that same event-time clock, and a topic
-- that falls idle (table.exec.source.idle-timeout) stops holding it back.
-- The value is read as text (`payload`); the view `events_typed` below types every field
-- from it, the union of the five event models' fields (streams/enrich/ddl.py renders them
-- from schemas/; a field a topic lacks reads as null), and `json_ok` says whether each field
-- has its JSON type, so `"position": "3"` is refused as the decode step refuses it, where
-- Flink's JSON format would coerce it.
-- `rt` is the topic's event time at Flink's millisecond precision, when that time lies
-- within the shared decode bounds around the wall clock (decode.max_future_s ahead,
-- decode.max_age_days behind). A record without a time, or with one out of those bounds
-- (year 2099, 1970), gets the epoch instead: the watermark is a running maximum, so such a
-- record never moves it, and split.sql sends it to the DLQ by its raw time. The bound must
-- be applied HERE: the watermark is generated from `rt` inside the source, before any
-- WHERE clause runs. Content and caption versions have no age bound, only the future one:
-- their topics are compacted (the latest version of a pin is kept forever), so a pin's
-- surviving version may be years old and must still apply to the pin's new impressions
-- (an old time never moves the watermark either).
-- `arrival` (processing time) orders the versioned tables by arrival: every version is
-- passed on, and the temporal join sorts them by event time itself.
-- Records are read from the earliest offset (a fresh deploy rebuilds every versioned table
-- from what the topics still hold: every pin's latest content and caption, kept by
-- compaction, and the windowed inputs, kept for their window); a restore from a savepoint
-- resumes from its offsets instead.

CREATE TEMPORARY TABLE events_src (
  kafka_key STRING,
  payload STRING,
  kafka_topic STRING METADATA FROM 'topic' VIRTUAL,
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  rt AS CASE
    WHEN CAST(${source_time} AS TIMESTAMP_LTZ(3)) <= CURRENT_TIMESTAMP + ${max_future}
      AND (kafka_topic IN (${version_topics})
        OR CAST(${source_time} AS TIMESTAMP_LTZ(3)) >= CURRENT_TIMESTAMP - ${max_age})
    THEN CAST(${source_time} AS TIMESTAMP_LTZ(3))
    ELSE TO_TIMESTAMP_LTZ(0, 3)
  END,
  arrival AS PROCTIME(),
  WATERMARK FOR rt AS rt - ${watermark_hold}
) WITH (
${source_events}
);

-- Every field typed from the record's JSON text, and whether each has its JSON type.
CREATE TEMPORARY VIEW events_typed AS
SELECT kafka_key,
${typed_columns}
  kafka_topic, kafka_partition, kafka_offset, rt, arrival,
  ${json_types} AS json_ok
FROM events_src;
