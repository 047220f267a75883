"""Trust rule, limits, prefixes, names and CLI escaping, without Redis (issue 8 findings 5, 6, 7, 10-12)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from rich.console import Console

from orchestrator import Pipeline
from orchestrator.artifacts import MAX_PART, error_report_path, fit_name
from orchestrator.cli import safe
from orchestrator.errors import PipelineInvalid
from orchestrator.limits import Limits, too_deep
from orchestrator.loader import load_pipeline, within_prefix
from orchestrator.settings import RedisUnauthenticated, Settings, url_has_password
from orchestrator.trust import ConfigUntrusted
from orchestrator.validate import validate
from tests.pipelines import echo, noop


@pytest.mark.parametrize(
    ("path", "prefix", "ok"),
    [
        ("tasks.etl.steps.fn", "tasks.", True),
        ("tasks.etl.steps.fn", "tasks", True),
        ("tasks_evil.fn", "tasks", False),
        ("tasks_evil.fn", "tasks.", False),
        ("tasksx.fn", "tasks", False),
        ("tasks", "tasks", True),
        ("tests.pipelines.noop", "tests.pipelines", True),
        ("tests.pipelinesx.noop", "tests.pipelines", False),
        ("anything.fn", "", False),
    ],
)
def test_12_allowed_prefixes_match_whole_module_components(path: str, prefix: str, ok: bool) -> None:
    assert within_prefix(path, prefix) is ok


def test_12_loader_refuses_a_sibling_package_of_the_prefix(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[pipeline]\nname = "x"\n[tasks.a]\nuses = "tasks_evil.fn"\n')
    with pytest.raises(PipelineInvalid, match="'tasks_evil.fn' is outside the allowed task packages"):
        load_pipeline(f, ("tasks",))


def test_10_limits_name_task_and_field() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    problems = validate(Pipeline("deep", source="f.toml").add_task(echo, params={"text": deep}))
    assert len(problems) == 1
    assert "task 'echo': field 'params.text.0.0" in str(problems[0])
    assert "nested deeper than max_param_depth (32)" in str(problems[0])
    assert too_deep({"a": [[1]]}, 3) is None and too_deep({"a": [[1]]}, 2) == ["a", "0"]

    fan = Pipeline("fan").add_task(noop, name="root")
    for i in range(11):
        fan.add_task(noop, name=f"c{i}", depends_on=["root"])
    problems = validate(fan, Limits(max_fan_out=10))
    assert [str(p) for p in problems] == ["task 'root': has 11 dependent tasks, over max_fan_out (10)"]
    assert validate(fan, Limits(max_fan_out=11)) == []


def test_10_node_cap_is_checked_before_anything_expensive() -> None:
    big = Pipeline("big")
    for i in range(200_001):
        big.add_task(noop, name=f"n{i}")
    t0 = time.perf_counter()
    problems = validate(big)
    assert time.perf_counter() - t0 < 0.5
    assert [p.message for p in problems] == ["pipeline has 200001 tasks, over max_nodes (100000)"]


def test_10_huge_or_too_deep_toml_is_refused_cheaply(tmp_path: Path) -> None:
    f = tmp_path / "huge.toml"
    f.write_text('[pipeline]\nname = "x"\n' + "".join(f'[tasks.n{i}]\nuses = "tasks.x.y"\n' for i in range(11)))
    with pytest.raises(PipelineInvalid, match=r"pipeline has 11 tasks, over max_nodes \(10\)"):
        load_pipeline(f, limits=Limits(max_nodes=10))
    deep = tmp_path / "deep.toml"
    deep.write_text(
        '[pipeline]\nname = "x"\n[tasks.a]\nuses = "tasks.x.y"\nparams = { v = ' + "[" * 5000 + "]" * 5000 + " }\n"
    )
    with pytest.raises(PipelineInvalid, match="nested too deeply"):
        load_pipeline(deep)


def test_11_reserved_node_names_are_refused() -> None:
    for name in ("failed_tasks.log", "errors", "logs", "Errors"):
        problems = validate(Pipeline("r").add_task(noop, name=name))
        assert any("task name is reserved" in p.message for p in problems), (name, problems)


def test_11_long_node_names_get_a_short_report_file_name(tmp_path: Path) -> None:
    for n in (100, 121, 122, 125, 128):
        name = "a" * (n - 1) + str(n % 10)
        path = error_report_path(tmp_path, "20261124-000000-abcdef", name, 12)
        assert len(path.name) <= MAX_PART
    assert fit_name("a" * 128, "-1.json") != fit_name("a" * 127 + "b", "-1.json")  # still unique


def test_5_safe_escapes_markup_and_shows_control_characters() -> None:
    console = Console(record=True, width=200, color_system=None)
    hostile = "bad [/] [bold]x[/bold] \x1b[31m \x9b \u202e end"
    console.print(f"[red]error[/red]: {safe(hostile)}")
    text = console.export_text()
    assert "error: bad [/] [bold]x[/bold] \\x1b[31m \\x9b \\u202e end" in text
    assert safe("a\nb\tc") == "a\nb\tc"


def test_7_unauthenticated_redis_url_is_refused_unless_allowed() -> None:
    assert url_has_password("redis://:pw@h:1/0") and url_has_password("redis://u:pw@h:1/0")
    assert url_has_password("redis://h:1/0?password=pw") and url_has_password("rediss://:p%2Fw@h:1/0")
    assert not url_has_password("redis://h:1/0") and not url_has_password("redis://user@h:1/0")
    with pytest.raises(RedisUnauthenticated, match="has no password"):
        Settings(redis_url=SecretStr("redis://127.0.0.1:1/0")).redis_url_value()
    allowed = Settings(redis_url=SecretStr("redis://127.0.0.1:1/0"), allow_unauthenticated_redis=True)
    assert allowed.redis_url_value() == "redis://127.0.0.1:1/0"


@pytest.fixture
def cwd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("CHORDFLOW_CONFIG_DIR", "CHORDFLOW_PROJECT_DIR", "CHORDFLOW_TRUST_CWD_CONFIG", "CHORDFLOW_ENV"):
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in os.environ if v.startswith("CHORDFLOW_")]:
        monkeypatch.delenv(var)
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    work.chmod(0o700)
    (work / "config").chmod(0o700)
    monkeypatch.chdir(work)
    return work / "config" / "dev.toml"


def test_6_private_cwd_config_is_read_but_may_not_widen_imports(
    cwd_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd_config.write_text("concurrency = 3\n")
    cwd_config.chmod(0o600)
    assert Settings().concurrency == 3
    for line in ('task_modules = ["evil"]', 'allowed_task_prefixes = ["evil."]', "allow_unauthenticated_redis = true"):
        cwd_config.write_text(line + "\n")
        with pytest.raises(ConfigUntrusted, match="CHORDFLOW_TRUST_CWD_CONFIG=true"):
            Settings()
    monkeypatch.setenv("CHORDFLOW_TRUST_CWD_CONFIG", "true")
    assert Settings().allow_unauthenticated_redis is True


def test_6_cwd_config_writable_by_others_is_refused(cwd_config: Path) -> None:
    cwd_config.write_text("concurrency = 3\n")
    for target in (cwd_config, cwd_config.parent, Path(".")):
        target.chmod(0o777 if target.is_dir() else 0o666)
        with pytest.raises(ConfigUntrusted, match="writable by group or others"):
            Settings()
        target.chmod(0o700 if target.is_dir() else 0o600)
    assert Settings().concurrency == 3


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_6_cwd_config_owned_by_someone_else_is_refused(cwd_config: Path) -> None:
    cwd_config.write_text("concurrency = 3\n")
    os.chown(cwd_config, 65534, 65534)
    with pytest.raises(ConfigUntrusted, match="owned by uid 65534"):
        Settings()


def test_6_explicit_config_dir_is_trusted(tmp_path: Path, cwd_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "dev.toml").write_text('task_modules = ["tasks", "mytasks"]\n')
    monkeypatch.setenv("CHORDFLOW_CONFIG_DIR", str(mine))
    assert Settings().task_modules == ["tasks", "mytasks"]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another group")
def test_6_group_writable_is_refused_unless_the_group_is_the_users_own(cwd_config: Path) -> None:
    cwd_config.write_text("concurrency = 3\n")
    cwd_config.chmod(0o660)
    assert Settings().concurrency == 3  # root's own group (umask 002 style)
    os.chown(cwd_config, 0, 65534)
    with pytest.raises(ConfigUntrusted, match="writable by group or others"):
        Settings()
