"""Signed tree heads: an Ed25519 key kept outside the ledger tables.

The key is created at first start in a file (by default in the stack's home, mode
0600); the public key and its id are served so auditors can verify heads without
trusting the operator's database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.ledger.domain import TreeHead, tree_head_message

RAW_KEY_LENGTH: Final = 32


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode()


def _ed25519(key: object) -> Ed25519PublicKey:
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    return _ed25519(
        serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    )


def parse_public_key(text: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key as PEM, or as base64 of its raw 32 bytes or its DER.

    Raises:
        ValueError: none of these, or not an Ed25519 key.
    """
    data = text.encode() if isinstance(text, str) else text
    if data.lstrip().startswith(b"-----BEGIN"):
        return load_public_key(data)
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error:
        raise ValueError("neither a PEM nor base64") from None
    if len(decoded) == RAW_KEY_LENGTH:
        return Ed25519PublicKey.from_public_bytes(decoded)
    try:
        return _ed25519(serialization.load_der_public_key(decoded))
    except UnsupportedAlgorithm:
        raise ValueError("not an Ed25519 public key") from None


def verify_tree_head(
    public_key: Ed25519PublicKey, head: TreeHead, signature: bytes
) -> bool:
    """Whether `signature` is the key's signature over the head's message."""
    try:
        public_key.verify(signature, tree_head_message(head))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TreeSigner:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, head: TreeHead) -> bytes:
        return self.private_key.sign(tree_head_message(head))

    @classmethod
    def load_or_create(cls, path: Path) -> TreeSigner:
        """The key in `path`, created there (0600) if the file does not exist."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        # Created exclusively: two processes starting at once never overwrite a key.
        try:
            with path.open("xb") as out:
                path.chmod(0o600)
                out.write(pem)
        except FileExistsError:
            return cls.load_or_create(path)
        return cls(key)
