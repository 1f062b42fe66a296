"""Deployment files: the Dockerfile's lint, the Compose and Kubernetes schemas, the
startup device report, and the CPU image's install and start commands run outside a
container (no Docker engine runs here, so the commands are replayed on the host)."""

from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extra")

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
REQUIREMENTS = ROOT / "requirements"
K8S_VERSION = "1.37.0"
KSERVE_GROUP = "serving.kserve.io"
IRIS = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}


def tool(name: str) -> str:
    """A command-line tool from the test extra: beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(message + " and CI must run the deployment checks")
        pytest.skip(message)
    return found


# ---------------------------------------------------------------- Dockerfile model


@dataclass
class Instruction:
    keyword: str
    flags: list[str]
    args: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name, in file order (the last one is the default target)."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.lstrip()
        if keyword == "ARG" and stage is None:
            key, _, default = rest.partition("=")
            global_args[key] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: {line}"
            stage = stages[parts[2]] = Stage(base, parts[2])
        else:
            assert stage is not None, f"{keyword} before FROM"
            stage.instructions.append(Instruction(keyword, flags, rest))
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target and the stages it is built FROM, base first."""
    result = [stages[target]]
    while result[0].base in stages:
        result.insert(0, stages[result[0].base])
    return result


def env_pairs(args: str) -> list[tuple[str, str]]:
    return [tuple(token.split("=", 1)) for token in shlex.split(args)]  # type: ignore[misc]


