#!/usr/bin/env python3
"""Deletes a job queue's JetStream streams on a NATS server (NAME, NAME_DEAD
and the status bucket KV_NAME_STATUS, with their consumers): what
bench/pipeline.sh QUEUE=nats leaves behind. Speaks the NATS text protocol
over a socket; standard library only.

Usage: nats_delete_queue.py nats://HOST:PORT NAME
"""
import json
import socket
import sys
import urllib.parse


def main():
    url, name = urllib.parse.urlparse(sys.argv[1]), sys.argv[2]
    for stream in (name, f"{name}_DEAD", f"KV_{name}_STATUS"):
        delete(url, stream)


def delete(url, stream):
    with socket.create_connection((url.hostname, url.port or 4222), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # INFO
        inbox = "_INBOX.bench_delete"
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                     + f"SUB {inbox} 1\r\nPUB $JS.API.STREAM.DELETE.{stream} {inbox} 0\r\n\r\nPING\r\n".encode())
        while True:
            line = reader.readline()
            if not line:
                sys.exit("the server closed the connection")
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                answer = json.loads(reader.read(size + 2)[:size])
                if not answer.get("success") and answer.get("error", {}).get("code") != 404:
                    sys.exit(f"cannot delete stream {stream}: {answer}")
                return
            elif line.startswith(b"-ERR"):
                sys.exit(line.decode().strip())


if __name__ == "__main__":
    main()
