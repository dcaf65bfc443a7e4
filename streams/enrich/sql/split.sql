-- Each topic's records split into valid on-time rows (joined) and valid late rows
-- (dead-lettered). Valid: every field the topic's event model requires is present; anything
-- else is refused by the shared decode step where the raw topic is sunk, so it is not
-- dead-lettered a second time here. Clock records only move the watermark.
-- Late: at or behind the watermark. Watermarks travel behind the rows, so the watermark a
-- row sees here bounds the one every downstream operator sees when the row reaches it: an
-- on-time row is never dropped by a window nor joined against versions already cleaned up.

CREATE TEMPORARY VIEW events_marked AS
SELECT *,
  CURRENT_WATERMARK(rt) IS NOT NULL AND rt <= CURRENT_WATERMARK(rt) AS is_late,
  CURRENT_WATERMARK(rt) AS seen_watermark
FROM events_src;

CREATE TEMPORARY VIEW impressions_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'impressions'
  AND impression_id IS NOT NULL AND request_id IS NOT NULL AND user_id IS NOT NULL
  AND `query` IS NOT NULL AND pin_id IS NOT NULL AND `position` >= 1
  AND country IS NOT NULL AND locale IS NOT NULL AND event_time IS NOT NULL;

CREATE TEMPORARY VIEW pin_content_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'pin_content' AND pin_id IS NOT NULL AND updated_at IS NOT NULL;

CREATE TEMPORARY VIEW pin_captions_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'pin_captions' AND pin_id IS NOT NULL AND caption IS NOT NULL
  AND captioner_version IS NOT NULL AND created_at IS NOT NULL;

CREATE TEMPORARY VIEW board_saves_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'board_saves' AND pin_id IS NOT NULL AND board_id IS NOT NULL
  AND board_title IS NOT NULL AND user_id IS NOT NULL AND event_time IS NOT NULL;

CREATE TEMPORARY VIEW engagements_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'engagements' AND impression_id IS NOT NULL AND `query` IS NOT NULL
  AND pin_id IS NOT NULL AND action IN ('click', 'save', 'closeup', 'long_click')
  AND event_time IS NOT NULL;

CREATE TEMPORARY VIEW impressions_on_time AS SELECT * FROM impressions_valid WHERE NOT is_late;
CREATE TEMPORARY VIEW impressions_late AS SELECT * FROM impressions_valid WHERE is_late;
CREATE TEMPORARY VIEW pin_content_on_time AS SELECT * FROM pin_content_valid WHERE NOT is_late;
CREATE TEMPORARY VIEW pin_content_late AS SELECT * FROM pin_content_valid WHERE is_late;
CREATE TEMPORARY VIEW pin_captions_on_time AS
SELECT * FROM pin_captions_valid WHERE NOT is_late;
CREATE TEMPORARY VIEW pin_captions_late AS SELECT * FROM pin_captions_valid WHERE is_late;
CREATE TEMPORARY VIEW board_saves_on_time AS SELECT * FROM board_saves_valid WHERE NOT is_late;
CREATE TEMPORARY VIEW board_saves_late AS SELECT * FROM board_saves_valid WHERE is_late;
CREATE TEMPORARY VIEW engagements_on_time AS SELECT * FROM engagements_valid WHERE NOT is_late;
CREATE TEMPORARY VIEW engagements_late AS SELECT * FROM engagements_valid WHERE is_late;
