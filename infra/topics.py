"""Create the platform's topics (and their DLQs) with partition counts from config."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from infra.config import Settings


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create any missing topic with its partitions and config (`Settings.topic_config`);
    returns the ones created. Existing topics are left as they are."""
    wanted = topics or settings.topics.all_topics
    admin = KafkaAdminClient(
        bootstrap_servers=settings.broker.bootstrap, **settings.broker.client_options
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name=t,
                num_partitions=settings.topics.partitions_for(t),
                replication_factor=settings.topics.replication_factor,
                # Compaction for the pin changelogs, retention >= window for windowed
                # inputs: the same config `deploy render` gives the KafkaTopics (the
                # embedded broker accepts and ignores it).
                topic_configs=settings.topic_config(t),
            )
            for t in wanted
            if t not in existing
        ]
        for topic in missing:
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in missing]
    finally:
        admin.close()


def partition_counts(settings: Settings, topics: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.broker.bootstrap, **settings.broker.client_options
    )
    try:
        described = admin.describe_topics(topics)
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        admin.close()
