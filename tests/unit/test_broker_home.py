"""The local broker's kept data: made once, refused when another layout, cluster or Kafka wrote
it (nothing started, nothing wiped), and wiped only on purpose (`deckstream kafka reset`).

No JVM here: these checks run before the broker would start. Starting and restarting a real
broker on kept data is in tests/integration/test_kafka_broker.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.kafka.launcher import (
    CLUSTER_FILE,
    LAYOUT,
    cluster_id,
    data_dir,
    kafka_dir,
    reset_data,
    start_broker,
)
from services.errors import BrokerHomeMismatch


def kept(home: Path, cluster: str, *, meta_cluster: str | None = None, layout: int = LAYOUT) -> None:
    """A home as a broker leaves it: the cluster record and formatted data."""
    data_dir(home).mkdir(parents=True)
    (kafka_dir(home) / CLUSTER_FILE).write_text(json.dumps({"layout": layout, "cluster_id": cluster}))
    meta = f"cluster.id={meta_cluster or cluster}\nnode.id=1\nversion=1\ndirectory.id=x\n"
    (data_dir(home) / "meta.properties").write_text(meta)
    (data_dir(home) / "documents.uploaded-0").mkdir()


def test_a_new_home_gets_one_cluster_id_that_every_start_reads_again(tmp_path: Path) -> None:
    first = cluster_id(tmp_path)
    record = json.loads((kafka_dir(tmp_path) / CLUSTER_FILE).read_text())
    assert record["layout"] == LAYOUT and record["cluster_id"] == first
    assert cluster_id(tmp_path) == first


@pytest.mark.parametrize(
    ("layout", "meta_cluster", "message"),
    [
        (
            LAYOUT + 1,
            None,
            rf"a newer deckstream wrote this broker data \(layout {LAYOUT + 1}; this one reads {LAYOUT}\)",
        ),
        (1, None, r"an older deckstream wrote this broker data \(layout 1"),
        (LAYOUT, "someone-else", r"belongs to cluster someone-else, but .* names cluster mine"),
    ],
)
def test_data_another_deckstream_or_cluster_wrote_is_refused_and_left_as_it_is(
    tmp_path: Path, layout: int, meta_cluster: str | None, message: str
) -> None:
    kept(tmp_path, "mine", meta_cluster=meta_cluster, layout=layout)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(BrokerHomeMismatch, match=message) as refused:
        start_broker(tmp_path, timeout_s=5)  # refused before Maven or Java are asked anything
    assert "Nothing was changed" in refused.value.reason and "deckstream kafka reset" in refused.value.reason
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_zookeeper_era_or_unrecorded_data_is_refused(tmp_path: Path) -> None:
    data_dir(tmp_path).mkdir(parents=True)
    (data_dir(tmp_path) / "meta.properties").write_text("version=0\nbroker.id=0\ncluster.id=zk\n")
    with pytest.raises(BrokerHomeMismatch, match="ZooKeeper-era"):
        cluster_id(tmp_path)
    (data_dir(tmp_path) / "meta.properties").write_text("version=1\nnode.id=1\ncluster.id=c\n")
    with pytest.raises(BrokerHomeMismatch, match="did not record"):
        cluster_id(tmp_path)
    assert not (kafka_dir(tmp_path) / CLUSTER_FILE).exists()


def reset_command(home: Path, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECKSTREAM_")} | {
        "DECKSTREAM_HOME": str(home)
    }
    return subprocess.run(
        [sys.executable, "-m", "deckstream", "kafka", "reset", *args],
        input=answer,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_reset_asks_first_and_wipes_only_the_brokers_data(tmp_path: Path) -> None:
    kept(tmp_path, "mine")
    blob = tmp_path / "blobs" / "uploads" / "ab" / "file"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"an upload")
    declined = reset_command(tmp_path, answer="n\n")
    assert declined.returncode != 0 and "Delete the Kafka data" in declined.stdout
    assert (data_dir(tmp_path) / "meta.properties").exists()
    done = reset_command(tmp_path, "--yes")
    assert done.returncode == 0, done.stderr
    assert not data_dir(tmp_path).exists() and not (kafka_dir(tmp_path) / CLUSTER_FILE).exists()
    assert blob.read_bytes() == b"an upload"  # uploaded files stay
    assert reset_data(tmp_path) == []
    assert cluster_id(tmp_path) != "mine"  # the next start makes a new cluster
