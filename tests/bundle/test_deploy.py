"""The deploy files: Prometheus and Alertmanager configs, the compose file, the Kubernetes
manifests and the systemd unit parse, hang together and reference only files that exist."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from exporter.config.load import load_file, load_text
from exporter.config.settings import adhoc_check
from tests.bundle.promql import ROOT, RULES, rule_groups, rules
from tests.support.prometheus import Prometheus, promtool
from tests.support.servers import closed_port

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "netsentry.service"


def test_the_scrape_configs_pass_promtool() -> None:
    for name in ("prometheus.yml", "prometheus-sharded.yml", "prometheus-locations.yml"):
        path = DEPLOY / "prometheus" / name
        result = promtool("check", "config", path)
        assert result.returncode == 0, result.stdout + result.stderr
        scrape = yaml.safe_load(path.read_text())
        # The rules it loads are the shipped ones; its jobs are the ones the rules select.
        assert [(path.parent / f).resolve() for f in scrape["rule_files"]] == [RULES]
        for job in scrape["scrape_configs"]:
            assert re.fullmatch("netsentry.*", job["job_name"])


def test_the_shipped_agent_configs_are_valid() -> None:
    files = sorted((DEPLOY / "config").glob("*.toml"))
    assert {f.name for f in files} >= {"netsentry.toml", "compose.toml", "node.toml",
                                       "central.toml"}
    kinds = set()
    for path in files:
        kinds |= {check.kind for check in load_file(str(path)).checks}
    assert kinds >= {"clock", "dns", "tcp", "http"}


def test_the_generated_kubernetes_files_are_current() -> None:
    result = subprocess.run([sys.executable, str(DEPLOY / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


# --- compose ------------------------------------------------------------------------------------


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the bind mounts (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def test_the_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"netsentry", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        for source in _volumes(service).values():
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services
    build = services["netsentry"]["build"]
    context = DEPLOY / build["context"]
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (context / source).exists(), f"Dockerfile: {source} does not exist"
    # The agent reads the config mounted for it.
    netsentry = services["netsentry"]
    [config_arg] = [a for a in netsentry["command"] if a.startswith("--config.file=")]
    assert config_arg.partition("=")[2] in _volumes(netsentry)
    # Prometheus finds its rule file where its config says, relative to the config.
    prometheus = _volumes(services["prometheus"])
    scrape = yaml.safe_load((DEPLOY / prometheus["/etc/prometheus/prometheus.yml"]).read_text())
    for rule_file in scrape["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in prometheus
    # ... and reaches the services by their compose names.
    [job] = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["netsentry:10025"]
    [manager] = scrape["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_the_alertmanager_config() -> None:
    manager = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in manager["receivers"]}
    route = manager["route"]
    assert route["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in route["routes"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    for rule in manager["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            name = re.fullmatch(r'alertname(=|!=|=~)"(.*)"', matcher)
            if name and name[1] != "=~":
                assert name[2] in alerts, matcher
            elif name and re.fullmatch(r"\w+(\|\w+)*", name[2]):  # a list of names
                assert set(name[2].split("|")) <= alerts, matcher


# --- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_every_manifest_parses_and_names_itself() -> None:
    objects = manifests()
    for path, obj in objects:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], path
    kinds = {obj["kind"] for _, obj in objects}
    assert kinds >= {"Namespace", "ConfigMap", "DaemonSet", "Deployment", "Service",
                     "ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_the_kustomization_lists_files_that_exist() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource
    listed = {KUBERNETES / r for r in kustomization["resources"]}
    namespaced = [obj for path, obj in manifests() if path in listed]
    assert {obj["kind"] for obj in namespaced} >= {"DaemonSet", "Deployment", "ServiceMonitor"}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_workloads_services_and_monitor_fit_together() -> None:
    objects = [obj for _, obj in manifests()]
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    workloads = [o for o in objects if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")]
    services = [o for o in objects if o["kind"] == "Service"]
    pod_monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    assert workloads and services
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]
        assert _matches(workload["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
        [container] = pod["spec"]["containers"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        [path] = [a.partition("=")[2] for a in container["args"]
                  if a.startswith("--config.file=")]
        directory, _, key = path.rpartition("/")
        configmap = configmaps[volumes[mounts[directory]]["configMap"]["name"]]
        assert key in configmap["data"], f"{name}: {key} not in its ConfigMap"
        ports = {p["name"] for p in container["ports"]}
        assert "http" in ports
        security = {**pod["spec"].get("securityContext", {}), **container["securityContext"]}
        assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
        assert security["readOnlyRootFilesystem"]
        assert security["capabilities"]["drop"] == ["ALL"]
        # Some service or PodMonitor sends Prometheus to it, never both.
        served = [s for s in services
                  if _matches(s["spec"]["selector"], pod["metadata"]["labels"])]
        scraped = [m for m in pod_monitors
                   if _matches(m["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])]
        assert bool(served) != bool(scraped), f"{name}: scraped {len(served) + len(scraped)} ways"
        for monitor in scraped:
            assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    [monitor] = [o for o in objects if o["kind"] == "ServiceMonitor"]
    watched = [s for s in services
               if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in watched} == {"netsentry-node", "netsentry-central"}
    for service in watched:
        # The Operator names the job after the service: the rules select netsentry*.
        assert service["metadata"]["name"].startswith("netsentry")
        names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names


def test_the_configmaps_carry_valid_agent_configs() -> None:
    found = 0
    for path, obj in manifests():
        if obj["kind"] != "ConfigMap":
            continue
        for key, text in obj["data"].items():
            if key.endswith(".toml"):
                load_text(text, f"{path.name}:{key}")
                found += 1
    assert found >= 2


def test_the_prometheusrule_carries_the_rules() -> None:
    [rule] = [obj for _, obj in manifests() if obj["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == rule_groups()


# --- systemd ------------------------------------------------------------------------------------


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as systemd reads it: sections of (key, value), keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None, f"a key outside any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line}"
        current.append((key, value))
    return sections


def test_the_systemd_unit_is_hardened() -> None:
    sections = unit_sections(UNIT.read_text())
    assert set(sections) == {"Unit", "Service", "Install"}
    service: dict[str, list[str]] = {}
    for key, value in sections["Service"]:
        service.setdefault(key, []).append(value)

    def one(key: str) -> str:
        [value] = service[key]
        return value

    assert "--config.file=/etc/netsentry/netsentry.toml" in one("ExecStart").split()
    assert one("DynamicUser") == "yes" and "User" not in service
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == "" and one("AmbientCapabilities") == ""
    assert one("ProtectSystem") == "strict"
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):
        assert one(key) == "yes", key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX",
                                                           "AF_NETLINK"}
    # The clock check reads adjtimex: ProtectClock= would filter it, the filter allows it.
    assert "ProtectClock" not in service
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service" and "adjtimex" in filters[-1].split()
    assert dict(sections["Install"])["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """Where systemd-analyze exists; the structure test above runs everywhere. The unit's
    ExecStart names an installed agent (/opt/netsentry), which verify requires to exist: the
    copy verified here points at this checkout's."""
    analyze = shutil.which("systemd-analyze")
    agent = Path(sys.executable).parent / "netsentry"
    assert agent.exists()
    text = UNIT.read_text()
    assert "/opt/netsentry/bin/netsentry " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/opt/netsentry/bin/netsentry ", f"{agent} "))
    if analyze is None:
        assert unit_sections(copy.read_text())["Service"]
        return
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "netsentry.service" not in result.stderr, result.stderr


