"""Kubernetes deployment: manifests rendered from validated settings, applied with kubectl.

- :mod:`.manifests` builds the objects (volume claim, Jobs, PyTorchJob, Deployment, Service);
- :mod:`.validate` checks names, label values and quantities the way the API server does;
- :mod:`.command` is the command line behind ``k8s/deploy.sh``;
- :mod:`.requeue` runs inside the training container so a preempted pod is replaced.

Nothing here imports torch: rendering works on a laptop with only PyYAML.
"""

from __future__ import annotations

from .manifests import Settings, dump, render

__all__ = ["Settings", "dump", "render"]
