"""Tests for the mqttd Helm chart, without the helm binary or a cluster.

Run through test-chart.sh, which makes the virtual environment. Uses
helm-python-sdk (Helm's Go SDK: lint, render, values.schema.json) and
kubernetes-validate (offline Kubernetes JSON schemas).

What is checked:
  1. lint: no error (severity 3) finding, for the defaults and every value set;
  2. render every value set and validate every manifest strictly against the
     Kubernetes 1.30 schemas; custom resources (ServiceMonitor, Certificate)
     by hand: apiVersion, kind and required fields;
  3. key properties: hardened securityContext, probes, volumes, Services,
     TLS wiring, the config merge, the checksum/config annotation;
  4. bad values are rejected by values.schema.json with a message naming
     the offending key;
  5. when an mqttd binary is around (MQTTD_BIN, or {release,debug}/mqttd
     under $CARGO_TARGET_DIR or target/), each rendered non-TLS config
     passes `mqttd --check-config`.

Exit status 0 when every check passed, 1 otherwise; a summary is printed.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "mqttd"
ROOT = HERE.parent
KUBE_VERSION = "1.30.0"
RELEASE = "edge"
NAMESPACE = "iot"
FULLNAME = "edge-mqttd"
UID = 10001

# Value sets rendered and validated; each also gets its own checks below.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tls-existing-secret": {
        "tls": {"mode": "existingSecret", "existingSecret": "mqttd-tls", "clientAuth": "optional"},
    },
    "cert-manager": {
        "tls": {
            "mode": "certManager",
            "clientAuth": "required",
            "clientCASecret": "device-ca",
            "certManager": {
                "issuerRef": {"name": "edge-ca", "kind": "ClusterIssuer"},
                "dnsNames": ["mqtt.example.com"],
                "ipAddresses": ["192.0.2.10"],
            },
        },
    },
    "loadbalancer": {
        "service": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "loadBalancerSourceRanges": ["10.0.0.0/8"],
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
        },
    },
    "nodeport": {
        "service": {"type": "NodePort", "nodePorts": {"mqtt": 31883, "ws": 31083}},
    },
    "persistence-off": {"persistence": {"enabled": False}},
    "persistence-off-memory": {
        "persistence": {"enabled": False},
        "config": {"storage": {"durability": "memory"}},
    },
    "data-dir-moved": {
        "config": {"storage": {"data_dir": "/data/mqttd", "durability": "sync", "max_disk_bytes": 900000000}},
        "persistence": {"size": "2Gi", "storageClass": "fast"},
    },
    "servicemonitor": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "namespace": "monitoring", "labels": {"release": "prom"}},
        },
    },
    "networkpolicy": {
        "networkPolicy": {
            "enabled": True,
            "mqttFrom": [{"namespaceSelector": {"matchLabels": {"iot.example.com/devices": "true"}}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "restrictEgress": True,
        },
    },
    "custom-config": {
        "config": {
            "log": {"level": "debug,mqttd::session=trace"},
            "auth": {"allow_anonymous": False},
            "mqtt": {"max_packet_size_bytes": 2097152},
            "session_manager": {"pool_size": 4},
        },
        "auth": {
            "passwordFile": {"secretName": "mqttd-passwords", "key": "passwd"},
            "aclFile": {"secretName": "mqttd-acl", "key": "acl"},
        },
        "http": {"port": 9090},
        "podDisruptionBudget": {"minAvailable": 1},
        "replicaCount": 2,
    },
}

# Values values.schema.json must refuse: (label, values, text the message names).
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("wrong service type", {"service": {"type": "Ingress"}}, "/service/type"),
    ("negative service port", {"service": {"ports": {"mqtt": -1}}}, "/service/ports/mqtt"),
    ("service port above 65535", {"service": {"ports": {"mqtts": 70000}}}, "/service/ports/mqtts"),
    ("negative container port", {"listeners": {"mqtt": {"containerPort": -1883}}}, "/listeners/mqtt/containerPort"),
    ("node port out of range", {"service": {"type": "NodePort", "nodePorts": {"mqtt": 1883}}}, "/service/nodePorts/mqtt"),
    ("replicaCount as a string", {"replicaCount": "3"}, "/replicaCount"),
    ("unknown tls mode", {"tls": {"mode": "auto"}}, "/tls/mode"),
    ("unknown client auth", {"tls": {"clientAuth": "maybe"}}, "/tls/clientAuth"),
    ("existingSecret without a name", {"tls": {"mode": "existingSecret"}}, "/tls/existingSecret"),
    ("certManager without an issuer", {"tls": {"mode": "certManager"}}, "/tls/certManager/issuerRef/name"),
    ("client auth without TLS", {"tls": {"clientAuth": "required"}}, "/tls/mode"),
    ("wrong issuer kind", {"tls": {"certManager": {"issuerRef": {"kind": "Vault"}}}}, "/tls/certManager/issuerRef/kind"),
    ("unknown top-level key", {"servce": {"type": "NodePort"}}, "servce"),
    ("empty image repository", {"image": {"repository": ""}}, "/image/repository"),
    ("wrong pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("wrong metrics service type", {"metrics": {"service": {"type": "External"}}}, "/metrics/service/type"),
    ("persistence size not a quantity", {"persistence": {"size": "lots"}}, "/persistence/size"),
    ("probe period zero", {"livenessProbe": {"periodSeconds": 0}}, "/livenessProbe/periodSeconds"),
    ("enabled as a string", {"persistence": {"enabled": "yes"}}, "/persistence/enabled"),
    ("bad scrape interval", {"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ("config not a map", {"config": "log: debug"}, "/config"),
]


class Failure(Exception):
    """A check that did not hold."""


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise Failure(msg)


class Results:
    """Collects named checks; a failing check does not stop the others."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def check(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except Failure as e:
            self.failed.append((name, str(e)))
            print(f"FAIL {name}: {e}")
            return None
        except Exception as e:  # a crash in a check is a failure too
            self.failed.append((name, f"{type(e).__name__}: {e}"))
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc()
            return None
        self.passed.append(name)
        print(f"ok   {name}")
        return result


