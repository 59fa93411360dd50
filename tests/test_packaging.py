"""The distribution installs under one import namespace and lives beside a distribution named ``inference``.

A wheel is built from this repository and installed, without its dependencies, into a fresh virtual
environment that borrows the dependencies of the running one (torch, numpy, ...) through a ``.pth`` line.
Beside it goes a tiny distribution that owns the top-level name ``inference``, as a popular
computer-vision package does. Then ``rud_example`` and ``rud_plan`` run from that environment, outside the
repository, and both packages stay importable.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _other_inference_wheel(folder: Path) -> Path:
    """A minimal wheel of a distribution ``inference`` whose package is the top-level ``inference``."""
    files = {
        "inference/__init__.py": b"OWNER = 'another distribution'\n",
        "inference-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: inference\nVersion: 1.0\n",
        "inference-1.0.dist-info/WHEEL": (b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          b"Tag: py3-none-any\n"),
    }
    record = [_record_line(n, d) for n, d in files.items()] + ["inference-1.0.dist-info/RECORD,,"]
    path = folder / "inference-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("inference-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def _source_packages() -> set[str]:
    """Every package folder of the repository as its installed import name."""
    names = set()
    for top, installed in (("retinaunet", "retinaunet"), ("planning", "retinaunet.planning"),
                           ("preprocessing", "retinaunet.preprocessing"), ("inference", "retinaunet.inference")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top).parts
            names.add(".".join((installed, *rel)))
    return names


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the tracked files")
def test_wheel_installs_beside_a_distribution_named_inference(tmp_path):
    src = tmp_path / "src"  # build from the tracked files only, never from build leftovers
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True, encoding="utf-8", errors="replace").stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(dist), str(src)], check=True)
    wheel = next(dist.glob("retinaunet_detection-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist() if not n.split("/")[0].endswith(".dist-info")}
        packages = {os.path.dirname(n).replace("/", ".") for n in zf.namelist() if n.endswith("__init__.py")}
    assert tops == {"retinaunet"}, f"the wheel installs top-level names {sorted(tops)}"
    assert packages == _source_packages(), "pyproject's package list and the source folders disagree"

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    env_py = env / "bin" / "python"
    env_site = Path(subprocess.run([str(env_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True, encoding="utf-8",
                                   errors="replace").stdout.strip())
    # dependencies from the running environment; its .pth files (the editable install) are not processed
    deps = [p for p in [sysconfig.get_paths()["purelib"], *site.getsitepackages()] if Path(p).is_dir()]
    (env_site / "borrowed_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([str(env_py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel), str(_other_inference_wheel(tmp_path))], check=True)

    work = tmp_path / "work"
    work.mkdir()
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RUD_TASK")}
    run_env["RUD_DATA"] = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    check = ("import inference, retinaunet, retinaunet.inference.predictor as p; "
             "assert inference.OWNER == 'another distribution'; print(p.__file__)")
    out = subprocess.run([str(env_py), "-c", check], cwd=work, env=run_env, check=True,
                         capture_output=True, text=True, encoding="utf-8", errors="replace").stdout
    assert str(env_site) in out and str(REPO) not in out
    bindir = env / "bin"
    subprocess.run([str(bindir / "rud_example"), "shapes", "--num-train", "6", "--num-test", "2", "--size", "64",
                    "--radius", "8", "--quiet"], cwd=work, env=run_env, check=True)
    subprocess.run([str(bindir / "rud_plan"), "-t", "101"], cwd=work, env=run_env, check=True,
                   capture_output=True)
    task = next((tmp_path / "data").glob("Task101_*"))
    assert (task / "plans.json").is_file()
