"""An independent verifier of seawall's audit trail, written from docs/audit-format.md alone.

    verify_audit.py < FETCHED.json
    verify_audit.py --export < EXPORT.json

Standard input holds what the document says to fetch:
{"public_key": hex, "streams": {name: {"events": [...], "digests": [...], "anchor": {...}}}}
("anchor" only for a stream retention has cut).
Prints one line per stream and exits 0 when every stream verifies, 1 at the first break
(printed as "break: <stream> <what> <where>").

With --export, standard input is {"public_key": hex, "export": <a subject access export>}: each
exported event's inclusion proof is checked against the signed digest it names, then the
export's manifest against the whole document.

With --witness STATE, standard input is {"public_key": hex, "streams": {name: <the answer of
GET /admin/audit/digests?stream=name&since=N>}}, N being the number of the digest STATE holds for
that stream (0 when none): the rules of "Witnessing the digests from another machine". On a pass
STATE ({stream: digest}) is replaced by the newest digests; on a break it is left as it was.
"""

import datetime
import decimal
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Break(Exception):
    pass


def sha256(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def jcs(value, floats=False):
    """RFC 8785. Headers hold no floats; an export may (captured bodies), with floats=True."""
    if isinstance(value, float) and not floats:
        raise Break(f"a header holds a float ({value!r})")
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(value[k], floats) for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v, floats) for v in value) + "]"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return es6_number(value)
    return json.dumps(value, ensure_ascii=False)


def es6_number(value):
    """ECMAScript's Number.prototype.toString, which RFC 8785 section 3.2.2.3 prescribes."""
    if isinstance(value, int) and abs(value) <= 2 ** 53:
        return str(value)
    x = float(value)
    if x == 0:
        return "0"
    # repr gives the shortest digits that read back as the same double.
    _, digit_tuple, exponent = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), exponent + len(digits)
    sign = "-" if x < 0 else ""
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if n > 0 else '-'}{abs(n - 1)}"


def genesis(origin, stream):
    return sha256(b"audit-chain-v1", origin.encode(), b"\x00", stream.encode())


def signing_string(d):
    root = d.get("batch_merkle_root")
    fields = [
        "seawall-audit-digest-v2" if root is not None else "seawall-audit-digest-v1",
        d["alg"], d["origin"], d["stream"], str(d["number"]),
        str(d["from_seq"]), str(d["next_seq"]), d["chain_head"], d["time"],
        d["prev_digest"] if d["prev_digest"] is not None else "-", d["key_fingerprint"],
    ] + ([root] if root is not None else [])
    return "\n".join(fields)


def merkle_tree_hash(leaves):
    """RFC 6962 section 2.1 MTH over leaf hashes, as the RFC writes it (recursive split)."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha256(b"\x01", merkle_tree_hash(leaves[:k]), merkle_tree_hash(leaves[k:]))


def root_from_inclusion_proof(leaf, index, size, path):
    """RFC 9162 section 2.1.3.2: the root a proof leads to, or None."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha256(b"\x01", p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(b"\x01", r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def check_digest_signature(d, public_key):
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
    fingerprint = sha256(bytes.fromhex(public_key))[:16].hex()
    if d["alg"] != "Ed25519" or d["key_fingerprint"] != fingerprint:
        raise Break(f"digest {d['number']}: alg or key fingerprint")
    try:
        key.verify(bytes.fromhex(d["signature"]), signing_string(d).encode())
    except InvalidSignature:
        raise Break(f"digest {d['number']}: signature")


def anchor_signing_string(a):
    fields = [
        "seawall-audit-anchor-v1", a["origin"], a["stream"], str(a["pruned_through"]), a["chain"],
        str(a["through_day"]), a["time"], str(a["header_days"]), a["key_fingerprint"],
    ]
    return "\n".join(fields)


