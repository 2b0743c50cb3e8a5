"""TLS for the HTTPS and MQTTS listeners: one server context from the certificate files, reloaded when they change.

``check_files`` runs while the settings are read, so a missing, unreadable or
mismatched file stops start-up with one line naming its ``FLOWGATE_TLS_*``
variable. ``CertificateReloader`` owns the context of one listener: the
listener's context calls back at each handshake (``sni_callback``, also when
the client sends no SNI); if the files' size, mtime or inode changed since the
context was built (certbot and cert-manager replace or re-link them), a new
context is built and handed to this connection and the next ones, while
connections already open keep theirs. A renewal caught half-written (the new
certificate with the old key) fails to load: the old context stays until the
files change again.

Defaults follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, ECDHE
key exchange with AEAD ciphers for TLS 1.2, no compression, no renegotiation.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("flowgate.tls")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
MAX_PEM_BYTES = 1024 * 1024


class TlsError(ValueError):
    """A TLS file cannot be used; the message names the setting."""


class TlsSettings(Protocol):
    """The part of ``gateway.settings.Settings`` read here (settings imports this module to check the files)."""

    @property
    def tls_cert_file(self) -> Path | None: ...
    @property
    def tls_key_file(self) -> Path | None: ...
    @property
    def tls_client_ca_file(self) -> Path | None: ...


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # clients must present a certificate signed by one of these

    @classmethod
    def from_settings(cls, settings: TlsSettings, *, verify_clients: bool) -> TlsFiles:
        assert settings.tls_cert_file is not None and settings.tls_key_file is not None
        return cls(
            cert=settings.tls_cert_file,
            key=settings.tls_key_file,
            client_ca=settings.tls_client_ca_file if verify_clients else None,
        )

    def signature(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when a file is rewritten or replaced (missing files included)."""
        stats = []
        for path in (self.cert, self.key, self.client_ca):
            try:
                st = os.stat(path) if path is not None else None
            except OSError:
                st = None
            stats.append((st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else (0, 0, 0))
        return tuple(stats)


def check_files(settings: TlsSettings) -> None:
    """Raise ``TlsError`` naming the variable if the configured files cannot make a server context."""
    build_context(TlsFiles.from_settings(settings, verify_clients=True))


def build_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context from ``files``; ``TlsError`` names the variable of the file that is wrong."""
    cert_pem = _read(files.cert, "FLOWGATE_TLS_CERT_FILE")
    key_pem = _read(files.key, "FLOWGATE_TLS_KEY_FILE")
    try:
        x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TlsError(f"FLOWGATE_TLS_CERT_FILE={str(files.cert)!r}: not a PEM certificate chain ({exc})") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(
            f"FLOWGATE_TLS_KEY_FILE={str(files.key)!r}: not an unencrypted PEM private key ({exc})"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"FLOWGATE_TLS_KEY_FILE={str(files.key)!r} does not match the certificate in "
            f"FLOWGATE_TLS_CERT_FILE={str(files.cert)!r} ({exc})"
        ) from None
    if files.client_ca is not None:
        _read(files.client_ca, "FLOWGATE_TLS_CLIENT_CA_FILE")
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(
                f"FLOWGATE_TLS_CLIENT_CA_FILE={str(files.client_ca)!r}: not PEM CA certificates ({exc})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _read(path: Path, variable: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"{variable}={str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"{variable}={str(path)!r}: larger than {MAX_PEM_BYTES} bytes, not a PEM file")
    return data


class CertificateReloader:
    """The context of one TLS listener, swapped for a new one when the files change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._signature = files.signature()
        self._current = build_context(files)
        self.context = self._current  # what the listener is created with; its callback picks the current one
        self.context.sni_callback = self._on_client_hello

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, rebuilt first if the files changed."""
        signature = self.files.signature()
        if signature != self._signature:
            self._signature = signature
            try:
                self._current = build_context(self.files)
            except TlsError as exc:
                log.warning("TLS certificate not reloaded, keeping the previous one: %s", exc)
            else:
                log.info("TLS certificate reloaded from %s", self.files.cert)
        return self._current

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        current = self.current()
        if connection.context is not current:
            connection.context = current
