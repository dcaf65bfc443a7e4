-- The features of every pin as one versioned table, so each impression needs one
-- event-time temporal join. Four kinds of change feed it: content records, caption records,
-- and the per-window top board titles / top queries computed below.

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

-- Every change of a pin, one kind per row (the others null), with its event time.
CREATE TEMPORARY VIEW pin_changes AS
SELECT pin_id, rt,
  CAST(ROW(title, description, link_title, link_description, updated_at) AS ${content_row})
    AS content,
  CAST(NULL AS ${caption_row}) AS caption,
  CAST(NULL AS ${window_row}) AS boards,
  CAST(NULL AS ${window_row}) AS queries
FROM pin_content_on_time
UNION ALL
SELECT pin_id, rt, CAST(NULL AS ${content_row}),
  CAST(ROW(caption, created_at) AS ${caption_row}),
  CAST(NULL AS ${window_row}), CAST(NULL AS ${window_row})
FROM pin_captions_on_time
UNION ALL
SELECT pin_id, window_time, CAST(NULL AS ${content_row}), CAST(NULL AS ${caption_row}),
  CAST(ROW(board_titles, window_end, window_time) AS ${window_row}),
  CAST(NULL AS ${window_row})
FROM board_titles_per_window
UNION ALL
SELECT pin_id, window_time, CAST(NULL AS ${content_row}), CAST(NULL AS ${caption_row}),
  CAST(NULL AS ${window_row}),
  CAST(ROW(top_queries, window_end, window_time) AS ${window_row})
FROM queries_per_window;

-- After each change, the pin's latest value of every kind (LAST_VALUE skips the nulls of
-- the other kinds). The OVER window sorts by event time first, so a version that arrives
-- out of order but on time still lands in its place.
CREATE TEMPORARY VIEW pin_states AS
SELECT pin_id, rt,
  LAST_VALUE(content) OVER w AS content,
  LAST_VALUE(caption) OVER w AS caption,
  LAST_VALUE(boards) OVER w AS boards,
  LAST_VALUE(queries) OVER w AS queries
FROM pin_changes
WINDOW w AS (PARTITION BY pin_id ORDER BY rt ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- The versioned table: one version per change, keyed by pin (at equal times the later
-- arrival wins).
CREATE TEMPORARY VIEW pin_features AS
SELECT pin_id, rt, content, caption, boards, queries
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY pin_id ORDER BY rt DESC) AS version_rank
  FROM pin_states
)
WHERE version_rank = 1;
