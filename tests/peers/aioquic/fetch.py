"""HTTP/3 requests with aioquic: an independent QUIC and HTTP/3 stack (Python, not quinn or
h3), for the edge's interop and bad-input tests.

    fetch.py --addr 127.0.0.1:PORT --host app.palisade.localhost --ca ingress-ca.pem REQUESTS

REQUESTS is a JSON array; each request is {"path": "/x", "method": "GET", "cookie": "...",
"headers": [[name, value], ...], "pseudo": [[name, value], ...], "body": "..."}: `headers` are
added after the usual pseudo-headers, `pseudo` replaces them (for malformed requests). All go
on one QUIC connection, one after the other. Prints a JSON array of answers:
{"status": 200, "headers": {...}, "body": "..."} or {"reset": ERROR_CODE} when the edge reset
the stream, or {"error": "..."}.
"""

import argparse
import asyncio
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}
        self.answers = {}

    async def request(self, headers, body):
        stream_id = self._quic.get_next_available_stream_id()
        self.answers[stream_id] = {"status": 0, "headers": {}, "body": b""}
        done = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = done
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(done, 10)

    def finish(self, stream_id, answer):
        done = self.waiting.pop(stream_id, None)
        if done is not None and not done.done():
            done.set_result(answer)

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            self.finish(event.stream_id, {"reset": event.error_code})
            return
        for e in self.h3.handle_event(event):
            answer = self.answers.get(getattr(e, "stream_id", None))
            if answer is None:
                continue
            if isinstance(e, HeadersReceived):
                for k, v in e.headers:
                    if k == b":status":
                        answer["status"] = int(v)
                    else:
                        answer["headers"][k.decode()] = v.decode()
            elif isinstance(e, DataReceived):
                answer["body"] += e.data
            if getattr(e, "stream_ended", False):
                answer["body"] = answer["body"].decode("utf-8", "replace")
                self.finish(e.stream_id, answer)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("requests")
    a = p.parse_args()
    ip, port = a.addr.rsplit(":", 1)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=a.host)
    config.load_verify_locations(a.ca)
    out = []
    async with connect(ip, int(port), configuration=config, create_protocol=Client) as client:
        for r in json.loads(a.requests):
            pseudo = r.get("pseudo") or [
                [":method", r.get("method", "GET")],
                [":scheme", "https"],
                [":authority", f"{a.host}:{port}"],
                [":path", r.get("path", "/")],
            ]
            headers = [(k.encode(), v.encode()) for k, v in pseudo + r.get("headers", [])]
            if r.get("cookie"):
                headers.append((b"cookie", f"__Host-palisade-session={r['cookie']}".encode()))
            try:
                out.append(await client.request(headers, r.get("body", "").encode()))
            except Exception as e:  # a timeout or a closed connection: say so, go on
                out.append({"error": f"{type(e).__name__}: {e}"})
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
