-- Each topic's valid records split three ways: on time (joined or counted), late (at or
-- behind the watermark) and out of range (an event time outside the decode bounds, which
-- sources.sql kept from moving the watermark; for content and captions only a time too far
-- ahead: their compacted topics keep a pin's latest version however old it is). Valid: every field the topic's event model
-- requires is present, every field has its JSON type (`json_ok`, sources.sql), a Literal
-- field holds one of its values and a number lies within the
-- bounds its annotation narrows (streams/enrich/ddl.py renders `valid_<topic>` from the
-- model); anything else is refused by the shared decode step where the raw
-- topic is sunk, so it is not dead-lettered a second time here. Clock records only move
-- the watermark.
-- Watermarks travel behind the rows, so the watermark a row sees here bounds the one every
-- downstream operator sees when the row reaches it: an on-time row is never dropped by a
-- window nor joined against versions already cleaned up.
-- Out-of-range and late records go to the topic's DLQ. Late content and caption versions
-- ALSO go on, to the late versioned tables (features.sql): they apply to impressions after
-- the watermark they met (`seen_watermark`), and their dead letter says which impressions
-- were enriched without them.

CREATE TEMPORARY VIEW events_marked AS
SELECT *,
  ${raw_time} IS NOT NULL AND rt = TO_TIMESTAMP_LTZ(0, 3) AS out_of_range,
  CURRENT_WATERMARK(rt) IS NOT NULL AND rt <= CURRENT_WATERMARK(rt) AS is_late,
  CURRENT_WATERMARK(rt) AS seen_watermark
FROM events_typed;

CREATE TEMPORARY VIEW impressions_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'impressions' AND json_ok
  AND ${valid_impressions};

CREATE TEMPORARY VIEW pin_content_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'pin_content' AND json_ok
  AND ${valid_pin_content};

CREATE TEMPORARY VIEW pin_captions_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'pin_captions' AND json_ok
  AND ${valid_pin_captions};

CREATE TEMPORARY VIEW board_saves_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'board_saves' AND json_ok
  AND ${valid_board_saves};

CREATE TEMPORARY VIEW engagements_valid AS
SELECT * FROM events_marked
WHERE kafka_topic = 'engagements' AND json_ok
  AND ${valid_engagements};

CREATE TEMPORARY VIEW impressions_on_time AS
SELECT * FROM impressions_valid WHERE NOT out_of_range AND NOT is_late;
CREATE TEMPORARY VIEW pin_content_on_time AS
SELECT * FROM pin_content_valid WHERE NOT out_of_range AND NOT is_late;
CREATE TEMPORARY VIEW pin_content_late AS
SELECT * FROM pin_content_valid WHERE NOT out_of_range AND is_late;
CREATE TEMPORARY VIEW pin_captions_on_time AS
SELECT * FROM pin_captions_valid WHERE NOT out_of_range AND NOT is_late;
CREATE TEMPORARY VIEW pin_captions_late AS
SELECT * FROM pin_captions_valid WHERE NOT out_of_range AND is_late;
CREATE TEMPORARY VIEW board_saves_on_time AS
SELECT * FROM board_saves_valid WHERE NOT out_of_range AND NOT is_late;
CREATE TEMPORARY VIEW engagements_on_time AS
SELECT * FROM engagements_valid WHERE NOT out_of_range AND NOT is_late;

-- What each topic's DLQ receives (inserts.sql gives the reason and detail).
CREATE TEMPORARY VIEW impressions_refused AS
SELECT * FROM impressions_valid WHERE out_of_range OR is_late;
CREATE TEMPORARY VIEW pin_content_refused AS
SELECT * FROM pin_content_valid WHERE out_of_range OR is_late;
CREATE TEMPORARY VIEW pin_captions_refused AS
SELECT * FROM pin_captions_valid WHERE out_of_range OR is_late;
CREATE TEMPORARY VIEW board_saves_refused AS
SELECT * FROM board_saves_valid WHERE out_of_range OR is_late;
CREATE TEMPORARY VIEW engagements_refused AS
SELECT * FROM engagements_valid WHERE out_of_range OR is_late;