# --- rendering ----------------------------------------------------------------


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("__source", path)
                docs.append(doc)
    return docs


def strip_source(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__source"}


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    expect(len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


# --- schema validation ----------------------------------------------------------


def validate_custom(doc: dict[str, Any]) -> None:
    """Hand checks for custom resources kubernetes-validate has no schema for."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    meta = doc.get("metadata") or {}
    expect(bool(meta.get("name")) and bool(meta.get("namespace")), f"{kind}: metadata.name/namespace missing")
    spec = doc.get("spec") or {}
    if kind == "ServiceMonitor":
        expect(api == "monitoring.coreos.com/v1", f"ServiceMonitor apiVersion is {api}")
        expect(isinstance(spec.get("selector", {}).get("matchLabels"), dict), "ServiceMonitor: spec.selector.matchLabels missing")
        endpoints = spec.get("endpoints")
        expect(isinstance(endpoints, list) and endpoints, "ServiceMonitor: spec.endpoints empty")
        for ep in endpoints:
            expect(bool(ep.get("port")), "ServiceMonitor endpoint without port")
            allowed = {"port", "path", "scheme", "interval", "scrapeTimeout"}
            expect(set(ep) <= allowed, f"ServiceMonitor endpoint has unexpected keys {set(ep) - allowed}")
    elif kind == "Certificate":
        expect(api == "cert-manager.io/v1", f"Certificate apiVersion is {api}")
        expect(bool(spec.get("secretName")), "Certificate: spec.secretName missing")
        issuer = spec.get("issuerRef") or {}
        expect(bool(issuer.get("name")), "Certificate: spec.issuerRef.name missing")
        expect(issuer.get("kind") in ("Issuer", "ClusterIssuer"), f"Certificate issuer kind {issuer.get('kind')}")
        expect(bool(spec.get("dnsNames")) or bool(spec.get("commonName")), "Certificate: no dnsNames or commonName")
        expect(spec.get("privateKey", {}).get("algorithm") in ("RSA", "ECDSA", "Ed25519"), "Certificate: bad key algorithm")
    else:
        raise Failure(f"no schema and no hand check for {api} {kind}")


def validate_all(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        body = strip_source(doc)
        try:
            kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            validate_custom(body)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise Failure(f"{doc['__source']}: {body['kind']} {path}: {e.message}") from None


# --- property checks --------------------------------------------------------------


def pod_parts(docs: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    sts = find(docs, "StatefulSet")
    pod = sts["spec"]["template"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "mqttd")
    return sts, pod, container


def broker_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = find(docs, "ConfigMap", FULLNAME)
    return yaml.safe_load(cm["data"]["mqttd.yaml"])


def check_security(docs: list[dict[str, Any]]) -> None:
    _, pod, c = pod_parts(docs)
    psc, csc = pod["spec"]["securityContext"], c["securityContext"]
    expect(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID, f"pod securityContext {psc}")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccomp is not RuntimeDefault")
    expect(csc.get("runAsNonRoot") is True and csc.get("runAsUser") == UID, f"container runs as {csc.get('runAsUser')}")
    expect(csc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
    expect(csc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
    expect(csc.get("capabilities", {}).get("drop") == ["ALL"], f"capabilities {csc.get('capabilities')}")
    expect(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "container seccomp is not RuntimeDefault")
    expect(pod["spec"].get("automountServiceAccountToken") is False, "service account token mounted")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for path in ("/run/mqttd", "/tmp"):
        expect(path in mounts, f"nothing mounted at {path}")
        expect("emptyDir" in volumes[mounts[path]], f"{path} is not an emptyDir")
    expect(mounts.get("/etc/mqttd/config") == "config", "config not mounted at /etc/mqttd/config")
    expect(c["args"] == ["--config", "/etc/mqttd/config/mqttd.yaml"], f"args {c['args']}")


def check_probes(docs: list[dict[str, Any]], http_port: int = 8080) -> None:
    _, _, c = pod_parts(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expect(ports.get("http") == http_port, f"http container port {ports.get('http')}, want {http_port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        expect(get.get("path") == path and get.get("port") == "http", f"{probe} is {c.get(probe)}")
    expect(bool(c.get("resources", {}).get("requests")), "no resource requests")
    cfg = broker_config(docs)
    expect(cfg["http"]["bind"] == f"0.0.0.0:{http_port}", f"http.bind {cfg['http']['bind']} vs probe port {http_port}")


def check_checksum(base: dict[str, Any]) -> None:
    def annotation(values: dict[str, Any]) -> tuple[str, str]:
        rendered = render(values)
        cm_text = next(t for p, t in rendered.items() if p.endswith("/configmap.yaml"))
        _, pod, _ = pod_parts(documents(rendered))
        return pod["metadata"]["annotations"].get("checksum/config", ""), cm_text

    same, cm_text = annotation(base)
    expect(len(same) == 64, f"checksum/config annotation is {same!r}")
    expect(same == hashlib.sha256(cm_text.encode()).hexdigest(), "checksum/config is not the ConfigMap's sha256")
    changed, _ = annotation({**base, "config": {"log": {"level": "debug"}}})
    expect(changed != same, "checksum/config did not change with the config")
    unrelated, _ = annotation({**base, "replicaCount": 3})
    expect(unrelated == same, "checksum/config changed although the config did not")


def listener_names(cfg: dict[str, Any]) -> list[str]:
    return [listener["name"] for listener in cfg["listeners"]]


def service_port_names(svc: dict[str, Any]) -> list[str]:
    return [p["name"] for p in svc["spec"]["ports"]]


def check_selectors(docs: list[dict[str, Any]]) -> None:
    _, pod, _ = pod_parts(docs)
    labels = pod["metadata"]["labels"]
    for doc in docs:
        sel = None
        if doc["kind"] == "Service":
            sel = doc["spec"]["selector"]
        elif doc["kind"] in ("PodDisruptionBudget", "StatefulSet"):
            sel = doc["spec"]["selector"]["matchLabels"]
        elif doc["kind"] == "NetworkPolicy":
            sel = doc["spec"]["podSelector"]["matchLabels"]
        if sel is not None:
            expect(sel.items() <= labels.items(), f"{doc['kind']} {doc['metadata']['name']} selects {sel}, pod has {labels}")


def check_defaults(docs: list[dict[str, Any]]) -> None:
    expect("Certificate" not in kinds(docs) and "ServiceMonitor" not in kinds(docs), "optional resources rendered")
    expect("NetworkPolicy" not in kinds(docs), "NetworkPolicy rendered by default")
    cfg = broker_config(docs)
    expect(listener_names(cfg) == ["mqtt", "ws"], f"default listeners {listener_names(cfg)}")
    expect(cfg["control"]["socket"] == "/run/mqttd/mqttd.sock", "control socket not in /run/mqttd")
    expect(cfg["storage"]["data_dir"] == "/var/lib/mqttd", "data_dir")
    expect(cfg["session_manager"]["pool_size"] == 0, "pool_size 0 lost")
    expect(cfg["auth"]["allow_anonymous"] is True, "allow_anonymous")
    svc = find(docs, "Service", FULLNAME)
    expect(svc["spec"]["type"] == "ClusterIP", "default Service type")
    expect(service_port_names(svc) == ["mqtt", "ws"], f"Service ports {service_port_names(svc)}")
    metrics = find(docs, "Service", f"{FULLNAME}-metrics")
    expect(service_port_names(metrics) == ["http-metrics"], "metrics Service port")
    expect(metrics["spec"]["ports"][0]["targetPort"] == "http", "metrics Service target")
    sts, pod, c = pod_parts(docs)
    expect(sts["spec"]["serviceName"] == f"{FULLNAME}-headless", "StatefulSet serviceName")
    find(docs, "Service", f"{FULLNAME}-headless")
    check_data_on_pvc(docs)
    expect("durability" not in cfg["storage"], "the chart sets a durability: the broker's default (batched) should apply")
    pdb = find(docs, "PodDisruptionBudget")
    expect(pdb["spec"].get("maxUnavailable") == 1, "PDB maxUnavailable")
    expect(c["image"] == "mqttd:0.1.0", f"image {c['image']}")


def tls_listeners(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lst["name"]: lst["tls"] for lst in cfg["listeners"] if "tls" in lst}


def check_tls_existing(docs: list[dict[str, Any]]) -> None:
    cfg = broker_config(docs)
    expect(listener_names(cfg) == ["mqtt", "mqtts", "ws", "wss"], f"listeners {listener_names(cfg)}")
    tls = tls_listeners(cfg)
    expect(set(tls) == {"mqtts", "wss"}, f"TLS listeners {set(tls)}")
    expect(tls["mqtts"]["cert_file"] == "/etc/mqttd/tls/tls.crt", "cert_file")
    expect(tls["mqtts"]["client_auth"] == "optional", "client_auth")
    expect(tls["mqtts"]["client_ca_file"] == "/etc/mqttd/client-ca/ca.crt", "client_ca_file")
    _, pod, c = pod_parts(docs)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    expect(volumes["tls"]["secret"]["secretName"] == "mqttd-tls", "TLS volume secret")
    expect(volumes["client-ca"]["secret"]["secretName"] == "mqttd-tls", "client CA defaults to the TLS secret")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    expect(mounts.get("/etc/mqttd/tls") == "tls", "TLS not mounted")
    svc = find(docs, "Service", FULLNAME)
    expect(service_port_names(svc) == ["mqtt", "mqtts", "ws", "wss"], f"Service ports {service_port_names(svc)}")
    expect("Certificate" not in kinds(docs), "Certificate rendered with an existing secret")


def check_cert_manager(docs: list[dict[str, Any]]) -> None:
    cert = find(docs, "Certificate")
    spec = cert["spec"]
    expect(spec["issuerRef"] == {"name": "edge-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}, "issuerRef")
    expect(f"{FULLNAME}.{NAMESPACE}.svc" in spec["dnsNames"], f"dnsNames {spec['dnsNames']}")
    expect("mqtt.example.com" in spec["dnsNames"] and spec["ipAddresses"] == ["192.0.2.10"], "extra names")
    _, pod, _ = pod_parts(docs)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    expect(volumes["tls"]["secret"]["secretName"] == spec["secretName"], "pod does not mount the Certificate's Secret")
    expect(volumes["client-ca"]["secret"]["secretName"] == "device-ca", "client CA secret")
    expect(tls_listeners(broker_config(docs))["mqtts"]["client_auth"] == "required", "client_auth")


def check_loadbalancer(docs: list[dict[str, Any]]) -> None:
    spec = find(docs, "Service", FULLNAME)["spec"]
    expect(spec["type"] == "LoadBalancer", "type")
    expect(spec.get("externalTrafficPolicy") == "Local", "externalTrafficPolicy")
    expect(spec.get("loadBalancerSourceRanges") == ["10.0.0.0/8"], "loadBalancerSourceRanges")
    expect(find(docs, "Service", f"{FULLNAME}-metrics")["spec"]["type"] == "ClusterIP", "metrics Service exposed")


def check_nodeport(docs: list[dict[str, Any]]) -> None:
    spec = find(docs, "Service", FULLNAME)["spec"]
    expect(spec["type"] == "NodePort", "type")
    ports = {p["name"]: p.get("nodePort") for p in spec["ports"]}
    expect(ports == {"mqtt": 31883, "ws": 31083}, f"node ports {ports}")


def data_volume(docs: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None, list[dict[str, Any]]]:
    """Where the data volume is mounted, its pod volume (None for a PVC), and the PVC templates."""
    sts, pod, c = pod_parts(docs)
    mounts = [m for m in c["volumeMounts"] if m["name"] == "data"]
    expect(len(mounts) == 1, f"data volume mounted {len(mounts)} times")
    expect(not mounts[0].get("readOnly"), "data volume mounted read-only")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    return mounts[0]["mountPath"], volumes.get("data"), sts["spec"].get("volumeClaimTemplates") or []


def check_data_on_pvc(docs: list[dict[str, Any]], size: str = "1Gi") -> None:
    """persistence.enabled: the store's directory is a PVC per pod."""
    path, volume, vct = data_volume(docs)
    cfg = broker_config(docs)
    expect(path == cfg["storage"]["data_dir"], f"data volume at {path}, store at {cfg['storage']['data_dir']}")
    expect(volume is None, f"a pod volume named data shadows the PVC: {volume}")
    expect([v["metadata"]["name"] for v in vct] == ["data"], "no PVC template named data")
    expect(vct[0]["spec"]["resources"]["requests"]["storage"] == size, f"PVC size, want {size}")
    expect(vct[0]["spec"]["accessModes"] == ["ReadWriteOnce"], "PVC access modes")


def check_persistence_off(docs: list[dict[str, Any]]) -> None:
    """persistence.enabled false: an emptyDir at the store's directory, no PVC."""
    path, volume, vct = data_volume(docs)
    expect(not vct, "PVC template rendered with persistence off")
    expect(volume is not None and "emptyDir" in volume, f"data is not an emptyDir: {volume}")
    expect(path == broker_config(docs)["storage"]["data_dir"] == "/var/lib/mqttd", f"data volume at {path}")


def check_memory_durability(docs: list[dict[str, Any]]) -> None:
    expect(broker_config(docs)["storage"]["durability"] == "memory", "durability memory lost in the merge")


def check_data_dir_moved(docs: list[dict[str, Any]]) -> None:
    """config.storage.data_dir moves the mount with it; other storage keys pass through."""
    storage = broker_config(docs)["storage"]
    expect(storage == {"data_dir": "/data/mqttd", "durability": "sync", "max_disk_bytes": 900000000}, f"storage {storage}")
    check_data_on_pvc(docs, size="2Gi")
    sts, _, _ = pod_parts(docs)
    expect(sts["spec"]["volumeClaimTemplates"][0]["spec"].get("storageClassName") == "fast", "storageClass")


def check_servicemonitor(docs: list[dict[str, Any]]) -> None:
    sm = find(docs, "ServiceMonitor")
    metrics = find(docs, "Service", f"{FULLNAME}-metrics")
    expect(sm["metadata"]["namespace"] == "monitoring", "ServiceMonitor namespace")
    expect(sm["metadata"]["labels"].get("release") == "prom", "ServiceMonitor labels")
    expect(sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE], "namespaceSelector")
    sel = sm["spec"]["selector"]["matchLabels"]
    expect(sel.items() <= metrics["metadata"]["labels"].items(), "ServiceMonitor does not select the metrics Service")
    main = find(docs, "Service", FULLNAME)
    expect(not sel.items() <= main["metadata"]["labels"].items(), "ServiceMonitor also selects the MQTT Service")
    expect(sm["spec"]["endpoints"][0]["port"] in service_port_names(metrics), "endpoint port not on the metrics Service")


def check_networkpolicy(docs: list[dict[str, Any]]) -> None:
    np_spec = find(docs, "NetworkPolicy")["spec"]
    expect(np_spec["policyTypes"] == ["Ingress", "Egress"], f"policyTypes {np_spec['policyTypes']}")
    expect(np_spec.get("egress") == [], "egress not denied")
    mqtt_rule, http_rule = np_spec["ingress"][:2]
    expect([p["port"] for p in mqtt_rule["ports"]] == [1883, 8083], "MQTT ports in the policy")
    expect(mqtt_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"iot.example.com/devices": "true"}, "mqttFrom")
    expect([p["port"] for p in http_rule["ports"]] == [8080], "HTTP port in the policy")


