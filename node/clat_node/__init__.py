"""clat-node: the node agent of node mode, and the unprivileged hand-off its pods run.

A pod in node mode carries no privileged container. Its init container (`clat-node handoff`)
passes the pod's network namespace to the node's agent over a unix socket; the agent checks
that the namespace belongs to an opted-in pod on its node, serves it, and answers once IPv4
works. See docs/node-mode.md. The translator and the operator never import this package.
"""
