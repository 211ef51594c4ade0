#!/usr/bin/env python3
# Writes the seed corpora under tests/fuzz/corpus/ (binary seeds are easier to read as the
# code that builds them). Idempotent; regression inputs found by fuzzing are added by hand
# as corpus/<target>/regress-*.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf wire format, just what the seeds need ------------------------------------
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def fint(num, value):
    return varint(num << 3) + varint(value)


def fbytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def fmap(num, items):
    return b"".join(fbytes(num, fbytes(1, k) + fbytes(2, v)) for k, v in items)


def hello(agent_id="web-1", version="0.1.0", facts=(), labels=(), in_flight=(), unacked=()):
    body = fbytes(1, agent_id) + fbytes(2, version) + fmap(3, facts) + fmap(4, labels)
    body += b"".join(fbytes(5, i) for i in in_flight) + b"".join(fbytes(6, i) for i in unacked)
    return fbytes(1, body)


def heartbeat(load1=0.5, mem=8 << 30):
    metrics = varint(1 << 3 | 1) + struct.pack("<d", load1) + fint(4, mem)
    return fbytes(2, fbytes(1, metrics) + fint(2, 1700000000000))


def accepted(cid=""):
    return fbytes(3, fbytes(1, cid) + fint(2, 1700000000000))


def output(cid="", stream=1, offset=0, data=b""):
    return fbytes(4, fbytes(1, cid) + fint(2, stream) + fint(3, offset) + fbytes(4, data))


def result_body(cid="", outcome=1, exit_code=0, signal=0, error="", stdout_bytes=0):
    body = fbytes(1, cid) + fint(2, outcome) + fint(3, 1) + fint(4, exit_code) + fint(5, signal)
    body += fbytes(6, error) + fint(7, stdout_bytes) + fint(10, 1700000000000)
    return body + fint(11, 1700000000500)


def result(*args, **kwargs):
    return fbytes(5, result_body(*args, **kwargs))


# Choice bytes of agent_message_fuzz.cc: 0 own id, 2-4 an open command, 5 the finished one,
# 6 another host's, 7 empty; +8 on a Hello makes its agent id the stream's.
OWN, OPEN0, OPEN1, FINISHED, FOREIGN, EMPTY, AS_HOST = 0, 2, 3, 5, 6, 7, 8


def frames(flags, *msgs):
    out = bytes([flags])
    for choice, m in msgs:
        out += bytes([choice]) + struct.pack("<H", len(m)) + m
    return out


def agent_message():
    t = "agent_message"
    write(t, "run-to-success", frames(1, (OPEN0, accepted()), (OPEN0, output(data=b"hi\n")),
                                      (OPEN0, output(offset=3, stream=2, data=b"warn\n")),
                                      (OPEN0, result(stdout_bytes=3))))
    write(t, "own-hello-heartbeat", frames(0, (AS_HOST, hello(facts=[("os", "linux")],
                                                               labels=[("env", "prod")])),
                                           (OWN, heartbeat())))
    write(t, "hello-resumes-commands", frames(0, (AS_HOST | OPEN1, hello()), (OPEN1, result())))
    write(t, "hello-for-another-agent", frames(0, (OWN, hello(agent_id="web-2"))))
    write(t, "message-before-hello", frames(0, (OPEN0, accepted())))
    write(t, "hello-twice", frames(1, (AS_HOST, hello())))
    write(t, "result-for-other-host", frames(1, (FOREIGN, result(outcome=2, exit_code=1))))
    write(t, "output-after-result", frames(1, (FINISHED, output(offset=100, data=b"late\n"))))
    write(t, "result-without-outcome", frames(1, (OPEN0, result(outcome=0))))
    write(t, "output-without-stream", frames(1, (OPEN0, output(stream=0, data=b"x"))))
    write(t, "output-huge-offset", frames(1, (OPEN0, output(offset=(1 << 64) - 2, data=b"xyz")),
                                          (OPEN0, output(offset=1 << 63, data=b"a"))))
    write(t, "output-over-chunk-limit", frames(1, (OPEN1, output(data=b"x" * 2100))))
    write(t, "unknown-command", frames(1, (OWN, accepted("01NOPE")), (OWN, result("01NOPE"))))
    write(t, "empty-ids", frames(1, (EMPTY, accepted()), (EMPTY, output(data=b"x"))))
    write(t, "rejected-then-time-passes", frames(1 | (5 << 1), (OPEN1, result(outcome=5,
                                                                            error="expired"))))
    write(t, "oversized-hello", frames(0, (AS_HOST, hello(labels=[("bad key!", "v")]))))
    write(t, "not-protobuf", frames(1, (OWN, b"\xff\xff\xff\xff")))
    write(t, "empty-message", frames(1, (OWN, b"")))


