"""Each topic keeps what its role needs: records and dead letters forever, the latest state per
document forever (compacted), transient work a week."""

from __future__ import annotations

import pytest

from services.events import topics


@pytest.mark.parametrize("spec", topics.ALL, ids=lambda s: s.name)
def test_each_topics_retention_follows_its_role(spec: topics.TopicSpec) -> None:
    config = spec.config
    if spec.role in ("record", "dead letters"):
        assert (config["cleanup.policy"], config["retention.ms"], config["retention.bytes"]) == (
            "delete",
            "-1",
            "-1",
        )
    elif spec.role == "state":
        assert config["cleanup.policy"] == "compact" and "retention.ms" not in config
    else:
        assert config["cleanup.policy"] == "delete" and 0 < int(config["retention.ms"]) <= topics.WEEK_MS


def test_the_roles_are_the_ones_users_rely_on() -> None:
    roles = {spec.name: spec.role for spec in topics.ALL}
    assert roles[topics.UPLOADED.name] == "record"  # a replay rebuilds every deck from it
    assert roles[topics.ACCOUNTS.name] == "record"  # API keys outlive restarts; the audit trail
    assert roles[topics.PROGRESS.name] == roles[topics.DECKS.name] == "state"  # documents never vanish
    assert {roles[s.name] for s in (topics.DLQ, topics.DEAD_LETTERS)} == {"dead letters"}
    # A document's history stays whole for at least an hour after each record, for SSE resumes.
    assert int(topics.PROGRESS.config["min.compaction.lag.ms"]) >= topics.HOUR_MS
