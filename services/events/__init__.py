"""Events: the Avro-backed models, every Kafka topic, and the publisher port."""
