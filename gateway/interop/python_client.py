"""Interop check: a Python gRPC client (grpcio, stubs generated from proto/) talks to a NeuroData
gateway over mTLS, signs an NRC transfer with its own member key (cryptography), broadcasts it,
waits for the block, and reads the recipient's account back with a Merkle proof that it verifies
itself against the app hash in the next block's header.

Usage: python_client.py --gateway 127.0.0.1:PORT --ca CA.pem --cert ME.pem --key ME.key
                        --to HEX_ADDRESS --proto-dir proto/proto
Prints one JSON object; exits non-zero on any failure.
"""

import argparse
import glob
import hashlib
import json
import os
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

# Order of P-256. The chain accepts only the low-S form of a signature (s <= n/2): for any valid
# (r, s), (r, n - s) is valid too, and one byte form per tx keeps tx hashes unique.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def low_s(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    if s > P256_N // 2:
        s = P256_N - s
    return encode_dss_signature(r, s)

PLACEHOLDER = b"SPARSE_MERKLE_PLACEHOLDER_HASH__"


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def generate_stubs(proto_dir, out):
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(glob.glob(os.path.join(proto_dir, "neurodata", "**", "*.proto"), recursive=True))
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *files])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, out)


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def header_fields(raw):
    """Height (field 3) and app hash (field 11) of a tendermint.types.Header in protobuf."""
    i, out = 0, {}
    while i < len(raw):
        key, i = varint(raw, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(raw, i)
        elif wire == 2:
            n, i = varint(raw, i)
            v, i = raw[i:i + n], i + n
        elif wire == 1:
            v, i = raw[i:i + 8], i + 8
        elif wire == 5:
            v, i = raw[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} in header")
        out[field] = v
    return out.get(3), out.get(11)


def verify_jmt(proof, key, value, root):
    """jmt 0.12 SparseMerkleProof<Sha256> (borsh) for key -> value (None: absent) under root."""
    i = 0
    has_leaf = proof[i]
    i += 1
    leaf = None
    if has_leaf:
        leaf = (proof[i:i + 32], proof[i + 32:i + 64])
        i += 64
    n = int.from_bytes(proof[i:i + 4], "little")
    i += 4
    siblings = []
    for _ in range(n):
        tag = proof[i]
        i += 1
        if tag == 0:
            siblings.append(PLACEHOLDER)
        elif tag in (1, 2):
            a, b = proof[i:i + 32], proof[i + 32:i + 64]
            i += 64
            domain = b"JMT::IntrnalNode" if tag == 1 else b"JMT::LeafNode"
            siblings.append(sha256(domain, a, b))
        else:
            raise ValueError("bad sibling tag")
    if i != len(proof) or n > 256:
        raise ValueError("proof has trailing bytes or too many siblings")
    key_hash = sha256(key)
    if value is not None:
        if leaf is None or leaf[0] != key_hash or leaf[1] != sha256(value):
            raise ValueError("inclusion proof does not match key and value")
    elif leaf is not None and leaf[0] == key_hash:
        raise ValueError("non-inclusion proof contains the key")
    bits = [(key_hash[b // 8] >> (7 - b % 8)) & 1 for b in range(256)]
    h = PLACEHOLDER if leaf is None else sha256(b"JMT::LeafNode", leaf[0], leaf[1])
    for idx, sib in enumerate(siblings):
        bit = bits[n - 1 - idx]
        h = sha256(b"JMT::IntrnalNode", sib, h) if bit else sha256(b"JMT::IntrnalNode", h, sib)
    if h != root:
        raise ValueError("proof root does not match the header's app hash")


def main():
    ap = argparse.ArgumentParser()
    for a in ("--gateway", "--ca", "--cert", "--key", "--to", "--proto-dir"):
        ap.add_argument(a, required=True)
    ap.add_argument("--amount", default="3")
    args = ap.parse_args()

    stubs = tempfile.mkdtemp(prefix="ndpy")
    generate_stubs(args.proto_dir, stubs)
    import grpc
    from neurodata.chain.v1 import state_pb2, tx_pb2
    from neurodata.gateway.v1 import gateway_pb2 as gw, gateway_pb2_grpc as gw_grpc

    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(root_certificates=read(args.ca),
                                         private_key=read(args.key),
                                         certificate_chain=read(args.cert))
    channel = grpc.secure_channel(args.gateway, creds)
    status = gw_grpc.StatusStub(channel).Get(gw.StatusRequest(), timeout=20)
    query = gw_grpc.QueryStub(channel)

    cert = x509.load_pem_x509_certificate(read(args.cert))
    der = cert.public_bytes(serialization.Encoding.DER)
    signer = sha256(der)
    key = serialization.load_pem_private_key(read(args.key), password=None)
    to = bytes.fromhex(args.to)

    acct = query.Account(gw.AddressQuery(address=signer), timeout=20)
    nonce = state_pb2.Account.FromString(acct.value).nonce if acct.value else 0
    known = bool(query.Identity(gw.AddressQuery(address=signer), timeout=20).value)
    before = query.Account(gw.AddressQuery(address=to), timeout=20)
    before_balance = int(state_pb2.Account.FromString(before.value).balance) if before.value else 0

    body = tx_pb2.TxBody(chain_id=status.chain_id, signer=signer, nonce=nonce, fee="1",
                         certificate=b"" if known else der,
                         messages=[tx_pb2.Message(transfer=tx_pb2.Transfer(to=to, amount=args.amount))])
    body_bytes = body.SerializeToString()
    signature = low_s(key.sign(body_bytes, ec.ECDSA(hashes.SHA256())))
    tx = tx_pb2.Tx(body=body_bytes, signature=signature).SerializeToString()

    txs = gw_grpc.TxStub(channel)
    r = txs.Broadcast(gw.BroadcastRequest(tx=tx, mode=gw.BROADCAST_MODE_COMMIT), timeout=60)
    if r.code != 0:
        raise SystemExit(f"tx refused: {r.codespace} {r.code}: {r.log}")
    # The same bytes again: CometBFT's cache refuses them, the gateway says ALREADY_EXISTS.
    try:
        txs.Broadcast(gw.BroadcastRequest(tx=tx, mode=gw.BROADCAST_MODE_SYNC), timeout=20)
        raise SystemExit("duplicate tx bytes were accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    # The same body signed again (new ECDSA signature, same nonce) is a replay: refused by the
    # chain's CheckTx, whose code and log come back in the response.
    resigned = tx_pb2.Tx(body=body_bytes,
                         signature=low_s(key.sign(body_bytes, ec.ECDSA(hashes.SHA256())))).SerializeToString()
    replay = txs.Broadcast(gw.BroadcastRequest(tx=resigned, mode=gw.BROADCAST_MODE_SYNC), timeout=20)
    if replay.code == 0:
        raise SystemExit("replayed tx was accepted")

    proved = query.Account(gw.AddressQuery(address=to, prove=True), timeout=30)
    height, app_hash = header_fields(proved.next_header)
    if height != proved.height + 1 or app_hash != proved.app_hash:
        raise SystemExit("header does not belong to the answer")
    if not proved.key.endswith(args.to):
        raise SystemExit(f"answer is for key {proved.key}")
    verify_jmt(proved.proof, proved.key.encode(), proved.value or None, app_hash)
    after_balance = int(state_pb2.Account.FromString(proved.value).balance)
    if after_balance < before_balance + int(args.amount):
        raise SystemExit(f"balance {before_balance} -> {after_balance}")
    print(json.dumps({
        "member": f"{status.member_role}@{status.member_org}", "tx_hash": r.tx_hash,
        "height": r.height, "replay_refused": f"{replay.codespace} {replay.code}: {replay.log}",
        "recipient_balance": after_balance, "proof_height": proved.height,
        "app_hash": app_hash.hex(), "proof_verified": True,
    }))


if __name__ == "__main__":
    main()
