-- The features of every pin as versioned tables, each joined by every impression with an
-- event-time temporal join (inserts.sql):
-- - content and captions: every version, passed on in ARRIVAL order (a processing-time
--   deduplication emits each one); the temporal join keeps a pin's versions sorted by
--   event time itself, so a version that arrives out of order (but on time) lands in its
--   place. Late versions form their own tables, carrying the watermark they met.
-- - board titles and top queries: the per-window top K computed below, merged into one
--   table (a window row always arrives on time: it is emitted when its window closes).
-- Keeping content and captions apart (not merged per pin) is what makes a state TTL safe:
-- forgetting one kind of a quiet pin can never blank out the other.

-- Top board titles: saves per (pin, board title) over hopping windows (size
-- top_boards_window_days, slide top_boards_slide_hours, aligned to the epoch in UTC), the
-- top K titles of each window (most saves first, then title), and one row per (pin,
-- window) whose time is the window's last millisecond (window_time = window end - 1 ms):
-- from then on it is the pin's current window. Only windows with saves produce a row.

CREATE TEMPORARY VIEW board_title_counts AS
SELECT pin_id, board_title, window_start, window_end, window_time, COUNT(*) AS saves
FROM TABLE(HOP(TABLE board_saves_on_time, DESCRIPTOR(rt), ${boards_slide}, ${boards_size}))
GROUP BY pin_id, board_title, window_start, window_end, window_time;

CREATE TEMPORARY VIEW board_title_ranks AS
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY pin_id, window_start, window_end ORDER BY saves DESC, board_title ASC
  ) AS title_rank
  FROM board_title_counts
)
WHERE title_rank <= ${boards_k};

CREATE TEMPORARY VIEW board_titles_per_window AS
SELECT pin_id, window_start, window_end, window_time,
  ARRAY_REMOVE(ARRAY[${boards_by_rank}], CAST(NULL AS STRING)) AS board_titles
FROM board_title_ranks
GROUP BY pin_id, window_start, window_end, window_time;


-- Top queries: the same pipeline over engagements (every action counts once).

CREATE TEMPORARY VIEW query_counts AS
SELECT pin_id, `query`, window_start, window_end, window_time, COUNT(*) AS engagements
FROM TABLE(HOP(TABLE engagements_on_time, DESCRIPTOR(rt), ${queries_slide}, ${queries_size}))
GROUP BY pin_id, `query`, window_start, window_end, window_time;

CREATE TEMPORARY VIEW query_ranks AS
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY pin_id, window_start, window_end ORDER BY engagements DESC, `query` ASC
  ) AS query_rank
  FROM query_counts
)
WHERE query_rank <= ${queries_k};

CREATE TEMPORARY VIEW queries_per_window AS
SELECT pin_id, window_start, window_end, window_time,
  ARRAY_REMOVE(ARRAY[${queries_by_rank}], CAST(NULL AS STRING)) AS top_queries
FROM query_ranks
GROUP BY pin_id, window_start, window_end, window_time;

-- Content and caption versions, on time and late, each a versioned table keyed by pin.
CREATE TEMPORARY VIEW content_versions AS
SELECT pin_id, rt,
  CAST(ROW(title, description, link_title, link_description, updated_at) AS ${content_row})
    AS content
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY pin_id ORDER BY arrival DESC) AS arrival_rank
  FROM pin_content_on_time
)
WHERE arrival_rank = 1;

CREATE TEMPORARY VIEW content_late_versions AS
SELECT pin_id, rt, seen_watermark,
  CAST(ROW(title, description, link_title, link_description, updated_at) AS ${content_row})
    AS content
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY pin_id ORDER BY arrival DESC) AS arrival_rank
  FROM pin_content_late
)
WHERE arrival_rank = 1;

CREATE TEMPORARY VIEW caption_versions AS
SELECT pin_id, rt, CAST(ROW(caption, created_at) AS ${caption_row}) AS caption
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY pin_id ORDER BY arrival DESC) AS arrival_rank
  FROM pin_captions_on_time
)
WHERE arrival_rank = 1;

CREATE TEMPORARY VIEW caption_late_versions AS
SELECT pin_id, rt, seen_watermark, CAST(ROW(caption, created_at) AS ${caption_row}) AS caption
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY pin_id ORDER BY arrival DESC) AS arrival_rank
  FROM pin_captions_late
)
WHERE arrival_rank = 1;

-- Every new window of a pin, one kind per row (the other null), with its event time.
CREATE TEMPORARY VIEW window_changes AS
SELECT pin_id, window_time AS rt,
  CAST(ROW(board_titles, window_end, window_time) AS ${window_row}) AS boards,
  CAST(NULL AS ${window_row}) AS queries
FROM board_titles_per_window
UNION ALL
SELECT pin_id, window_time, CAST(NULL AS ${window_row}),
  CAST(ROW(top_queries, window_end, window_time) AS ${window_row})
FROM queries_per_window;

-- After each new window, the pin's latest of both kinds (LAST_VALUE skips the nulls of the
-- other kind), in event-time order.
CREATE TEMPORARY VIEW window_states AS
SELECT pin_id, rt,
  LAST_VALUE(boards) OVER w AS boards,
  LAST_VALUE(queries) OVER w AS queries
FROM window_changes
WINDOW w AS (PARTITION BY pin_id ORDER BY rt ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- The versioned table of windows: one version per new window, keyed by pin.
CREATE TEMPORARY VIEW window_versions AS
SELECT pin_id, rt, boards, queries
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY pin_id ORDER BY rt DESC) AS version_rank
  FROM window_states
)
WHERE version_rank = 1;
