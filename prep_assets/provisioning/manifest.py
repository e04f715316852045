"""A DaemonSet manifest that installs packages on one Kubernetes node.

Kubernetes nodes are not reached with a shell, so their plan is a manifest for
an operator to apply with ``kubectl apply -f``. The pod runs privileged with the
host's PID namespace, and its init container enters the namespaces of the
node's PID 1 with nsenter, so the install commands run on the node itself as
root. The main container only idles, because a DaemonSet pod must keep running.
prep-assets generates the manifest and never applies it.
"""

import re
from collections.abc import Sequence

import yaml

from prep_assets.transports.base import shell_command

# debian:bookworm-slim contains nsenter, because util-linux is an essential package in Debian 12.
INSTALLER_IMAGE = "debian:bookworm-slim"
IDLE_IMAGE = "registry.k8s.io/pause:3.9"
NAMESPACE = "kube-system"
APP_LABEL = "prep-assets-tools"
# Maximum length of a Kubernetes object name that must be a DNS-1123 label.
MAX_NAME_LENGTH = 63


def daemonset_manifest(
    node: str,
    commands: Sequence[Sequence[str]],
    *,
    namespace: str = NAMESPACE,
    installer_image: str = INSTALLER_IMAGE,
) -> str:
    """Return the YAML of a DaemonSet that runs ``commands`` on ``node`` and then idles.

    The commands run in order and stop at the first failure. ``node`` must be the
    node's name in Kubernetes (its ``kubernetes.io/hostname`` label).
    """
    name = _object_name(f"{APP_LABEL}-{node}")
    labels = {"app.kubernetes.io/name": APP_LABEL, "app.kubernetes.io/instance": name}
    script = " && ".join(shell_command(command) for command in commands)
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "prep-assets"},
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "hostPID": True,
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [
                        {
                            "name": "install",
                            "image": installer_image,
                            "command": [
                                "nsenter",
                                "--target",
                                "1",
                                "--mount",
                                "--uts",
                                "--ipc",
                                "--net",
                                "--pid",
                                "--",
                                "/bin/sh",
                                "-c",
                                script,
                            ],
                            "securityContext": {"privileged": True},
                        }
                    ],
                    "containers": [
                        {
                            "name": "idle",
                            "image": IDLE_IMAGE,
                            "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}},
                        }
                    ],
                },
            },
        },
    }
    return yaml.safe_dump(manifest, sort_keys=False)


def _object_name(text: str) -> str:
    """Turn ``text`` into a DNS-1123 label: lower case, letters, digits and "-"."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:MAX_NAME_LENGTH].rstrip("-")