def post(line, body, headers=b""):
    return (line + b" HTTP/1.1\r\n" + headers + b"Content-Length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)


def http_request():
    t = "http_request"
    viewer, anon = 0x01, 0x00
    big = 0xFF  # viewer, pieces of up to 1 KB

    def req(flags, seed, *lines):
        return bytes([flags, seed]) + b"".join(lines)

    write(t, "list-hosts-selector", req(
        big, 7, b"GET /api/v1/hosts?selector=env%3Dprod%2Crole+in+%28web%29&status=online"
        b"&limit=10 HTTP/1.1\r\nHost: musterd\r\n\r\n"))
    write(t, "pipelined-bytewise", req(
        viewer, 1, b"GET /api/v1/commands?state=queued&limit=2&host=web-1 HTTP/1.1\r\n"
        b"Host: x\r\n\r\n", b"GET /api/v1/hosts/web-1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /api/v1/hosts/nobody HTTP/1.1\r\n\r\n"))
    write(t, "output-of-command", req(
        big, 9, b"GET /api/v1/commands/@C/output?stream=stdout HTTP/1.1\r\n"
        b"Accept: application/json\r\n\r\n"))
    write(t, "follow-output", req(
        big, 9, b"GET /api/v1/commands/@C/output HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n"))
    write(t, "run-summary", req(
        big, 3, b"GET /api/v1/runs/@R?view=summary HTTP/1.1\r\n\r\n",
        b"GET /api/v1/runs/@R?view=bogus HTTP/1.1\r\n\r\n"))
    write(t, "commands-paged", req(
        big, 4, b"GET /api/v1/commands?run=@R&limit=1&cursor=@C HTTP/1.1\r\n\r\n"))
    write(t, "chunked-post-no-token", req(
        0x10, 3, b"POST /api/v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer nope\r\n\r\n", b'5;ext=1\r\n{"hos\r\na\r\nts":["a"]}\r\n',
        b"0\r\nTrailer: x\r\n\r\n"))
    write(t, "viewer-may-not-post", req(
        big, 5, post(b"POST /api/v1/commands", b'{"hosts":["web-1"],"argv":["uptime"]}',
                     b"Idempotency-Key: k1\r\n")))
    write(t, "probes", req(
        anon, 2, b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n",
        b"HEAD /metrics HTTP/1.1\r\n\r\nPOST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
    write(t, "body-too-large", req(
        anon, 1, b"POST /api/v1/tokens HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}"))
    write(t, "expect-continue", req(
        viewer | 0x20, 6, post(b"PUT /api/v1/hosts/web-1/labels", b'{"set":{"tier":"gold"}}',
                               b"Expect: 100-continue\r\n")))
    write(t, "http10-close", req(
        anon, 1, b"GET /api/v1/tokens HTTP/1.0\r\nAuthorization: bearer  \r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n"))
    write(t, "odd-ids-and-params", req(
        big, 8, b"GET /api/v1/hosts/%00%ff%2e%2e?limit=0&cursor=%E2%82 HTTP/1.1\r\n\r\n",
        b"GET /api/v1/commands?limit=abc&state=nope HTTP/1.1\r\n\r\n"))
    write(t, "unknown-route", req(
        big, 8, b"DELETE /api/v1/hosts/web-1/labels/x HTTP/1.1\r\n\r\n",
        b"GET /api/v2 HTTP/1.1\r\n\r\nGET //api/v1/hosts HTTP/1.1\r\n\r\n"))
    write(t, "bad-request-line", req(anon, 2, b"GET /healthz HTTP/9.9\r\n\r\n"))
    write(t, "header-too-large", req(
        0x7F, 2, b"GET /healthz HTTP/1.1\r\nX-Big: ", b"a" * 17000, b"\r\n\r\n"))
    write(t, "absolute-target", req(big, 2, b"GET http://musterd/api/v1/hosts HTTP/1.1\r\n\r\n"))


def output_reassembly():
    t = "output_reassembly"

    def consistent(page, truth, chunks):
        out = bytes([1, page]) + struct.pack("<H", len(truth)) + truth
        for stream, off, length in chunks:
            out += bytes([stream]) + struct.pack("<H", off) + bytes([length])
        return out

    def raw(page, chunks):
        out = bytes([0, page])
        for stream, off, data in chunks:
            if off > 0xFFFF:
                out += bytes([stream | 0x80]) + struct.pack("<Q", off)
            else:
                out += bytes([stream]) + struct.pack("<H", off)
            out += bytes([len(data)]) + data
        return out

    text = "héllo wörld — ünïcødé ✓ 🎉\n".encode() * 3
    write(t, "contiguous", consistent(255, text, [(0, 0, 20), (0, 20, 40), (0, 60, 255)]))
    write(t, "replayed-overlap", consistent(2, text, [(0, 0, 10), (0, 10, 10), (0, 0, 255),
                                                      (0, 15, 30)]))
    write(t, "gap-head-tail", consistent(1, text, [(0, 0, 9), (0, 50, 40), (1, 5, 3)]))
    write(t, "split-characters", consistent(3, text, [(0, 0, 2), (0, 2, 1), (0, 3, 5),
                                                      (0, 8, 1), (0, 9, 200)]))
    write(t, "nested-chunk", consistent(1, text, [(0, 0, 20), (0, 5, 100), (0, 8, 4)]))
    write(t, "invalid-utf8", raw(4, [(0, 0, b"\xff\xfe ok \xc0\xaf \xed\xa0\x80"),
                                     (0, 14, b"\xf0\x9f"), (0, 16, b"\x98\x80 end")]))
    write(t, "disagreeing-bytes", raw(1, [(0, 0, b"aaaa"), (0, 2, b"bbbb"), (0, 0, b"cc")]))
    write(t, "offsets-at-the-limits", raw(3, [(0, (1 << 63) - 1, b"edge"), (0, 1 << 63, b"x"),
                                              (0, (1 << 64) - 2, b"wraps")]))
    write(t, "empty-chunks", raw(1, [(0, 0, b""), (0, 0, b"x"), (0, 1, b""), (1, 7, b"")]))


def sse_parser():
    t = "sse_parser"
    cmd = ('{"id":"01J","run_id":"01J","host_id":"web-1","state":"failed","argv":["sh","-c",'
           '"exit 3"],"exit_code":3,"signal":0,"error":""}')
    write(t, "follow", "\x05\x07" + 'event: output\ndata: {"stream":"stdout","offset":0,'
          '"data":"hello\\n"}\n\n: keep-alive\n\nevent: output\ndata: {"stream":"stdout",'
          '"offset":6,"data":"\\n[... 4096 bytes truncated ...]\\n","truncated_bytes":4096}'
          '\n\nevent: end\ndata: ' + cmd + '\n\n')
    write(t, "crlf-multiline", "\x09\x02" + "event: output\r\ndata: {\"stream\":\r\ndata: "
          "\"stderr\",\"data\":\"x\"}\r\n\r\nretry: 1000\r\nid: 7\r\n\r\n")
    write(t, "error-event", "\x01\x40" + 'event: error\ndata: {"error":{"code":"unavailable",'
          '"message":"store not ready"}}\n\n')
    write(t, "odd-fields", "\x02\x03" + "data\n\nevent\ndata:no-space\n:comment\nevent: end\n"
          "data: [1,2]\n\ndata: {\"state\":\"failed\",\"signal\":1e300}\n\n")
    write(t, "no-final-blank-line", "\x03\x00" + "event: output\ndata: {}")
    write(t, "end-signalled", "\x04\xff" + 'event: end\ndata: {"state":"cancelled","exit_code":'
          'null,"signal":15,"script":"sleep 100; echo \'done\'"}\n\n')


def cli_reply():
    t = "cli_reply"
    write(t, "error-selector", "\x06" + '{"error":{"code":"invalid_selector","message":'
          '"invalid selector at position 3: expected a label key"}}')
    write(t, "error-range", "\x00" + '{"error":{"code":"invalid_argument","message":"too long",'
          '"field":"timeout","min":0,"max":604800000}}')
    write(t, "proxy-page", "\x09" + "<html><body>502 Bad Gateway</body></html>")
    write(t, "hosts", "\x0b" + '{"hosts":[{"id":"web-1","status":"online","version":"0.1.0",'
          '"last_seen_ms":1699999990000,"labels":{"env":"prod"},"metrics":{"load1":0.5,'
          '"mem_total_bytes":8589934592,"disk_free_bytes":1e30}}],"next_cursor":null}')
    write(t, "commands", "\x0b" + '{"commands":[{"id":"01J","state":"failed","exit_code":3,'
          '"argv":["sh","-c","echo \'hi\' > /tmp/x"],"stdout_bytes":-5,"created_at_ms":'
          '-9223372036854775808},{"state":"succeeded","script":"uptime","signal":1e300}]}')
    write(t, "tokens", "\x0b" + '{"enroll":[{"id":"01J","kind":"enroll","uses_left":-1,'
          '"labels":{}}],"api":[{"id":"01K","role":"admin","name":"ci","created_at_ms":1.5}]}')
    write(t, "not-an-object", "\x01" + '["error",{"message":1}]')
    write(t, "empty", "\x02")


def config():
    t = "config"
    write(t, "cli-full", "\x00" + 'server = "http://127.0.0.1:7080/"\ntoken = "mst_admin_abc"\n')
    write(t, "cli-no-scheme", "\x00" + "# comment\ntoken = 'literal'\nserver = \"musterd:7080\"\n")
    write(t, "cli-wrong-types", "\x00" + "server = 5\ntoken = 1979-05-27T07:32:00Z\n[token]\n")
    write(t, "cli-broken", "\x00" + 'token = "unterminated\n')
    write(t, "cli-multiline",
          "\x00" + 'token = """\nmst_\\\n  x"""\nserver = "h"\n[a.b]\nc = [1, [2]]\n')
    write(t, "musterd-full", "\x01" + 'data-dir = "/var/lib/musterd"\n'
          'http-listen = "0.0.0.0:7080"\n'
          'grpc-listen = ["127.0.0.1:7443", "127.0.0.2:7443"]\nheartbeat-interval = "10s"\n'
          'default-expiry = "24h"\nreconnect-rate = 500\nmax-agents = 19000\n'
          'insecure-plaintext = true\nlog-format = "json"\nlog-level = ["debug", "warn"]\n')
    write(t, "musterd-bad-values", "\x01" + 'reconnect-rate = 0\nmax-agents = "many"\n')
    write(t, "musterd-unknown-key", "\x01" + "[server]\nlisten = 1\nunknown-key = true\n")
    write(t, "musterd-huge-number", "\x01" + "max-agents = 99999999999999999999999\n")
    write(t, "agent-full", "\x02" + 'server = "musterd:7443"\nstate-dir = "/var/lib/muster-agent"\n'
          'label = ["env=prod", "role=web"]\nmax-output-bytes = "1048576"\n'
          'shutdown-grace = "30s"\nbackoff-cap = "2m"\nid = "web-1"\n')
    write(t, "agent-bad-label", "\x02" + 'label = "noequals"\nmax-output-bytes = "12abc"\n')
    write(t, "agent-ini-style", "\x02" + "; ini comment\nserver=musterd:7443\nlabel=a=b\n")


def agent_state():
    t = "agent_state"

    def state(present, chunk, credential=b"", spec=b"", result_pb=b"", stdout=b"", stdout_tail=b"",
              stderr=b"", stderr_tail=b""):
        out = bytes([present, chunk])
        for piece in (credential, spec, result_pb):
            out += bytes([len(piece)]) + piece
        out += struct.pack("<H", len(stdout)) + stdout
        out += bytes([len(stdout_tail)]) + stdout_tail + bytes([len(stderr)]) + stderr
        return out + stderr_tail

    spec = fbytes(1, "01FUZZCOMMAND") + fbytes(2, "01RUN") + fbytes(10, fbytes(1, "uptime"))
    res = result_body("01FUZZCOMMAND", stdout_bytes=9000)
    tail = struct.pack("<Q", 8192) + b"...the end\n"
    write(t, "finished", state(0xFF & ~8, 0, b"web-1\nmst_agent_secret\n", spec, res,
                               b"hello\n" * 10, tail, b"warn\n", struct.pack("<Q", 5)))
    write(t, "running", state(0x13, 1, b"web-1\nmst_agent_secret\n", spec, b"", b"partial"))
    write(t, "acked-tombstone", state(0x0F, 0, b"web-1\nx\n", spec, res))
    write(t, "corrupt-credential", state(0x01, 0, b"bad id!\n\n"))
    write(t, "short-tail", state(0x26, 0, b"", spec, res, b"", b"\x01\x02"))
    write(t, "tail-offset-wraps", state(0x36, 2, b"", spec, res, b"abc",
                                        b"\xff" * 8 + b"wrapped"))
    write(t, "garbage-result", state(0x07, 0, b"web-1\ncred", b"\xff\xff", b"\x0a\xff\xff\xff"))


def text_seeds():
    for i, text in enumerate([
            "env=prod", "env=prod,role in (web,db),!canary,region!=eu", "k==v", "k notin (a, b)",
            "  spaced = x ,  y ", "k in ()", "k in (a,,b)", "k in(a)", "k=", "!", "", "a,b,c",
            "role in (web,db", "k" * 64 + "=v", "k8s.io/zone=a", "in in (in)", "notin=v",
            "k=v:w+x@y", "!k=v", "a=b,", ",a", "a = b c", "a=(b)"]):
        write("selector", "seed-%02d" % i, text)
    for i, text in enumerate([
            "30s", "5m", "24h", "1h30m", "250ms", "7d", "0", "0s", "36500d", "36501d",
            "999999999999999999999d", "1h1h", "s", "10x", "1.5s", "", "12345678901234567890ms",
            "1d2h3m4s5ms", "3153600000000ms", "3153600000001ms", "-5s", "5 s", "9" * 100 + "d"]):
        write("duration", "seed-%02d" % i, text)
    # json_bodies: first byte 0 (+4: Idempotency-Key "key-1", +8: "k") run, 1 labels, 2 token,
    # 3 any object through FieldReader.
    bodies = [
        (0, '{"hosts":["web-1"],"argv":["uptime"]}'),
        (0, '{"selector":"env=prod,role in (web,db)","script":"echo hi","timeout":"30s",'
            '"expire":"1h","kill_grace_ms":5000,"env":{"A":"1"},"cwd":"/tmp",'
            '"idempotency_key":"k1"}'),
        (4, '{"hosts":["a"],"argv":["x"],"idempotency_key":"other"}'),
        (8, '{"hosts":["a"],"argv":["x"],"idempotency_key":"k"}'),
        (0, '{"selector":"","argv":["x"]}'),
        (0, '{"selector":null,"hosts":null}'),
        (0, '{"hosts":["a"],"selector":"x","argv":["x"]}'),
        (0, '{"hosts":["a"],"argv":["x"],"script":"y"}'),
        (0, '{"hosts":["a"],"timeout":"30s","timeout_ms":5}'),
        (0, '{"hosts":["a"],"timeout_ms":1e300,"expire_ms":-1}'),
        (0, '{"hosts":["a"],"timeout":"99999999d"}'),
        (0, '{"hosts":["a"],"kill_grace_ms":18446744073709551615}'),
        (0, '{"hosts":["a"],"timout":"1s"}'),
        (0, '{"hosts":"a","argv":[1]}'),
        (0, '[1,2]'),
        (0, ''),
        (0, '[' * 40 + ']' * 40),
        (0, '{"' + 'a' * 63 + 'é":1}'),
        (1, '{"set":{"tier":"gold","env":"prod"},"remove":["canary"]}'),
        (1, '{"set":{"a":"1"},"remove":["a"]}'),
        (1, '{}'),
        (1, '{"set":{"a":1}}'),
        (1, '{"set":{"a":"1"},"remove":["' + 'b' * 63 + 'é"],"x":1}'),
        (2, '{"kind":"enroll","uses":1,"ttl":"24h","labels":{"env":"prod"}}'),
        (2, '{"kind":"api","role":"operator","name":"ci-deploy","ttl":"30d"}'),
        (2, '{"kind":"api","role":"root"}'),
        (2, '{"kind":"api","role":"' + 'r' * 31 + 'é"}'),
        (2, '{"kind":"enroll","role":"admin"}'),
        (2, '{"kind":"api","uses":3,"role":"viewer"}'),
        (2, '{"kind":"x"}'),
        (2, '{"kind":"enroll","uses":18446744073709551615,"ttl_ms":1.5}'),
        (3, '{"a":"s","bb":1,"ccc":true,"dddd":["x"],"eeeee":{"k":"v"},"ffffff":"30s",'
            '"gggggg_ms":5,"hhhhhhh":null}'),
        (3, '{"a":1,"bb":"x","ccc":2,"dddd":[1],"eeeee":{"k":1},"ffffff":30}'),
    ]
    for i, (which, body) in enumerate(bodies):
        write("json_bodies", "seed-%02d" % i, bytes([which]) + body.encode())


def enroll_token():
    pin = "9f" * 32
    seeds = [
        "mst_enroll_" + "a" * 32 + "." + pin,
        "mst_enroll_" + "a" * 32,
        "mst_enroll_" + "Ab-9_z" + "." + pin.upper() + "\n",
        "  mst_enroll_x." + pin + " \r\n",
        "mst_enroll_x." + pin[:63],  # pin one digit short
        "mst_enroll_x." + pin + "0",  # one digit long
        "mst_enroll_x." + pin[:62] + "zz",  # not hex
        "." + pin,  # no secret
        "mst_enroll_x." + pin + "." + pin,  # two dots
        "mst_enroll_x y." + pin,
        "mst_enroll_\u00e9." + pin,
        "",
        " \t\n",
        "mst_enroll_" + "a" * 600,
    ]
    for i, text in enumerate(seeds):
        write("enroll_token", "seed-%02d" % i, text)
    # For the round trip: length, 128 secret bytes, pinned, upper, 32 pin bytes, padded.
    write("enroll_token", "roundtrip-00", bytes([20]) + b"mst_enroll_Q-x_9.abc" + b"\x01\x01"
          + bytes(range(32)) + b"\x01")


def cert_pem():
    """Certificates and CSRs made with the openssl tool; kept once written (they are random)."""
    import subprocess
    import tempfile

    d = os.path.join(HERE, "corpus", "cert_pem")
    if os.path.isdir(d) and os.listdir(d):
        return
    with tempfile.TemporaryDirectory() as tmp:
        def run(*args):
            subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

        def read(name):
            with open(os.path.join(tmp, name), "rb") as f:
                return f.read()

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/O=Muster/CN=Muster CA",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/O=Muster/CN=musterd.example")
        with open(os.path.join(tmp, "ext"), "w") as f:
            f.write("subjectAltName=DNS:musterd.example,IP:127.0.0.1,IP:::1,URI:muster://x\n"
                    "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "90", "-extfile", "ext")
        run("req", "-newkey", "ed25519", "-nodes", "-keyout", "ed.key", "-out", "ed.csr",
            "-subj", "/CN=web-1")
        run("req", "-newkey", "rsa:1024", "-nodes", "-keyout", "rsa.key", "-out", "rsa.csr",
            "-subj", "/CN=web-1")
        ca, server, csr = read("ca.crt"), read("server.crt"), read("server.csr")
        seeds = {
            "ca": ca,
            "chain": server + ca,
            "chain-reversed": ca + server,
            "csr-p256": csr,
            "csr-ed25519": read("ed.csr"),
            "csr-rsa": read("rsa.csr"),
            "csr-truncated": csr[: len(csr) // 2],
            "cert-truncated": server[: len(server) // 2],
            "cert-no-end": server[: server.index(b"-----END")],
            "cert-bad-base64": server.replace(b"\n", b"\n!", 3),
            "csr-in-cert-armor": csr.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"),
            "cert-in-csr-armor": ca.replace(b"CERTIFICATE", b"CERTIFICATE REQUEST"),
            "key-not-cert": read("server.key"),
            "empty-armor": b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "garbage": b"\x00\xff not pem at all",
        }
        for name, data in seeds.items():
            write("cert_pem", name, data)


def artifact_transfer():
    t = "artifact_transfer"

    def piece(b):
        b = b.encode() if isinstance(b, str) else b
        return bytes([len(b)]) + b

    def long_piece(b):
        b = b.encode() if isinstance(b, str) else b
        return struct.pack("<H", len(b)) + b

    def header(flags=1, purpose=1, name="a.log", payload="0123456789", extra=b""):
        # op 2: pick 0, flags, [command piece unless flags&1], purpose, [device], name, payload
        out = bytes([2, 0, flags])
        if not flags & 1:
            out += piece("01JNOSUCHCOMMAND")
        out += bytes([purpose])
        if flags & 2:
            out += piece("sdb")
        out += piece(name) + long_piece(payload) + extra
        return out

    def chunk(n):
        return bytes([3, 0, 1]) + struct.pack("<H", n - 1)

    OPEN_UP, OPEN_DOWN, FINISH, ABORT = bytes([0]), bytes([1]), bytes([4, 0]), bytes([6, 0])
    DROP = bytes([7, 1, 0])  # op 7, odd flag: drop the picked transfer (index 0)
    write(t, "upload-whole", bytes([0]) + OPEN_UP + header() + chunk(10) + FINISH)
    write(t, "upload-in-pieces", bytes([0]) + OPEN_UP + header() + chunk(3) + chunk(3) + chunk(4)
          + FINISH)
    write(t, "upload-short", bytes([0]) + OPEN_UP + header() + chunk(4) + FINISH)
    write(t, "upload-then-retry", bytes([0]) + OPEN_UP + header() + chunk(10) + FINISH + DROP
          + OPEN_UP + header() + chunk(10) + FINISH)
    write(t, "resume-after-abort", bytes([0]) + OPEN_UP + header() + chunk(4) + ABORT + DROP
          + OPEN_UP + header(flags=1 | 16, extra=struct.pack("<H", 10)) + chunk(6) + FINISH)
    write(t, "declared-size-lies", bytes([0]) + OPEN_UP
          + header(flags=1 | 4, extra=struct.pack("<H", 3)) + chunk(10) + FINISH)
    write(t, "wrong-hash", bytes([0]) + OPEN_UP + header(flags=1 | 8, extra=piece("ab" * 32))
          + chunk(10) + FINISH)
    write(t, "wrong-device", bytes([0x08]) + OPEN_UP + header(flags=1 | 2) + chunk(10) + FINISH)
    write(t, "over-expectation-limit", bytes([0x10]) + OPEN_UP
          + header(payload="x" * 200) + chunk(200) + FINISH)
    write(t, "unknown-command", bytes([0]) + OPEN_UP + header(flags=0) + chunk(10) + FINISH)
    write(t, "purpose-unspecified", bytes([0]) + OPEN_UP + header(purpose=0) + FINISH)
    write(t, "chunk-before-header", bytes([0]) + OPEN_UP + chunk(5) + FINISH)
    write(t, "slots-exhausted", bytes([0]) + OPEN_UP * 4 + header() + chunk(10) + FINISH)
    write(t, "header-deadline", bytes([0]) + OPEN_UP + bytes([7, 0]) + b"\xff\xff"
          + header() + chunk(10) + FINISH)
    write(t, "download-from-offset", bytes([0x20]) + OPEN_DOWN + bytes([5, 0, 3])
          + struct.pack("<H", 4990))
    write(t, "download-whole-twice", bytes([0x20]) + OPEN_DOWN + bytes([5, 0, 3, 0, 0]) + DROP
          + OPEN_DOWN + bytes([5, 0, 3, 0, 0]))
    write(t, "download-past-end", bytes([0x20]) + OPEN_DOWN + bytes([5, 0, 3])
          + struct.pack("<H", 6000))
    write(t, "download-unexpected", bytes([0]) + OPEN_DOWN + bytes([5, 0, 1]) + piece("01JX")
          + bytes([0, 0]))
    meta = ("version=1\nid=01JARTIFACT\nname=we%0Aird%25\nsize=5\nsha256=" + "c" * 64
            + "\npurpose=bundle\nhost=h\ncommand=c\ncreated_by=x\ncreated_at_ms=7\npinned=1\n")
    write(t, "sidecar", b"\xff" + meta.encode())
    write(t, "sidecar-bad-escape", b"\xff" + meta.replace("%25", "%zz").encode())
    write(t, "sidecar-truncated-escape", b"\xff" + meta[: meta.index("%25") + 2].encode())
    write(t, "sidecar-newer-keys", b"\xff" + (meta + "color=blue\n").encode())


if __name__ == "__main__":
    text_seeds()
    agent_message()
    http_request()
    output_reassembly()
    sse_parser()
    cli_reply()
    config()
    agent_state()
    enroll_token()
    cert_pem()
    artifact_transfer()