def check_custom_config(docs: list[dict[str, Any]]) -> None:
    cfg = broker_config(docs)
    expect(cfg["auth"]["allow_anonymous"] is False, "config.auth.allow_anonymous=false did not override true")
    expect(cfg["auth"]["password_file"] == "/etc/mqttd/auth/passwords/passwd", "password_file")
    expect(cfg["auth"]["acl_file"] == "/etc/mqttd/auth/acl/acl", "acl_file")
    expect(cfg["log"] == {"level": "debug,mqttd::session=trace", "format": "json"}, f"log {cfg['log']}")
    size = cfg["mqtt"]["max_packet_size_bytes"]
    expect(type(size) is int and size == 2097152, f"max_packet_size_bytes rendered as {size!r}")
    expect(cfg["mqtt"]["max_inflight_messages"] == 32, "defaults lost in the merge")
    expect(cfg["session_manager"]["pool_size"] == 4, "pool_size")
    check_probes(docs, http_port=9090)
    _, pod, c = pod_parts(docs)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    expect(volumes[mounts["/etc/mqttd/auth/passwords"]]["secret"]["secretName"] == "mqttd-passwords", "password secret")
    expect(volumes[mounts["/etc/mqttd/auth/acl"]]["secret"]["items"][0]["key"] == "acl", "acl key")
    pdb = find(docs, "PodDisruptionBudget")["spec"]
    expect(pdb.get("minAvailable") == 1 and "maxUnavailable" not in pdb, f"PDB {pdb}")


