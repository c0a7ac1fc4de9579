"""The environment the README's commands build is the pinned one: nothing in requirements pulled another
torch (an unpinned or ranged dependency would take a CUDA build of several GB)."""

from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(files=("requirements.txt", "requirements-ray.txt", "requirements-lmeval.txt")) -> dict[str, str]:
    out = {}
    for line in "\n".join((ROOT / f).read_text() for f in files).splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, v = line.partition("==")
            assert v, f"requirements: {line!r} is not pinned with =="
            out[name.strip()] = v.strip()
    return out


def test_every_requirement_is_pinned_and_installed_at_its_pin():
    import torch

    p = pins()
    assert p["torch"] == "2.13.0" and torch.__version__.split("+")[0] == "2.13.0"
    for name, v in p.items():
        assert version(name).split("+")[0] == v, f"{name}: installed {version(name)}, pinned {v}"