def final_env(stages: dict[str, Stage], target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in chain(stages, target):
        for ins in stage.all("ENV"):
            env.update(env_pairs(ins.args))
    return env


def last(stages: dict[str, Stage], target: str, keyword: str) -> Instruction:
    found = [i for s in chain(stages, target) for i in s.all(keyword)]
    assert found, f"target {target} has no {keyword}"
    return found[-1]


def requirement_files(stages: dict[str, Stage], target: str) -> list[str]:
    """The requirement files the target's dependency stage installs with pip."""
    deps = [
        f.split("=", 1)[1]
        for s in chain(stages, target)
        for i in s.all("COPY")
        for f in i.flags
        if f.startswith("--from=")
    ]
    commands = [i.args for d in deps for s in chain(stages, d) for i in s.all("RUN")]
    return [m for c in commands for m in re.findall(r"pip install\b.*?-r (\S+)", c)]


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirement file and the files it includes (-r)."""
    from packaging.utils import canonicalize_name

    result: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            result.update(pins(path.parent / line[3:].strip()))
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[\w,-]+\])?==([\w.+-]+)", line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        result[canonicalize_name(match.group(1))] = match.group(3)
    return result


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_reports_nothing_on_the_dockerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    # the linter is live: a known-bad file gets its warnings
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    found = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(bad)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert {"DL3007", "DL3013"} <= {w["code"] for w in json.loads(found.stdout)}

    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_dockerfile_targets_share_one_runtime_layout() -> None:
    stages = parse_dockerfile()
    assert list(stages)[-1] == "gpu", "a plain docker build gives the GPU image"
    for target in ("cpu", "gpu"):
        env = final_env(stages, target)
        assert env["HOST"] == "0.0.0.0"
        assert last(stages, target, "EXPOSE").args == env["PORT"]
        assert json.loads(last(stages, target, "CMD").args) == ["python", "-m", "app"]
        user = last(stages, target, "USER").args
        assert re.fullmatch(r"[1-9]\d*:\d+", user), f"non-root numeric user, not {user!r}"
        healthcheck = last(stages, target, "HEALTHCHECK").args
        assert healthcheck.startswith("CMD [")
        assert "/health/ready" in healthcheck and "PORT" in healthcheck
        copied = [i.args.split()[0] for s in chain(stages, target) for i in s.all("COPY")]
        assert "app/" in copied and "models/" in copied
        assert (
            env["MODELS_DIR"] == "/srv/models" == last(stages, target, "WORKDIR").args + "/models"
        )


def test_dependencies_are_installed_before_code_is_copied() -> None:
    stages = parse_dockerfile()
    for target in ("cpu", "gpu"):
        steps = [i for s in chain(stages, target) for i in s.instructions]
        venv_copy = next(
            n for n, i in enumerate(steps) if any(f.startswith("--from=") for f in i.flags)
        )
        code_copy = next(n for n, i in enumerate(steps) if i.keyword == "COPY" and "app/" in i.args)
        assert venv_copy < code_copy
    assert requirement_files(stages, "cpu") == ["requirements/serve.txt"]
    assert requirement_files(stages, "gpu") == ["requirements/gpu.txt"]
    # the dependency stages see only the requirement files, so code edits keep their cache
    for deps in ("deps-cpu", "deps-gpu"):
        copies = [i.args.split()[:-1] for i in stages[deps].all("COPY")]
        assert all(src.startswith("requirements/") for c in copies for src in c)


def test_requirement_files_pin_what_pyproject_asks_for() -> None:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serve, gpu = pins(REQUIREMENTS / "serve.txt"), pins(REQUIREMENTS / "gpu.txt")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "onnxruntime":
            assert req.specifier.contains(serve[name]) and req.specifier.contains(
                gpu["onnxruntime-gpu"]
            )
            continue
        for pinned in (serve, gpu):
            assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} breaks {spec}"
    tensorflow = Requirement(project["optional-dependencies"]["tensorflow"][0])
    assert tensorflow.specifier.contains(gpu["tensorflow"])
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" not in serve, "the two builds clash"
    assert "tensorflow" not in serve and "tensorflow-cpu" not in serve
    assert "tensorflow[and-cuda]==" in (REQUIREMENTS / "gpu.txt").read_text()
    assert any(name.startswith("nvidia-cudnn") for name in gpu)


def test_dockerignore_keeps_what_the_image_copies() -> None:
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in rules, "everything else stays out of the build context"
    assert {"!app/", "!models/", "!requirements/*.txt"} <= set(rules)


# ---------------------------------------------------------------- docker compose


def test_compose_file_validates_against_the_compose_spec(tmp_path: Path) -> None:
    checker = tool("check-jsonschema")
    command = [checker, "--builtin-schema", "vendor.compose-spec"]
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  web:\n    image: x\n    restart: 5\n    no_such_key: 1\n")
    assert subprocess.run([*command, str(broken)], check=False, capture_output=True).returncode != 0

    result = subprocess.run([*command, str(COMPOSE)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_compose_up_starts_cpu_and_the_gpu_waits_behind_a_profile() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    # `docker compose up` starts exactly the services without a profile
    assert [name for name, service in services.items() if "profiles" not in service] == ["serve"]
    cpu, gpu = services["serve"], services["serve-gpu"]
    assert cpu["build"]["target"] == "cpu" and "deploy" not in cpu
    assert cpu["environment"]["RUNTIME"] == "${RUNTIME:-onnx}"
    assert gpu["build"]["target"] == "gpu" and gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    drain = float(re.sub(r"\$\{\w+:-(.*)\}", r"\1", cpu["environment"]["DRAIN_SECONDS"]))
    host_ports = set()
    for service in (gpu, cpu):
        env = service["environment"]
        assert env["HOST"] == "0.0.0.0"
        assert service["restart"] in {"always", "unless-stopped", "on-failure"}
        assert f"127.0.0.1:{env['PORT']}/health/ready" in " ".join(service["healthcheck"]["test"])
        (port,) = service["ports"]
        assert port.endswith(f":{env['PORT']}")
        host_ports.add(port.split(":")[0])
        mount = service["volumes"][0]
        assert (mount["source"], mount["target"]) == ("./models", env["MODELS_DIR"])
        assert int(service["stop_grace_period"].rstrip("s")) > drain
    assert len(host_ports) == 2, "both profiles at once must not fight over one host port"


# ---------------------------------------------------------------- Kubernetes / KServe


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.y*ml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(doc: dict[str, Any]) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is in the test extra"
    )
    kv.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    doc = documents(DEPLOY / "k8s/cpu/deployment.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        validate(doc)


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        group = doc["apiVersion"].split("/")[0]
        if group == KSERVE_GROUP:
            validate_kserve(doc)
        else:
            validate(doc)


def validate_kserve(doc: dict[str, Any]) -> None:
    """KServe CRDs are outside the Kubernetes schemas: their pod parts are checked as a Pod."""
    assert doc["kind"] in {"InferenceService", "ServingRuntime"}
    assert (
        doc["apiVersion"]
        == {
            "InferenceService": "serving.kserve.io/v1beta1",
            "ServingRuntime": "serving.kserve.io/v1alpha1",
        }[doc["kind"]]
    )
    spec = doc["spec"]
    if doc["kind"] == "ServingRuntime":
        assert spec["protocolVersions"] == ["v2"]
        containers = spec["containers"]
    else:
        predictor = spec["predictor"]
        if "model" in predictor:
            model = dict(predictor["model"])
            assert model.pop("protocolVersion") == "v2"
            for key in ("modelFormat", "runtime", "storageUri"):
                model.pop(key, None)
            containers = [{"name": "kserve-container", "image": "keras-serve:gpu", **model}]
        else:
            containers = predictor["containers"]
            env = {e["name"]: e["value"] for e in containers[0]["env"]}
            assert env["PROTOCOL"] == "v2", "a custom predictor names its protocol in PROTOCOL"
            assert str(containers[0]["ports"][0]["containerPort"]) == env["PORT"]
    assert containers[0]["name"] == "kserve-container"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": containers},
    }
    validate(pod)


def test_kustomizations_list_existing_resources() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource}"


def test_deployments_drain_before_they_are_killed() -> None:
    config = documents(DEPLOY / "k8s/common/configmap.yaml")[0]["data"]
    service = documents(DEPLOY / "k8s/common/service.yaml")[0]
    for variant in ("cpu", "gpu"):
        deployment = documents(DEPLOY / f"k8s/{variant}/deployment.yaml")[0]
        hpa = documents(DEPLOY / f"k8s/{variant}/hpa.yaml")[0]
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        needed = int(pre_stop[1]) + float(config["DRAIN_SECONDS"])
        assert spec["terminationGracePeriodSeconds"] > needed
        assert str(container["ports"][0]["containerPort"]) == config["PORT"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert spec["securityContext"]["runAsNonRoot"] is True
        resources = container["resources"]
        has_gpu = "nvidia.com/gpu" in resources["limits"]
        assert has_gpu == (variant == "gpu")
        assert {"cpu", "memory"} <= resources["requests"].keys() & resources["limits"].keys()


def test_gpu_autoscaler_holds_one_gpu_at_minimum() -> None:
    """These models are small: a second GPU is taken under load, never held idle."""
    gpu_hpa = documents(DEPLOY / "k8s/gpu/hpa.yaml")[0]["spec"]
    gpu_deployment = documents(DEPLOY / "k8s/gpu/deployment.yaml")[0]["spec"]
    container = gpu_deployment["template"]["spec"]["containers"][0]
    gpus_per_pod = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpu_hpa["minReplicas"] * gpus_per_pod == 1
    assert gpu_deployment["replicas"] * gpus_per_pod == 1
    assert documents(DEPLOY / "k8s/cpu/hpa.yaml")[0]["spec"]["minReplicas"] >= 2
    pdb = documents(DEPLOY / "k8s/common/pdb.yaml")[0]["spec"]
    assert "minAvailable" not in pdb, "with one GPU pod, minAvailable: 1 blocks every drain"


def test_local_build_script_uses_the_base_image_argument() -> None:
    """deploy/build-local.sh builds the cpu target on a local base image through the
    Dockerfile's base-image argument (running it needs root, buildah and podman)."""
    script = (DEPLOY / "build-local.sh").read_text()
    argument = re.search(r"^ARG (\w+)=", DOCKERFILE.read_text(), re.MULTILINE)
    assert argument, "the Dockerfile takes its base image as a build argument"
    assert f'--build-arg "{argument.group(1)}=$BASE"' in script
    assert "--target cpu" in script and "buildah from scratch" in script
    result = subprocess.run(["bash", "-n", str(DEPLOY / "build-local.sh")], capture_output=True)
    assert result.returncode == 0, result.stderr


def probe_paths() -> set[str]:
    """Every HTTP path that a probe or health check in the deployment files asks for."""
    paths = set(
        re.findall(r"https?://[^/]+(/[\w/]+)", DOCKERFILE.read_text() + COMPOSE.read_text())
    )
    for path in manifests():
        paths.update(re.findall(r"path: (/[\w/]+)", path.read_text()))
    return paths


def test_every_probe_path_is_served(client: Any) -> None:
    paths = probe_paths()
    assert {"/health/live", "/health/ready", "/v2/health/ready"} <= paths
    for path in paths:
        assert client.get(path).status_code == 200, path


# ---------------------------------------------------------------- startup device report


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_device_report_leaves_tensorflow_alone_for_onnx() -> None:
    out = run_python(
        "import json, sys; from app.devices import device_report; r = device_report('onnx');"
        "print(json.dumps([r, 'tensorflow' in sys.modules]))"
    )
    report, imported = json.loads(out)
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    assert "tensorflow_devices" not in report and imported is False


def test_device_report_lists_tensorflow_devices_for_tensorflow() -> None:
    pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")
    out = run_python(
        "import json; from app.devices import device_report;"
        "print(json.dumps(device_report('tensorflow')))"
    )
    assert "CPU:0" in json.loads(out.splitlines()[-1])["tensorflow_devices"]


# ---------------------------------------------------------------- the image, replayed


class Replay:
    """Replays a Dockerfile target's instructions on this host, under ``root``.

    Container paths map to ``root/<path>``; the base image's ``python`` is this
    interpreter. Only pip/venv RUN steps execute: user creation stays in the image.
    """

    SKIPPED_RUN = re.compile(r"^(groupadd|useradd)\b")

    def __init__(self, stages: dict[str, Stage], root: Path) -> None:
        self.stages, self.root = stages, root
        shim = root / "base-image-bin"
        shim.mkdir(parents=True)
        python = shim / "python"
        interpreter = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
        python.write_text(f'#!/bin/sh\nexec "{interpreter}" "$@"\n')
        python.chmod(0o755)
        passed = ("HOME", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k in passed or k.startswith("PIP_") or k.lower().endswith("_proxy")
        }
        self.env["PATH"] = f"{shim}:/usr/local/bin:/usr/bin:/bin"
        self.cwd = root
        self.done: set[str] = set()

    def host(self, container_path: str) -> Path:
        path = Path(container_path)
        return self.root / path.relative_to("/") if path.is_absolute() else self.cwd / path

    def build(self, target: str) -> None:
        for stage in chain(self.stages, target):
            if stage.name in self.done:
                continue
            for ins in stage.instructions:
                getattr(self, f"do_{ins.keyword.lower()}", lambda _: None)(ins)
            self.done.add(stage.name)

    def do_env(self, ins: Instruction) -> None:
        for key, value in env_pairs(ins.args):
            value = str(self.host(value)) if value.startswith("/") else value
            self.env[key] = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: self.env.get(m.group(1) or m.group(2), ""), value
            )

    def do_workdir(self, ins: Instruction) -> None:
        self.cwd = self.host(ins.args)
        self.cwd.mkdir(parents=True, exist_ok=True)

    def do_copy(self, ins: Instruction) -> None:
        *sources, dest = ins.args.split()
        source_stage = next(
            (f.split("=", 1)[1] for f in ins.flags if f.startswith("--from=")), None
        )
        if source_stage is not None:
            saved = self.env.copy(), self.cwd
            self.build(source_stage)
            self.env, self.cwd = saved
            assert sources == [dest], "a copy between stages keeps its path"
            return
        target = self.host(dest)
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(
                    src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)

    def do_run(self, ins: Instruction) -> None:
        if self.SKIPPED_RUN.match(ins.args):
            return
        assert re.search(r"\b(pip|venv)\b", ins.args), f"unexpected RUN step: {ins.args}"
        result = subprocess.run(
            ["/bin/sh", "-c", ins.args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_cpu_image_commands_install_start_and_predict(tmp_path: Path) -> None:
    stages = parse_dockerfile()
    replay = Replay(stages, tmp_path / "image")
    replay.build("cpu")

    # the virtualenv holds exactly the pinned set: nothing unpinned was pulled in
    venv = Path(replay.env["VIRTUAL_ENV"])
    frozen = subprocess.run(
        [venv / "bin/python", "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(n): v for n, v in (line.split("==") for line in frozen.split())}
    assert installed == pins(REQUIREMENTS / "serve.txt")
    assert not (venv / "lib/python3.11/site-packages/tensorflow").exists()

    env = {**replay.env, "HOST": "127.0.0.1", "PORT": str(free_port())}
    command = json.loads(last(stages, "cpu", "CMD").args)
    healthcheck = json.loads(last(stages, "cpu", "HEALTHCHECK").args.removeprefix("CMD "))
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command,
            cwd=replay.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 180
        while subprocess.run(healthcheck, env=env, capture_output=True, check=False).returncode:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "not ready in 180 s:\n" + log_path.read_text()
            time.sleep(1)

        base = f"http://127.0.0.1:{env['PORT']}"
        request = urllib.request.Request(
            f"{base}/models/iris/predict",
            data=json.dumps(IRIS).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        assert body["model"] == "iris"
        prediction = body["predictions"][0]
        assert prediction["label"] in {"setosa", "versicolor", "virginica"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        with urllib.request.urlopen(f"{base}/models/iris", timeout=10) as response:
            versions = json.load(response)["versions"]
        assert {v["device"] for v in versions} == {"CPU"}
    finally:
        server.terminate()
        server.wait(timeout=float(env["DRAIN_SECONDS"]) + 15)
    log_text = log_path.read_text()
    assert str(replay.host("/srv/models")) in log_text, "it served the copied models"
    assert re.search(
        r"devices: runtime=onnx onnxruntime providers=\S*CPUExecutionProvider", log_text
    )
    assert "tensorflow devices=not queried" in log_text
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/health/live", timeout=2)


def test_gpu_image_puts_every_cuda_wheel_on_the_library_path() -> None:
    stages = parse_dockerfile()
    python = re.search(r"python:(\d+\.\d+)", stages["python"].base)
    assert python, stages["python"].base
    paths = final_env(stages, "gpu")["LD_LIBRARY_PATH"].split(":")
    prefix = f"/opt/venv/lib/python{python.group(1)}/site-packages/nvidia/"
    assert all(p.startswith(prefix) and p.endswith("/lib") for p in paths), paths
    wheels = [n for n in pins(REQUIREMENTS / "gpu.txt") if re.fullmatch(r"nvidia-.+-cu12", n)]
    libraries = {n.removeprefix("nvidia-").removesuffix("-cu12").replace("-", "_") for n in wheels}
    libraries.discard("cuda_nvcc")  # ptxas and friends: binaries, no shared libraries
    assert {p.removeprefix(prefix).removesuffix("/lib") for p in paths} == libraries