def check_notes(rendered: dict[str, str]) -> None:
    notes = next(t for p, t in rendered.items() if p.endswith("NOTES.txt"))
    expect(f"kubectl exec -n {NAMESPACE} {FULLNAME}-0 -- mqttctl sessions list" in notes, "NOTES lacks mqttctl sessions list")
    expect("mosquitto_sub -h" in notes, "NOTES lacks how to connect")


# What NOTES.txt must say of the store, per value set.
NOTES_EXPECT: dict[str, list[str]] = {
    "defaults": ["Store: /var/lib/mqttd, storage.durability batched on a PersistentVolumeClaim per pod (1Gi)."],
    "persistence-off": [
        "Store: /var/lib/mqttd, storage.durability batched on an emptyDir.",
        "survive a container restart but are lost when the pod is deleted or rescheduled",
    ],
    "persistence-off-memory": ["durability is memory: nothing is written to the volume"],
    "data-dir-moved": ["Store: /data/mqttd, storage.durability sync on a PersistentVolumeClaim per pod (2Gi)."],
}


def check_notes_store(name: str, rendered: dict[str, str]) -> None:
    notes = next(t for p, t in rendered.items() if p.endswith("NOTES.txt"))
    for text in NOTES_EXPECT.get(name, []):
        expect(text in notes, f"NOTES lacks {text!r}:\n{notes}")
    if name != "persistence-off-memory":
        expect("durability is memory" not in notes, "NOTES warns of memory durability")


