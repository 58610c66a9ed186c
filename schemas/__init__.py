"""The event contract as data: Avro schemas, the registry, typed records, table schemas."""
