"""Every command: the shared flags and their environment twins, help that fits 80 columns, and the
offline message naming the command that exists and the flag of the command that failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.evaluation.builders import identity_dataset, write_beir
from uniembed import DEFAULT_MODEL
from uniembed.cli import app

runner = CliRunner()
COMMANDS = [
    ["serve"],
    ["embed"],
    ["bench"],
    ["index"],
    ["search"],
    ["eval", "retrieval"],
    ["eval", "alignment"],
    ["train"],
]
WITH_PROGRESS = [["embed"], ["index"], ["eval", "retrieval"], ["eval", "alignment"], ["train"]]


def command(path: list[str]) -> typer.core.TyperCommand:
    found = typer.main.get_command(app)
    for name in path:
        found = found.get_command(None, name)
    return found


def option(path: list[str], flag: str) -> typer.core.TyperOption:
    (found,) = [p for p in command(path).params if flag in (*p.opts, *p.secondary_opts)]
    return found


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_the_shared_flags_with_their_twins(path: list[str]) -> None:
    model = option(path, "--model")
    assert "-m" in model.opts and model.envvar == "UNIEMBED_MODEL"
    assert option(path, "--device").envvar == "UNIEMBED_DEVICE"
    assert option(path, "--dtype").envvar == "UNIEMBED_DTYPE"
    if path in WITH_PROGRESS:
        progress = option(path, "--no-progress")
        assert progress.opts == ["--progress"] and progress.envvar == "UNIEMBED_PROGRESS"


@pytest.mark.parametrize("path", [[], ["eval"], *COMMANDS], ids=lambda p: " ".join(p) or "main")
def test_help_fits_80_columns_and_keeps_phrases_whole(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    words = result.output.split()
    flat = " ".join(words)
    if path in COMMANDS:
        assert "UNIEMBED_MODEL" in flat and "UNIEMBED_DTYPE]" in flat
    for param in command(path).params if path else []:  # every env twin whole, on one line
        if isinstance(param.envvar, str):
            assert any(param.envvar in word for word in words), param.envvar
    if path in (["serve"], ["embed"]):
        assert "(pip install 'uniembed[ray]')" in flat
    if path in (["serve"], ["embed"], ["train"], ["eval", "retrieval"]):
        assert (
            DEFAULT_MODEL in words or f"{DEFAULT_MODEL}." in words or f"{DEFAULT_MODEL}]" in words
        )
    if path == ["serve"]:
        assert "Retry-After" in flat and "UNIEMBED_MAX_FETCH_BYTES_PER_REQUEST;" in words


def test_train_renamed_quiet_to_no_progress() -> None:
    result = runner.invoke(app, ["train", "--quiet"])
    assert result.exit_code == 2 and "No such option: --quiet" in result.output


def test_the_model_and_dtype_twins_reach_index_search_and_eval(
    tiny_v4_path: Path, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-model")
    env = {"UNIEMBED_MODEL": missing, "UNIEMBED_PROGRESS": "false"}
    new_index = runner.invoke(app, ["index", str(tmp_path / "idx")], env=env)
    assert new_index.exit_code == 1 and f"model {missing!r}: no such local directory" in (
        new_index.output
    )
    data = write_beir(tmp_path / "beir", *identity_dataset(3))
    evaluated = runner.invoke(app, ["eval", "retrieval", str(data), "--no-cache"], env=env)
    assert evaluated.exit_code == 2 and "no such local directory" in evaluated.output
    made = runner.invoke(app, ["index", str(tmp_path / "idx"), "-m", str(tiny_v4_path)])
    assert made.exit_code == 0, made.output
    searched = runner.invoke(app, ["search", str(tmp_path / "idx"), "query"], env=env)
    assert searched.exit_code == 1 and "no such local directory" in searched.output
    for args, twin in ((["index"], {}), (["search", "query"], {"UNIEMBED_DTYPE": "int3"})):
        dtype = [] if twin else ["--dtype", "int3"]
        result = runner.invoke(app, [args[0], str(tmp_path / "idx"), *args[1:], *dtype], env=twin)
        assert result.exit_code == 2 and "unknown dtype 'int3'" in result.output, result.output


def test_index_shows_a_progress_bar_unless_told_not_to(tiny_v4_path: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for number in range(3):
        (docs / f"{number}.txt").write_text(f"document number {number}", encoding="utf-8")
    base = ["index", str(tmp_path / "idx"), "-m", str(tiny_v4_path), "--batch-items", "2"]
    shown = runner.invoke(app, [*base, str(docs)])
    assert shown.exit_code == 0, shown.output
    assert "indexing" in shown.output and "3/3" in shown.output
    assert json.loads(shown.stdout.splitlines()[-1])["entries"] == 3
    hidden = runner.invoke(app, [*base, str(docs / "0.txt"), "--no-progress"])
    assert hidden.exit_code == 0 and "indexing" not in hidden.output, hidden.output


def test_the_offline_message_names_hf_download_and_the_failing_commands_flag(
    tmp_path: Path,
) -> None:
    data = write_beir(tmp_path / "beir", *identity_dataset(3))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "positive": "p"}\n', encoding="utf-8")
    runs = {
        "eval": ["eval", "retrieval", str(data), "--no-cache", "-m", "owner/absent"],
        "index": ["index", str(tmp_path / "idx"), "-m", "owner/absent"],
        "train": ["train", "-d", str(pairs), "--task", "t", "-o", str(tmp_path / "r")],
    }
    script = textwrap.dedent(
        f"""
        import json
        from typer.testing import CliRunner
        from uniembed.cli import app
        runs = {runs!r}
        out = {{k: CliRunner().invoke(app, v, env={{"UNIEMBED_MODEL": "owner/absent"}}).output
               for k, v in runs.items()}}
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name, output in json.loads(done.stdout.splitlines()[-1]).items():
        flat = " ".join(output.split())
        assert "not in the local Hugging Face cache" in flat, (name, output)
        assert "`hf download owner/absent --local-dir DIR`" in flat, (name, output)
        assert "`--model DIR` on the command line" in flat, (name, output)
        assert "huggingface-cli" not in flat and "uniembed serve" not in flat, (name, output)