def check_anchor(stream, anchor, public_key):
    """The anchor's signature and period; returns (pruned_through, chain after it)."""
    where = f"anchor through seq {anchor['pruned_through']}"
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
    if anchor["stream"] != stream or anchor["key_fingerprint"] != sha256(bytes.fromhex(public_key))[:16].hex():
        raise Break(f"{where}: stream or key fingerprint")
    try:
        key.verify(bytes.fromhex(anchor["signature"]), anchor_signing_string(anchor).encode())
    except InvalidSignature:
        raise Break(f"{where}: signature")
    cut_day = (datetime.date.fromisoformat(anchor["time"][:10]) - datetime.date(1970, 1, 1)).days
    if anchor["through_day"] + anchor["header_days"] > cut_day:
        raise Break(f"{where}: removed events younger than its {anchor['header_days']} days")
    return anchor["pruned_through"], bytes.fromhex(anchor["chain"])


def starting_point(stream, events, digests, anchor):
    """Where verification starts: (index of the first event to check, the chain before it).

    Seq 0 starts from genesis; the event after a signed anchor from the anchor's chain. A
    pruned stream without one starts at the first digest boundary inside the stored events,
    from that digest's chain_head; the events before it are not checked.
    """
    first_seq = events[0]["seq"]
    if first_seq == 0:
        return 0, genesis(events[0]["origin"], stream)
    if anchor is not None and first_seq <= anchor[0] + 1 <= events[-1]["seq"]:
        # Events up to the anchor may still be stored when a run was cut before dropping them.
        return anchor[0] + 1 - first_seq, anchor[1]
    last_seq = events[-1]["seq"]
    for d in digests:
        if first_seq <= d["next_seq"] <= last_seq:
            return d["next_seq"] - first_seq, bytes.fromhex(d["chain_head"])
    raise Break(f"pruned stream: no digest boundary among seq {first_seq}..{last_seq}")


def leaf_of(event):
    """The leaf an event's header and part digests give."""
    header = {k: v for k, v in event.items() if k != "integrity"}
    return leaf_from(jcs(header), event["integrity"]["part_digests"])


def leaf_from(header_text, part_digests):
    """SHA-256(0x00 || SHA-256(header) || payload), payload over the hex part digests."""
    digests_of_parts = [bytes.fromhex(d) for d in part_digests]
    payload = sha256(b"\x03", *digests_of_parts) if digests_of_parts else bytes(32)
    return sha256(b"\x00", sha256(header_text.encode()), payload)


def check_chain(stream, events, digests, anchor):
    """The (chain value, leaf) after each checked seq, checking every leaf and link."""
    chains = {}
    if not events:
        return chains, None
    start, previous = starting_point(stream, events, digests, anchor)
    expected_seq = events[start]["seq"] if start < len(events) else None
    for event in events[start:]:
        integrity = event["integrity"]
        seq = event["seq"]
        if event["stream"] != stream:
            raise Break(f"stream: seq {seq} says {event['stream']}")
        if seq != expected_seq:
            raise Break(f"gap or order: seq {seq} where {expected_seq} was due")
        leaf = leaf_of(event)
        if leaf.hex() != integrity["leaf"]:
            raise Break(f"leaf: seq {seq}")
        chain = sha256(b"\x02", previous, leaf)
        if chain.hex() != integrity["chain"]:
            raise Break(f"chain: seq {seq}")
        chains[seq] = (chain, leaf)
        previous = chain
        expected_seq = seq + 1
    return chains, events[start]["seq"] if start < len(events) else None


