"""Apache Kafka 4.x (KRaft) run from Maven Central jars as local Java processes, without Docker.

jars.py      resolve_jars: the jars, through Maven (cached in ~/.m2)
launcher.py  one broker: its kept data under the home, start, stop, the state file
cluster.py   several nodes on loopback (`deckstream kafka up --brokers 3`), broker_status
admin.py     topics: created from their specs, configs aligned, replicas by cluster size
"""
