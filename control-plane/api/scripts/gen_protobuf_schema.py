#!/usr/bin/env python3
"""Generates control-plane/api/src/protobuf/generated.rs: the message table that
kproxy_api::protobuf uses to turn Kubernetes protobuf bodies into JSON.

Usage: gen_protobuf_schema.py KUBECTL_BINARY > control-plane/api/src/protobuf/generated.rs

Why a kubectl binary: it carries both halves of what the decoder needs, for exactly the
Kubernetes version it was built from.
- Field numbers, names and types: every k8s.io/api generated.pb.go registers its
  generated.proto as a gzipped FileDescriptorProto, so the binary holds the compiled
  upstream .proto files (with the gogoproto options that go-to-protobuf strips from the
  published text, among them `nullable`).
- Go JSON semantics that the .proto text does not have: Go's runtime type descriptors keep
  every struct field's kind (pointer or value) and tag (`json:"name,omitempty"`,
  `json:",inline"`), and Kubernetes' JSON is encoding/json over those structs.
Field names are checked to equal the JSON names except for inline fields.
"""
import json
import re
import struct
import subprocess
import sys
import zlib

PACKAGES = [
    "k8s.io/apimachinery/pkg/apis/meta/v1",
    "k8s.io/apimachinery/pkg/api/resource",
    "k8s.io/apimachinery/pkg/util/intstr",
    "k8s.io/apimachinery/pkg/runtime",
    "k8s.io/api/core/v1",
    "k8s.io/api/apps/v1",
    "k8s.io/api/batch/v1",
    "k8s.io/api/discovery/v1",
    "k8s.io/api/coordination/v1",
    "k8s.io/api/autoscaling/v1",
    "k8s.io/api/policy/v1",
    "k8s.io/api/authentication/v1",
    "k8s.io/api/authorization/v1",
]

# Messages with a hand-written JSON form (see protobuf/special.rs); their Go types have
# no per-field JSON tags to read.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs",
    "k8s.io.api.authentication.v1.ExtraValue",
    "k8s.io.api.authorization.v1.ExtraValue",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Patch",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.runtime.Unknown",
}

# descriptor.proto FieldDescriptorProto.Type -> table scalar type
SCALAR = {
    1: "F64", 2: "F32", 3: "I64", 4: "U64", 5: "I32", 6: "Fixed64", 7: "Fixed32",
    8: "Bool", 9: "Str", 12: "Bytes", 13: "U32", 14: "I32", 15: "SFixed32",
    16: "SFixed64", 17: "S32", 18: "S64",
}
GOGO_NULLABLE = 65001


def varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def pb_fields(b):
    """The (number, value) pairs of a protobuf message; value is int or bytes."""
    i, out = 0, []
    while i < len(b):
        k, i = varint(b, i)
        n, w = k >> 3, k & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 2:
            ln, i = varint(b, i)
            v, i = b[i : i + ln], i + ln
        elif w == 1:
            v, i = b[i : i + 8], i + 8
        elif w == 5:
            v, i = b[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {w}")
        out.append((n, v))
    return out


def first(pairs, num, default=None):
    return next((v for n, v in pairs if n == num), default)


def file_descriptors(binary):
    """FileDescriptorProtos (parsed) by file name, from the gzip streams in the binary."""
    out = {}
    for m in re.finditer(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", binary):
        try:
            raw = zlib.decompressobj(31).decompress(binary[m.start() : m.start() + (4 << 20)])
        except zlib.error:
            continue
        if b"generated.proto" not in raw[:200]:
            continue
        fd = pb_fields(raw)
        out[first(fd, 1).decode()] = fd
    return out


def message(b, prefix):
    d = pb_fields(b)
    full = prefix + "." + first(d, 1).decode()
    fields = []
    for n, v in d:
        if n != 2:
            continue
        f = pb_fields(v)
        opts = dict(pb_fields(first(f, 8, b"")))
        fields.append(
            dict(
                name=first(f, 1).decode(),
                num=first(f, 3),
                repeated=first(f, 4) == 3,
                type=first(f, 5),
                type_name=first(f, 6, b"").decode().lstrip("."),
                nullable=opts.get(GOGO_NULLABLE, 1) != 0,
            )
        )
    nested = [message(v, full) for n, v in d if n == 3]
    map_entry = any(dict(pb_fields(v)).get(7) == 1 for n, v in d if n == 7)
    return dict(name=full, fields=fields, nested=nested, map_entry=map_entry)


class GoTypes:
    """Struct types of a non-PIE Go (1.2x, amd64) ELF binary, read from its runtime type
    descriptors: {(pkgpath, "pkg.Name"): [(field, kind, tag)]}."""

    KIND = {22: "ptr", 23: "slice", 21: "map", 25: "struct", 24: "string", 17: "array"}

    def __init__(self, b):
        self.b = b
        phoff = struct.unpack_from("<Q", b, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", b, 0x36)
        self.segs = []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from(
                "<IIQQQQQQ", b, phoff + i * phentsize
            )
            if p_type == 1:
                self.segs.append((p_vaddr, p_offset, p_filesz))
        shoff = struct.unpack_from("<Q", b, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)
        sh = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize) for i in range(shnum)]
        strtab = sh[shstrndx][4]
        secs = {}
        for s in sh:
            name = b[strtab + s[0] : b.index(b"\0", strtab + s[0])].decode()
            secs[name] = (s[3], s[4], s[5])
        self.ro_va, self.ro_off, self.ro_size = secs[".rodata"]

    def off(self, va):
        for v, o, s in self.segs:
            if v <= va < v + s:
                return va - v + o
        return None

    def name(self, o):
        b = self.b
        flags = b[o]
        ln, i = varint(b, o + 1)
        n = b[i : i + ln].decode("utf-8", "replace")
        i += ln
        tag = ""
        if flags & 2:
            tl, i = varint(b, i)
            tag = b[i : i + tl].decode("utf-8", "replace")
        return n, tag

    def structs(self):
        b = self.b
        out = {}
        lo, hi = self.ro_va, self.ro_va + self.ro_size
        for p in range(self.ro_off, self.ro_off + self.ro_size - 24, 8):
            # abi.StructType: Type (48 bytes), PkgPath, Fields {ptr, len, cap}
            ptr, ln, cap = struct.unpack_from("<QQQ", b, p)
            if not (lo <= ptr < hi and 0 < ln <= 256 and ln == cap):
                continue
            s = p - 56
            if b[s + 23] & 0x1F != 25:  # Kind: Struct
                continue
            tflag = b[s + 20]
            if not tflag & 1:  # no uncommon type: not a named type
                continue
            tname, _ = self.name(self.off(self.ro_va + struct.unpack_from("<i", b, s + 40)[0]))
            if tflag & 2:  # TFlagExtraStar
                tname = tname[1:]
            pkg_off = self.off(self.ro_va + struct.unpack_from("<i", b, s + 80)[0])
            if pkg_off is None:
                continue
            pkg, _ = self.name(pkg_off)
            fo = self.off(ptr)
            fields = []
            for i in range(ln):
                nptr, typ, _ = struct.unpack_from("<QQQ", b, fo + 24 * i)
                fname, tag = self.name(self.off(nptr))
                kind = b[self.off(typ) + 23] & 0x1F
                fields.append((fname, self.KIND.get(kind, "scalar"), tag))
            out[(pkg, tname)] = fields
        return out


def go_fields(go_struct):
    """Go field info by protobuf field number."""
    out = {}
    for fname, kind, tag in go_struct or []:
        pm = re.search(r'protobuf:"([^"]*)"', tag)
        parts = pm.group(1).split(",") if pm else []
        if len(parts) < 2:
            continue
        jm = re.search(r'json:"([^"]*)"', tag)
        j = jm.group(1).split(",") if jm else [fname]
        out[int(parts[1])] = dict(json=j[0], omitempty="omitempty" in j[1:], inline="inline" in j[1:], kind=kind)
    return out


def main():
    binary_path = sys.argv[1]
    binary = open(binary_path, "rb").read()
    version = json.loads(
        subprocess.run([binary_path, "version", "--client", "-o", "json"], capture_output=True, check=True).stdout
    )["clientVersion"]["gitVersion"]
    descriptors = file_descriptors(binary)
    gotypes = GoTypes(binary).structs()

    messages = []
    for pkgpath in PACKAGES:
        fd = descriptors[pkgpath + "/generated.proto"]
        pkg = first(fd, 2).decode()
        for n, v in fd:
            if n == 4:
                m = message(v, pkg)
                m["go"] = gotypes.get((pkgpath, pkgpath.rsplit("/", 1)[1] + "." + m["name"].rsplit(".", 1)[1]))
                messages.append(m)
    messages.sort(key=lambda m: m["name"])
    index = {m["name"]: i for i, m in enumerate(messages)}
    entries = {e["name"]: e for m in messages for e in m["nested"]}

    def ty(f):
        if f["type"] == 11:
            return f'Msg({index[f["type_name"]]})'
        return SCALAR[f["type"]]

    out = []
    w = out.append
    w("// @generated by control-plane/api/scripts/gen_protobuf_schema.py: do not edit by hand.")
    w(f"// Source: kubectl {version}, which embeds Kubernetes' compiled generated.proto files (field")
    w("// numbers, names, types) and the Go struct tags (pointer, omitempty, inline) of its release.")
    w("// Regenerate: python3 control-plane/api/scripts/gen_protobuf_schema.py PATH/TO/KUBECTL \\")
    w("//     > control-plane/api/src/protobuf/generated.rs")
    w("// Packages:")
    for p in PACKAGES:
        w(f"// - {p}")
    w("")
    w("use super::table::{Card::{CARDS}, Field, INLINE, Message, OMIT, PTR, Ty::{TYS}};")
    w("")
    w("const fn f(num: u32, name: &'static str, ty: super::table::Ty, card: super::table::Card, go: u8) -> Field {")
    w("    Field { num, name, ty, card, go }")
    w("}")
    w("")
    w(f"pub(super) static MESSAGES: [Message; {len(messages)}] = [")
    for i, m in enumerate(messages):
        special = m["name"] in SPECIAL
        go = go_fields(m["go"])
        if not special and m["fields"] and not go:
            sys.exit(f"no Go struct for {m['name']}")
        w(f"    // {i}")
        w(f'    Message {{ name: "{m["name"]}", fields: &[')
        for f in sorted(m["fields"], key=lambda f: f["num"]):
            g = go.get(f["num"])
            if g is None and not special:
                sys.exit(f"no Go field for {m['name']}.{f['name']}")
            g = g or dict(json=f["name"], omitempty=False, inline=False, kind="")
            # Case aside: a few .proto names spell an initialism differently (authentication/v1
            # BoundObjectReference.uID is JSON "uid"); the JSON name is what is written below.
            if not g["inline"] and not special and g["json"].lower() != f["name"].lower():
                sys.exit(f"JSON name {g['json']} != proto name {f['name']} in {m['name']}")
            flags = []
            if g["kind"] == "ptr":
                if f["nullable"] is False:
                    sys.exit(f"{m['name']}.{f['name']}: pointer but nullable=false")
                flags.append("PTR")
            if g["omitempty"]:
                flags.append("OMIT")
            if g["inline"]:
                flags.append("INLINE")
            go_flags = "|".join(flags) or "0"
            entry = entries.get(f["type_name"])
            if entry is not None and entry["map_entry"]:
                key, value = entry["fields"][0], entry["fields"][1]
                if key["type"] != 9:
                    sys.exit(f"{m['name']}.{f['name']}: map key is not a string")
                card, t = "Map", ty(value)
            else:
                card, t = ("Many" if f["repeated"] else "One"), ty(f)
            # Inline and special fields have no JSON name of their own; errors use the proto name.
            name = f["name"] if g["inline"] or special else g["json"]
            w(f'        f({f["num"]}, "{name}", {t}, {card}, {go_flags}),')
        w("    ] },")
    w("];")
    # The variants used, named (clippy's enum_glob_use refuses `Card::*`).
    text = "\n".join(out)
    used = lambda names: "{" + ", ".join(n for n in names if re.search(rf"\b{n}\b", text.split("MESSAGES", 1)[1])) + "}"
    out[out.index("use super::table::{Card::{CARDS}, Field, INLINE, Message, OMIT, PTR, Ty::{TYS}};")] = (
        "use super::table::{Card::" + used(["Many", "Map", "One"]) + ", Field, INLINE, Message, OMIT, PTR, Ty::"
        + used(sorted(set(SCALAR.values()) | {"Msg"})) + "};"
    )
    # rustfmt's layout, so that `cargo fmt` leaves the generated file alone.
    formatted = subprocess.run(
        ["rustfmt", "--edition", "2024", "--emit", "stdout"],
        input="\n".join(out) + "\n", capture_output=True, text=True, check=True,
    ).stdout
    sys.stdout.write(formatted)


if __name__ == "__main__":
    main()