def check_digests(stream, digests, chains, checked_from, origin, public_key):
    """Checks every digest; returns how many events the newest one signs for."""
    previous = None
    for d in digests:
        n = d["number"]
        if d["stream"] != stream:
            raise Break(f"digest {n}: stream")
        check_digest_signature(d, public_key)
        text = signing_string(d)
        if previous is None:
            # Retention removes the digests that only cover removed events, so the first one
            # listed may be later than number 0; its own link cannot be checked then.
            if n == 0 and d["prev_digest"] is not None:
                raise Break("digest 0: names a previous digest")
        else:
            prev_text, prev = previous
            link = sha256(prev_text.encode(), b"\n", prev["signature"].encode()).hex()
            if n != prev["number"] + 1 or d["prev_digest"] != link or d["from_seq"] != prev["next_seq"]:
                raise Break(f"digest {n}: link to digest {prev['number']}")
        next_seq = d["next_seq"]
        if next_seq == 0:
            if origin is not None and d["chain_head"] != genesis(origin, stream).hex():
                raise Break(f"digest {n}: chain_head of an empty stream is not genesis")
        elif checked_from is not None and next_seq - 1 >= checked_from:
            if next_seq - 1 not in chains:
                raise Break(f"digest {n}: covers seq {next_seq - 1}, which is not stored")
            if chains[next_seq - 1][0].hex() != d["chain_head"]:
                raise Break(f"digest {n}: chain_head differs from the chain after seq {next_seq - 1}")
        covered = range(d["from_seq"], next_seq)
        root = d.get("batch_merkle_root")
        if root is not None and all(chains.get(seq, (None, None))[1] is not None for seq in covered):
            if merkle_tree_hash([chains[seq][1] for seq in covered]).hex() != root:
                raise Break(f"digest {n}: batch_merkle_root is not that of seq {d['from_seq']}..{next_seq - 1}")
        # Otherwise the digest covers only events before the checked ones: pruned, or before
        # the boundary whose chain_head the chain starts from.
        previous = (text, d)
    return previous[1]["next_seq"] if previous else 0


def check_inclusion(where, leaf, seq, integrity, d):
    """An event's inclusion proof against the digest it names (d, None when not fetched).
    False when it has no proof: after the newest digest, nothing signed covers it yet."""
    proof = integrity["proof"]
    if proof is None:
        return False
    if d is None or not d["from_seq"] <= seq < d["next_seq"] or d.get("batch_merkle_root") is None:
        raise Break(f"{where}: the digest it names does not cover it with a Merkle root")
    path = [bytes.fromhex(h) for h in proof["path"]]
    root = root_from_inclusion_proof(leaf, seq - d["from_seq"], d["next_seq"] - d["from_seq"], path)
    if root is None or root.hex() != d["batch_merkle_root"]:
        raise Break(f"{where}: inclusion proof")
    return True


def check_proofs(stream, events, digests):
    """How many of the events carry an inclusion proof that leads to their digest's root."""
    by_number = {d["number"]: d for d in digests}
    newest = max(by_number, default=-1)
    proven = 0
    for event in events:
        integrity = event["integrity"]
        d = by_number.get(integrity["digest"])
        if d is None and integrity["digest"] is not None and integrity["digest"] > newest:
            # Signed after the digests were fetched (they are fetched first).
            continue
        if check_inclusion(f"seq {event['seq']}", leaf_of(event), event["seq"], integrity, d):
            proven += 1
    return proven


def check_export(fetched):
    """Each exported event's inclusion proof, against the signed digest it names."""
    export, public_key = fetched["export"], fetched["public_key"]
    digests = {(d["stream"], d["number"]): d for d in export["digests"]}
    for d in digests.values():
        check_digest_signature(d, public_key)
    proven = pending = 0
    for event in export["events"]:
        integrity = event["integrity"]
        stream, seq = integrity["stream"], integrity["seq"]
        where = f"{stream} seq {seq}"
        header = json.loads(integrity["header"])
        if (header["stream"], header["seq"], header["time"]) != (stream, seq, event["time"]):
            raise Break(f"{where}: the header names another event")
        leaf = leaf_from(integrity["header"], integrity["part_digests"])
        if leaf.hex() != integrity["leaf"]:
            raise Break(f"{where}: leaf")
        if check_inclusion(where, leaf, seq, integrity, digests.get((stream, integrity["digest"]))):
            proven += 1
        else:
            pending += 1
    check_manifest(export, public_key)
    print(f"export: {proven} events proven under {len(digests)} signed digests, {pending} not yet signed")


def check_manifest(export, public_key):
    """The manifest signs the SHA-256 of the rest of the document in RFC 8785 form."""
    manifest = export["manifest"]
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
    if manifest["alg"] != "Ed25519" or manifest["key_fingerprint"] != sha256(bytes.fromhex(public_key))[:16].hex():
        raise Break("manifest: alg or key fingerprint")
    text = "\n".join(["seawall-audit-export-v1", "Ed25519", manifest["content_sha256"], manifest["key_fingerprint"]])
    try:
        key.verify(bytes.fromhex(manifest["signature"]), text.encode())
    except InvalidSignature:
        raise Break("manifest: signature")
    rest = {k: v for k, v in export.items() if k != "manifest"}
    if sha256(jcs(rest, floats=True).encode()).hex() != manifest["content_sha256"]:
        raise Break("manifest: the document is not the one it signed")


