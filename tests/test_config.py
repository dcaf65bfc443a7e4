from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT, Settings


def test_env_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLABEL_BROKER__PORT", "29092")
    monkeypatch.setenv("FRESHLABEL_TOPICS__DEFAULT_PARTITIONS", "8")
    settings = Settings()
    assert settings.broker.port == 29092
    assert settings.broker.bootstrap == "localhost:29092"
    assert settings.topics.partitions_for("impressions") == 8
    assert settings.topics.partitions_for("impressions.dlq") == 1


def test_yaml_file_and_env_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "freshlabel.yaml"
    config.write_text("broker:\n  port: 1234\ncatalog:\n  namespace: search\n")
    monkeypatch.setenv("FRESHLABEL_CONFIG", str(config))
    monkeypatch.setenv("FRESHLABEL_BROKER__PORT", "4321")
    settings = Settings()
    assert settings.catalog.namespace == "search"
    assert settings.broker.port == 4321  # env beats the file


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLABEL_CONFIG", "/nonexistent/freshlabel.yaml")
    with pytest.raises(FileNotFoundError, match="does not name a file"):
        Settings()


def test_unknown_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "freshlabel.yaml"
    config.write_text("brokr:\n  port: 1\n")
    monkeypatch.setenv("FRESHLABEL_CONFIG", str(config))
    with pytest.raises(ValueError, match="brokr"):
        Settings()


def test_production_profile_points_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLABEL_CONFIG", str(PROJECT_ROOT / "infra/profiles/production.yaml"))
    monkeypatch.setenv("FRESHLABEL_BROKER__CLIENT_OPTIONS__SASL_PLAIN_PASSWORD", "from-env")
    settings = Settings()
    assert not settings.broker.embedded
    assert settings.broker.bootstrap.startswith("kafka-0.")
    assert settings.broker.client_options["security_protocol"] == "SASL_SSL"
    assert settings.broker.client_options["sasl_plain_password"] == "from-env"
    assert settings.catalog.type == "rest"
    assert settings.warehouse == "s3://freshlabel-warehouse/"
    assert settings.topics.replication_factor == 3


def test_embedded_profile_equals_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    monkeypatch.setenv("FRESHLABEL_CONFIG", str(PROJECT_ROOT / "infra/profiles/embedded.yaml"))
    assert Settings().model_dump() == defaults.model_dump()
