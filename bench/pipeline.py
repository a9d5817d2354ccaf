#!/usr/bin/env python3
"""Pipeline benchmark (issue 6), driven through the gateway's public API.

Signs in through the gateway (a browser login with a cookie jar), uploads
N small text documents (8 uploads in flight), waits until every one is
`done`, then asks Q questions and reports:

With PDF_LINES=N in the environment the documents are one-page PDFs of N
lines of words instead (about 60 bytes a line), whose parsing costs what a
real PDF's does.

- pipeline throughput: documents per second from the first upload to the
  last document searchable (status `done`: indexed and committed);
- query latency p50/p99 over HTTP through the gateway (session + CSRF
  header), over whatever the user has indexed.

Usage: pipeline.py GATEWAY_URL USER PASSWORD [DOCUMENTS] [QUERIES]
       pipeline.py --parse-only PARSER_URL SERVICE_TOKEN DOCUMENTS
Standard library only.
"""
import concurrent.futures
import html
import http.cookiejar
import json
import os
import random
import re
import sys
import time
import urllib.parse
import urllib.request

WORDS = ("echo parser document token service identity audit gateway queue worker "
         "index search answer citation owner passage lighthouse harbour river "
         "mountain garden library station bridge market").split()


def sign_in(gateway, user, password):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(gateway + "/login")
    action = urllib.parse.urljoin(form.geturl(), "/login")
    page = form.read().decode()
    fields = {n: html.unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}
    fields.update(username=user, password=password)
    opener.open(action, urllib.parse.urlencode(fields).encode()).read()
    return opener


PDF_LINES = int(os.environ.get("PDF_LINES", "0"))
EXTENSION = "pdf" if PDF_LINES else "txt"


def document(rng, n):
    if PDF_LINES:
        lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(PDF_LINES)]
        return pdf(lines + [f"Document number {n} is unique."])
    sentences = []
    for _ in range(12):
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(10)).capitalize() + ".")
    sentences.append(f"Document number {n} is unique.")
    return " ".join(sentences).encode()


def pdf(lines):
    """A one-page PDF showing `lines`, with a correct xref table (as
    echo_testkit::files::pdf builds them)."""
    content = "BT /F1 10 Tf 36 770 Td 12 TL\n" + "".join(f"({line}) Tj T*\n" for line in lines) + "ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def upload(opener, gateway, name, body):
    boundary = "echo-bench-boundary"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: {'application/pdf' if PDF_LINES else 'text/plain'}\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        gateway + "/api/documents", data=data, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Echo-CSRF": "1"})
    with opener.open(request) as response:
        return json.load(response)["documents"][0]["id"]


def api(opener, gateway, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(gateway + path, data=data, headers={
        "X-Echo-CSRF": "1", "Content-Type": "application/json"})
    with opener.open(request) as response:
        return json.load(response)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def parse_only(parser_url, token, count):
    """The parser alone on the same documents, 8 in flight: the rate the
    pipeline would reach if parsing were all it did."""
    rng = random.Random(7)
    bodies = [document(rng, n) for n in range(count)]

    def parse(body):
        request = urllib.request.Request(parser_url + f"/v1/parse?filename=doc.{EXTENSION}", data=body,
                                         headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(request) as response:
            response.read()

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(parse, bodies))
    took = time.monotonic() - start
    size = sum(map(len, bodies)) / len(bodies) / 1024
    print(f"parser alone: {count} documents ({EXTENSION}, {size:.1f} KiB on average) in {took:.2f} s: "
          f"{count / took:.1f} documents/s")


def main():
    if sys.argv[1] == "--parse-only":
        parser_url, token, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
        parse_only(parser_url, token, count)
        return
    gateway, user, password = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    queries = int(sys.argv[5]) if len(sys.argv) > 5 else 500
    opener = sign_in(gateway, user, password)
    rng = random.Random(6)
    bodies = [(f"doc-{n}.{EXTENSION}", document(rng, n)) for n in range(count)]

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda nb: upload(opener, gateway, *nb), bodies))
    uploaded = time.monotonic()
    wanted = set(ids)
    while True:
        listed = api(opener, gateway, "/api/documents")["documents"]
        states = {d["id"]: d["status"] for d in listed if d["id"] in wanted}
        failed = [i for i, s in states.items() if s == "failed"]
        if failed:
            sys.exit(f"{len(failed)} documents failed")
        if sum(1 for s in states.values() if s == "done") == count:
            break
        time.sleep(0.25)
    done = time.monotonic()
    print(f"documents: {count}, uploads took {uploaded - start:.2f} s, "
          f"all searchable after {done - start:.2f} s: {count / (done - start):.1f} documents/s")

    if queries == 0:
        return
    latencies = []
    for q in range(queries):
        question = f"Which document has the number {rng.randrange(count)} and the {rng.choice(WORDS)}?"
        t = time.monotonic()
        answer = api(opener, gateway, "/api/query", {"question": question})
        latencies.append((time.monotonic() - t) * 1000)
        assert "answer" in answer
    print(f"queries: {queries}, p50 {percentile(latencies, 50):.2f} ms, "
          f"p99 {percentile(latencies, 99):.2f} ms, max {max(latencies):.2f} ms")


if __name__ == "__main__":
    main()