def digest_hash(d):
    return sha256(signing_string(d).encode(), b"\n", d["signature"].encode()).hex()


def witness_stream(stream, held, feed, public_key):
    """The newest digest witnessed for `stream` after `held`; raises Break("<kind> digest N")."""
    listed = feed["digests"]
    for d in listed:
        if d["stream"] != stream:
            raise Break(f"signature digest {d['number']}")
        try:
            check_digest_signature(d, public_key)
        except Break:
            raise Break(f"signature digest {d['number']}")
    previous, fresh = held, listed
    if held is not None:
        same = [i for i, d in enumerate(listed) if d["number"] == held["number"]]
        if same:
            if listed[same[0]] != held:
                raise Break(f"rewritten digest {held['number']}")
            fresh = listed[same[0] + 1:]
        else:
            anchors = [a for a in feed.get("anchors", []) if a["stream"] == stream]
            try:
                # check_anchor also checks that the cut kept its period.
                cut = check_anchor(stream, anchors[0], public_key)[0] if anchors else None
            except Break:
                cut = None
            if anchors and anchors[0]["header_days"] == 0:
                cut = None
            if cut is None or anchors[0]["origin"] != held["origin"] or cut + 1 < held["next_seq"]:
                raise Break(f"missing digest {held['number']}")
            previous = None
            fresh = [d for d in listed if d["number"] > held["number"]]
    for d in fresh:
        if previous is not None:
            if d["number"] != previous["number"] + 1 or d["from_seq"] != previous["next_seq"]:
                raise Break(f"gap digest {d['number']}")
            if d["prev_digest"] != digest_hash(previous):
                raise Break(f"link digest {d['number']}")
        previous = d
    return fresh[-1] if fresh else held


def witness(state_path, fetched):
    try:
        with open(state_path) as f:
            held = json.load(f)
    except FileNotFoundError:
        held = {}
    newest = {}
    for stream, feed in sorted(fetched["streams"].items()):
        try:
            found = witness_stream(stream, held.get(stream), feed, fetched["public_key"])
        except Break as e:
            print(f"break: {stream} {e}")
            sys.exit(1)
        if found is not None:
            newest[stream] = found
            print(f"{stream}: held {held[stream]['number'] if stream in held else '-'}, newest {found['number']}")
    with open(state_path, "w") as f:
        json.dump({**held, **newest}, f)
    sys.exit(0)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--witness":
        witness(sys.argv[2], json.load(sys.stdin))
    if sys.argv[1:] == ["--export"]:
        try:
            check_export(json.load(sys.stdin))
        except Break as e:
            print(f"break: {e}")
            sys.exit(1)
        sys.exit(0)
    fetched = json.load(sys.stdin)
    ok = True
    for stream, data in sorted(fetched["streams"].items()):
        events, digests = data["events"], data["digests"]
        try:
            anchor = None
            if data.get("anchor") is not None:
                anchor = check_anchor(stream, data["anchor"], fetched["public_key"])
            chains, checked_from = check_chain(stream, events, digests, anchor)
            if anchor is not None and checked_from == anchor[0] + 1:
                # A digest ending at the cut names the anchor's chain value.
                chains[anchor[0]] = (anchor[1], None)
                checked_from = anchor[0]
            origin = events[0]["origin"] if events else (digests[0]["origin"] if digests else None)
            signed = check_digests(stream, digests, chains, checked_from, origin,
                                   fetched["public_key"])
            proven = check_proofs(stream, events, digests)
            cut = f", cut through seq {anchor[0]} by a signed anchor" if anchor is not None else ""
            chained = len(chains) - (1 if anchor is not None and anchor[0] in chains else 0)
            print(f"{stream}: {chained} of {len(events)} events chained, {len(digests)} "
                  f"digests verified, signed below seq {signed}, {proven} proven by "
                  f"inclusion{cut}")
        except Break as e:
            print(f"break: {stream} {e}")
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