def test_dtype_int8_reaches_index_and_search(tiny_v4_path: Path, tmp_path: Path) -> None:
    """``--dtype int8`` (and its twin) loads the int8 model in a command: the search finds the
    indexed document by its own text."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for number, words in enumerate(["amber basil cedar", "delta ember fjord"]):
        (docs / f"{number}.txt").write_text(words, encoding="utf-8")
    index = str(tmp_path / "idx")
    made = runner.invoke(
        app,
        ["index", index, "-m", str(tiny_v4_path), str(docs), "--dtype", "int8", "--no-progress"],
    )
    assert made.exit_code == 0, made.output
    searched = runner.invoke(
        app, ["search", index, "delta ember fjord"], env={"UNIEMBED_DTYPE": "int8"}
    )
    assert searched.exit_code == 0, searched.output
    assert "1.txt" in searched.output.splitlines()[0], searched.output


def test_index_keeps_the_codecs_and_muvera_it_is_given(tiny_v4_path: Path, tmp_path: Path) -> None:
    """``--codec`` (repeated) and ``--muvera`` reach a new index: its settings name them, mode
    ``muvera`` searches it and mode ``binary`` is refused (no binary codes kept)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for number, words in enumerate(["amber basil cedar", "delta ember fjord"]):
        (docs / f"{number}.txt").write_text(words, encoding="utf-8")
    index = str(tmp_path / "idx")
    made = runner.invoke(
        app,
        ["index", index, "-m", str(tiny_v4_path), str(docs), "--codec", "int8",
         "--codec", "float16", "--muvera", "--no-progress"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    settings = json.loads(made.stdout.splitlines()[-1])["settings"]
    assert settings["codecs"] == ["int8", "float16"]
    assert settings["muvera"] is not None
    searched = runner.invoke(app, ["search", index, "delta ember fjord", "--mode", "muvera"])
    assert searched.exit_code == 0, searched.output
    assert "1.txt" in searched.output.splitlines()[0], searched.output
    refused = runner.invoke(app, ["search", index, "delta", "--mode", "binary"])
    assert refused.exit_code == 1 and "binary" in refused.output, refused.output
