"""The local stack's KRaft cluster id must be one Kafka's storage tool accepts."""

import base64

from local_stack.kafka_nodes import new_cluster_id


def test_cluster_ids_are_16_bytes_and_never_read_as_an_option() -> None:
    # 1 in 64 random ids starts with '-'; 5,000 draws meet one with probability 1 - (63/64)^5000.
    ids = [new_cluster_id() for _ in range(5_000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    for cluster_id in ids[:100]:
        assert len(cluster_id) == 22
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
