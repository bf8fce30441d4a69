"""Certificates for TLS tests, made on the spot (trustme) in a directory the test gives."""

from __future__ import annotations

import ssl
from pathlib import Path


class Certs:
    """A CA of its own (trustme), a server certificate for 127.0.0.1/localhost (also with an
    encrypted key), and a client certificate, written to ``directory``."""

    def __init__(self, directory: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("client@example.org")
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        self.encrypted_key_file = directory / "server-encrypted.key"
        self.client_cert_file = directory / "client.pem"
        self.client_key_file = directory / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.key_file))
        self.client_cert_file.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(self.client_key_file))

        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
        self.encrypted_key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        ))

    def server_options(self) -> dict:
        """The options of ``serve`` (in-process)."""
        return {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}

    def server_args(self, key: Path | None = None) -> list[str]:
        """The options of the CLI."""
        return ["--ssl-certfile", str(self.cert_file), "--ssl-keyfile", str(key or self.key_file)]

    def client_context(self, with_client_cert: bool = False, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_client_cert:
            context.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
        if max_version is not None:
            context.maximum_version = max_version
        return context
