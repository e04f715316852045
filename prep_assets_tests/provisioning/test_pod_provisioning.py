"""Kubernetes pods are never provisioned, even with provisioning enabled.

The pod ``apps/web-0`` is served by the loopback Kubernetes API of
kubernetes_server.py, whose exec runs commands as the test user with the pod's
bin dir as PATH. The bin dir lacks the sysstat tools, so the tool check finds
iostat missing. A package installed in a running container is lost when the
pod is recreated, so the plan must be ``not_provisionable`` and no install
command may reach the pod.
"""

import pytest
from dagster import DagsterInstance

from prep_assets.defs.provisioning import ProvisioningResource
from prep_assets_tests.kubernetes_server import FakePod
from prep_assets_tests.loop_helpers import (
    INVENTORY,
    TOOLS_MAP,
    InfraRepo,
    credentials_text,
    latest_metadata,
    loop_resources,
    read_audit_log,
    run_pass,
)
from prep_assets_tests.sshhosts import link_tools

pytestmark = pytest.mark.integration

# The short baseline sample runs vmstat for about 5 s, so commands get 10 s.
TIMEOUT = 10.0

INVENTORY_TEXT = """\
# System inventory

## Managed

| Name | Type | Tier | Access | Credentials | Namespace | Pod |
|---|---|---|---|---|---|---|
| web | k8s-pod | standard | kubectl | k3s | apps | web-0 |
"""

# First words of the install commands of apt, apk and dnf, with and without the sudo prefix.
INSTALLERS = {"apt-get", "apk", "dnf", "sudo", "env"}


def test_pod_not_provisionable_when_enabled(ssh_hosts, fake_kubernetes, tmp_path):
    pod_bin = ssh_hosts.public_dir / f"pod-{tmp_path.name[-20:]}"
    link_tools(pod_bin, with_sysstat=False)
    cluster = fake_kubernetes.cluster
    cluster.pods[("apps", "web-0")] = FakePod(["web"], str(pod_bin))
    kubeconfig = fake_kubernetes.kubeconfig(tmp_path / "kubeconfig")

    repo = InfraRepo(tmp_path / "infra")
    repo.write("docs/reference/tools-map.md", TOOLS_MAP)
    repo.write(
        "docs/reference/credentials-map.md",
        credentials_text([f"| k3s | kubeconfig | file:{kubeconfig} |"]),
    )
    repo.write(INVENTORY, INVENTORY_TEXT)
    repo.commit("Document the pod web")
    (tmp_path / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    provisioning = ProvisioningResource(enabled=True, enabled_by="test-operator")

    try:
        run_pass(instance, loop_resources(repo, tmp_path / "known_hosts", TIMEOUT, provisioning))

        web = repo.systems()["web"]
        assert web["access"]["state"] == "reachable", web["access"]
        assert web["access"]["method"] == "kubectl"
        tools = {tool["command"]: tool["state"] for tool in web["tools"]}
        assert tools["iostat"] == "missing"
        plan = web["provisioning"]
        assert plan["state"] == "not_provisionable", plan
        assert plan["reason"].startswith("Kubernetes pod: a package installed in a running")
        assert plan["applied"] is False
        assert plan["enabled"] is True
        assert plan["commands"] == []
        assert plan["manifest"] is None
        metadata = latest_metadata(instance, "provisioned_tools")
        assert metadata["result"] == "nothing to install"
        assert metadata["applied"] == 0
        assert read_audit_log(repo.root) == []
    finally:
        instance.dispose()

    commands = [argv for _namespace, _pod, _container, argv in cluster.exec_commands]
    assert commands, "no command reached pod apps/web-0 through the exec API"
    assert [argv for argv in commands if argv[0] in INSTALLERS] == []
    assert [argv for argv in commands if "apt-get" in argv] == []
