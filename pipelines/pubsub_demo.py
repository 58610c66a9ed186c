"""The Pub/Sub demo of `./run_local.sh --pubsub`: against Google's emulator
(the script starts and stops it; `PUBSUB_EMULATOR_HOST` names it), makes a
topic and an ordered subscription and publishes a generated sample's lines,
one message each, with attributes naming the file and line (kept on a dead
letter).

    python -m pipelines.pubsub_demo --project P --topic T --subscription S \\
        --data data/sample
"""
import argparse
import glob
import os

__all__ = ['main']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--project', required=True)
  parser.add_argument('--topic', required=True)
  parser.add_argument('--subscription', required=True)
  parser.add_argument('--data', required=True)
  args = parser.parse_args(argv)
  if not os.environ.get('PUBSUB_EMULATOR_HOST'):
    parser.error('PUBSUB_EMULATOR_HOST is not set: this demo publishes to '
                 'the emulator only')
  from google.cloud import pubsub_v1
  publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
  topic = publisher.topic_path(args.project, args.topic)
  subscription = subscriber.subscription_path(args.project, args.subscription)
  publisher.create_topic(name=topic)
  subscriber.create_subscription(request={
      'name': subscription, 'topic': topic, 'enable_message_ordering': True})
  futures = []
  for path in sorted(glob.glob(os.path.join(args.data, 'events', '*.jsonl'))):
    with open(path, 'rb') as f:
      for number, line in enumerate(f.read().split(b'\n')[:-1], 1):
        futures.append(publisher.publish(topic, line, source_file=os.path.basename(
            path), line=str(number)))
  for future in futures:
    future.result()
  print('published %d messages to %s' % (len(futures), topic))


if __name__ == '__main__':
  main()
