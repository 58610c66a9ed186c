"""The producer library: envelopes with deterministic keys, checked against the
registry before they leave the producer, serialised and emitted.

    from producer import Producer, FileEmitter
    with Producer(FileEmitter('events.jsonl')) as p:
      p.send('purchase', {'user_id': 'u1', 'order_id': 'o-1',
                          'amount_minor': 1250, 'currency': 'EUR'},
             tenant_id='acme', source='shop', event_time='2024-03-01T10:00:00Z')
"""
from producer.envelope import ContractError, build_event
from producer.emitters import FileEmitter, KafkaEmitter, PubSubEmitter
from producer.client import Producer
from producer.serialize import serialize

__all__ = ['ContractError', 'build_event', 'serialize', 'Producer',
           'FileEmitter', 'PubSubEmitter', 'KafkaEmitter']
