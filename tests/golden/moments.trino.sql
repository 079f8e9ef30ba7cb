WITH xp_assigned_rows AS (
  SELECT
    member_id AS unit_id,
    variant AS variant,
    CAST(assignment_timestamp AS DATE) AS assignment_date,
    exposed_flag AS exposed
  FROM experiment_assignments
  /* Rows without a unit or a timestamp are counted by the bounds statement and left out; */
  /* units assigned after the as-of date are not in the experiment yet. */
  WHERE
    experiment_id = 'exp''s "quoted" id'
    AND NOT member_id IS NULL
    AND CAST(assignment_timestamp AS DATE) <= CAST('2024-01-14' AS DATE)
), xp_unit_assignments AS (
  /* Several variants iff the smallest and largest differ: no COUNT(DISTINCT), which costs */
  /* two extra aggregations and a join over the assignment rows. */
  SELECT
    unit_id,
    CASE WHEN MIN(variant) = MAX(variant) THEN MIN(variant) END AS variant,
    MIN(variant) IS DISTINCT FROM MAX(variant) AS multi_variant,
    COUNT(*) AS assignment_rows,
    MIN(assignment_date) AS assignment_date,
    MAX(CASE WHEN exposed THEN 1 ELSE 0 END) AS exposed
  FROM xp_assigned_rows
  GROUP BY
    unit_id
), xp_units AS (
  SELECT
    unit_id,
    variant,
    multi_variant,
    assignment_rows,
    assignment_date,
    exposed,
    window_complete,
    window_complete /* In the analysis: one variant, and the whole window observed by the as-of date. */
    AND NOT variant IS NULL AS analysed
  FROM (
    SELECT
      a.*,
      CAST(a.assignment_date + INTERVAL '2' DAY AS DATE) <= CAST('2024-01-14' AS DATE) AS window_complete
    FROM xp_unit_assignments AS a
  ) AS w
), xp_analysed_units AS (
  /* The fact scans' build side: one row per analysed unit. Rows are placed in the windows */
  /* by their day offset from assignment_date. */
  SELECT
    unit_id,
    assignment_date
  FROM xp_units
  WHERE
    analysed
), xp_per_unit_daily AS (
  /* One scan of daily: every metric on this source, pre- and post-period. */
  SELECT
    u.unit_id,
    COUNT(*) AS rows_read__daily,
    SUM(s.watch) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN 0 AND 2) AS watch__value,
    SUM(s.watch) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN -3 AND -1) AS watch__pre,
    COUNT(*) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN -3 AND -1) AS daily__has_history,
    MAX(CASE WHEN s.watch > 0 THEN 1 ELSE 0 END) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN 0 AND 2) AS any_watch__value,
    SUM(s.sessions) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN 0 AND 2) AS watch_per_session__denominator,
    SUM(s.watch) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN 0 AND 2
      AND (
        s.device = 'tv'
      )) AS tv_watch__value,
    SUM(s.watch) FILTER(WHERE
      DATE_DIFF('DAY', DATE_TRUNC('DAY', u.assignment_date), DATE_TRUNC('DAY', CAST(s.date AS DATE))) BETWEEN 0 AND 2) AS capped_watch__value
  FROM xp_analysed_units AS u
  JOIN daily AS s
    ON s.member_id = u.unit_id
  WHERE
    s.date >= CAST('2024-01-07' AS DATE) AND s.date < CAST('2024-01-15' AS DATE)
  GROUP BY
    u.unit_id
), xp_unit_values AS (
  SELECT
    u.variant,
    u.multi_variant,
    u.exposed,
    u.assignment_date,
    u.window_complete,
    u.analysed,
    u.assignment_rows,
    COALESCE(xp_per_unit_daily.rows_read__daily, 0) AS rows_read__daily,
    CASE WHEN u.analysed THEN COALESCE(xp_per_unit_daily.watch__value, 0) END AS watch__value,
    CASE WHEN u.analysed THEN COALESCE(xp_per_unit_daily.watch__pre, 0) END AS watch__pre,
    CASE
      WHEN u.analysed
      THEN CASE WHEN COALESCE(xp_per_unit_daily.daily__has_history, 0) > 0 THEN 1 ELSE 0 END
    END AS daily__has_history,
    CASE WHEN u.analysed THEN COALESCE(xp_per_unit_daily.any_watch__value, 0) END AS any_watch__value,
    CASE
      WHEN u.analysed
      THEN COALESCE(xp_per_unit_daily.watch_per_session__denominator, 0)
    END AS watch_per_session__denominator,
    CASE WHEN u.analysed THEN COALESCE(xp_per_unit_daily.tv_watch__value, 0) END AS tv_watch__value,
    CASE
      WHEN u.analysed
      THEN LEAST(COALESCE(xp_per_unit_daily.capped_watch__value, 0), 25.0)
    END AS capped_watch__value
  FROM xp_units AS u
  LEFT JOIN xp_per_unit_daily
    ON xp_per_unit_daily.unit_id = u.unit_id
), xp_shift AS (
  /* Per-column constants near the mean of the analysed units: sums are taken of */
  /* (x - shift) so that sums of squares keep their precision when a metric's mean is large */
  /* against its spread. The shift is a whole number: for integer-valued columns every */
  /* deviation, product and partial sum below is then an exact integer in float64 (below */
  /* 2**53), so the sums do not depend on the order parallel threads add them in and */
  /* identical inputs give bit-identical results. */
  SELECT
    COALESCE(ROUND(AVG(watch__value)), 0) AS watch__value,
    COALESCE(ROUND(AVG(watch__pre)), 0) AS watch__pre,
    COALESCE(ROUND(AVG(daily__has_history)), 0) AS daily__has_history,
    COALESCE(ROUND(AVG(exposed)), 0) AS exposed,
    COALESCE(ROUND(AVG(any_watch__value)), 0) AS any_watch__value,
    COALESCE(ROUND(AVG(watch_per_session__denominator)), 0) AS watch_per_session__denominator,
    COALESCE(ROUND(AVG(tv_watch__value)), 0) AS tv_watch__value,
    COALESCE(ROUND(AVG(capped_watch__value)), 0) AS capped_watch__value
  FROM xp_unit_values
)
SELECT
  v.variant,
  v.multi_variant,
  v.exposed,
  v.assignment_date,
  v.window_complete,
  v.analysed,
  COUNT(*) AS n,
  SUM(v.assignment_rows) AS assignment_rows,
  SUM(v.rows_read__daily) AS rows_read__daily,
  MIN(xp_shift.watch__value) AS shift__watch__value,
  MIN(xp_shift.watch__pre) AS shift__watch__pre,
  MIN(xp_shift.daily__has_history) AS shift__daily__has_history,
  MIN(xp_shift.exposed) AS shift__exposed,
  MIN(xp_shift.any_watch__value) AS shift__any_watch__value,
  MIN(xp_shift.watch_per_session__denominator) AS shift__watch_per_session__denominator,
  MIN(xp_shift.tv_watch__value) AS shift__tv_watch__value,
  MIN(xp_shift.capped_watch__value) AS shift__capped_watch__value,
  SUM(v.watch__value - xp_shift.watch__value) AS sum__watch__value,
  SUM(v.watch__pre - xp_shift.watch__pre) AS sum__watch__pre,
  SUM(v.daily__has_history - xp_shift.daily__has_history) AS sum__daily__has_history,
  SUM(v.exposed - xp_shift.exposed) AS sum__exposed,
  SUM(v.any_watch__value - xp_shift.any_watch__value) AS sum__any_watch__value,
  SUM(v.watch_per_session__denominator - xp_shift.watch_per_session__denominator) AS sum__watch_per_session__denominator,
  SUM(v.tv_watch__value - xp_shift.tv_watch__value) AS sum__tv_watch__value,
  SUM(v.capped_watch__value - xp_shift.capped_watch__value) AS sum__capped_watch__value,
  SUM(
    (
      v.watch__value - xp_shift.watch__value
    ) * (
      v.watch__value - xp_shift.watch__value
    )
  ) AS prod__watch__value__x__watch__value,
  SUM(
    (
      v.watch__value - xp_shift.watch__value
    ) * (
      v.watch__pre - xp_shift.watch__pre
    )
  ) AS prod__watch__value__x__watch__pre,
  SUM(
    (
      v.watch__value - xp_shift.watch__value
    ) * (
      v.daily__has_history - xp_shift.daily__has_history
    )
  ) AS prod__watch__value__x__daily__has_history,
  SUM(
    (
      v.watch__value - xp_shift.watch__value
    ) * (
      v.exposed - xp_shift.exposed
    )
  ) AS prod__watch__value__x__exposed,
  SUM(
    (
      v.watch__pre - xp_shift.watch__pre
    ) * (
      v.watch__pre - xp_shift.watch__pre
    )
  ) AS prod__watch__pre__x__watch__pre,
  SUM(
    (
      v.watch__pre - xp_shift.watch__pre
    ) * (
      v.daily__has_history - xp_shift.daily__has_history
    )
  ) AS prod__watch__pre__x__daily__has_history,
  SUM((
    v.watch__pre - xp_shift.watch__pre
  ) * (
    v.exposed - xp_shift.exposed
  )) AS prod__watch__pre__x__exposed,
  SUM(
    (
      v.daily__has_history - xp_shift.daily__has_history
    ) * (
      v.daily__has_history - xp_shift.daily__has_history
    )
  ) AS prod__daily__has_history__x__daily__has_history,
  SUM(
    (
      v.daily__has_history - xp_shift.daily__has_history
    ) * (
      v.exposed - xp_shift.exposed
    )
  ) AS prod__daily__has_history__x__exposed,
  SUM((
    v.exposed - xp_shift.exposed
  ) * (
    v.exposed - xp_shift.exposed
  )) AS prod__exposed__x__exposed,
  SUM(
    (
      v.any_watch__value - xp_shift.any_watch__value
    ) * (
      v.any_watch__value - xp_shift.any_watch__value
    )
  ) AS prod__any_watch__value__x__any_watch__value,
  SUM(
    (
      v.any_watch__value - xp_shift.any_watch__value
    ) * (
      v.exposed - xp_shift.exposed
    )
  ) AS prod__any_watch__value__x__exposed,
  SUM(
    (
      v.watch__value - xp_shift.watch__value
    ) * (
      v.watch_per_session__denominator - xp_shift.watch_per_session__denominator
    )
  ) AS prod__watch__value__x__watch_per_session__denominator,
  SUM(
    (
      v.watch_per_session__denominator - xp_shift.watch_per_session__denominator
    ) * (
      v.watch_per_session__denominator - xp_shift.watch_per_session__denominator
    )
  ) AS prod__watch_per_session__denominator__x__watch_per_session__denominator,
  SUM(
    (
      v.watch_per_session__denominator - xp_shift.watch_per_session__denominator
    ) * (
      v.exposed - xp_shift.exposed
    )
  ) AS prod__watch_per_session__denominator__x__exposed,
  SUM(
    (
      v.tv_watch__value - xp_shift.tv_watch__value
    ) * (
      v.tv_watch__value - xp_shift.tv_watch__value
    )
  ) AS prod__tv_watch__value__x__tv_watch__value,
  SUM(
    (
      v.tv_watch__value - xp_shift.tv_watch__value
    ) * (
      v.exposed - xp_shift.exposed
    )
  ) AS prod__tv_watch__value__x__exposed,
  SUM(
    (
      v.capped_watch__value - xp_shift.capped_watch__value
    ) * (
      v.capped_watch__value - xp_shift.capped_watch__value
    )
  ) AS prod__capped_watch__value__x__capped_watch__value,
  SUM(
    (
      v.capped_watch__value - xp_shift.capped_watch__value
    ) * (
      v.exposed - xp_shift.exposed
    )
  ) AS prod__capped_watch__value__x__exposed
FROM xp_unit_values AS v
CROSS JOIN xp_shift
GROUP BY
  v.variant,
  v.multi_variant,
  v.exposed,
  v.assignment_date,
  v.window_complete,
  v.analysed
ORDER BY
  v.assignment_date,
  v.variant,
  v.multi_variant,
  v.exposed
