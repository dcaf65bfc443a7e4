"""Data quality: Great Expectations suites, the gate the Iceberg sink calls before each
commit, quarantine and `dq_results` tables, alerts, and the `freshlabel dq` report."""
