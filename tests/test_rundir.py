from pathlib import Path

import pytest

from testbed import rundir


def _fill(text: str):
    def fill(d: Path) -> None:
        (d / "a.txt").write_text(text)
    return fill


def test_write_dir_replaces_a_folder_whole_or_not_at_all(tmp_path: Path):
    path = tmp_path / "model"
    rundir.write_dir(path, _fill("old"))
    rundir.write_dir(path, _fill("new"))
    assert (path / "a.txt").read_text() == "new"

    def broken(d: Path) -> None:
        (d / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rundir.write_dir(path, broken)
    assert (path / "a.txt").read_text() == "new"  # the old folder stays until a new one is complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(rundir.RunDirError):
        rundir.create(path, _fill("other"))  # a run directory is never replaced ...
    with pytest.raises(OSError):
        rundir.write_dir(path, _fill("other"), replace=False)  # ... not even when it appears meanwhile
    assert (path / "a.txt").read_text() == "new"


def test_a_folder_set_aside_by_a_killed_write_is_put_back(tmp_path: Path):
    """Killed between moving the old folder aside and renaming the new one in: the old one comes back."""
    aside = tmp_path / "gen_001" / ".model.old-4242"
    aside.mkdir(parents=True)
    (aside / "a.txt").write_text("old")
    (tmp_path / "gen_001" / ".synthetic.tmp-4242").mkdir()
    rundir.remove_partial_writes(tmp_path)
    assert (tmp_path / "gen_001" / "model" / "a.txt").read_text() == "old"
    assert sorted(p.name for p in (tmp_path / "gen_001").iterdir()) == ["model"]
    # Killed after the new folder was in place, before the old one was deleted: the new one stays.
    aside.mkdir()
    (aside / "a.txt").write_text("older")
    rundir.remove_partial_writes(tmp_path)
    assert (tmp_path / "gen_001" / "model" / "a.txt").read_text() == "old" and not aside.exists()


def test_read_jsonl_reads_what_write_jsonl_wrote(tmp_path: Path):
    rows = [{"generation": 0, "ppl": 1.5, "x": None}, {"generation": 1, "ppl": float("nan")}]
    rundir.write_jsonl(tmp_path / "m.jsonl", [rundir.finite(r) for r in rows])
    assert rundir.read_jsonl(tmp_path / "m.jsonl") == [{"generation": 0, "ppl": 1.5, "x": None},
                                                        {"generation": 1, "ppl": None}]
