"""The logs endpoint (issue 6): NDJSON chunks with offsets, follow, resume, binary output."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from .helpers import Api, assert_error, output_of


def test_non_follow_after_finish_has_chunks_then_end(emu):
    api = Api(emu)
    run = api.run(["sh", "-c", "printf abc; printf XY >&2; printf def"])
    lines = api.logs(run["id"])
    assert lines[-1] == {"event": "end", "status": "succeeded", "exit_code": 0,
                         "output_truncated": False}
    chunks = lines[:-1]
    assert output_of(chunks, "stdout") == b"abcdef" and output_of(chunks, "stderr") == b"XY"
    # offsets count both streams together, contiguously
    pos = 0
    for c in chunks:
        assert c["offset"] == pos
        pos += len(base64.b64decode(c["data_b64"]))
    assert pos == 8


def test_offset_resumes_exactly_even_inside_a_chunk(emu):
    api = Api(emu)
    run = api.run(["printf", "0123456789"])
    for offset in range(11):
        lines = api.logs(run["id"], offset=offset)
        assert output_of(lines) == b"0123456789"[offset:]
        if offset < 10:
            assert lines[0]["offset"] == offset
        assert lines[-1]["event"] == "end"
    assert api.logs(run["id"], offset=999) == [{"event": "end", "status": "succeeded",
                                                 "exit_code": 0, "output_truncated": False}]


def test_binary_and_multibyte_output_survive(emu):
    api = Api(emu)
    run = api.run(["printf", "\\000\\377\\376\\303\\251\\342\\202\\254"])
    assert output_of(api.logs(run["id"])) == b"\x00\xff\xfe\xc3\xa9\xe2\x82\xac"


def test_non_follow_on_running_run_has_no_end_line(emu):
    api = Api(emu)
    run_id = api.post_run(["sh", "-c", "echo first; sleep 30"], profile="quick",
                          timeout_seconds=30).json()["id"]
    # follow until the first chunk exists, then ask without follow
    with api.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as r:
        first = json.loads(next(r.iter_lines()))
    assert base64.b64decode(first["data_b64"]) == b"first\n"
    lines = api.logs(run_id, follow="false")
    assert [x.get("event") for x in lines] == [None]
    api.request("DELETE", f"/runs/{run_id}")


def test_follow_streams_lines_before_the_run_ends(emu):
    api = Api(emu)
    run_id = api.post_run(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"]
                          ).json()["id"]
    arrivals = []
    with api.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as r:
        for raw in r.iter_lines():
            arrivals.append((time.monotonic(), json.loads(raw)))
    data = [(t, base64.b64decode(x["data_b64"])) for t, x in arrivals if "data_b64" in x]
    assert b"".join(d for _, d in data) == b"1\n2\n3\n"
    assert len(data) == 3
    assert data[2][0] - data[0][0] > 0.4  # each line came as it was printed
    assert arrivals[-1][1] == {"event": "end", "status": "succeeded", "exit_code": 0,
                               "output_truncated": False}


def test_follow_ends_when_the_run_is_deleted(emu):
    api = Api(emu)
    run_id = api.post_run(["sleep", "30"], profile="quick", timeout_seconds=30).json()["id"]
    with api.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as r:
        assert api.request("DELETE", f"/runs/{run_id}").status_code == 204
        lines = [json.loads(x) for x in r.iter_lines()]
    assert lines[-1]["event"] == "end" and lines[-1]["status"] == "cancelled"


@pytest.mark.parametrize("query", ["follow=yes", "follow=", "offset=-1", "offset=x",
                                   "offset=1.5", "offset=" + "9" * 19])
def test_invalid_log_queries_are_400(emu, query):
    api = Api(emu)
    run = api.run(["true"])
    assert_error(api.get(f"/runs/{run['id']}/logs?{query}"), 400, "invalid_request")


def test_logs_need_auth(emu):
    run = Api(emu).run(["true"])
    r = requests.get(emu.api(f"/runs/{run['id']}/logs"), timeout=10)
    assert_error(r, 401, "unauthenticated")


def test_truncated_output_logs_stop_at_the_cap(emu):
    api = Api(emu)
    run = api.run(["head", "-c", "10000", "/dev/zero"])
    lines = api.logs(run["id"])
    assert len(output_of(lines)) == 4096 and lines[-1]["event"] == "end"


def test_drop_mid_on_logs_cuts_the_stream_and_resume_gets_the_rest(emu):
    api = Api(emu)
    run = api.run(["sh", "-c", "printf a; sleep 0.05; printf b >&2; sleep 0.05; printf c"])
    path = f"/api/v1/containers/runs/{run['id']}/logs"
    emu.add_faults([{"action": "drop_mid", "path": path, "after_lines": 1}])
    got = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        with api.get(f"/runs/{run['id']}/logs", stream=True) as r:
            for raw in r.iter_lines():
                got.append(json.loads(raw))
    assert len(got) == 1
    resume = got[0]["offset"] + len(base64.b64decode(got[0]["data_b64"]))
    rest = api.logs(run["id"], offset=resume)
    assert output_of(got) + output_of(rest) == b"abc"


def _cpu_seconds(pid: int) -> float:
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_many_idle_followers_cost_no_cpu_and_all_get_everything(emu):
    """30 followers of a run that is silent for 2 s: they sleep on the run's condition
    (no busy-waiting: the emulator uses almost no CPU meanwhile), then all get every byte."""
    from concurrent.futures import ThreadPoolExecutor

    api = Api(emu)
    r = api.post_run(["sh", "-c", "printf start; sleep 2; printf end"])
    run_id = r.json()["id"]

    def follow(_):
        with api.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as resp:
            return [json.loads(line) for line in resp.iter_lines() if line]

    with ThreadPoolExecutor(30) as pool:
        futures = [pool.submit(follow, i) for i in range(30)]
        path = f"/api/v1/containers/runs/{run_id}/logs"
        deadline = time.monotonic() + 10
        while emu.attempts("GET", path) < 30:  # every follower attached: now measure
            assert time.monotonic() < deadline, "the followers did not all attach"
        before = _cpu_seconds(emu.proc.pid)
        results = [f.result(timeout=30) for f in futures]
        used = _cpu_seconds(emu.proc.pid) - before
    for lines in results:
        assert output_of(lines) == b"startend" and lines[-1]["event"] == "end"
    assert used < 0.5, f"the emulator used {used:.2f} s of CPU for 30 idle followers"


def test_the_end_line_says_when_output_was_truncated(emu):
    """A client that streamed the output (it never sees the run object) can still warn."""
    api = Api(emu)
    run = api.run(["sh", "-c", "head -c 5000 /dev/zero"])  # the module's cap is 4096
    assert api.logs(run["id"])[-1]["output_truncated"] is True
