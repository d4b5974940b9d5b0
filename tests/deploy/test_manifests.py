"""Every overlay renders, validates against the Kubernetes schemas offline, and holds together:
selectors select pods that exist, HPAs target Deployments, probes name ports that exist."""

from __future__ import annotations

import kubernetes_validate

from samserve.gateway.settings import Settings

K8S_VERSION = "1.32.0"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # no schema offline: checked by hand below


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_labels(docs: list[dict]) -> list[dict]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment")]


def selects_a_pod(selector: dict, docs: list[dict]) -> bool:
    return any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels(docs))


def containers(docs: list[dict], init: bool = True):
    for d in by_kind(docs, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"] + (spec.get("initContainers", []) if init else []):
            yield d, spec, c


def test_every_object_validates_against_the_schemas(rendered):
    _, docs = rendered
    assert len(docs) >= 15
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_service_monitors_name_ports_of_selected_services(rendered):
    _, docs = rendered
    monitors = by_kind(docs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"samserve-gateway", "samserve-triton"}
    for m in monitors:
        sel = m["spec"]["selector"]["matchLabels"]
        services = [
            s for s in by_kind(docs, "Service") if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())
        ]
        ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        for endpoint in m["spec"]["endpoints"]:
            assert endpoint["port"] in ports, (m["metadata"]["name"], endpoint["port"], ports)


def test_services_select_pods_and_target_named_ports(rendered):
    _, docs = rendered
    for s in by_kind(docs, "Service"):
        assert selects_a_pod(s["spec"]["selector"], docs), s["metadata"]["name"]
        names = {
            p.get("name")
            for _, _, c in containers(docs, init=False)
            for p in c.get("ports", [])
            if selects_a_pod(s["spec"]["selector"], docs)
        }
        for port in s["spec"]["ports"]:
            if isinstance(port["targetPort"], str):
                assert port["targetPort"] in names, (s["metadata"]["name"], port["targetPort"])


def test_hpas_target_existing_deployments_and_adapter_metrics(rendered):
    _, docs = rendered
    deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    adapter = next(d for d in by_kind(docs, "ConfigMap") if "prometheus-adapter" in d["metadata"]["name"])
    rules = adapter["data"]["config.yaml"]
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in rules, metric


def test_pdbs_and_network_policies_select_pods(rendered):
    _, docs = rendered
    for d in by_kind(docs, "PodDisruptionBudget") + by_kind(docs, "NetworkPolicy"):
        sel = d["spec"].get("selector", d["spec"].get("podSelector"))["matchLabels"]
        assert selects_a_pod(sel, docs), d["metadata"]["name"]
        for rule in d["spec"].get("ingress", []):
            for peer in rule["from"]:
                if "podSelector" in peer:
                    assert selects_a_pod(peer["podSelector"]["matchLabels"], docs)


def test_only_the_gateway_reaches_triton_and_redis(rendered):
    _, docs = rendered
    for target in ("samserve-triton", "samserve-redis", "samserve-redis-state"):
        policies = [
            p
            for p in by_kind(docs, "NetworkPolicy")
            if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == target
        ]
        assert policies, target
        for p in policies:
            for rule in p["spec"]["ingress"]:
                for peer in rule["from"]:
                    if "podSelector" in peer:
                        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "samserve-gateway"}
                    else:  # only the monitoring namespace, and only to a metrics port
                        assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
                        assert all(port["port"] in (8002, 9090) for port in rule["ports"])


def test_the_state_redis_evicts_nothing_and_the_gateway_keeps_its_state_there(rendered):
    """Locks and kept logits must never be evicted by cache pressure: the gateway names a state
    Redis of its own, which runs noeviction, while the cache runs allkeys-lru."""
    _, docs = rendered

    def args(name: str) -> list[str]:
        (c,) = [c for d, _, c in containers(docs) if d["metadata"]["name"] == name]
        return c["args"]

    def policy(name: str) -> str:
        a = args(name)
        return a[a.index("--maxmemory-policy") + 1]

    assert policy("samserve-redis") == "allkeys-lru"
    assert policy("samserve-redis-state") == "noeviction"
    (gateway,) = [c for d, _, c in containers(docs) if d["metadata"]["name"] == "samserve-gateway"]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["SAMSERVE_STATE_REDIS_URL"].startswith("redis://samserve-redis-state:")
    assert env["SAMSERVE_REDIS_URL"].startswith("redis://samserve-redis:")


def test_probes_volumes_and_security_hold(rendered):
    _, docs = rendered
    claims = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
    for _, spec, c in containers(docs):
        port_names = {p["name"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                p = c[probe]
                port = (p.get("httpGet") or p.get("tcpSocket") or p.get("grpc") or {}).get("port")
                if isinstance(port, str):
                    assert port in port_names, (c["name"], probe, port)
                elif port is not None:
                    assert port in {p["containerPort"] for p in c["ports"]}, (c["name"], probe, port)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, (c["name"], m["name"])
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]


def test_gateway_environment_names_real_settings(rendered):
    _, docs = rendered
    fields = {f.upper() for f in Settings.model_fields}
    for d, _, c in containers(docs):
        for env in c.get("env", []):
            if env["name"].startswith("SAMSERVE_") and d["metadata"]["name"] == "samserve-gateway":
                assert env["name"].removeprefix("SAMSERVE_") in fields, env["name"]
    gateway = next(c for d, _, c in containers(docs) if d["metadata"]["name"] == "samserve-gateway")
    env = {e["name"]: e["value"] for e in gateway["env"]}
    Settings(**{k.removeprefix("SAMSERVE_").lower(): v for k, v in env.items()})  # validates


def test_gpu_requests_only_in_the_gpu_overlay(rendered):
    overlay, docs = rendered
    gpus = {"gpu": 1, "cpu": 0}[overlay]
    triton = next(c for d, _, c in containers(docs, init=False) if d["metadata"]["name"] == "samserve-triton")
    assert int(triton["resources"].get("limits", {}).get("nvidia.com/gpu", 0)) == gpus


def test_the_models_configmap_is_what_build_engines_reads(rendered, tmp_path):
    """Triton's init container builds the models of the samserve-models ConfigMap: the volume
    names the generated (hashed) ConfigMap, the env's file is where it is mounted, and the file
    parses as build_engines reads it (the first model the default)."""
    from samserve.contract import parse_model_spec, read_models_file

    _, docs = rendered
    maps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    (triton,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "samserve-triton"]
    spec = triton["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    volume = {v["name"]: v for v in spec["volumes"]}["models"]
    name = volume["configMap"]["name"]
    assert name.startswith("samserve-models-") and name in maps  # the hash rolls the pods on a change
    env = {e["name"]: e.get("value") for e in init["env"]}
    mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["models"]
    assert env["SAMSERVE_MODELS_FILE"] == f"{mount}/models.txt"
    assert '--models-file "${SAMSERVE_MODELS_FILE}"' in init["args"][0]
    (tmp_path / "models.txt").write_text(maps[name]["data"]["models.txt"])
    specs = read_models_file(tmp_path / "models.txt")
    first, path, model_type = parse_model_spec(specs[0])
    assert (first, str(path), model_type) == ("sam", "/checkpoints/sam_vit_b_01ec64.pth", "vit_b")
