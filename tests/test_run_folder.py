"""The run's output folder is checked before anything trains: a file, or a folder that already holds a run, is
refused at once (the first run's files untouched); --force replaces only the files a run writes."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minirlhf.run_folder import RUN_FILES, check_out

REPO = Path(__file__).resolve().parents[1]


def fake_run(folder: Path) -> dict[str, bytes]:
    """A folder holding every file a run writes (stand-in bytes), and what each holds."""
    written = {}
    for name in RUN_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(written.setdefault(name, f"first run's {name}".encode()))
    return written


def cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minirlhf", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    return done, time.perf_counter() - start


def test_a_fresh_or_missing_folder_and_one_with_only_the_users_files_are_fine(tmp_path):
    check_out(str(tmp_path / "new" / "deeper"))
    (tmp_path / "notes.txt").write_text("mine")
    check_out(str(tmp_path))


def test_a_folder_holding_a_run_is_refused_unless_forced(tmp_path):
    fake_run(tmp_path)
    with pytest.raises(FileExistsError, match=f"{tmp_path} already holds a run .*--force.*fresh folder"):
        check_out(str(tmp_path))
    check_out(str(tmp_path), force=True)
    os.remove(tmp_path / "metrics.json")
    for name in RUN_FILES[1:]:  # any one of the run's files is enough to refuse
        with pytest.raises(FileExistsError, match="already holds a run"):
            check_out(str(tmp_path))
        os.remove(tmp_path / name)
    check_out(str(tmp_path))


def test_a_file_where_the_run_writes_a_folder_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        check_out(str(tmp_path / "f"), force=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "models").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        check_out(str(tmp_path / "d"), force=True)


def test_the_cli_refuses_a_second_run_before_training_and_leaves_the_first_as_it_was(tmp_path):
    run = tmp_path / "run"
    written = fake_run(run)
    (run / "my_notes.md").write_text("the learner's own file")
    done, seconds = cli("run", "--quick", "--out", str(run), cwd=tmp_path)
    assert done.returncode == 2, f"a second run into {run} should be refused (exit 2):\n{done.stderr[-2000:]}"
    assert f"{run} already holds a run" in done.stderr and "--force" in done.stderr and "Traceback" not in done.stderr
    assert "pretrain" not in done.stdout + done.stderr, "refused only after training started"
    for name, content in written.items():
        assert (run / name).read_bytes() == content, f"the refused run changed the first run's {name}"
    assert (run / "my_notes.md").read_text() == "the learner's own file"
    print(f"second run refused in {seconds:.1f} s")


def test_the_cli_refuses_out_naming_a_file_at_once(tmp_path):
    (tmp_path / "results.txt").write_text("mine")
    done, seconds = cli("run", "--out", "results.txt", cwd=tmp_path)
    assert done.returncode == 2 and "results.txt is a file, not a folder" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and (tmp_path / "results.txt").read_text() == "mine"
    assert seconds < 10, f"refusing --out took {seconds:.0f} s: it should come before anything (jax) is imported"
    print(f"--out FILE refused in {seconds:.1f} s")