def check_config_keys(docs: list[dict[str, Any]]) -> None:
    """The chart only writes top-level keys the image's default config has."""
    known = set(yaml.safe_load((ROOT / "docker" / "mqttd.yaml").read_text()))
    cfg = broker_config(docs)
    expect(set(cfg) <= known, f"config keys {set(cfg) - known} are not in docker/mqttd.yaml")


SET_CHECKS: dict[str, list[Callable[[list[dict[str, Any]]], None]]] = {
    "defaults": [check_defaults, check_security, check_probes, check_config_keys],
    "tls-existing-secret": [check_tls_existing, check_security],
    "cert-manager": [check_cert_manager],
    "loadbalancer": [check_loadbalancer],
    "nodeport": [check_nodeport],
    "persistence-off": [check_persistence_off, check_security],
    "persistence-off-memory": [check_persistence_off, check_memory_durability],
    "data-dir-moved": [check_data_dir_moved, check_config_keys],
    "servicemonitor": [check_servicemonitor],
    "networkpolicy": [check_networkpolicy],
    "custom-config": [check_custom_config, check_config_keys],
}


# --- lint, bad values, mqttd --check-config ----------------------------------------


def lint(values: dict[str, Any]) -> str:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in report.get("messages", []) if m.get("severity") == 3]
    expect(not errors and not report.get("errors"), f"lint errors: {errors or report.get('errors')}")
    warnings = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity") == 2]
    return f"{len(warnings)} warnings" + (f": {warnings}" if warnings else "")


