#!/usr/bin/env python3
"""Regenerates openapi/extensions.tsv: the Kubernetes OpenAPI vendor extensions (patch strategy and
merge key, list/map/struct type) that k8s-openapi's schemas leave out, read from the Go types
they come from.

Usage: gen_openapi_extensions.py API_DIR APIMACHINERY_DIR > extensions.tsv
where the directories are checkouts of k8s.io/api and k8s.io/apimachinery at the Kubernetes
release k8s-openapi's feature names (v0.33.x for v1_33).

Output: one line per annotated property, `definition<TAB>property<TAB>{json extensions}`;
a type-level annotation has an empty property.
"""

import json
import os
import re
import sys

STRUCT = re.compile(r"^type (\w+) struct \{")
FIELD = re.compile(r"^\t(\w+)\s+[^`]*`([^`]*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')
MARKER = re.compile(r"^\s*// \+(listType|listMapKey|mapType|structType)=(\S+)")


def parse(path, prefix, out):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    ty = None
    markers = []
    for line in lines:
        m = MARKER.match(line)
        if m:
            markers.append((m.group(1), m.group(2)))
            continue
        if line.strip().startswith("//"):
            continue
        s = STRUCT.match(line)
        if s:
            ty = s.group(1)
            ext = {}
            for k, v in markers:
                if k == "structType":
                    ext["x-kubernetes-map-type"] = v
            if ext:
                out.append((prefix + ty, "", ext))
            markers = []
            continue
        if line.startswith("}"):
            ty = None
            markers = []
            continue
        f = FIELD.match(line)
        if ty and f:
            tags = dict(TAG.findall(f.group(2)))
            name = tags.get("json", "").split(",")[0]
            ext = {}
            keys = []
            for k, v in markers:
                if k == "listType":
                    ext["x-kubernetes-list-type"] = v
                elif k == "listMapKey":
                    keys.append(v)
                elif k == "mapType":
                    ext["x-kubernetes-map-type"] = v
            if keys:
                ext["x-kubernetes-list-map-keys"] = keys
            if "patchStrategy" in tags:
                ext["x-kubernetes-patch-strategy"] = tags["patchStrategy"]
            if "patchMergeKey" in tags:
                ext["x-kubernetes-patch-merge-key"] = tags["patchMergeKey"]
            if name and ext:
                out.append((prefix + ty, name, ext))
        markers = []


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    out = []
    for group in sorted(os.listdir(api)):
        gdir = os.path.join(api, group)
        if not os.path.isdir(gdir) or group.startswith("."):
            continue
        for version in sorted(os.listdir(gdir)):
            types = os.path.join(gdir, version, "types.go")
            if os.path.isfile(types):
                parse(types, f"io.k8s.api.{group}.{version}.", out)
    for sub in ["apis/meta/v1"]:
        types = os.path.join(machinery, "pkg", sub, "types.go")
        parse(types, "io.k8s.apimachinery.pkg." + sub.replace("/", ".") + ".", out)
    for d, p, e in sorted(out, key=lambda r: (r[0], r[1])):
        print(f"{d}\t{p}\t{json.dumps(e, sort_keys=True, separators=(',', ':'))}")


main()
