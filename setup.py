"""The analytics pipeline package, installed by users (`pip install -e .`) and by
Beam workers (`--setup_file ./setup.py`), with the pins of requirements.txt."""
import os

import setuptools

_HERE = os.path.dirname(os.path.abspath(__file__))


_TEST_ONLY = ('pytest', 'hypothesis')


def _requirements(test=False):
  with open(os.path.join(_HERE, 'requirements.txt'), encoding='utf-8') as f:
    lines = [line.strip() for line in f
             if line.strip() and not line.startswith('#')]
  return [line for line in lines if line.startswith(_TEST_ONLY) == test]


setuptools.setup(
    name='beam-realtime-analytics',
    version='0.1.0',
    description='Real-time analytics on Apache Beam: contract-checked events, '
    'dedup, enrichment, event-time views, hot and cold tiers, dead letters.',
    python_requires='>=3.10',
    # Namespace packages too: the data folders (schemas/avro, serving/static)
    # are packages of their own to setuptools, which otherwise warns about
    # each at every install.
    packages=setuptools.find_namespace_packages(include=[
        'pipelines', 'pipelines.*', 'transforms', 'transforms.*', 'schemas',
        'schemas.*', 'producer', 'producer.*', 'serving', 'serving.*']),
    package_data={'schemas.avro': ['*.avsc', '*.json'],
                  'serving': ['catalog.json'], 'serving.static': ['*']},
    include_package_data=True,
    install_requires=_requirements(),
    extras_require={'test': _requirements(test=True)},
)
