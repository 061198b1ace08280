#!/usr/bin/env python3
"""Captures the protobuf request bodies kubectl sends, as fixtures for
tests/protobuf_kubectl.rs: NAME.pb is the body (decoded from the hex dump kubectl logs at
-v=10), NAME.json what the same kubectl prints for --dry-run=client -o json.

Usage: capture_kubectl_protobuf.py KUBECTL KUBECONFIG
KUBECONFIG must reach an API server (any answer will do: the body is logged before it is
sent), e.g. `kproxy-apiserver serve --store memory --kubeconfig KUBECONFIG ...`.
"""
import json
import os
import re
import subprocess
import sys

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "protobuf")

# name -> (kubectl arguments, arguments after "--")
CASES = {
    "deployment-web": (["create", "deployment", "web", "--image=httpd", "--replicas=2", "--port=80"], []),
    "namespace-x": (["create", "namespace", "x"], []),
    "service-nodeport-s": (["create", "service", "nodeport", "s", "--tcp=80:8080"], []),
    "deployment-d-command": (["create", "deployment", "d", "--image=i"], ["sh", "-c", "echo hi"]),
    "secret-generic-s": (["create", "secret", "generic", "s", "--from-literal=user=admin", "--from-literal=empty="], []),
    "quota-q": (["create", "quota", "q", "--hard=cpu=1500m,memory=1Gi,pods=10"], []),
    "pdb-p": (["create", "poddisruptionbudget", "p", "--selector=app=web", "--min-available=50%"], []),
}


def request_body(log):
    """The first request body in a -v=10 log, from its `hexdump -C` style dump."""
    m = re.search(r'"Request Body" body=<\n(.*?)\n >', log, re.S)
    if not m:
        return None
    body = bytearray()
    for line in m.group(1).splitlines():
        # "00000000  6b 38 73 00 ...  |k8s.....|": the hex columns only.
        body += bytes.fromhex(line.strip()[10:58].replace(" ", ""))
    return bytes(body)


def main():
    kubectl, kubeconfig = sys.argv[1], sys.argv[2]
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    for name, (args, command) in CASES.items():
        tail = ["--", *command] if command else []
        log = subprocess.run([kubectl, *args, "-v=10", *tail], env=env, capture_output=True, text=True).stderr
        body = request_body(log)
        if body is None or not body.startswith(b"k8s\0"):
            sys.exit(f"{name}: no protobuf request body in the log:\n{log[-2000:]}")
        dry = subprocess.run(
            [kubectl, *args, "--dry-run=client", "-o", "json", *tail],
            env=env, capture_output=True, text=True, check=True,
        ).stdout
        json.loads(dry)
        with open(os.path.join(FIXTURES, name + ".pb"), "wb") as f:
            f.write(body)
        with open(os.path.join(FIXTURES, name + ".json"), "w") as f:
            f.write(dry)
        print(f"{name}: {len(body)} bytes")


if __name__ == "__main__":
    main()
