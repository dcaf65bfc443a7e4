"""The composition root: the `freshlabel` command line, the demo and the deployment renderer.

Every other package sits below this one (schemas < infra < quality < streams < serving <
freshlabel): this is the only place that may import from all of them, and nothing imports
from here (tests/test_layers.py holds the rule).
"""
