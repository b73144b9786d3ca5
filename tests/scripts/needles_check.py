#!/usr/bin/env python3
"""Independent checker of `difftrain data needles` output (tests/scripts/needles_cli.sh).

Reads the llm.c shard with struct and the answers with json, decodes each document's bytes, and
finds every needle and query sentence with regular expressions; the JSON must describe exactly
what is in the text. Then scores the "oracle" (the shard's own answer tokens) by teacher forcing:
the tokens at each recorded answer offset must be the needle's value, so accuracy must be 1.0.

usage: needles_check.py SHARD ANSWERS CONTEXT NEEDLES QUERIES DEPTH|random [generated|file]
"""
import json
import re
import struct
import sys

SNAP = 160  # DT_NEEDLES_SNAP: farthest a needle moves back to a sentence start
EOT = 256


def fail(msg):
    print("needles_check: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    shard, answers, context, n_needles, n_queries, depth = sys.argv[1:7]
    generated = len(sys.argv) < 8 or sys.argv[7] == "generated"
    context, n_needles, n_queries = int(context), int(n_needles), int(n_queries)
    depth = None if depth == "random" else float(depth)

    raw = open(shard, "rb").read()
    header = struct.unpack("<256i", raw[:1024])
    fmt = {20240520: ("H", 2), 20240801: ("I", 4)}.get(header[0])
    if fmt is None:
        fail("bad magic %d" % header[0])
    n_tok = header[2]
    if len(raw) != 1024 + n_tok * fmt[1]:
        fail("file size does not match the token count")
    tokens = struct.unpack("<%d%s" % (n_tok, fmt[0]), raw[1024:])

    docs = [json.loads(line) for line in open(answers)]
    if n_tok != len(docs) * context + 1 or tokens[-1] != EOT:
        fail("expected %d documents of %d tokens and a final EOT, found %d tokens"
             % (len(docs), context, n_tok))
    needle_re = re.compile(rb"The magic number of ([a-z]+) is ([0-9]{6})\. ")
    query_re = re.compile(rb"What is the magic number of ([a-z]+)\? ([0-9]{6})\n")
    by_depth = {}
    for k, d in enumerate(docs):
        start = d["offset"]
        if d["doc"] != k or start != k * context or d["length"] != context:
            fail("doc %d: index/offset/length %r" % (k, (d["doc"], start, d["length"])))
        if d["needles"] != n_needles or d["queries"] != n_queries:
            fail("doc %d: needles/queries %d/%d" % (k, d["needles"], d["queries"]))
        doc = tokens[start:start + context]
        if doc[-1] != EOT or EOT in doc[:-1] or max(doc[:-1]) > 255:
            fail("doc %d: not byte tokens followed by one EOT" % k)
        text = bytes(doc[:-1])
        needles = d["needle"]
        keys = [n["key"] for n in needles]
        if len(needles) != n_needles or len(set(keys)) != n_needles:
            fail("doc %d: keys not %d distinct: %r" % (k, n_needles, keys))
        if len(set(n["value"] for n in needles)) != n_needles:
            fail("doc %d: values not distinct" % k)
        # Every needle sentence at its recorded offset.
        for n in needles:
            want = ("The magic number of %s is %s. " % (n["key"], n["value"])).encode()
            o = n["offset"] - start
            if not (4 <= len(n["key"]) <= 8 and re.fullmatch(r"[0-9]{6}", n["value"])):
                fail("doc %d: bad key or value %r" % (k, n))
            if text[o:o + len(want)] != want:
                fail("doc %d: %r not at %d: %r" % (k, want, o, text[o:o + len(want)]))
        # With generated filler the needles are the only such sentences in the text.
        found = [(m.start(), m.group(1).decode(), m.group(2).decode())
                 for m in needle_re.finditer(text)]
        recorded = [(n["offset"] - start, n["key"], n["value"]) for n in needles]
        if generated and found != recorded:
            fail("doc %d: needles in the text %r != recorded %r" % (k, found, recorded))
        # Depths: haystack position (offset minus earlier needles) is round(depth * H), moved
        # back at most one sentence (SNAP bytes); +1 byte for the 6 printed decimals.
        hay = d["haystack_tokens"]
        before = 0
        for i, n in enumerate(needles):
            hp = n["offset"] - start - before
            target = round(n["depth"] * hay)
            if not (0 <= n["depth"] <= 1 and hp <= target + 1 and target - hp <= SNAP + 1):
                fail("doc %d needle %d: position %d, depth %g of %d" % (k, i, hp, n["depth"], hay))
            if depth is not None and abs(n["depth"] - (depth + i * (1 - depth) / n_needles)) > 1e-6:
                fail("doc %d needle %d: depth %g, expected evenly spread from %g"
                     % (k, i, n["depth"], depth))
            before += len("The magic number of  is 123456. ") + len(n["key"])
        body = hay + before
        if text[body:body + 1] != b"\n":
            fail("doc %d: no newline after the body at %d" % (k, body))
        # Queries: the text after the body is exactly the R queries, answers at the offsets.
        qs = [(m.start() + body + 1, m.group(1).decode(), m.group(2).decode())
              for m in query_re.finditer(text[body + 1:])]
        if "".join("What is the magic number of %s? %s\n" % (q[1], q[2]) for q in qs).encode() \
                != text[body + 1:]:
            fail("doc %d: the text after the body is not R queries: %r" % (k, text[body + 1:]))
        if len(d["query"]) != n_queries or len(qs) != n_queries:
            fail("doc %d: %d queries recorded, %d in the text" % (k, len(d["query"]), len(qs)))
        value_of = {n["key"]: n["value"] for n in needles}
        asked = set()
        for q, (qpos, qkey, qval) in zip(d["query"], qs):
            if q["key"] != qkey or needles[q["needle"]]["key"] != qkey or q["key"] in asked:
                fail("doc %d: query %r does not match the text (%s)" % (k, q, qkey))
            asked.add(qkey)
            answer_at = qpos + len("What is the magic number of ? ") + len(qkey)
            if q["offset"] - start != answer_at:
                fail("doc %d: answer offset %d, text has it at %d" % (k, q["offset"] - start,
                                                                         answer_at))
            if q["answer"] != value_of[qkey] or qval != value_of[qkey]:
                fail("doc %d: answer %s recorded, %s in the text for %s, needle says %s"
                     % (k, q["answer"], qval, qkey, value_of[qkey]))
            # Teacher-forced exact match of the oracle: targets at the answer positions.
            got = bytes(tokens[q["offset"]:q["offset"] + 6]).decode()
            hit = got == q["answer"]
            b = by_depth.setdefault(round(q["depth"], 1), [0, 0])
            b[0] += hit
            b[1] += 1
        if depth == 0 and needles[0]["offset"] != start:
            fail("doc %d: depth 0 but the first needle is at %d" % (k, needles[0]["offset"]))
        if depth == 1 and needles[-1]["offset"] - start + len(
                "The magic number of  is 123456. ") + len(needles[-1]["key"]) != body:
            fail("doc %d: depth 1 but the last needle does not end the body" % k)
    for dep in sorted(by_depth):
        hit, n = by_depth[dep]
        if hit != n:
            fail("oracle accuracy at depth %.1f is %d/%d" % (dep, hit, n))
    print("needles_check: %d documents ok, oracle accuracy 1.0 at depths %s"
          % (len(docs), sorted(by_depth)))


main()
