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


def constraints() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, v = line.partition("==")
            assert v, f"constraints.txt: {line!r} is not pinned with =="
            out[canonical(name)] = v.strip()
    return out


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_one_environment_for_both_readme_commands():
    """Both README commands pass -c constraints.txt, which names one version of every package the test
    environment holds: so the app set and the test set resolve every package they share alike (the app set
    alone once took python-dateutil 4.0.0, the test set 2.9.0.post0). Here: the lock covers this whole
    environment at the installed versions, and agrees with every pin of the requirement files."""
    import sysconfig
    from importlib.metadata import distributions

    lock = constraints()
    readme = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.txt -c constraints.txt && .venv/bin/streamlit run app.py" in readme
    test_command = "pip install -r requirements-dev.txt -c constraints.txt && .venv/bin/python -m pytest"
    assert test_command in readme and test_command in (ROOT / ".ci" / "run").read_text()
    for name, v in pins().items():
        assert lock.get(canonical(name)) == v, f"{name}: pinned {v}, constraints.txt says {lock.get(canonical(name))}"
    site = [sysconfig.get_paths()["purelib"]]  # installed packages only (setuptools' vendored ones are not)
    installed = {canonical(d.metadata["Name"]): d.version.split("+")[0] for d in distributions(path=site)}
    installed.pop("mixlab", None)
    missing = sorted(set(installed) - set(lock) - {"pip", "setuptools", "wheel"})
    assert not missing, f"installed but not in constraints.txt: {missing}"
    wrong = {n: (installed[n], lock[n]) for n in lock if n in installed and installed[n] != lock[n]}
    assert not wrong, f"installed vs constraints.txt: {wrong}"
