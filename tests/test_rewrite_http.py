"OpenAIChatBackend against a stub chat-completions server on 127.0.0.1: request format, retries with backoff, timeouts."
import ipaddress
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from laretrieval.backends import OpenAIChatBackend
from laretrieval.rewrite import Rewriter


def completion(text, finish_reason='stop', **message):
    return {'id': 'x', 'object': 'chat.completion', 'model': 'tiny',
            'choices': [{'index': 0, 'finish_reason': finish_reason, 'message': {'role': 'assistant', 'content': text, **message}}]}


class StubHandler(BaseHTTPRequestHandler):
    "Answers each POST with the next scripted (status, headers, payload, delay) and records what it received."
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.server.seen.append(dict(path=self.path, headers=dict(self.headers), body=json.loads(body), at=time.monotonic()))
        status, headers, payload, delay = self.server.script.pop(0) if self.server.script else (500, {}, {'error': 'script empty'}, 0)
        time.sleep(delay)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for k, v in headers.items(): self.send_header(k, v)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and closed the connection

    def log_message(self, *args): pass


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), StubHandler)
        self.script, self.seen = [], []

    @property
    def base_url(self): return f'http://127.0.0.1:{self.server_address[1]}/v1'


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    "No outside network: any connection to a non-loopback address fails the test before it is made."
    for var in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
    real_connect = socket.socket.connect

    def connect(sock, address):
        if isinstance(address, tuple) and not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f'test tried to reach {address}')
        return real_connect(sock, address)
    monkeypatch.setattr(socket.socket, 'connect', connect)


@pytest.fixture
def stub():
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def backend(stub, sleeps=None, **kw):
    kw = {**dict(api_key_env=None, max_retries=3, backoff=0.5, max_backoff=8.0, timeout=5.0), **kw}
    return OpenAIChatBackend(stub.base_url, 'tiny-model', sleep=(sleeps.append if sleeps is not None else time.sleep), **kw)


def test_request_format(stub, monkeypatch):
    monkeypatch.setenv('LARETRIEVAL_TEST_API_KEY', 'sekrit')
    stub.script = [(200, {}, completion('  Ein Hund bellt.\n'), 0)]
    b = backend(stub, api_key_env='LARETRIEVAL_TEST_API_KEY', system='You translate.', temperature=0.2, max_tokens=40)
    assert b.complete('Translate: A dog barks.') == '  Ein Hund bellt.\n'
    (req,) = stub.seen
    assert req['path'] == '/v1/chat/completions'
    assert req['headers']['Authorization'] == 'Bearer sekrit'
    assert req['headers']['Content-Type'] == 'application/json'
    assert req['body'] == {'model': 'tiny-model', 'temperature': 0.2, 'max_tokens': 40,
                           'messages': [{'role': 'system', 'content': 'You translate.'},
                                        {'role': 'user', 'content': 'Translate: A dog barks.'}]}
    assert 'sekrit' not in json.dumps(b.identity())  # the key never reaches the cache


def test_no_key_header_without_api_key_env(stub):
    stub.script = [(200, {}, completion('ok'), 0)]
    backend(stub).complete('hi')
    assert 'Authorization' not in stub.seen[0]['headers']


def test_retries_429_then_500_then_succeeds_with_backoff(stub):
    stub.script = [(429, {'Retry-After': '3'}, {'error': 'rate limited'}, 0),
                   (500, {}, {'error': 'boom'}, 0),
                   (200, {}, completion('fine'), 0)]
    sleeps = []
    assert backend(stub, sleeps).complete('hi') == 'fine'
    assert len(stub.seen) == 3
    assert sleeps == [3.0, 1.0]  # Retry-After honoured, then backoff 0.5 * 2**1
    assert all(r['body'] == stub.seen[0]['body'] for r in stub.seen)  # the same request each time


