"""`clat-operator`: run the operator, or check its settings without a cluster.

    clat-operator run [--webhook-host 127.0.0.1] [--SETTING VALUE]...
    clat-operator check [--SETTING VALUE]...

Every setting is also read from CLAT_OPERATOR_* (contract.SETTINGS, docs/operator.md "Settings");
a flag wins over its variable.
Exit codes: 0 done (or stopped by SIGTERM/SIGINT), 1 the operator failed, 2 bad settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from clat_operator import certs, config, contract, injection

_SAMPLE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "sample",
        "namespace": "default",
        "annotations": {"clat.io/enabled": "true"},
    },
    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
}


def build_parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clat-operator",
        description=(
            "Injects the clat sidecar (RFC 6877 CLAT) into Kubernetes pods that opt in with "
            f'{contract.ANNOTATION_ENABLED}: "true", and reports on them with Events.'
        ),
    )
    parser.add_argument("--version", action="version", version=f"clat-operator {contract.VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the operator (in the cluster, or locally with --webhook-host)",
        description="Run the operator. In the cluster the chart provides the TLS files and the "
        "webhook configuration; with --webhook-host it runs against any API server in KUBECONFIG "
        "with a generated certificate and its own webhook configuration.",
    )
    check = commands.add_parser(
        "check",
        help="validate the settings and render a sample injection, without a cluster",
        description="Validate the settings, make a throwaway certificate and print the clat "
        "container that an opted-in pod would get. Exit 0 when everything is usable.",
    )
    for sub in (run, check):
        config.add_arguments(sub, environ)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    environ = dict(os.environ)
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        settings = config.Config.from_args(args)
    except config.ConfigError as e:
        parser.exit(2, f"clat-operator: error: {e}\n")
    if args.command == "check":
        return check(settings)
    return run(settings)


def run(settings: config.Config) -> int:
    if not settings.dev_mode:
        for path in (settings.tls_cert_file, settings.tls_key_file):
            if not os.access(path, os.R_OK):
                print(
                    f"clat-operator: error: webhook TLS file {path} is not readable: in the "
                    "cluster the chart mounts it; for local development use "
                    "--webhook-host 127.0.0.1",
                    file=sys.stderr,
                )
                return 2
    import kopf

    import clat_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(debug=settings.log_level <= logging.DEBUG, log_format=kopf.LogFormat.FULL)
    logging.getLogger().setLevel(settings.log_level)
    try:
        kopf.run(clusterwide=True, memo=kopf.Memo(config=settings))
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # the operator's own log has the details already
        print(f"clat-operator: stopped by an error: {e}", file=sys.stderr)
        return 1
    return 0


def check(settings: config.Config) -> int:
    print(f"clat-operator {contract.VERSION}: settings are valid")
    print(f"  {settings.describe()}")
    if settings.dev_mode:
        certs.self_signed([settings.webhook_host])
        print(f"  dev mode: a certificate for {settings.webhook_host} can be generated")
    else:
        for path in (settings.tls_cert_file, settings.tls_key_file):
            state = "readable" if os.access(path, os.R_OK) else "absent (the chart mounts it)"
            print(f"  TLS file {path}: {state}")
    runtime = injection.Runtime(native_sidecar=settings.native_sidecar != config.NativeSidecar.OFF)
    plan = injection.plan(_SAMPLE_POD, "default", {}, settings, runtime)
    node = plan.mode is config.ClatMode.NODE
    sidecars = plan.init_containers if plan.native or node else plan.containers
    if not plan.inject or not sidecars:
        print(
            f"clat-operator: error: the sample pod was not injected: {plan.reason}", file=sys.stderr
        )
        return 1
    if plan.pod_sysctls:
        wanted = " ".join(f"{item['name']}={item['value']}" for item in plan.pod_sysctls)
        print(f"  pod securityContext.sysctls (allow them on the kubelet): {wanted}")
    kind = (
        "node mode: init container"
        if node
        else "native sidecar"
        if plan.native
        else "classic container"
    )
    print(f"  an opted-in pod gets ({kind}):")
    print(json.dumps(sidecars[0], indent=2))
    for volume in plan.volumes or []:
        if volume.get("name") == contract.HANDOFF_VOLUME_NAME:
            print(f"  and the volume: {json.dumps(volume)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
