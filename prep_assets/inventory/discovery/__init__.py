"""Live discovery of nodes and guests from Proxmox VE, Kubernetes and DNS.

``run.discover_inventory`` queries the sources that ``docs/reference/discovery.md``
configures and merges their records with the documented systems.
"""
