"""The AnalyticsPipeline API (``its.ai/v1alpha1``) as typed models: the one source of truth.

The CRD YAML in ``crds/`` is generated from these classes (``python -m
its_operator.api.crdgen``), the builders render children from them and the handlers
parse CRs with them, so a field, default, bound or cross-field rule is written once.
This package is the lowest operator layer: it imports nothing else from the operator.
"""
