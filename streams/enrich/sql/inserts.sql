-- The job: one statement set, so every INSERT below runs as one Flink job.

-- Each on-time impression joined with its pin's features as they were at the impression's
-- time. Content and caption: the newest version at or before it by event time, where a
-- late version (one that met a watermark at or past its own time) counts only for
-- impressions after that watermark; at equal times the later arrival wins, and a late
-- version always arrived after the on-time ones of its time. A windowed feature is only
-- current until the next window closes: if the pin's latest window closed a slide or more
-- before the impression, the pin had no saves (engagements) in the newest closed window,
-- so the feature is null, and so is its time. `impression_fields`: every field of the
-- impression's model, passed through (streams/enrich/ddl.py), then the features.
INSERT INTO enriched_sink
SELECT
  ${impression_fields},
  content.title, content.description, content.link_title, content.link_description,
  DATE_FORMAT(content.updated_at, ${ts_format}),
  caption.caption,
  DATE_FORMAT(caption.created_at, ${ts_format}),
  CASE WHEN rt < boards.valid_from + ${boards_slide} THEN boards.top END,
  CASE WHEN rt < boards.valid_from + ${boards_slide}
    THEN DATE_FORMAT(boards.window_end, ${ts_format}) END,
  CASE WHEN rt < queries.valid_from + ${queries_slide} THEN queries.top END,
  CASE WHEN rt < queries.valid_from + ${queries_slide}
    THEN DATE_FORMAT(queries.window_end, ${ts_format}) END,
  DATE_FORMAT(CURRENT_TIMESTAMP, ${ts_format})
FROM (
  SELECT
    ${impression_fields_of_i}, i.rt,
    CASE WHEN lc.pin_id IS NOT NULL AND lc.seen_watermark < i.rt
        AND (c.pin_id IS NULL OR lc.rt >= c.rt)
      THEN lc.content ELSE c.content END AS content,
    CASE WHEN lp.pin_id IS NOT NULL AND lp.seen_watermark < i.rt
        AND (p.pin_id IS NULL OR lp.rt >= p.rt)
      THEN lp.caption ELSE p.caption END AS caption,
    w.boards, w.queries
  FROM impressions_on_time AS i
  LEFT JOIN content_versions FOR SYSTEM_TIME AS OF i.rt AS c ON i.pin_id = c.pin_id
  LEFT JOIN content_late_versions FOR SYSTEM_TIME AS OF i.rt AS lc ON i.pin_id = lc.pin_id
  LEFT JOIN caption_versions FOR SYSTEM_TIME AS OF i.rt AS p ON i.pin_id = p.pin_id
  LEFT JOIN caption_late_versions FOR SYSTEM_TIME AS OF i.rt AS lp ON i.pin_id = lp.pin_id
  LEFT JOIN window_versions FOR SYSTEM_TIME AS OF i.rt AS w ON i.pin_id = w.pin_id
);

-- Refused records of every topic, dead-lettered with reason late_event or
-- event_time_out_of_range (a late content or caption version is ALSO applied from the
-- watermark it met on; its detail says so). value_b64 is the record as Flink parsed it,
-- re-serialized as JSON (every field of the topic's model, rendered from it by
-- streams/enrich/ddl.py; same values, keys sorted).
INSERT INTO impressions_dlq
SELECT ${dlq_head_impressions},
  TO_BASE64(${dlq_value_impressions}),
  ${dlq_tail}
FROM impressions_refused;

INSERT INTO pin_content_dlq
SELECT ${dlq_head_pin_content},
  TO_BASE64(${dlq_value_pin_content}),
  ${dlq_tail}
FROM pin_content_refused;

INSERT INTO pin_captions_dlq
SELECT ${dlq_head_pin_captions},
  TO_BASE64(${dlq_value_pin_captions}),
  ${dlq_tail}
FROM pin_captions_refused;

INSERT INTO board_saves_dlq
SELECT ${dlq_head_board_saves},
  TO_BASE64(${dlq_value_board_saves}),
  ${dlq_tail}
FROM board_saves_refused;

INSERT INTO engagements_dlq
SELECT ${dlq_head_engagements},
  TO_BASE64(${dlq_value_engagements}),
  ${dlq_tail}
FROM engagements_refused;
