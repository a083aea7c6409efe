"""A TLS and SASL front for the embedded broker, for the secured-connection tests
(tests/integration/test_secured_connections.py; docs/operations.md#secured-connections).

Why a front: Tansu 0.6.0 (the embedded broker) accepts ``--cert`` but still speaks plain TCP
on its listener (``--cert`` with ``--key`` is refused by its own argument parser, and a TLS
client gets no handshake); its ``--authentication`` asks for SASL SCRAM, but users can only be
created through an authenticated connection, and its memory storage cannot be seeded
beforehand (its PostgreSQL storage is not compiled in). So the test puts this in front:

- it listens on loopback, with TLS when given a server context (the broker's certificate is the
  front's), and forwards every byte to the broker, which advertises the front's address in its
  metadata (``EmbeddedBroker(advertised_port=...)``), so clients reconnect through the front;
- with ``users``, each connection must authenticate first, as a Kafka broker asks: ApiVersions
  is answered by the broker, SaslHandshake (v0, v1) and SaslAuthenticate (v0, v1) here, with
  PLAIN or SCRAM-SHA-512 (RFC 5802, the server side: the client's proof checked against the
  password, the server's signature sent back); any other request before that closes the
  connection. After a success the connection is a plain pipe to the broker.

It runs its own event loop in a thread, so a test may block (a subprocess, ``asyncio.run``)
while clients go through it. ``stop()`` closes every connection.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import threading
from typing import Optional

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
API_VERSIONS = 18
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
SCRAM_ITERATIONS = 4096


def _string(text: Optional[str]) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _bytes(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


class _Scram512:
    """The server side of one SCRAM-SHA-512 exchange."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.step = 0
        self.user: Optional[str] = None

    def first(self, message: str) -> str:
        # client-first: "n,,n=<user>,r=<client nonce>"
        _gs2, _, bare = message.partition(",,")
        self.client_first_bare = bare
        fields = dict(part.split("=", 1) for part in bare.split(","))
        self.user, client_nonce = fields["n"], fields["r"]
        self.salt = os.urandom(16)
        self.nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={SCRAM_ITERATIONS}"
        return self.server_first

    def final(self, message: str) -> Optional[str]:
        """The server-final message, or None if the proof is wrong."""
        without_proof, _, proof = message.rpartition(",p=")
        fields = dict(part.split("=", 1) for part in without_proof.split(","))
        password = self.users.get(self.user or "")
        if password is None or fields.get("r") != self.nonce:
            return None
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), self.salt, SCRAM_ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha512).digest()
        stored_key = hashlib.sha512(client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha512).digest()
        given = base64.b64decode(proof)
        if len(given) != len(signature):
            return None
        recovered = bytes(a ^ b for a, b in zip(given, signature))
        if not hmac.compare_digest(hashlib.sha512(recovered).digest(), stored_key):
            return None
        server_key = hmac.new(salted, b"Server Key", hashlib.sha512).digest()
        return "v=" + base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha512).digest()).decode()


class KafkaFront:
    """A loopback front for the broker at ``upstream`` (host, port); see the module's doc."""

    def __init__(self, upstream: tuple[str, int], *, port: int, ssl_context: Optional[ssl.SSLContext] = None,
                 users: Optional[dict[str, str]] = None, mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-512"),
                 host: str = "127.0.0.1") -> None:
        self.upstream, self.host, self.port = upstream, host, port
        self.ssl_context, self.users, self.mechanisms = ssl_context, users, mechanisms
        #: What happened, for the tests: successful and failed logins (user, mechanism).
        self.logins: list[tuple[str, str]] = []
        self.refusals: list[tuple[Optional[str], str]] = []
        self.connections = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "KafkaFront":
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port, ssl=self.ssl_context))
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="kafka-front", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    # -- one connection ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        up_writer: Optional[asyncio.StreamWriter] = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self._writers.add(up_writer)
            if self.users is not None and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    self._writers.discard(w)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        return await reader.readexactly(size)

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
        payload = struct.pack(">i", correlation_id) + body
        writer.write(struct.pack(">i", len(payload)) + payload)

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        mechanism: Optional[str] = None
        scram: Optional[_Scram512] = None
        while True:
            frame = await self._frame(reader)
            api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame)
            if api_key == API_VERSIONS:  # the broker's own answer
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                answer = await self._frame(up_reader)
                writer.write(struct.pack(">i", len(answer)) + answer)
                await writer.drain()
                continue
            # request header v1: api_key, api_version, correlation_id, client_id (nullable string)
            (client_id_length,) = struct.unpack_from(">h", frame, 8)
            body = frame[10 + max(client_id_length, 0):]
            if api_key == SASL_HANDSHAKE and api_version <= 1:
                (length,) = struct.unpack_from(">h", body)
                asked = body[2:2 + length].decode()
                listed = struct.pack(">i", len(self.mechanisms)) + b"".join(_string(m) for m in self.mechanisms)
                if asked not in self.mechanisms:
                    self.refusals.append((None, asked))
                    self._reply(writer, correlation_id, struct.pack(">h", UNSUPPORTED_SASL_MECHANISM) + listed)
                    await writer.drain()
                    return False
                mechanism = asked
                scram = _Scram512(self.users or {}) if asked == "SCRAM-SHA-512" else None
                self._reply(writer, correlation_id, struct.pack(">h", 0) + listed)
                await writer.drain()
                continue
            if api_key == SASL_AUTHENTICATE and api_version <= 1 and mechanism is not None:
                (length,) = struct.unpack_from(">i", body)
                token = body[4:4 + length]
                answer, done, user = self._step(mechanism, scram, token)
                tail = struct.pack(">q", 0) if api_version >= 1 else b""
                if answer is None:
                    self.refusals.append((user, mechanism))
                    self._reply(writer, correlation_id, struct.pack(">h", SASL_AUTHENTICATION_FAILED)
                                + _string("Authentication failed: invalid credentials") + _bytes(b"") + tail)
                    await writer.drain()
                    return False
                self._reply(writer, correlation_id, struct.pack(">h", 0) + _string(None) + _bytes(answer) + tail)
                await writer.drain()
                if done:
                    self.logins.append((user or "", mechanism))
                    return True
                continue
            # Anything else before the login: a broker closes the connection (IllegalSaslState).
            self.refusals.append((None, f"api key {api_key} before authentication"))
            return False

    def _step(self, mechanism: str, scram: Optional[_Scram512], token: bytes) -> tuple[Optional[bytes], bool, Optional[str]]:
        """(answer, done, user); answer None: refused."""
        users = self.users or {}
        if mechanism == "PLAIN":
            parts = token.split(b"\0")
            if len(parts) != 3:
                return None, True, None
            user, password = parts[1].decode(), parts[2].decode()
            ok = user in users and hmac.compare_digest(users[user].encode(), password.encode())
            return (b"" if ok else None), True, user
        assert scram is not None
        if scram.step == 0:
            scram.step = 1
            try:
                return scram.first(token.decode()).encode(), False, scram.user
            except (KeyError, ValueError):
                return None, True, None
        final = scram.final(token.decode())
        return (final.encode() if final is not None else None), True, scram.user
