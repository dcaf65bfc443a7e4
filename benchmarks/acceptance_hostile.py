"""Independent check of the sink's promise, with clients the platform does not use.

librdkafka (confluent-kafka) produces 30,000 good impressions over 4 partitions, interleaved
with hostile records on every partition (750 KB values, position 2^63, years 0001/9999,
2099/1970, an empty id, a NUL in the query, bad UTF-8, broken JSON, a string position) and
repeats (the same id 3 days later, plain redeliveries). Two `freshlabel sink run` processes
are SIGKILLed in a loop, then one drains. A reader that is not pyiceberg (fastavro over the
manifests, pyarrow over the data files) counts the table, and librdkafka reads the DLQ.

Run it from its own virtual environment, beside the platform's:
    python3 -m venv /tmp/acc && /tmp/acc/bin/pip install confluent-kafka fastavro pyarrow
    /tmp/acc/bin/python benchmarks/acceptance_hostile.py /tmp/acc-state <free port>
Prints the counts; exits 1 if a good record is missing or repeated, or a hostile one is not
in the DLQ exactly once.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

state, port = sys.argv[1], int(sys.argv[2])
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHLABEL_")}
env.update(FRESHLABEL_STATE_DIR=state, FRESHLABEL_BROKER__PORT=str(port))
cli = [f"{repo}/.venv/bin/python", "-m", "freshlabel.cli"]
print(subprocess.run(cli + ["up"], env=env, cwd=repo, capture_output=True, text=True).stderr[-300:])
boot = f"127.0.0.1:{port}"
p = Producer({"bootstrap.servers": boot, "message.max.bytes": 2_000_000, "acks": "all"})
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def imp(i, **kw):
    d = dict(
        impression_id=f"g-{i}",
        request_id="r",
        user_id="u",
        query="red shoes",
        pin_id=f"p{i % 50}",
        position=1 + i % 10,
        country="US",
        locale="en-US",
        event_time=(T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
    )
    d.update(kw)
    return json.dumps(d).encode()


N = 30000
hostile = [
    b"x" * 750_000,
    imp(-1, impression_id="h-big", query="q" * 10)[:-1] + b', "pad": "' + b"y" * 749_000 + b'"}',
    imp(-2, impression_id="h-pos", position=2**63),
    imp(-3, impression_id="h-d1").replace(b'"2026-', b'"0001-', 1),
    json.dumps(
        {**json.loads(imp(-4, impression_id="h-d9")), "event_time": "9999-12-31T23:30:00-01:00"}
    ).encode(),
    imp(-5, impression_id="h-2099", event_time="2099-01-01T00:00:00Z"),
    imp(-6, impression_id="h-1970", event_time="1970-01-01T00:00:00Z"),
    imp(
        -7,
        impression_id="",
    ),
    imp(-8, impression_id="h-nul", query="red\u0000shoes"),
    b"{not json",
    b"\xff\xfe",
    imp(-9, impression_id="h-str", position="3"),
]
rng = random.Random(3)
sent_hostile = 0
for i in range(N):
    p.produce("impressions", key=f"g-{i}".encode(), value=imp(i), partition=i % 4)
    if i % 2500 == 7:
        for part in range(4):
            for h in hostile:
                p.produce("impressions", value=h, partition=part)
                sent_hostile += 1
    if i % 5000 == 0:
        p.flush()
# same id 3 days later, and a plain redelivery
for i in range(0, 200):
    p.produce(
        "impressions",
        value=imp(
            i, event_time=(T0 + timedelta(days=3, seconds=i)).isoformat().replace("+00:00", "Z")
        ),
        partition=(i + 1) % 4,
    )
    p.produce("impressions", value=imp(i), partition=(i + 2) % 4)
p.flush()
print("produced", N, "good +", sent_hostile, "hostile + 400 repeats")


def sink():
    return subprocess.Popen(
        cli
        + ["sink", "run", "--topic", "impressions", "--batch-rows", "3000", "--batch-seconds", "1"],
        env=env,
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


procs = [sink(), sink()]
for _ in range(8):
    time.sleep(rng.uniform(2, 5))
    v = rng.randrange(2)
    procs[v].send_signal(signal.SIGKILL)
    procs[v].wait()
    procs[v] = sink()
for pr in procs:
    pr.send_signal(signal.SIGTERM)
for pr in procs:
    _, err = pr.communicate(timeout=120)
    print("rc", pr.returncode, err.decode()[-300:] if pr.returncode not in (0, -15) else "")
final = subprocess.run(
    cli + ["sink", "run", "--topic", "impressions", "--idle-timeout", "8"],
    env=env,
    cwd=repo,
    capture_output=True,
    text=True,
    timeout=600,
)
print("final rc", final.returncode, final.stdout[-600:], final.stderr[-300:])

# independent reader
con = sqlite3.connect(f"{state}/catalog.db")
row = con.execute(
    "select metadata_location from iceberg_tables where table_name='impressions'"
).fetchone()


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


meta = json.loads(local(row[0]).read_text())
snap = [s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"]][0]
files = []
with local(snap["manifest-list"]).open("rb") as manifests:
    for m in fastavro.reader(manifests):
        with local(m["manifest_path"]).open("rb") as entries:
            for e in fastavro.reader(entries):
                if e["status"] != 2:  # 2: deleted
                    files.append(str(local(e["data_file"]["file_path"])))
ids = []
for f in files:
    ids += pq.read_table(f, columns=["impression_id"]).column(0).to_pylist()
print(
    "rows",
    len(ids),
    "distinct",
    len(set(ids)),
    "expected",
    N,
    "missing",
    N - len(set(ids) & {f"g-{i}" for i in range(N)}),
    "extra",
    sorted(set(ids) - {f"g-{i}" for i in range(N)})[:10],
)
c = Consumer(
    {
        "bootstrap.servers": boot,
        "group.id": "acc-dlq",
        "auto.offset.reset": "earliest",
        "fetch.message.max.bytes": 2_000_000,
    }
)
md = c.list_topics("impressions.dlq", timeout=10)
c.assign([TopicPartition("impressions.dlq", q, 0) for q in md.topics["impressions.dlq"].partitions])
letters, idle = [], time.time()
while time.time() - idle < 8:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    letters.append(json.loads(m.value()))
    idle = time.time()
c.close()

keys = Counter((letter["partition"], letter["offset"]) for letter in letters)
print(
    "dlq letters",
    len(letters),
    "distinct source records",
    len(keys),
    "expected",
    sent_hostile,
    "reasons",
    Counter(letter["reason"] for letter in letters),
)
print(
    subprocess.run(cli + ["status"], env=env, cwd=repo, capture_output=True, text=True).stdout[
        -1500:
    ]
)
subprocess.run(cli + ["down"], env=env, cwd=repo)
good = {f"g-{i}" for i in range(N)}
ok = len(ids) - ids.count("h-big") == N and set(ids) - {"h-big"} == good
ok = ok and len(letters) == len(keys) == sent_hostile - 4 * 12  # h-big is a valid record
sys.exit(0 if ok else 1)
