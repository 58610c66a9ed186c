"""The flex template's metadata matches the pipeline's options one to one; the
built source distribution carries the packages and the schema files."""
import argparse
import json
import os
import re
import subprocess
import sys
import tarfile

import setuptools

from pipelines.options import AnalyticsOptions
from pipelines.template_metadata import EXAMPLES, metadata
from tests.cli import ROOT

WRONG = {'hot_sink': 'sqlite:x.db', 'profiles': 'two words',
         'redis_url': 'http://x', 'bigquery_endpoint': 'ftp://x',
         'input': 'a b', 'input_watch': 'a b', 'cold_path': 'a b',
         'registry': 'registry.yaml', 'fail_on_dlq_alert': 'yes',
         'input_subscription': 'projects/p/topics/t', 'input_topic': 'events',
         'timestamp_attribute': 'a b', 'kafka_bootstrap': 'kafka-1',
         'kafka_topic': 'a/b', 'kafka_group_id': 'a b',
         'kafka_commit_on_finalize': 'no', 'kafka_expansion_service': 'x',
         'mask_fields': 'payload.user id', 'run_id': 'two words'}


def _options():
  parser = argparse.ArgumentParser()
  AnalyticsOptions._add_argparse_args(parser)
  return {a.dest: a for a in parser._actions if a.dest != 'help'}


def test_metadata_file_is_generated_from_the_options():
  with open(os.path.join(ROOT, 'templates', 'metadata.json')) as f:
    stored = json.load(f)
  assert stored == metadata(), 'run: python -m pipelines.template_metadata'
  names = [p['name'] for p in stored['parameters']]
  assert sorted(names) == sorted(_options()) and len(names) == len(set(names))
  for parameter in stored['parameters']:
    assert parameter['label'] and parameter['helpText']
    assert isinstance(parameter['isOptional'], bool) and parameter['regexes']


def test_each_regex_accepts_the_default_or_example_and_rejects_a_wrong_value():
  options = _options()
  for parameter in metadata()['parameters']:
    name, regex = parameter['name'], parameter['regexes'][0]
    action = options[name]
    good = EXAMPLES.get(name, action.default)
    assert good is not None, name
    assert re.fullmatch(regex, str(good)), (name, good)
    if action.choices:
      bad = 'no_such_choice'
    elif action.type in (int, float):
      bad = '-1x'
    else:
      bad = WRONG.get(name, '')
    assert not re.fullmatch(regex, bad), (name, bad)


def test_sdist_contains_packages_and_schema_files(tmp_path):
  subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp_path)],
                 cwd=ROOT, check=True, capture_output=True)
  archive = next(tmp_path.glob('*.tar.gz'))
  with tarfile.open(archive) as tar:
    names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
  for path in ('pipelines/analytics.py', 'pipelines/graph.py',
               'transforms/ingest/decode.py', 'schemas/registry.py',
               'schemas/avro/registry.json', 'schemas/avro/envelope.avsc',
               'schemas/avro/page_view.v1.1.avsc', 'requirements.txt'):
    assert path in names, path


def _read(name):
  with open(os.path.join(ROOT, 'templates', name), encoding='utf-8') as f:
    return f.read()


def test_dockerfile_pins_the_same_beam_and_installs_the_package():
  dockerfile = _read('Dockerfile')
  with open(os.path.join(ROOT, 'requirements.txt'), encoding='utf-8') as f:
    pin = re.search(r'^apache-beam\[[^\]]*\]==(\S+)$', f.read(), re.M).group(1)
  images = re.findall(r'^FROM (\S+)', dockerfile, re.M)
  assert 'apache/beam_python3.11_sdk:%s' % pin in images
  entry = re.search(r'FLEX_TEMPLATE_PYTHON_PY_FILE=\$\{WORKDIR\}/(\S+)',
                    dockerfile).group(1)
  assert os.path.isfile(os.path.join(ROOT, entry))
  assert 'if __name__ == \'__main__\':' in open(os.path.join(ROOT, entry)).read()
  assert 'pip check' in dockerfile and 'requirements.txt' in dockerfile
  copied = set(re.findall(r'^COPY (\w+) \./\1$', dockerfile, re.M))
  packages = {p.split('.')[0] for p in setuptools.find_packages(
      ROOT, include=['pipelines*', 'transforms*', 'schemas*', 'producer*'])}
  assert copied == packages


def test_launch_scripts_parse_and_use_only_real_parameters():
  names = {p['name'] for p in metadata()['parameters']}
  for script in ('build.sh', 'launch.sh'):
    subprocess.run(['bash', '-n', os.path.join(ROOT, 'templates', script)],
                   check=True)
  assert '--metadata-file templates/metadata.json' in _read('build.sh')
  used = set(re.findall(r'(\w+)=\$\{', _read('launch.sh')))
  assert used and used <= names, used - names
