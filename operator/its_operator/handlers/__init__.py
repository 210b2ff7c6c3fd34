"""The reconcile loop: kopf handlers, the work queue, API access and drift detection.

Level-based: every trigger (a pipeline event, a child event, a timer, a resync) only
enqueues the pipeline's key; one reconcile per key at a time computes the desired
children, compares them with the watched state and writes only what differs.
"""
