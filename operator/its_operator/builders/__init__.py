"""Pure functions that render an AnalyticsPipeline's children, one module per kind.

No API calls and no clock here: given a parsed ``Pipeline`` (and the few facts the
handlers observed, such as a config hash or whether the ServiceMonitor CRD exists)
each module returns the complete object the operator applies with server-side apply.
That keeps rendering testable without a cluster and keeps the reconcile loop small.
"""
