"""Bad input: one line on stderr, exit status 2, no traceback, and nothing computed is lost."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from local_assets import corpus_rows, save_tiny_model, write_csv_folder

from influence.preparation import prepare
from job.cli import build_parser, config_from_args, main
from store.reader import StoreReader
from store.writer import StoreWriter

SMALL = ["--num-train", "8", "--num-test", "4", "--batch-size", "4", "--max-length", "32", "--sweep", "1e-3"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished export that every failing command below points at, to prove it stays intact."""
    root = tmp_path_factory.mktemp("errors")
    rows = corpus_rows(num_train=40, num_test=12)
    model = save_tiny_model(root / "model", rows)
    data = write_csv_folder(root / "csv", rows)
    out = root / "out"
    main(["--export", str(out), "--model", str(model), "--dataset", str(data)] + SMALL)
    return {"root": root, "model": model, "data": data, "out": out, "rows": rows}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _csv_pair(folder: Path, train: str, test: str) -> Path:
    _write(folder / "train.csv", train)
    _write(folder / "test.csv", test)
    return folder


def _case_arguments(case: str, finished: dict) -> tuple[list[str], str]:
    """(arguments after --export/--model/--dataset defaults, a phrase the message must hold)."""
    root, model, data = finished["root"], str(finished["model"]), str(finished["data"])
    good = "text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in finished["rows"]["train"][:12])
    cases = {
        "unknown model path": (["--model", "./no/such/model", "--dataset", data], "does not exist"),
        "hub id while offline": (["--model", "someone/some-model", "--dataset", data], "offline"),
        "no text column": (
            [
                "--model",
                model,
                "--dataset",
                str(_csv_pair(root / "notext", good.replace("text,", "body,", 1), good.replace("text,", "body,", 1))),
            ],
            "columns are: body, label",
        ),
        "no label column": (
            [
                "--model",
                model,
                "--dataset",
                str(
                    _csv_pair(
                        root / "nolabel", good.replace(",label", ",stars", 1), good.replace(",label", ",stars", 1)
                    )
                ),
            ],
            "no label column",
        ),
        "labels outside the classes": (
            ["--model", model, "--dataset", str(_csv_pair(root / "labels", good.replace(",1\n", ",7\n"), good))],
            "outside the model's 2 classes",
        ),
        "empty split": (
            ["--model", model, "--dataset", str(_csv_pair(root / "empty", good, "text,label\n"))],
            "'test' of dataset",
        ),
        "N larger than the split": (["--model", model, "--dataset", data, "--num-train", "100000"], "which has 40"),
        "layer pattern matching nothing": (
            ["--model", model, "--dataset", data, "--layers", "*nothing*"],
            "matches no module",
        ),
        "non-linear layer": (
            ["--model", model, "--dataset", data, "--layers", "distilbert.embeddings"],
            "not a linear layer",
        ),
        "regularization zero": (["--model", model, "--dataset", data, "--regularization", "0"], "> 0"),
        "regularization NaN": (["--model", model, "--dataset", data, "--regularization", "nan"], "> 0"),
        "negative sweep value": (["--model", model, "--dataset", data, "--sweep", "1e-3,-1"], "> 0"),
        "unknown device": (["--model", model, "--dataset", data, "--device", "tpu"], "unknown device"),
        "absent GPU": (["--model", model, "--dataset", data, "--device", "cuda:3"], "not available"),
        "corrupt CSV": (
            ["--model", model, "--dataset", str(_csv_pair(root / "corrupt", 'text,label\n"unclosed,1\nx,y,z\n', good))],
            "could not read dataset",
        ),
        "unknown option value": (["--model", model, "--dataset", data, "--fisher", "magic"], "invalid choice"),
        "the demo LM as a classifier": (["--model", "demo-lm", "--task", "classification"], "is a causal-lm model"),
        "memory budget not a size": (
            ["--model", model, "--dataset", data, "--memory-budget", "lots"],
            "a size such as",
        ),
        "memory budget below one query": (
            ["--model", model, "--dataset", data, "--memory-budget", "1KB"],
            "one test example's gradients need",
        ),
        "no processes": (["--model", model, "--dataset", data, "--nproc", "0"], "--nproc must be at least 1"),
    }
    return cases[case]