def test_gives_up_after_last_retry_with_a_clear_error(stub):
    stub.script = [(503, {}, {'error': 'overloaded'}, 0)] * 4
    sleeps = []
    with pytest.raises(RuntimeError) as err:
        backend(stub, sleeps).complete('hi')
    assert 'after 4 attempts' in str(err.value) and 'HTTP 503' in str(err.value) and '/v1/chat/completions' in str(err.value)
    assert len(stub.seen) == 4
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff, no wait after the last attempt


def test_client_error_is_not_retried(stub):
    stub.script = [(401, {}, {'error': 'bad key'}, 0)]
    sleeps = []
    with pytest.raises(RuntimeError, match='HTTP 401 \\(not retried\\)'):
        backend(stub, sleeps).complete('hi')
    assert len(stub.seen) == 1 and sleeps == []


def test_timeout_is_retried_then_reported(stub):
    stub.script = [(200, {}, completion('too late'), 1.0), (200, {}, completion('in time'), 0)]
    sleeps = []
    start = time.monotonic()
    assert backend(stub, sleeps, timeout=0.2, max_retries=1).complete('hi') == 'in time'
    assert len(stub.seen) == 2 and sleeps == [0.5]
    stub.script = [(200, {}, completion('too late'), 1.0)]
    with pytest.raises(RuntimeError, match='after 1 attempts.*(Timeout|timed out)'):
        backend(stub, timeout=0.2, max_retries=0).complete('hi')
    assert time.monotonic() - start < 1.5  # the client did not wait for the slow answers


def test_rewriter_records_failures_and_refusals_and_reruns_without_requests(stub, tmp_path):
    stub.script = [(200, {}, completion('Ein Hund bellt.'), 0),
                   (400, {}, {'error': 'context too long'}, 0),
                   (200, {}, completion("I'm sorry, but I can't help with that."), 0),
                   (200, {}, completion(None, finish_reason='content_filter'), 0),
                   (200, {}, completion(None, refusal='I will not do that.'), 0)]
    captions = ['A dog barks.', 'A very long caption.', 'A car.', 'Rain.', 'Wind.']
    rw = Rewriter(backend(stub, []), 'translate', tmp_path / 'http.jsonl', progress=False)
    with pytest.warns(UserWarning, match='errors=1'):
        results, report = rw.run([dict(text=c, language='German') for c in captions])
    assert [r.status for r in results] == ['ok', 'error', 'refused', 'refused', 'refused']
    assert results[0].output == 'Ein Hund bellt.' and 'HTTP 400' in results[1].error
    assert results[3].error == 'finish_reason content_filter' and results[4].error == 'I will not do that.'
    assert (report.ok, report.errors, report.refused, report.backend_calls) == (1, 1, 3, 5)
    records = [json.loads(line) for line in (tmp_path / 'http.jsonl').read_text().splitlines()]
    assert [r['status'] for r in records] == ['ok', 'error', 'refused', 'refused', 'refused']
    assert 'Translate the following description' in stub.seen[0]['body']['messages'][-1]['content']
    rerun = Rewriter(backend(stub, []), 'translate', tmp_path / 'http.jsonl', progress=False)
    with pytest.warns(UserWarning):
        again, report2 = rerun.run([dict(text=c, language='German') for c in captions])
    assert len(stub.seen) == 5 and report2.backend_calls == 0 and report2.from_cache == 5
    assert [r.status for r in again] == [r.status for r in results]


def test_connection_refused_is_retried_then_reported():
    closed = socket.socket()
    closed.bind(('127.0.0.1', 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    sleeps = []
    b = OpenAIChatBackend(f'http://127.0.0.1:{port}/v1', 'tiny', api_key_env=None, max_retries=2, backoff=0.1,
                          timeout=2.0, sleep=sleeps.append)
    with pytest.raises(RuntimeError, match='after 3 attempts; last error: ConnectionError'):
        b.complete('hi')
    assert sleeps == [0.1, 0.2]
