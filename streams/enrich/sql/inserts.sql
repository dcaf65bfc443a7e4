-- The job: one statement set, so every INSERT below runs as one Flink job.

-- Each on-time impression joined with its pin's features as they were at the impression's
-- time. A windowed feature is only current until the next window closes: if the pin's
-- latest window closed a slide or more before the impression, the pin had no saves
-- (engagements) in the newest closed window, so the feature is null, and so is its time.
INSERT INTO enriched_sink
SELECT
  i.impression_id, i.request_id, i.user_id, i.`query`, i.pin_id, i.`position`, i.country,
  i.locale,
  DATE_FORMAT(i.event_time, ${ts_format}),
  f.content.title, f.content.description, f.content.link_title, f.content.link_description,
  DATE_FORMAT(f.content.updated_at, ${ts_format}),
  f.caption.caption,
  DATE_FORMAT(f.caption.created_at, ${ts_format}),
  CASE WHEN i.rt < f.boards.valid_from + ${boards_slide} THEN f.boards.top END,
  CASE WHEN i.rt < f.boards.valid_from + ${boards_slide}
    THEN DATE_FORMAT(f.boards.window_end, ${ts_format}) END,
  CASE WHEN i.rt < f.queries.valid_from + ${queries_slide} THEN f.queries.top END,
  CASE WHEN i.rt < f.queries.valid_from + ${queries_slide}
    THEN DATE_FORMAT(f.queries.window_end, ${ts_format}) END,
  DATE_FORMAT(CURRENT_TIMESTAMP, ${ts_format})
FROM impressions_on_time AS i
LEFT JOIN pin_features FOR SYSTEM_TIME AS OF i.rt AS f ON i.pin_id = f.pin_id;

-- Late records of every topic, dead-lettered with reason late_event. value_b64 is the
-- record as Flink parsed it, re-serialized as JSON (same fields and values, keys sorted).
INSERT INTO impressions_dlq
SELECT ${dlq_head_impressions},
  TO_BASE64(JSON_OBJECT(
    KEY 'impression_id' VALUE impression_id, KEY 'request_id' VALUE request_id,
    KEY 'user_id' VALUE user_id, KEY 'query' VALUE `query`, KEY 'pin_id' VALUE pin_id,
    KEY 'position' VALUE `position`, KEY 'country' VALUE country, KEY 'locale' VALUE locale,
    KEY 'event_time' VALUE DATE_FORMAT(event_time, ${ts_format}) NULL ON NULL)),
  ${dlq_tail}
FROM impressions_late;

INSERT INTO pin_content_dlq
SELECT ${dlq_head_pin_content},
  TO_BASE64(JSON_OBJECT(
    KEY 'pin_id' VALUE pin_id, KEY 'title' VALUE title, KEY 'description' VALUE description,
    KEY 'link_title' VALUE link_title, KEY 'link_description' VALUE link_description,
    KEY 'updated_at' VALUE DATE_FORMAT(updated_at, ${ts_format}) NULL ON NULL)),
  ${dlq_tail}
FROM pin_content_late;

INSERT INTO pin_captions_dlq
SELECT ${dlq_head_pin_captions},
  TO_BASE64(JSON_OBJECT(
    KEY 'pin_id' VALUE pin_id, KEY 'caption' VALUE caption,
    KEY 'captioner_version' VALUE captioner_version,
    KEY 'created_at' VALUE DATE_FORMAT(created_at, ${ts_format}) NULL ON NULL)),
  ${dlq_tail}
FROM pin_captions_late;

INSERT INTO board_saves_dlq
SELECT ${dlq_head_board_saves},
  TO_BASE64(JSON_OBJECT(
    KEY 'pin_id' VALUE pin_id, KEY 'board_id' VALUE board_id,
    KEY 'board_title' VALUE board_title, KEY 'user_id' VALUE user_id,
    KEY 'event_time' VALUE DATE_FORMAT(event_time, ${ts_format}) NULL ON NULL)),
  ${dlq_tail}
FROM board_saves_late;

INSERT INTO engagements_dlq
SELECT ${dlq_head_engagements},
  TO_BASE64(JSON_OBJECT(
    KEY 'impression_id' VALUE impression_id, KEY 'query' VALUE `query`,
    KEY 'pin_id' VALUE pin_id, KEY 'action' VALUE action,
    KEY 'event_time' VALUE DATE_FORMAT(event_time, ${ts_format}) NULL ON NULL)),
  ${dlq_tail}
FROM engagements_late;
