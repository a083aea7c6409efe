"""Topic creation's reading of the broker's CreateTopics answer (app/pipeline/topics.py): aiokafka
returns the errors per topic instead of raising, so a refusal has to be read out of it."""
from types import SimpleNamespace

from app.pipeline.topics import TopicsRefused, refused_topics


def test_each_refused_topic_is_named_with_the_brokers_error():
    # the shapes of CreateTopicsResponse v0 (topic, code) and v1+ (topic, code, message)
    response = SimpleNamespace(topic_errors=[
        ("a.created", 0, None),
        ("b.raced", 36, "Topic with this name already exists."),  # another process made it: fine
        ("c.replicas", 38, "Replication factor: 3 larger than available brokers: 1."),
        ("d.old", 37),
    ])
    refused = refused_topics(response)
    assert refused == {
        "c.replicas": "InvalidReplicationFactorError (code 38): Replication factor: 3 larger than available brokers: 1.",
        "d.old": "InvalidPartitionsError (code 37)",
    }
    error = TopicsRefused(refused, ["a.created", "b.raced"])
    assert str(error).startswith("the broker refused 2 topics: c.replicas: InvalidReplicationFactorError (code 38)")
    assert "d.old: InvalidPartitionsError (code 37)" in str(error)
    assert str(error).endswith("(created: a.created, b.raced)")


def test_an_answer_without_errors_refuses_nothing():
    assert refused_topics(SimpleNamespace(topic_errors=[("a", 0, None), ("b", 0)])) == {}