CASES = [
    "unknown model path",
    "hub id while offline",
    "no text column",
    "no label column",
    "labels outside the classes",
    "empty split",
    "N larger than the split",
    "layer pattern matching nothing",
    "non-linear layer",
    "regularization zero",
    "regularization NaN",
    "negative sweep value",
    "unknown device",
    "absent GPU",
    "the demo LM as a classifier",
    "memory budget not a size",
    "memory budget below one query",
    "no processes",
    "corrupt CSV",
    "unknown option value",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_status_two(finished, capsys, case):
    arguments, phrase = _case_arguments(case, finished)
    store = finished["out"] / "influence.h5"
    before = _digest(store)
    with pytest.raises(SystemExit) as exit_info:
        main(["--export", str(finished["out"])] + SMALL + arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("influence-explorer: error: ") and phrase in error, error
    assert _digest(store) == before


def test_an_unwritable_output_folder(finished, capsys, tmp_path):
    blocker = _write(tmp_path / "a-file", "not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["--export", str(blocker / "out"), "--model", str(finished["model"]), "--dataset", str(finished["data"])])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cannot write to output folder" in error


def test_a_damaged_store_file(finished, capsys, tmp_path):
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(finished["out"].joinpath("influence.h5").read_bytes()[:4096])
    with pytest.raises(SystemExit) as exit_info:
        main([str(damaged), "--export", str(tmp_path / "tables")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(damaged) in error


@pytest.mark.slow
def test_the_real_process_prints_no_traceback(finished):
    """The same through a real process, for what an in-process test cannot see."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "job.cli", "--export", str(finished["out"]), "--model", "./no/such/model"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "influence-explorer: error: model folder ./no/such/model does not exist"
    ]
    assert result.stdout == ""


def test_the_notebook_preset_offline_says_what_is_missing(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "notebook", "--export", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "assemblyai/distilbert-base-uncased-sst2" in error and "dataset imdb" in error and "hf download" in error


FILE_SIZE_LIMIT = """
import resource, signal, sys
from job.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_a_full_disk_ends_with_a_clear_message_and_a_readable_store(finished, tmp_path):
    """Files may not grow past a limit (as on a full disk): the run stops with one line, and
    what was computed before stays readable; without the limit the same command finishes."""
    out = tmp_path / "out"
    data = write_csv_folder(tmp_path / "csv", corpus_rows(num_train=200, num_test=60))  # scores worth half a megabyte
    arguments = ["--export", str(out), "--model", str(finished["model"]), "--dataset", str(data)] + SMALL
    arguments[arguments.index("--num-train") + 1] = "200"
    arguments[arguments.index("--num-test") + 1] = "60"
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    reference = tmp_path / "reference"
    main(["--export", str(reference)] + arguments[2:])
    finished_size = (reference / "influence.h5").stat().st_size
    analysis = prepare(config_from_args(build_parser().parse_args(arguments)))
    with StoreWriter.create(tmp_path / "fresh.h5", analysis.layout):
        created_size = (tmp_path / "fresh.h5").stat().st_size
    limit = (created_size + finished_size) // 2  # room to create the store, not to finish it
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(limit)] + arguments,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("influence-explorer: error: ") and "File too large" in error, result.stderr[-2000:]
    with StoreReader(out / "influence.h5") as reader:
        done = [key for key, record in reader.stages().items() if record.status == "done"]
        assert "predictions" in done and reader.metrics() is not None, (error, reader.stages())
    rerun = subprocess.run(
        [sys.executable, "-m", "job.cli"] + arguments,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