SOCKET = DEPLOY / "systemd" / "netsentry.socket"
DROP_IN = DEPLOY / "systemd" / "netsentry.service.d" / "socket-activation.conf"


def exec_start(text: str) -> list[str]:
    return [v for k, v in unit_sections(text)["Service"] if k == "ExecStart"]


def test_the_socket_unit_and_its_drop_in_match_the_service() -> None:
    service = exec_start(UNIT.read_text())
    drop_in = exec_start(DROP_IN.read_text())
    assert drop_in[0] == ""  # resets the service's ExecStart, then sets its own
    assert drop_in[1] == service[0].replace("--web.listen-address=:10025", "--web.systemd-socket")
    socket_unit = dict(unit_sections(SOCKET.read_text())["Socket"])
    assert socket_unit["ListenStream"] == "10025" and socket_unit["Accept"] == "no"
    assert dict(unit_sections(DROP_IN.read_text())["Unit"])["Requires"] == SOCKET.name


def test_systemd_analyze_verifies_the_socket_unit(tmp_path: Path) -> None:
    """The socket, the service and its drop-in, as systemd would load them together."""
    analyze = shutil.which("systemd-analyze")
    agent = Path(sys.executable).parent / "netsentry"
    (tmp_path / DROP_IN.parent.name).mkdir()
    for source in (UNIT, SOCKET, DROP_IN):
        target = tmp_path / source.relative_to(UNIT.parent)
        target.write_text(source.read_text().replace("/opt/netsentry/bin/netsentry ",
                                                     f"{agent} "))
    if analyze is None:
        return
    result = subprocess.run([analyze, "verify", SOCKET.name, UNIT.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "netsentry" not in result.stderr, result.stderr
    # The check can fail: a drop-in naming a missing program is refused.
    broken = tmp_path / DROP_IN.relative_to(UNIT.parent)
    broken.write_text(broken.read_text().replace(str(agent), "/nonexistent/netsentry"))
    result = subprocess.run([analyze, "verify", SOCKET.name, UNIT.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "/nonexistent/netsentry" in result.stderr


def test_the_drop_ins_command_serves_a_socket_systemd_passes(tmp_path: Path) -> None:
    """The drop-in's very command line (its config swapped for one of the test's), under
    systemd-socket-activate, which passes a socket as systemd would."""
    (command,) = [v for v in exec_start(DROP_IN.read_text()) if v]
    config = tmp_path / "netsentry.toml"
    config.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n')
    argv = command.replace("/opt/netsentry/bin/netsentry", f"{sys.executable} -m exporter"
                           ).replace("/etc/netsentry/netsentry.toml", str(config)).split()
    port = closed_port()
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *argv],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                    conn.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
                    answer = b""
                    while chunk := conn.recv(4096):
                        answer += chunk
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"Healthy.\n"), answer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log = proc.stderr.read() if proc.stderr else ""
    assert f"msg=listening address=127.0.0.1:{port}" in log, log


PING_SOCKETS = {"net.ipv4.ping_group_range": "0 2147483647"}


def test_the_containers_may_ping_without_a_capability() -> None:
    """Every capability is dropped, so ping checks need ICMP ping sockets: each pod (its own
    network namespace) and the compose service set the sysctl that allows them."""
    workloads = [doc for _, doc in manifests()
                 if doc["kind"] in ("DaemonSet", "Deployment", "StatefulSet")]
    assert len(workloads) == 4
    for doc in workloads:
        pod = doc["spec"]["template"]["spec"]
        assert not pod.get("hostNetwork"), doc["metadata"]["name"]
        sysctls = {s["name"]: s["value"] for s in pod["securityContext"]["sysctls"]}
        assert sysctls == PING_SOCKETS, doc["metadata"]["name"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["netsentry"]["sysctls"] == PING_SOCKETS


def test_the_probe_resource_drives_the_central_agent() -> None:
    # The Probe is written as for blackbox_exporter: its module must be a template of the
    # central agent's config, its targets pass that config's allow-list (by name; they are
    # example names, never resolved here) and build as checks, its prober a Service's port.
    [probe] = [obj for _, obj in manifests() if obj["kind"] == "Probe"]
    central = load_file(str(DEPLOY / "config" / "central.toml"))
    template = central.probe.template(probe["spec"]["module"])
    assert template is not None and template.kind == "http"
    for target in probe["spec"]["targets"]["staticConfig"]["static"]:
        host = target.split("/")[2]
        assert central.probe.allow.matches(host), target
        assert adhoc_check("http", template, target, 5.0).target == target
    service, port = probe["spec"]["prober"]["url"].split(":")
    services = [obj for _, obj in manifests() if obj["kind"] == "Service"]
    assert any(f'{s["metadata"]["name"]}.netsentry.svc' == service
               and any(p["port"] == int(port) for p in s["spec"]["ports"]) for s in services)
    assert probe["spec"]["prober"]["path"] == "/probe"
    assert probe["spec"]["jobName"].startswith("netsentry")  # the rules' job=~"netsentry.*"


# --- many locations: every node probes the same targets ----------------------------------------

LOCATIONS = KUBERNETES / "daemonset-locations.yaml"


def _locations() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(LOCATIONS.read_text()) if doc]
    [daemonset] = [d for d in docs if d["kind"] == "DaemonSet"]
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    return daemonset, monitor


def test_the_locations_daemonset_has_the_downward_api_environment() -> None:
    daemonset, _ = _locations()
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name",
                   "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"}
    # An example beside the kustomization, like probe.yaml; its config is in the generated
    # ConfigMap the kustomization applies (test_the_workloads_services_and_monitor_fit_together).
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert LOCATIONS.name not in kustomization["resources"]


def test_the_locations_config_probes_what_the_many_locations_alert_covers() -> None:
    [expr] = [r["expr"] for r in rules()
              if r.get("alert") == "NetsentryCheckFailingFromManyLocations"]
    match = re.search(r'kind!~"([^"]+)"', expr)
    assert match, expr
    kinds = {check.kind for check in load_file(str(DEPLOY / "config" / "locations.toml")).checks}
    assert kinds >= {"http", "tcp", "dns"}
    assert not kinds & set(match[1].split("|")), "node-local checks belong in node.toml"


def _snake(key: str) -> str:
    """An Operator relabeling's key in Prometheus' spelling: sourceLabels -> source_labels."""
    return re.sub(r"[A-Z]", lambda m: "_" + m[0].lower(), key)


def test_the_pod_monitor_sets_node_and_location(tmp_path: Path) -> None:
    """The PodMonitor's relabelings run by a real Prometheus over targets that carry the
    labels its Kubernetes discovery gives a pod with attachMetadata: a node in a zone and a
    node without one. No Kubernetes here: static targets carry the __meta_* labels, the
    relabelings are the PodMonitor's in Prometheus' spelling (the Operator's own relabelings
    come before them and set what these override)."""
    _, monitor = _locations()
    assert monitor["spec"]["attachMetadata"] == {"node": True}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    relabel = [{_snake(k): v for k, v in r.items()} for r in endpoint["relabelings"]]
    zone = "__meta_kubernetes_node_label_topology_kubernetes_io_zone"
    node = "__meta_kubernetes_pod_node_name"
    target = f"127.0.0.1:{closed_port()}"  # never scraped within the test: the interval is 1h
    config = {"global": {"scrape_interval": "1h"}, "scrape_configs": [{
        "job_name": "netsentry/netsentry-locations",  # the Operator's job, overridden
        "static_configs": [{"targets": [target], "labels": {node: "node-1", zone: "eu-1a"}},
                           {"targets": [target], "labels": {node: "node-2"}}],
        "relabel_configs": relabel}]}
    with Prometheus(config, tmp_path) as prom:
        prom.wait_for(lambda: len(prom.api("targets")["activeTargets"]) == 2, "two targets")
        found = [t["labels"] for t in prom.api("targets")["activeTargets"]]
    by_node = {labels["node"]: labels for labels in found}
    assert by_node["node-1"]["location"] == "eu-1a"
    assert by_node["node-2"]["location"] == "node-2"  # no zone: a location of its own
    assert {labels["job"] for labels in found} == {"netsentry-locations"}  # job=~"netsentry.*"


def test_the_locations_scrape_config_labels_every_target_group() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-locations.yml").read_text())
    [job] = scrape["scrape_configs"]
    locations = [group["labels"]["location"] for group in job["static_configs"]]
    assert len(locations) >= 3 and len(set(locations)) == len(locations)
