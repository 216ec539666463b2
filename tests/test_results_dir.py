"""Where the bench writes: the folder given, else bench/results in an mcdask checkout, else the
working directory (never the installed package's folder)."""

from __future__ import annotations

from pathlib import Path

from bench.provenance import results_dir

ROOT = Path(__file__).resolve().parents[1]


def test_outside_a_checkout_results_go_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert results_dir() == tmp_path
    (tmp_path / "bench" / "results").mkdir(parents=True)   # a bench/results alone is not a checkout
    assert results_dir() == tmp_path


def test_in_a_checkout_results_go_to_its_bench_results(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert results_dir() == ROOT / "bench" / "results"


def test_a_folder_given_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert results_dir(tmp_path / "mine") == tmp_path / "mine"
