"""The deployment files: names and keys the runbook uses, and wiring the portal reads."""

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings
from django.urls import resolve

DEPLOY = Path(settings.BASE_DIR) / "deploy"
K8S = DEPLOY / "k8s"


def documents():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind_and_name():
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in documents()}


def settings_read_from_environment() -> set[str]:
    source = (Path(settings.BASE_DIR) / "portal" / "settings.py").read_text()
    return set(re.findall(r'env_(?:str|bool|int|list|networks|secret)\(\s*"([A-Z0-9_]+)"', source))


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def test_every_namespaced_object_is_in_fleet_management():
    for name, doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "fleet-management", name
    assert ("Namespace", "fleet-management") in by_kind_and_name()


def test_the_runbook_names_exist():
    objects = by_kind_and_name()
    for key in [
        ("Deployment", "fleet-api"),
        ("Deployment", "sync-worker"),
        ("Secret", "microsoft-graph-secret"),
        ("Service", "fleet-api"),
        ("Ingress", "fleet-api"),
        ("Job", "fleet-portal-migrate"),
        ("ConfigMap", "fleet-portal-config"),
    ]:
        assert key in objects, key
    secret = objects[("Secret", "microsoft-graph-secret")]
    assert set(secret["stringData"]) == {"client-id", "client-secret", "tenant-id"}


@pytest.mark.parametrize("name", ["fleet-api", "sync-worker"])
def test_deployments_wire_every_variable_to_a_setting_and_a_real_key(name):
    objects = by_kind_and_name()
    known = settings_read_from_environment()
    container = containers(objects[("Deployment", name)])[0]
    for entry in container["env"]:
        assert entry["name"] in known, entry["name"]
        ref = entry["valueFrom"]["secretKeyRef"]
        secret = objects[("Secret", ref["name"])]
        assert ref["key"] in secret["stringData"], ref
    config = objects[("ConfigMap", container["envFrom"][0]["configMapRef"]["name"])]
    assert set(config["data"]) <= known, set(config["data"]) - known
    names = {entry["name"] for entry in container["env"]}
    assert {
        "SECRET_KEY",
        "DATABASE_URL",
        "FIELD_ENCRYPTION_KEYS",
        "AUDIT_CHAIN_KEY",
        "MICROSOFT_CLIENT_ID",
        "MICROSOFT_CLIENT_SECRET",
        "MICROSOFT_TENANT_ID",
    } <= names
    security = container["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_client_addresses_come_only_from_the_ingress_proxies():
    config = by_kind_and_name()[("ConfigMap", "fleet-portal-config")]["data"]
    assert "TRUST_X_FORWARDED_FOR" not in config  # it believed any caller's header
    proxies = [
        ipaddress.ip_network(value.strip(), strict=False)
        for value in config["TRUSTED_PROXIES"].split(",")
    ]
    assert proxies and all(network.is_private and network.prefixlen >= 8 for network in proxies)


def test_the_web_probes_point_at_real_endpoints():
    container = containers(by_kind_and_name()[("Deployment", "fleet-api")])[0]
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert resolve(path).url_name in {"readyz", "healthz"}


def test_the_worker_runs_qcluster_and_probes_its_heartbeat():
    container = containers(by_kind_and_name()[("Deployment", "sync-worker")])[0]
    assert container["command"][-1] == "qcluster"
    assert "worker_health" in container["livenessProbe"]["exec"]["command"]


def test_the_worker_pods_drain_the_inbox_with_the_workers_settings():
    worker, drain, _events = containers(by_kind_and_name()[("Deployment", "sync-worker")])
    assert drain["command"][-1] == "drain_inbox"
    assert drain["livenessProbe"]["exec"]["command"][-3:] == ["drain_inbox", "--check-alive", "60"]
    for key in ("env", "envFrom", "securityContext", "volumeMounts"):
        assert drain[key] == worker[key], key
    assert drain["resources"]["requests"] and drain["resources"]["limits"]


def test_event_deliveries_have_a_worker_of_their_own_queue():
    worker, _drain, events = containers(by_kind_and_name()[("Deployment", "sync-worker")])
    assert events["command"][:2] == ["env", "WORKER_QUEUE=events"]
    assert events["command"][-1] == "qcluster"
    assert "worker_health" in events["livenessProbe"]["exec"]["command"]
    for key in ("env", "envFrom", "securityContext", "volumeMounts"):
        assert events[key] == worker[key], key


def test_the_migration_job_migrates():
    job = by_kind_and_name()[("Job", "fleet-portal-migrate")]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "migrate",
        "--noinput",
    ]


def test_migrations_run_as_the_owner_and_the_app_as_another_role():
    objects = by_kind_and_name()
    secret = objects[("Secret", "fleet-portal-secret")]["stringData"]

    def database_key(container):
        entry = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
        return entry["valueFrom"]["secretKeyRef"]["key"]

    migrate = objects[("Job", "fleet-portal-migrate")]["spec"]["template"]["spec"]
    owner_key = database_key(migrate["containers"][0])
    app_keys = {
        database_key(containers(objects[("Deployment", name)])[0])
        for name in ("fleet-api", "sync-worker")
    }
    assert app_keys == {"database-url"} and owner_key == "database-owner-url"
    owner, app = (urlsplit(secret[key]).username for key in (owner_key, "database-url"))
    assert owner != app
    config = objects[("ConfigMap", "fleet-portal-config")]["data"]
    assert config["DATABASE_APP_ROLE"] == app
    assert "AUDIT_CHAIN_KEY" in {e["name"] for e in migrate["containers"][0]["env"]}


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource


def test_the_image_runs_as_a_non_root_user_with_gunicorn():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert "collectstatic" in dockerfile and "gunicorn" in dockerfile
    assert dockerfile.count("FROM ") == 2  # multi-stage