def check_rejected(values: dict[str, Any], where: str) -> None:
    try:
        render(values)
    except (helm.HelmValuesError, helm.HelmRenderError) as e:
        expect(where in str(e), f"rejected, but the message does not name {where!r}: {e}")
        return
    raise Failure(f"accepted {values}")


def mqttd_binary() -> Path | None:
    env = os.environ.get("MQTTD_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    for profile in ("release", "debug"):
        candidate = target / profile / "mqttd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_config_with_mqttd(binary: Path, docs: list[dict[str, Any]]) -> None:
    """`mqttd --check-config` on a rendered config, paths moved to a temp dir."""
    cfg = copy.deepcopy(broker_config(docs))
    with tempfile.TemporaryDirectory() as tmp:
        cfg["storage"]["data_dir"] = tmp
        cfg["control"]["socket"] = os.path.join(tmp, "mqttd.sock")
        for key in ("password_file", "acl_file"):
            if cfg["auth"].get(key):
                Path(tmp, key).write_text("")
                cfg["auth"][key] = os.path.join(tmp, key)
        path = Path(tmp, "mqttd.yaml")
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([str(binary), "--check-config", str(path)], capture_output=True, text=True, timeout=30)
        detail = proc.stderr.strip() or proc.stdout.strip() or "no output"
        expect(proc.returncode == 0, f"{binary} --check-config exited with {proc.returncode}: {detail}")


def main() -> int:
    results = Results()
    helm.disable_logging()
    print(f"helm SDK {helm.helm_sdk_version()}, Kubernetes schemas {KUBE_VERSION}, chart {CHART}")

    rendered_sets: dict[str, list[dict[str, Any]]] = {}
    for name, values in VALUE_SETS.items():
        results.check(f"lint [{name}]", lambda v=values: lint(v))

        def render_and_validate(v: dict[str, Any] = values, n: str = name) -> list[dict[str, Any]]:
            rendered = render(v)
            docs = documents(rendered)
            validate_all(docs)
            check_selectors(docs)
            check_notes(rendered)
            check_notes_store(n, rendered)
            return docs

        docs = results.check(f"render + validate against Kubernetes {KUBE_VERSION} [{name}]", render_and_validate)
        if docs is None:
            continue
        rendered_sets[name] = docs
        print(f"     kinds: {', '.join(kinds(docs))}")
        for fn in SET_CHECKS.get(name, []):
            results.check(f"{fn.__name__.removeprefix('check_').replace('_', ' ')} [{name}]", lambda f=fn, d=docs: f(d))

    results.check("checksum/config follows the config only", lambda: check_checksum({}))
    for label, values, where in BAD_VALUES:
        results.check(f"rejects {label}", lambda v=values, w=where: check_rejected(v, w))

    binary = mqttd_binary()
    if binary is None:
        print("skip mqttd --check-config on rendered configs: no mqttd binary (set MQTTD_BIN or build it)")
    else:
        for name in ("defaults", "custom-config", "persistence-off", "persistence-off-memory", "data-dir-moved"):
            if name in rendered_sets:
                results.check(f"mqttd --check-config [{name}]", lambda d=rendered_sets[name]: check_config_with_mqttd(binary, d))

    total = len(results.passed) + len(results.failed)
    print(f"\nsummary: {len(results.passed)}/{total} checks passed, {len(VALUE_SETS)} value sets, "
          f"{len(BAD_VALUES)} bad value sets")
    for name, why in results.failed:
        print(f"  FAILED {name}: {why}")
    return 0 if not results.failed else 1


if __name__ == "__main__":
    sys.exit(main())
