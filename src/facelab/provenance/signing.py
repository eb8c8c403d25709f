"""C2PA content credentials: a signed manifest inside every image and video facelab synthesises.

The manifest (the Content Authenticity Initiative's format, written with ``c2pa-python``) says the file
was made by facelab, with the action (face swap, attribute edit, ...), the model's SHA-256, the time and
the watermark id. It is signed with this installation's key: on first use facelab makes a small
certificate authority and a signing certificate under it (ECDSA P-256) in :func:`home` and never
sends them anywhere. ``facelab verify`` trusts that authority, so a file signed here verifies as
*trusted* here and as *valid but untrusted* elsewhere. To sign with your own certificate (one a
C2PA trust list knows), point ``FACELAB_SIGNING_CERT`` at its PEM chain (signing certificate first)
and ``FACELAB_SIGNING_KEY`` at its PEM private key; see docs/provenance.md.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from facelab import __version__
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, atomic_write_bytes

# IPTC's digital source type for media where a trained model changed part of a real capture
COMPOSITE_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
FORMATS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4"}
CA_NAME, CERT_NAME, KEY_NAME = "ca.pem", "signer.pem", "signer.key"


def home() -> Path:
    """This installation's provenance folder: ``$FACELAB_HOME/provenance`` or ``~/.config/facelab/provenance``."""
    base = os.environ.get("FACELAB_HOME") or Path.home() / ".config" / "facelab"
    return Path(base) / "provenance"


@dataclass(frozen=True)
class Identity:
    chain: bytes  # PEM: signing certificate, then the authority
    key: bytes  # PEM private key of the signing certificate
    anchor: bytes  # PEM of the authority ``facelab verify`` trusts
    mark_id: int  # 24-bit id carried by the watermark: derived from the signing certificate

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.chain.split(b"-----END CERTIFICATE-----")[0]).hexdigest()[:16]


def _mark_id(chain: bytes) -> int:
    return int.from_bytes(hashlib.sha256(chain.split(b"-----END CERTIFICATE-----")[0]).digest()[:3], "big")


def _create(folder: Path) -> None:
    """A certificate authority and a signing certificate under it (ECDSA P-256, ten years), private to
    this user (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facelab installation")])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("facelab local authority")).issuer_name(name("facelab local authority"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("facelab signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca_pem = ca.public_bytes(pem)
    atomic_write_bytes(folder / CA_NAME, ca_pem)
    atomic_write_bytes(folder / KEY_NAME, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    os.chmod(folder / KEY_NAME, 0o600)
    atomic_write_bytes(folder / CERT_NAME, cert.public_bytes(pem) + ca_pem)  # written last: marks a complete set


@lru_cache(maxsize=None)
def identity() -> Identity:
    """The signing identity: the user's own certificate when the environment names one, else this
    installation's, made on first use."""
    cert_env, key_env = os.environ.get("FACELAB_SIGNING_CERT"), os.environ.get("FACELAB_SIGNING_KEY")
    if cert_env or key_env:
        if not (cert_env and key_env):
            raise FacelabError("set both FACELAB_SIGNING_CERT (PEM chain) and FACELAB_SIGNING_KEY (PEM key), or neither")
        chain, key = _read(Path(cert_env)), _read(Path(key_env))
        return Identity(chain, key, b"", _mark_id(chain))
    folder = home()
    if not (folder / CERT_NAME).is_file():
        try:
            _create(folder)
        except OSError as exc:
            raise FacelabError(f"cannot create the signing key in {folder} ({exc.strerror}); set FACELAB_HOME to a "
                               "writable folder, or pass --no-provenance") from None
    chain = _read(folder / CERT_NAME)
    return Identity(chain, _read(folder / KEY_NAME), _read(folder / CA_NAME), _mark_id(chain))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FacelabError(f"cannot read {path} ({exc.strerror}); it holds facelab's signing certificate") from None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Credentials:
    """What one command's outputs say about themselves."""

    action: str  # "face swap", "attribute edit", "face enhance", ...
    model_sha256: str = ""

    def manifest(self, title: str, mark_id: int) -> dict:
        return {
            "claim_generator_info": [{"name": "facelab", "version": __version__}],
            "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": COMPOSITE_SOURCE,
                "softwareAgent": {"name": "facelab", "version": __version__},
                "description": f"{self.action} made by facelab",
                "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "parameters": {"facelab.action": self.action, "facelab.model_sha256": self.model_sha256,
                               "facelab.watermark_id": mark_id},
            }]}}],
        }


class Signer:
    """Signs files in place with this installation's identity; one per process (worker processes
    make their own: the underlying signer does not cross process boundaries)."""

    def __init__(self, credentials: Credentials):
        import c2pa

        ident = identity()
        self.credentials, self.mark_id = credentials, ident.mark_id
        self._signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ident.chain, ident.key, None))
        self._context = c2pa.Context(settings=c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))

    def _builder(self, path: Path):
        import c2pa

        if path.suffix.lower() not in FORMATS:
            raise FacelabError(f"{path}: cannot carry content credentials; write jpg, png or mp4")
        return c2pa.Builder(json.dumps(self.credentials.manifest(path.name, self.mark_id)), context=self._context)

    def sign(self, path: str | Path) -> None:
        """Embed a signed manifest in ``path`` (JPEG, PNG or MP4), replacing the file atomically."""
        path = Path(path)
        builder = self._builder(path)
        with atomic_path(path) as tmp, open(path, "rb") as src, open(tmp, "wb") as dst:
            builder.sign(self._signer, FORMATS[path.suffix.lower()], src, dst)

    def signed(self, data: bytes, path: str | Path) -> bytes:
        """The image file ``data``, to be written to ``path``, with a signed manifest embedded: signing in
        memory before the one write costs a quarter of writing, re-reading and replacing the file (5.6
        against 21 ms for a 720p PNG), which merge pays for every frame."""
        path = Path(path)
        out = io.BytesIO()
        self._builder(path).sign(self._signer, FORMATS[path.suffix.lower()], io.BytesIO(data), out)
        return out.getvalue()
