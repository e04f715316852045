"""Parsing of docs/reference/discovery.md."""

from prep_assets.inventory.credentials import CredentialKind, CredentialPointer
from prep_assets.inventory.discovery.config import (
    DISCOVERY_CONFIG_PATH,
    load_discovery_config,
    parse_discovery_config,
)

PATH = DISCOVERY_CONFIG_PATH
CREDENTIALS = {
    "pve-token": CredentialPointer("pve-token", CredentialKind.API_TOKEN, "env", "PVE_TOKEN"),
    "k3s": CredentialPointer("k3s", CredentialKind.KUBECONFIG, "file", "/etc/prep/k3s.yaml"),
    "root-key": CredentialPointer("root-key", CredentialKind.SSH_KEY, "file", "/etc/prep/id"),
}

EXAMPLE = """\
# Discovery

## Proxmox clusters

| Cluster | Endpoint | Token ID | Credentials | TLS verify | Guest addresses | Timeout | Enabled |
|---|---|---|---|---|---|---|---|
| homelab | https://pve1.home.arpa:8443/api2/json | prep@pve!discovery | pve-token | /etc/prep/pve-ca.pem | 50 | 5 | yes |
| lab | pve9.home.arpa | | pve-token | no | | | no |

## Kubernetes

| Cluster | Context | Credentials |
|---|---|---|
| k3s | default | k3s |

## DNS

| Resolver | Domain |
|---|---|
| 10.0.0.1 | Home.Arpa |
"""


def test_example_parses():
    config = parse_discovery_config(EXAMPLE, PATH, CREDENTIALS)

    assert config.problems == []
    assert config.configured
    homelab, lab = config.proxmox
    assert (homelab.name, homelab.host, homelab.port) == ("homelab", "pve1.home.arpa", 8443)
    assert homelab.token_id == "prep@pve!discovery"
    assert homelab.verify == "/etc/prep/pve-ca.pem"
    assert (homelab.address_lookups, homelab.timeout, homelab.enabled) == (50, 5.0, True)
    assert homelab.key == "proxmox:homelab"
    assert (lab.port, lab.verify, lab.enabled, lab.token_id) == (8006, False, False, None)
    assert lab.address_lookups == 0
    (k3s,) = config.kubernetes
    assert (k3s.context, k3s.credential.name, k3s.key) == ("default", "k3s", "kubernetes:k3s")
    assert config.dns is not None
    assert (config.dns.host, config.dns.port, config.dns.domain) == ("10.0.0.1", 53, "home.arpa")


def test_missing_file_means_docs_only(tmp_path):
    config = load_discovery_config(tmp_path, CREDENTIALS)

    assert not config.configured
    assert config.proxmox == []
    assert config.kubernetes == []
    assert config.dns is None


def test_bad_rows_are_reported_and_left_out():
    text = """\
## Proxmox

| Cluster | Endpoint | Token ID | Credentials | Guest addresses | Timeout |
|---|---|---|---|---|---|
| good | pve1:8006 | prep@pve!d | pve-token | | |
| plain | http://pve2 | | pve-token | | |
| wrongkind | pve3 | | root-key | | |
| unknown | pve4 | | not-listed | | |
| badtoken | pve5 | prep-without-realm | pve-token | | |
| lookups | pve6 | | pve-token | lots | |
| slow | pve7 | | pve-token | | 0 |
|  | pve8 | | pve-token | | |
| good | pve9 | | pve-token | | |

## Kubernetes

| Cluster | Context | Credentials |
|---|---|---|
| k3s | default | |

## DNS

| Resolver | Domain |
|---|---|
| dns.home.arpa | home.arpa |
| 10.0.0.1:5353 | |
| 10.0.0.2 | |

## Notes

| Name | Value |
|---|---|
| stray | table |
"""
    config = parse_discovery_config(text, PATH, CREDENTIALS)

    assert [source.name for source in config.proxmox] == ["good"]
    assert config.kubernetes == []
    assert config.dns is not None and (config.dns.host, config.dns.port) == ("10.0.0.1", 5353)
    reasons = {problem.location.line: problem.reason for problem in config.problems}
    assert "https only" in reasons[6]
    assert "is a ssh-key" in reasons[7]
    assert "unknown credential name" in reasons[8]
    assert "not-listed" not in reasons[8]
    assert "USER@REALM!TOKENNAME" in reasons[9]
    assert "Guest addresses" in reasons[10]
    assert "Timeout" in reasons[11]
    assert "missing Cluster" in reasons[12]
    assert "duplicate cluster name 'good'" in reasons[13]
    assert "missing Credentials" in reasons[19]
    assert "IP address" in reasons[25]
    assert "second DNS resolver" in reasons[27]
    assert "not under a heading" in reasons[31]
    assert len(config.problems) == 12
