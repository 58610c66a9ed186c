"""A job's processes and their memory, from /proc: what the soak and
throughput benchmarks sample, and what the fault tests find to kill."""
import os

__all__ = ['child_pids', 'tree_memory_mb']


def child_pids(pid):
  """The direct children of a process (from /proc)."""
  found = []
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open('/proc/%s/stat' % entry) as f:
          if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
            found.append(int(entry))
      except (OSError, ValueError, IndexError):
        continue  # the process ended while it was being read
  return found


def tree_memory_mb(pid):
  """(RSS, PSS) of a process and its descendants, MB. RSS counts a page
  shared by several of them (a forked helper's) in each; PSS splits it
  between them, so its sum is the memory the job holds."""
  rss = pss = 0
  stack = [pid]
  while stack:
    current = stack.pop()
    try:
      with open('/proc/%d/status' % current) as f:
        rss += sum(int(line.split()[1]) for line in f
                   if line.startswith('VmRSS:'))
      with open('/proc/%d/smaps_rollup' % current) as f:
        pss += sum(int(line.split()[1]) for line in f
                   if line.startswith('Pss:'))
    except OSError:
      continue  # it ended while it was being read
    stack.extend(child_pids(current))
  return rss / 1024, pss / 1024
