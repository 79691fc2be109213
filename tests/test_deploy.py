"""The Kubernetes deployment: the Helm chart, the plain manifests made from it, and the image's
entry points, all checked offline with Helm's own library and the Kubernetes schemas."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from steerlab.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_k8s", ROOT / "scripts" / "gen_k8s.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_k8s = _load_generator()
CHART = gen_k8s.CHART
KUBERNETES_VERSION = gen_k8s.KUBERNETES_VERSION  # 1.33.0, one of kubernetes-validate's bundled schemas

GPU_VALUES = helm_python.values_from_yaml((CHART / "values-gpu.yaml").read_text())
# Every optional part switched on: the in-chart stores, a token, queue-based worker scaling,
# inference autoscaling, a model volume.
EVERYTHING_VALUES: dict[str, Any] = {
    "postgresql": {"enabled": True},
    "redis": {"enabled": True},
    "auth": {"existingSecret": "steerlab-token"},
    "workers": {"autoscaling": {"queueLengthPerWorker": 2}},
    "inference": {"autoscaling": {"enabled": True}},
    "model": {"name": "/models/mine", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
}
# TLS with mutual authentication, from a certificate Secret of the user's.
TLS_VALUES: dict[str, Any] = {"tls": {"enabled": True, "existingSecret": "steerlab-tls", "mutual": True}}
VALUE_SETS = {"default": {}, "gpu": GPU_VALUES, "everything": EVERYTHING_VALUES, "tls": TLS_VALUES}
SERVERS = {"registry": "REGISTRY", "sessions": "SESSIONS", "jobs": "JOBS", "inference": "INFERENCE"}


CERT_MANAGER_API = "cert-manager.io/v1/Certificate"


def render(
    values: dict[str, Any], *, operator: bool = False, api_versions: list[str] | None = None
) -> list[dict[str, Any]]:
    """The chart's objects; ``operator``: as on a cluster that serves the ServiceMonitor CRD;
    ``api_versions``: further APIs the cluster serves."""
    api_versions = [*(api_versions or []), *([gen_k8s.SERVICE_MONITOR_API] if operator else [])]
    objects: list[dict[str, Any]] = gen_k8s.objects(gen_k8s.render_chart(values, api_versions=api_versions))
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str = "") -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (not name or o["metadata"]["name"] == name)]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    """The container's variables: a literal value, or the (secret, key) it comes from."""
    result = {}
    for variable in container(deployment)["env"]:
        secret = variable.get("valueFrom", {}).get("secretKeyRef")
        result[variable["name"]] = (secret["name"], secret["key"]) if secret else variable["value"]
    return result


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_chart_lints_without_warnings(name: str) -> None:
    report = helm_python.lint(CHART, VALUE_SETS[name], strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 and 3 are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_validates_against_the_kubernetes_schemas(name: str) -> None:
    objects = render(VALUE_SETS[name], operator=True)
    assert len(objects) > 20
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":  # a CRD: not in the Kubernetes schemas
            continue
        # strict: an unknown or misspelt field fails too.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "steerlab", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == gen_k8s.RELEASE
        assert labels["app.kubernetes.io/part-of"] == "steerlab"


def test_the_validation_catches_a_misspelt_field() -> None:
    [deployment] = find(render({}), "Deployment", "steerlab-registry")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_each_service_listens_where_its_probes_service_and_callers_look(name: str) -> None:
    objects = render(VALUE_SETS[name])
    services = {s["metadata"]["name"]: s for s in find(objects, "Service")}
    addresses = set()
    for component, prefix in SERVERS.items():
        [deployment] = find(objects, "Deployment", f"steerlab-{component}")
        main_container, variables = container(deployment), env(deployment)
        ports = {p["name"]: p["containerPort"] for p in main_container["ports"]}
        assert variables[f"STEERLAB_{prefix}_PORT"] == str(ports["grpc"])
        assert variables[f"STEERLAB_{prefix}_METRICS_PORT"] == str(ports["metrics"])
        # With TLS the probes (which cannot speak it) ask the plaintext health-only port.
        probed = ports["health"] if "tls" in VALUE_SETS[name] else ports["grpc"]
        if "tls" in VALUE_SETS[name]:
            assert variables[f"STEERLAB_{prefix}_HEALTH_PORT"] == str(probed)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main_container[probe]["grpc"]["port"] == probed, (component, probe)
        service = services[f"steerlab-{component}"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}
        grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
        addresses.add(f"steerlab-{component}:{grpc_port}")
        # Kubernetes would otherwise set STEERLAB_<SERVICE>_PORT=tcp://... from the Services.
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
    [sessions] = find(objects, "Deployment", "steerlab-sessions")
    [inference] = find(objects, "Deployment", "steerlab-inference")
    [workers] = find(objects, "Deployment", "steerlab-workers")
    assert env(sessions)["STEERLAB_REGISTRY"] in addresses
    assert env(workers)["STEERLAB_REGISTRY"] in addresses  # results go through the registry API
    assert {env(inference)["STEERLAB_REGISTRY"], env(inference)["STEERLAB_SESSIONS"]} <= addresses


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_container_runs_locked_down(name: str) -> None:
    pods = [
        o["spec"]["template"]["spec"] for o in render(VALUE_SETS[name]) if o["kind"] in ("Deployment", "Job")
    ]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, each["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            if each["image"].startswith("steerlab:"):  # torch, DeepSpeed and Hugging Face write caches there
                assert "/tmp" in {m["mountPath"] for m in each["volumeMounts"]}, each["name"]


def test_inference_gets_one_gpu_per_tensor_parallel_rank_on_gpu_nodes() -> None:
    [default] = find(render({}), "Deployment", "steerlab-inference")
    assert "nvidia.com/gpu" not in container(default)["resources"]["limits"]
    [gpu] = find(render(GPU_VALUES), "Deployment", "steerlab-inference")
    ranks = GPU_VALUES["inference"]["tensorParallel"]
    assert ranks > 1
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == ranks
    assert env(gpu)["STEERLAB_TENSOR_PARALLEL"] == str(ranks)
    assert env(gpu)["STEERLAB_MODEL"] == GPU_VALUES["model"]["name"]
    assert gpu["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0  # no spare GPUs for a surge pod
    pod = gpu["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in container(gpu)["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm"
    assert GPU_VALUES["model"]["name"].startswith(next(p for p, n in mounts.items() if n == "model"))


def test_urls_come_from_the_users_secret_unless_the_chart_runs_the_stores() -> None:
    [jobs] = find(render({}), "Deployment", "steerlab-jobs")
    assert env(jobs)["STEERLAB_DATABASE_URL"] == ("steerlab-connections", "database-url")
    assert env(jobs)["STEERLAB_BROKER_URL"] == ("steerlab-connections", "broker-url")
    objects = render(EVERYTHING_VALUES)
    [jobs] = find(objects, "Deployment", "steerlab-jobs")
    [secret] = find(objects, "Secret", "steerlab-stores")
    assert env(jobs)["STEERLAB_DATABASE_URL"] == ("steerlab-stores", "database-url")
    assert secret["stringData"]["database-url"].startswith("postgresql://steerlab:")
    assert secret["stringData"]["broker-url"] == "redis://steerlab-redis:6379/0"
    assert env(jobs)["STEERLAB_TOKEN"] == ("steerlab-token", "token")
    assert {d["metadata"]["name"] for d in find(objects, "Deployment")} >= {
        "steerlab-postgresql",
        "steerlab-redis",
    }


def test_migrations_run_once_per_install_and_upgrade() -> None:
    [job] = find(render({"auth": {"mode": "none"}}), "Job")
    assert container(job)["command"] == ["steerlab", "migrate"]
    [job] = find(render({}), "Job")  # with API keys (the default) it also registers the services' key
    assert container(job)["command"] == ["steerlab", "migrate", "--register-service-key"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The in-chart PostgreSQL is created by the install itself: migrate after it.
    [job] = find(render(EVERYTHING_VALUES), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_the_service_monitor_exists_only_where_the_operator_serves_its_crd() -> None:
    assert find(render({}), "ServiceMonitor") == []
    objects = render({}, operator=True)
    [monitor] = find(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]
    chosen = [
        s
        for s in find(objects, "Service")
        if selector["matchLabels"].items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"]
        in selector["matchExpressions"][0]["values"]
    ]
    assert {s["metadata"]["name"] for s in chosen} == {f"steerlab-{c}" for c in SERVERS}
    [endpoint] = monitor["spec"]["endpoints"]
    for service in chosen:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_plain_manifests_are_up_to_date() -> None:
    assert gen_k8s.OUTPUT.read_text() == gen_k8s.plain_manifests(), (
        "k8s/steerlab.yaml is stale: run .venv/bin/python scripts/gen_k8s.py"
    )


def _steerlab_commands() -> list[list[str]]:
    """Every command the chart and the Dockerfile run in the SteerLab image."""
    commands = []
    for values in VALUE_SETS.values():
        for obj in render(values):
            if obj["kind"] in ("Deployment", "Job"):
                for each in obj["spec"]["template"]["spec"]["containers"]:
                    if each["image"].startswith("steerlab:"):
                        commands.append(each["command"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    commands.append(json.loads(cmd))
    return [list(c) for c in {tuple(c) for c in commands}]


@pytest.mark.parametrize("command", _steerlab_commands(), ids=" ".join)
def test_every_command_the_image_runs_exists(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert command[0] == "steerlab"
    with pytest.raises(SystemExit) as exited:  # the parser of the console script below
        build_parser().parse_args([*command[1:], "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: steerlab")


def test_the_steerlab_console_script_runs() -> None:
    script = Path(sys.executable).parent / "steerlab"  # installed by pip, as in the image
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "migrate" in done.stdout and "worker" in done.stdout


def test_the_image_bakes_in_the_charts_default_model() -> None:
    from steerlab.steering.catalog import BUILTIN_MODELS

    with helm_python.Chart.load(CHART) as chart:
        default = chart.values["model"]["name"]
    assert default in BUILTIN_MODELS
    assert f"builtin_model_dir('{default}')" in (ROOT / "Dockerfile").read_text()


def test_migrate_brings_every_component_up_to_date_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'steerlab.db'}"
    assert main(["migrate", "--database-url", url]) == 0
    first = capsys.readouterr().out
    assert re.search(r"registry: applied 1, 2", first) and "sessions: applied 1" in first
    assert "jobs: applied 1" in first and "auth: applied 1" in first
    assert main(["migrate", "--database-url", url]) == 0
    second = capsys.readouterr().out
    assert second.count("up to date") == 4, second  # registry, sessions, jobs, auth


# --- The dashboard ----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    [config_map] = find(render({}), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    loaded: dict[str, Any] = json.loads(config_map["data"]["steerlab.json"])
    return loaded


def queries(board: dict[str, Any]) -> Iterator[str]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]["query"]


def exported_families(metrics_text: str) -> dict[str, str]:
    """Metric family -> type, from the ``# TYPE`` lines (a labelled metric with no sample yet has one too)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, flags=re.MULTILINE))


# What a queried series name means, by suffix: the family it belongs to must be of that type.
SUFFIX_TYPES = {"_bucket": "histogram", "_sum": "histogram", "_count": "histogram", "_total": "counter"}


def family_of(series: str, families: dict[str, str]) -> str | None:
    """The exported family a queried series belongs to, or None."""
    for suffix, kind in SUFFIX_TYPES.items():
        if series.endswith(suffix):
            # A counter's TYPE line names it with or without _total, depending on the client.
            for family in (series.removesuffix(suffix), series):
                if families.get(family) == kind:
                    return family
            return None
    return series if families.get(series) in ("gauge", "untyped") else None


def test_the_dashboard_has_the_panels_operators_need() -> None:
    titles = " ".join(panel["title"].lower() for panel in dashboard()["panels"])
    for topic in (
        "throughput",
        "time to first token",
        "batch size",
        "queue depth",
        "steering cache",
        "jobs by state",
        "job duration",
        "registry latency",
        "errors by status code",
    ):
        assert topic in titles


def test_every_metric_the_dashboard_queries_is_exported(steerlab_up: Any) -> None:
    # `steerlab up` serves every service's metrics on one /metrics; the Celery workers export none.
    with urllib.request.urlopen(steerlab_up.metrics_url, timeout=10) as response:
        families = exported_families(response.read().decode())
    queried = {name for query in queries(dashboard()) for name in re.findall(r"\bsteerlab_\w+", query)}
    assert len(queried) >= 10
    missing = sorted(name for name in queried if family_of(name, families) is None)
    assert missing == [], f"the dashboard queries metrics no service exports: {missing}"


def test_the_chart_installs_with_api_keys_by_default() -> None:
    objects = render({})
    [secret] = find(objects, "Secret", "steerlab-auth")
    key = secret["stringData"]["token"]
    assert re.fullmatch(r"slk_[0-9a-z]{16}_[A-Za-z0-9_-]{43}", key)
    # Made before the migration Job that registers it, which may itself run before the install.
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [another] = find(render({}), "Secret", "steerlab-auth")
    assert another["stringData"]["token"] != key  # each install its own key
    [job] = find(objects, "Job")
    assert env(job)["STEERLAB_TOKEN"] == ("steerlab-auth", "token")
    for component in [*SERVERS, "workers"]:
        [deployment] = find(objects, "Deployment", f"steerlab-{component}")
        variables = env(deployment)
        assert variables["STEERLAB_AUTH"] == "keys" and variables["STEERLAB_TOKEN"] == (
            "steerlab-auth",
            "token",
        )
    [inference] = find(objects, "Deployment", "steerlab-inference")
    assert "STEERLAB_DATABASE_URL" in env(inference)  # it checks keys in the platform's database

    # Bring your own key, or switch keys off for a closed network.
    own = render({"auth": {"existingSecret": "my-key"}})
    assert find(own, "Secret", "steerlab-auth") == []
    assert env(find(own, "Deployment", "steerlab-sessions")[0])["STEERLAB_TOKEN"] == ("my-key", "token")
    open_objects = render({"auth": {"mode": "none"}})
    assert find(open_objects, "Secret", "steerlab-auth") == []
    sessions = env(find(open_objects, "Deployment", "steerlab-sessions")[0])
    assert sessions["STEERLAB_AUTH"] == "none" and "STEERLAB_TOKEN" not in sessions


def test_tls_serves_every_service_from_a_certificate_secret_or_cert_manager() -> None:
    objects = render(TLS_VALUES)
    for component in [*SERVERS, "workers"]:
        [deployment] = find(objects, "Deployment", f"steerlab-{component}")
        pod = deployment["spec"]["template"]["spec"]
        variables = env(deployment)
        assert variables["STEERLAB_TLS_CA"] == "/etc/steerlab/tls/ca.crt"  # to call the others
        assert variables["STEERLAB_TLS_CLIENT_CERT"] == "/etc/steerlab/tls/tls.crt"  # mutual TLS
        assert {"name": "tls", "secret": {"secretName": "steerlab-tls"}} in pod["volumes"]
    registry = env(find(objects, "Deployment", "steerlab-registry")[0])
    assert registry["STEERLAB_TLS_CERT"] == "/etc/steerlab/tls/tls.crt"
    assert registry["STEERLAB_TLS_CLIENT_CA"] == "/etc/steerlab/tls/ca.crt"

    issuer = {"tls": {"enabled": True, "certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}}
    [certificate] = find(render(issuer, api_versions=[CERT_MANAGER_API]), "Certificate")
    assert certificate["spec"]["secretName"] == "steerlab-tls"
    assert {"steerlab-registry", "steerlab-inference.steerlab.svc"} <= set(certificate["spec"]["dnsNames"])
    assert "client auth" in certificate["spec"]["usages"]
    with pytest.raises(Exception, match=r"tls\.existingSecret, or cert-manager"):
        render(issuer)  # no cert-manager on this cluster, and no certificate of the user's
