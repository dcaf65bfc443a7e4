"""Driver of the enrichment job: submit streams/enrich/sql/*.sql to the Flink cluster.

Runs in the Flink virtual environment (`.venv-flink/bin/python -m streams.enrich.job`);
`freshlabel jobs deploy enrich` starts it for you. It only configures the table
environment, executes the rendered statements as one statement set and prints the job id
as JSON; the job runs on the cluster (execution.target=remote) after this process exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra.artifacts import KAFKA_CLIENTS_JAR, KAFKA_CONNECTOR_JAR, require
from infra.config import Settings
from streams.enrich.operations import state_uris
from streams.enrich.sql import render, state_ttl_s


def job_config(settings: Settings) -> dict[str, str]:
    """The job's own configuration, the same wherever it runs (the embedded cluster, a
    session cluster, or the Flink Kubernetes operator: freshlabel/deploy/render.py puts exactly
    these into the FlinkDeployment).

    Args:
        settings: the platform settings (flink.*).

    Returns:
        Flink option -> value, as strings.
    """
    f = settings.flink
    return {
        "pipeline.name": f.job_name,
        "pipeline.object-reuse": "true",
        "parallelism.default": str(f.parallelism),
        "table.local-time-zone": "UTC",
        # Without it a partition that never receives data holds every watermark back.
        "table.exec.source.idle-timeout": f"{round(f.source_idle_timeout_s * 1000)} ms",
        "execution.checkpointing.interval": f"{round(f.checkpoint_interval_s * 1000)} ms",
        # Kept when the job is cancelled or the cluster goes down without a savepoint, so
        # `jobs deploy enrich --from-savepoint <checkpoints/JOB/chk-N>` can still resume.
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        # RocksDB keeps keyed state on local disk (memory bounded by managed memory), and
        # incremental checkpoints upload only the files that changed.
        "state.backend.type": f.state_backend,
        "execution.checkpointing.incremental": str(
            f.incremental_checkpoints and f.state_backend == "rocksdb"
        ).lower(),
        # Event-time timers on the heap: there is at most one per pin with impressions
        # waiting for the watermark, and RocksDB timers cost every join a disk-backed
        # queue operation per impression.
        "state.backend.rocksdb.timer-service.factory": "HEAP",
        # Per-pin state untouched this long is dropped (docs/enrichment.md, "State").
        "table.exec.state.ttl": f"{round(state_ttl_s(settings) * 1000)} ms",
    }


def flink_config(
    settings: Settings, from_savepoint: str | None, local: bool, application: bool = False
) -> dict[str, str]:
    """`job_config` plus the connector jars and this interpreter; then, unless this process
    is the main of an application cluster (whose own configuration, the FlinkDeployment,
    says where state goes and what it restores from), the checkpoint and savepoint folders
    (`operations.state_uris`) and the cluster to submit to."""
    f = settings.flink
    jars = ";".join(
        require(settings.tools_dir, jar).as_uri()
        for jar in (KAFKA_CONNECTOR_JAR, KAFKA_CLIENTS_JAR)
    )
    config = {
        **job_config(settings),
        "pipeline.jars": jars,
        "python.executable": sys.executable,
    }
    if application:
        return config
    checkpoints, savepoints = state_uris(settings)
    config["execution.checkpointing.dir"] = checkpoints
    config["execution.checkpointing.savepoint-dir"] = savepoints
    if not local:
        config.update(
            {
                "execution.target": "remote",
                "rest.address": f.host,
                "rest.port": str(f.rest_port),
            }
        )
    if from_savepoint:
        path = from_savepoint if "://" in from_savepoint else Path(from_savepoint).as_uri()
        config["execution.state-recovery.path"] = path
    return config


def table_environment(config: dict[str, str]):  # type: ignore[no-untyped-def]
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    conf = Configuration()
    for key, value in config.items():
        conf.set_string(key, value)
    return TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )


def submit(
    settings: Settings,
    from_savepoint: str | None = None,
    local: bool = False,
    application: bool = False,
) -> str:
    """Create the tables and views, submit the INSERTs as one job; returns its job id.

    `application`: this process is the job's main inside a Flink application cluster (the
    Kubernetes operator runs `-py streams/enrich/job.py --application`); the cluster's own
    configuration supplies the state folders and the restore path.
    """
    t_env = table_environment(flink_config(settings, from_savepoint, local, application))
    statement_set = _statements(t_env, settings)
    result = statement_set.execute()
    client = result.get_job_client()
    if client is None:
        raise RuntimeError("Flink accepted the statements but returned no job client")
    return str(client.get_job_id())


def _statements(t_env: Any, settings: Settings) -> Any:
    """The job's tables and views created in `t_env`; its INSERTs as one statement set."""
    job = render(settings)
    for statement in job.ddl:
        t_env.execute_sql(statement)
    statement_set = t_env.create_statement_set()
    for statement in job.inserts:
        statement_set.add_insert_sql(statement)
    return statement_set


def explain(settings: Settings) -> str:
    t_env = table_environment(flink_config(settings, None, local=True))
    statement_set = _statements(t_env, settings)
    from pyflink.table.explain_detail import ExplainDetail

    return str(statement_set.explain(ExplainDetail.CHANGELOG_MODE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--settings-json", help="a file with Settings as JSON, - for stdin (default: env)"
    )
    parser.add_argument("--from-savepoint", help="restore the job's state from this savepoint")
    parser.add_argument("--explain", action="store_true", help="print the plan, submit nothing")
    parser.add_argument(
        "--application",
        action="store_true",
        help="run as the main of a Flink application cluster (the Kubernetes operator)",
    )
    args = parser.parse_args(argv)
    if args.settings_json == "-":
        settings = Settings(**json.loads(sys.stdin.read()))
    elif args.settings_json:
        settings = Settings(**json.loads(Path(args.settings_json).read_text()))
    else:
        settings = Settings()
    if args.explain:
        print(explain(settings))
        return 0
    job_id = submit(settings, args.from_savepoint, application=args.application)
    print(json.dumps({"job_id": job_id, "job_name": settings.flink.job_name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
