"""The first paint needs no model stack: every page of a lab whose cache is warm (its scores, and the
summaries mixlab.summary keeps beside them), or fresh (a fresh clone's first run: the shipped lab's scores
and summaries.json), draws without importing torch, transformers or scipy.stats. Each lab's pages run in a
fresh Python process (AppTest), so sys.modules tells what rendering imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

import mixlab.summary as summary_mod
from mixlab.demo import LABS_DIR
from mixlab.diagnostics import interference
from mixlab.engine import Engine, open_store
from mixlab.lab import load_lab
from mixlab.store import Store
from mixlab.summary import COMPUTE, SHIPPED, _key, expert_diagnostics, lab_summary, ship
from tests.test_app import PAGES, ROOT

HEAVY = ("torch", "transformers", "scipy.stats")

RENDER = """
import json, sys
from streamlit.testing.v1 import AppTest
heavy, out = {heavy!r}, {{}}
for page in {pages!r}:
    at = AppTest.from_file({app!r}, default_timeout=120)
    at.query_params["lab"] = {lab!r}
    at.run()
    if page != {pages!r}[0]:
        at.switch_page(page)
        at.run()
    out[page] = {{
        "imported": [m for m in heavy if m in sys.modules],
        "exceptions": [e.message for e in at.exception],
        "errors": [e.value for e in at.error],
        "title": at.title[0].value if len(at.title) else None,
    }}
print(json.dumps(out))
"""


def render_in_a_fresh_process(lab: str, cache: str) -> dict:
    code = RENDER.format(heavy=HEAVY, pages=PAGES, app=str(ROOT / "app.py"), lab=lab)
    env = {**os.environ, "MIXLAB_CACHE": cache, "MIXLAB_NO_WARMUP": "1", "MIXLAB_NO_KERNELS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, cache_state", [("demo-k3", "fresh"), ("demo-vl", "warm"), ("demo-vl", "fresh")])
def test_every_page_draws_a_shipped_lab_without_the_model_stack(name, cache_state, tmp_path):
    lab = load_lab(LABS_DIR / name)
    cache = tmp_path / "cache.sqlite"
    if cache_state == "warm":  # the shipped scores imported, the pages' summaries kept beside them
        eng = Engine(lab, open_store(lab, cache))
        lab_summary(eng)
        expert_diagnostics(eng)
    # fresh: no cache file yet (a fresh clone's first page): the scores and summaries come from the lab's files
    pages = render_in_a_fresh_process(str(LABS_DIR / name), str(cache))
    assert list(pages) == PAGES
    for page, seen in pages.items():
        assert seen["imported"] == [], f"{page} imported {seen['imported']}"
        assert seen["exceptions"] == [] and seen["errors"] == [], (page, seen)
        assert seen["title"], page


def test_a_cold_lab_loads_its_experts_once_then_keeps_what_the_pages_show(tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    cache = tmp_path / "cache.sqlite"
    summary = lab_summary(Engine(lab, open_store(lab, cache)))
    # against the files read independently (safetensors, not mixlab's checkpoint reader)
    base = load_file(tiny_lab_dir / "base" / "model.safetensors")
    assert summary["base"]["n_params"] == sum(t.numel() for t in base.values())
    assert summary["base"]["n_tensors"] == len(base)
    add = load_file(tiny_lab_dir / "experts" / "add" / "adapter_model.safetensors")
    (row,) = [e for e in summary["experts"] if e["name"] == "add"]
    assert row["kind"] == "lora" and row["rank"] == 4
    assert row["n_params"] == sum(t.numel() for t in add.values())
    assert row["changed"] == row["n_tensors"] == len(add) // 2  # A and B per adapted module, every B non-zero

    # a fresh engine (another process) reads it back without loading a checkpoint
    fresh = Engine(lab, open_store(lab, cache))
    assert lab_summary(fresh) == summary
    assert "experts" not in fresh.sources.__dict__ and "base" not in fresh.sources.__dict__

    # the diagnostics come back as the DataFrames interference() makes
    kept = expert_diagnostics(Engine(lab, open_store(lab, cache)))
    again = expert_diagnostics(fresh)
    direct = interference(Engine(lab, open_store(lab, tmp_path / "other.sqlite")).experts)
    for d in (kept, again):
        for k in ("norms", "cosine", "conflicts"):
            pd.testing.assert_frame_equal(d[k], direct[k], check_dtype=False)
        assert d["dims"] == direct["dims"] and d["cosine_chance"] == pytest.approx(direct["cosine_chance"])
    assert "experts" not in fresh.sources.__dict__


def test_a_changed_expert_makes_a_new_summary(tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    cache = tmp_path / "cache.sqlite"
    before = lab_summary(Engine(lab, open_store(lab, cache)))
    fresh = Engine(lab, open_store(lab, cache))
    fp = fresh.models_fp
    # the adapter 'add' loses one adapted module (its config still names the target modules)
    path = tiny_lab_dir / "experts" / "add" / "adapter_model.safetensors"
    tensors = load_file(path)
    module = sorted(k for k in tensors if "lora_A" in k)[0].removesuffix(".lora_A.weight")
    save_file({k: v for k, v in tensors.items() if not k.startswith(module + ".")}, path)
    fresh.refresh()  # a page's next run: the files changed while nothing was loaded
    assert fresh.models_fp != fp
    after = lab_summary(fresh)
    (b,) = [e for e in before["experts"] if e["name"] == "add"]
    (a,) = [e for e in after["experts"] if e["name"] == "add"]
    assert a["n_tensors"] == b["n_tensors"] - 1 and a["fingerprint"] != b["fingerprint"]
    assert a["fingerprint"] == fresh.experts[0].fingerprint  # what is kept is what is loaded


def test_fingerprints_read_from_files_are_those_of_the_loaded_checkpoints(tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    light = Engine(lab, open_store(lab, tmp_path / "a.sqlite"))
    fps = (light.models_fp, list(light.sources.expert_fps), light.sources.base_fp)
    assert "experts" not in light.sources.__dict__
    loaded = Engine(lab, open_store(lab, tmp_path / "b.sqlite"))
    loaded.experts  # noqa: B018 - load first: the fingerprints are then those of what was loaded
    assert (loaded.models_fp, [e.fingerprint for e in loaded.experts], loaded.base.fingerprint) == fps


def test_a_cache_in_memory_still_shows_the_summary(tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    eng = Engine(lab, open_store(lab, ":memory:"))
    assert lab_summary(eng)["base"]["n_tensors"] > 0  # computed, nothing written
    assert not (tiny_lab_dir / ".mixlab").exists()


def _close(a, b, path="") -> None:
    """``a`` equals ``b`` with floats to 1e-6 (a summary computed on another CPU), NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name", ["demo-k3", "demo-k4", "demo-recycle", "demo-vl"])
