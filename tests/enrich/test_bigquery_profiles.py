"""Profiles in BigQuery (a real BigQuery API: the local emulator), as cached
lookups and as a side input: the same tiers and regions as the file side input
on the same profiles, row for row."""
import json
import os

import pytest
from google.cloud import bigquery

from pipelines.generate import generate
from tests.cli import query, run_module
from tests.helpers import newest_profile_rows
from transforms.enrich.profiles import Profile
from transforms.enrich.stores import BigQueryProfileStore


@pytest.fixture(scope='module')
def profiles_table(bigquery_emulator, tmp_path_factory):
  data = str(tmp_path_factory.mktemp('bq-sample'))
  generate(data, events=400, users=15, tenants=2, files=1, seed=3)
  client = bigquery_emulator.client()
  client.create_dataset('analytics_ref', exists_ok=True)
  table = bigquery.Table('test-proj.analytics_ref.profiles', schema=[
      bigquery.SchemaField('tenant_id', 'STRING'),
      bigquery.SchemaField('user_id', 'STRING'),
      bigquery.SchemaField('tier', 'STRING'),
      bigquery.SchemaField('region', 'STRING'),
      bigquery.SchemaField('updated_at', 'TIMESTAMP')])
  client.create_table(table, exists_ok=True)
  with open(os.path.join(data, 'profiles.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  errors = client.insert_rows_json('test-proj.analytics_ref.profiles', rows)
  assert not errors
  return data, 'test-proj.analytics_ref.profiles'


def test_bigquery_store_returns_the_newest_profile(bigquery_emulator, profiles_table):
  data, table = profiles_table
  newest = newest_profile_rows(os.path.join(data, 'profiles.jsonl'))
  store = BigQueryProfileStore(table, bigquery_emulator.endpoint)()
  store.open()
  try:
    (tenant, user), row = sorted(newest.items())[0]
    found = store.lookup(tenant, user, timeout_s=10)
    assert isinstance(found, Profile)
    assert (found.tier, found.region) == (row['tier'], row['region'])
    assert store.lookup(tenant, 'nobody', timeout_s=10) is None
  finally:
    store.close()


@pytest.mark.parametrize('mode', ['lookup', 'side_input'])
def test_bigquery_profiles_equal_the_file_side_input(bigquery_emulator,
                                                     profiles_table, tmp_path, mode):
  data, table = profiles_table
  common = ['--input', os.path.join(data, 'events', '*.jsonl'),
            '--runner', 'FnApiRunner']
  side, lookup = str(tmp_path / 'side.duckdb'), str(tmp_path / 'lookup.duckdb')
  run_module('pipelines.analytics', *common, '--profiles',
             os.path.join(data, 'profiles.jsonl'), '--hot_sink', 'duckdb:' + side,
             '--cold_path', side + '.cold')
  run_module('pipelines.analytics', *common, '--enrichment', mode,
             '--profiles', 'bigquery:' + table,
             '--bigquery_endpoint', bigquery_emulator.endpoint,
             '--hot_sink', 'duckdb:' + lookup, '--cold_path', lookup + '.cold')
  sql = ('SELECT idempotency_key, user_tier, user_region FROM events ORDER BY 1')
  expected = query(side, sql)
  assert expected and query(lookup, sql) == expected
  assert {r[1] for r in expected} - {'unknown'}, 'some profiles were found'
