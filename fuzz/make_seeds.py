#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/seeds/<target>/ from the test vectors
(threat-model/vectors/) and the import fixtures (formats/tests/fixtures/). Run from anywhere;
rerun after the vectors or fixtures change. Seeds are small: libFuzzer grows its working corpus
in fuzz/corpus/, which is not committed."""

import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VECTORS = os.path.join(ROOT, "threat-model", "vectors")
FIXTURES = os.path.join(ROOT, "formats", "tests", "fixtures")
SEEDS = os.path.join(HERE, "seeds")


def write(target, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def vectors():
    for name in sorted(os.listdir(VECTORS)):
        if name.endswith(".json"):
            with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
                yield json.load(f)


def hx(v):
    return bytes.fromhex(v) if isinstance(v, str) else b""


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    for v in vectors():
        op, i, o = v["operation"], v["inputs"], v["output"] or {}
        if op.startswith("envelope."):
            write("envelope", hx(i.get("envelope") or o.get("envelope")))
            if "payload" in o:
                write("envelope", hx(o["payload"]))
        elif op.startswith("wrap."):
            write("wrapped_key", hx(i.get("wrapped") or o.get("wrapped")))
            if i.get("recipient_public"):
                write("wrapped_key", hx(i["recipient_public"]))
        elif op in ("request.verify", "admission.verify", "join.verify", "version.verify"):
            key = i.get("verifying_key") or i.get("admitter_key") or i.get("signing_key")
            msg = o.get("message", "")
            write("signatures", hx(key)[:32].ljust(32, b"\0") + hx(i["signature"])[:64].ljust(64, b"\0") + hx(msg))
        elif op == "token.parse":
            write("token", i["token"])
        elif op.startswith("keyfile."):
            write("keyfile", hx(i.get("encoded") or o.get("encoded")))
    for name in sorted(os.listdir(FIXTURES)):
        with open(os.path.join(FIXTURES, name), "rb") as f:
            write("import", f.read())
    for t in [
        "url=postgres://${DB_USER}:${DB_PASS}@db/app\x00DB_USER=app\nX=1\nDB_PASS=s3cret",
        "${zopp://p/e/TOKEN} and $${literal}\x00A=${B}\nTOKEN=t\nB=${A}",
        "${A}${A}${A}\x00A=${zopp://p/e/B}\nB=xx",
    ]:
        write("template", t)
    for values, stream in [([b"hunter2!"], b"pw=hunter2! ok"), ([b"abcd", b"abcdef"], b"xxabcdefabcd")]:
        data = bytes([len(values)])
        for val in values:
            data += bytes([len(val)]) + val
        write("mask", data + b"\x03" + stream)
    # rpc: every method (by its index in the service descriptor), signed, with an empty body,
    # and a few real requests.
    for index in range(64):
        write("rpc", bytes([index, 0]))
    write("rpc", bytes([3, 0]) + b"\x0a\x04fuzz")  # CreateWorkspace { name: "fuzz" }


if __name__ == "__main__":
    main()