def test_every_shipped_lab_ships_its_current_page_summaries(name):
    """What a fresh cache reads (``summaries.json``) is what the checkpoints give now, under the key a page
    looks for: a stale file would be ignored (and the first paint would load the model stack); a wrong one
    would show wrong sizes. Rewritten by any demo build (mixlab.summary.ship)."""
    shipped = json.loads((LABS_DIR / name / SHIPPED).read_text())
    eng = Engine(load_lab(LABS_DIR / name), Store(":memory:"), device="cpu")
    assert set(shipped) == set(COMPUTE)
    for what, compute in COMPUTE.items():
        assert shipped[what]["key"] == _key(eng, what), (
            f"{name}/{SHIPPED} is stale: python -m mixlab lab summaries cache/{name}"
        )
        _close(shipped[what]["value"], json.loads(json.dumps(compute(eng))), what)
    assert not any(str(LABS_DIR) in w for w in shipped["lab"]["value"]["warnings"])  # no builder's path


def test_a_shipped_summary_is_read_only_while_its_key_holds_and_never_through_a_link(
    tiny_lab_dir, tmp_path, monkeypatch
):
    lab = load_lab(tiny_lab_dir)
    proc = subprocess.run(  # the command a user runs (what ship() writes)
        [sys.executable, "-m", "mixlab", "lab", "summaries", str(tiny_lab_dir)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"wrote {tiny_lab_dir / SHIPPED}", proc.stderr[-2000:]
    fresh = Engine(lab, open_store(lab, tmp_path / "a.sqlite"))
    summary = lab_summary(fresh)  # from summaries.json: nothing loaded
    assert "experts" not in fresh.sources.__dict__ and "base" not in fresh.sources.__dict__
    computed = lab_summary(Engine(lab, open_store(lab, ":memory:")))
    assert json.loads((tiny_lab_dir / SHIPPED).read_text())["lab"]["value"] == summary
    _close(summary, json.loads(json.dumps(computed)))

    # a forged value under a stale key is not read: the summary is computed
    shipped = json.loads((tiny_lab_dir / SHIPPED).read_text())
    shipped["lab"]["key"]["models"] = "another"
    shipped["lab"]["value"]["base"]["n_params"] = -1
    (tiny_lab_dir / SHIPPED).write_text(json.dumps(shipped))
    assert lab_summary(Engine(lab, open_store(lab, tmp_path / "b.sqlite")))["base"]["n_params"] > 0
    # nor one that is not a summary under the right key, nor one too big to be one
    ship(tiny_lab_dir)
    shipped = json.loads((tiny_lab_dir / SHIPPED).read_text())
    (tiny_lab_dir / SHIPPED).write_text(json.dumps(shipped | {"lab": {"key": shipped["lab"]["key"], "value": [1]}}))
    assert lab_summary(Engine(lab, open_store(lab, tmp_path / "d.sqlite")))["base"]["n_params"] > 0
    ship(tiny_lab_dir)
    monkeypatch.setattr(summary_mod, "MAX_BYTES", 100)
    big = Engine(lab, open_store(lab, tmp_path / "e.sqlite"))
    lab_summary(big)
    assert "base" in big.sources.__dict__  # loaded: the file was not read
    monkeypatch.undo()

    # nor is a summaries.json that links out of the lab, even under the right key
    outside = tmp_path / "outside.json"
    ship(tiny_lab_dir)
    forged = json.loads((tiny_lab_dir / SHIPPED).read_text())
    forged["lab"]["value"]["base"]["n_params"] = -1
    outside.write_text(json.dumps(forged))
    (tiny_lab_dir / SHIPPED).unlink()
    (tiny_lab_dir / SHIPPED).symlink_to(outside)
    linked = Engine(lab, open_store(lab, tmp_path / "c.sqlite"))
    assert lab_summary(linked)["base"]["n_params"] > 0
    (tiny_lab_dir / SHIPPED).unlink()
