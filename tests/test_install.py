"""mixlab installs as a package: a wheel holds the library (not the app, views, benches or tests) and a
`mixlab` console script that works from any folder. Installed into a fresh venv without dependencies;
the test venv's packages stand in for them (a .pth file), so nothing is downloaded."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_a_working_mixlab_command(tmp_path):
    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info beside the sources it builds
    src.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "requirements-ray.txt", "requirements-lmeval.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "mixlab", src / "mixlab", ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("mixlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("mixlab-")}
    assert tops == {"mixlab"}, tops  # not app.py, views, bench, tests
    assert any(n.endswith("entry_points.txt") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Provides-Extra: ray" in meta and 'ray==2.60.0; extra == "ray"' in meta  # pip install mixlab[ray]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co. from the test venv
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(
        [str(venv / "bin" / "mixlab"), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert r.returncode == 0 and "search" in r.stdout and "sweep" in r.stdout, r.stderr[-2000:]
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mixlab, sys; print(mixlab.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert str(site) in r.stdout, r.stdout + r.stderr  # the installed copy, imported from another folder
    assert not (ROOT / "build").exists() and not list(ROOT.glob("*.egg-info"))  # the checkout stays clean


def _map_paths(block: str) -> set[str]:
    """The files a tree map names, as paths: a line's first names (``a.py`` or ``a.py, b.py``) sit in the
    folders the lines above it opened at lesser indents (``merge/``, two spaces a level)."""
    import re

    paths, folders = set(), []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        del folders[depth:]
        m = re.match(r"\s*((?:[\w./-]+\.py)(?:, [\w./-]+\.py)*|[\w./-]+/)(?:\s|$)", line)
        if m is None:
            continue
        if m.group(1).endswith("/"):
            folders.append(m.group(1).rstrip("/"))
            continue
        paths |= {"/".join([*folders, name]) for name in m.group(1).split(", ")}
    return paths


def test_the_readme_development_map_names_every_module():
    """The README's map of the tree (## Development) names every module of mixlab/ (its subpackages too, whose
    folder line stands for their ``__init__``) and every file of views/, one line each, at its path; and no
    file that is gone."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Development", 1)[1].split("```", 2)[1]
    named = _map_paths(block)
    modules = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "mixlab").rglob("*.py")
        if "__pycache__" not in p.parts and not (p.name == "__init__.py" and p.parent != ROOT / "mixlab")
    }
    modules |= {str(p.relative_to(ROOT)) for p in (ROOT / "views").glob("*.py")}
    assert modules - named == set(), "modules the README's map does not name"
    assert {p for p in named if not (ROOT / p).is_file()} == set(), "files the README's map names that are gone"
    assert "_shared" not in block and "cli.py" not in block  # gone: views/_shared.py, mixlab/cli.py
