"""The command line people use: help for everything, commands grouped as the data flows,
one shared time rule, progress only for a person watching, errors as one line."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from freshlabel.cli import COMMAND_GROUPS, build_parser, main
from infra import progress
from infra.cli_args import iso_time


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("freshlabel",)
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    """(command path, parser, action) for every action of every parser, subparsers too."""
    found = []
    for action in parser._actions:
        found.append((path, parser, action))
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, (*path, name))
    return found


def test_every_option_and_command_has_help() -> None:
    missing = []
    for path, _, action in _parsers(build_parser()):
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            missing += [
                f"{' '.join(path)} {choice.dest} (command)"
                for choice in action._choices_actions
                if not (choice.help or "").strip()
            ]
        elif not (action.help or "").strip():
            missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == [], "give these a help= string"


def test_the_walk_sees_an_option_without_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["demo"].add_argument("--new-thing")
    bare = [a for _, _, a in _parsers(parser) if "--new-thing" in a.option_strings]
    assert bare and not bare[0].help


def test_help_lists_every_command_once_grouped_as_the_data_flows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    grouped = [name for _, names in COMMAND_GROUPS for name in names]
    assert sorted(grouped) == sorted(sub.choices), "COMMAND_GROUPS must name each command once"
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listing = text.split("commands, as the data flows:", 1)[1]
    lines = [line.strip() for line in listing.splitlines()]
    headings = [line for line in lines if line.endswith(":") and " " not in line]
    assert headings == [f"{group}:" for group, _ in COMMAND_GROUPS]
    assert "other:" not in lines
    group_of, order, current = {}, [], ""
    for line in lines:
        if line in headings:
            current = line[:-1]
        elif line.split(" ")[0] in sub.choices:  # a command (wrapped help lines are not)
            group_of[line.split(" ")[0]] = current
            order.append(line.split(" ")[0])
    assert order == grouped
    assert group_of == {name: group for group, names in COMMAND_GROUPS for name in names}
    assert "start the embedded stack" in listing


def test_times_are_read_one_way_everywhere() -> None:
    assert iso_time("2026-10-20") == datetime(2026, 10, 20, tzinfo=UTC)
    assert iso_time("2026-10-20T12:00:00Z") == datetime(2026, 10, 20, 12, tzinfo=UTC)
    plus_two = iso_time("2026-10-20T12:00:00+02:00")
    assert plus_two.utcoffset() == timedelta(hours=2)
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO time"):
        iso_time("yesterday")
    parser = build_parser()
    naive, utc = "2026-10-20T00:00:00", datetime(2026, 10, 20, tzinfo=UTC)
    for argv, dest in (
        (["student", "train", "--training-set", "t", "--out", "d", "--until", naive], "until"),
        (["student", "eval", "--model", "d", "--training-set", "t", "--since", naive], "since"),
        (["label", "backfill", "--teacher-version", "v", "--since", naive], "since"),
        (["dataset", "build", "--teacher-version", "v", "--out", "t", "--since", naive], "since"),
        (["dlq", "replay", "--topic", "impressions.dlq", "--since", naive], "since"),
    ):
        assert getattr(parser.parse_args(argv), dest) == utc, argv


def test_a_bad_time_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["student", "eval", "--model", "d", "--training-set", "t", "--until", "soon"])
    assert done.value.code == 2
    assert "'soon' is not an ISO time" in capsys.readouterr().err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """main() sets these for the process and its children; put them back afterwards."""
    for name in ("FRESHLABEL_PROGRESS", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_missing_model_dir_is_one_line_without_a_traceback(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("FRESHLABEL_STATE_DIR", str(tmp_path / "state"))
    argv = ["teacher", "export", "--model", str(tmp_path / "nowhere"), "--repo", str(tmp_path)]
    assert main([*argv, "--version", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("freshlabel: error: "), err
    assert "nowhere" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):  # -v: the whole story
        main(["-v", *argv, "--version", "1"])


def test_bad_settings_are_one_line_naming_the_setting(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("FRESHLABEL_BROKER__PORT", "not-a-port")
    assert main(["down"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("freshlabel: error: "), err
    assert "broker.port" in err and "FRESHLABEL_" in err


def test_progress_shows_only_for_a_person_watching(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # stderr captured (not a terminal): no bars, even inside long work
    with progress.scope():
        assert list(progress.progress_bar(range(3), desc="quiet", show=True)) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err
    clean_env.setattr("sys.stderr", _Terminal())
    assert progress.enabled(show=True)
    assert not progress.enabled()  # library loops: only inside a command's long work
    with progress.scope():
        assert progress.enabled()
    assert not progress.enabled(show=False)
    clean_env.setenv("FRESHLABEL_PROGRESS", "0")
    with progress.scope():
        assert not progress.enabled(show=True)


def test_the_progress_flag_forces_bars_on_any_stderr(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("FRESHLABEL_STATE_DIR", str(tmp_path))
    assert not progress.enabled(show=True)
    assert main(["--progress", "down"]) == 0
    assert progress.enabled(show=True)
    batches = [[1, 2], [3]]
    assert list(progress.counted(batches, "rows here", "row", show=True)) == batches
    err = capsys.readouterr().err
    assert "rows here:" in err and "/3 " in err


def test_stage_lines_keep_their_form(capsys: pytest.CaptureFixture[str]) -> None:
    progress.note("fold 1/5: train 10 rows")
    err = capsys.readouterr().err
    assert err.endswith("] fold 1/5: train 10 rows\n") and err.startswith("[")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True
