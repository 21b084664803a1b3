"""A dependency-free progress line with rate and ETA for every long stage.

It redraws one line on a terminal and stays quiet elsewhere (logs, CI, pipes): the run's record is its
train_log.jsonl and TensorBoard summaries, not a progress bar.
"""

import sys
import time


def _fmt_time(seconds):
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:

  def __init__(self, total, desc, enabled=True, unit="it", stream=None, initial=0):
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.total, self.desc, self.unit = total, desc, unit
    self.enabled = enabled and total > 0 and self.tty
    self.count = initial
    self._start_count = initial
    self._start = time.time()
    self._last_draw = 0.0
    self.postfix = ""

  def update(self, n=1, postfix=None):
    self.count += n
    if postfix is not None:
      self.postfix = postfix
    now = time.time()
    if self.enabled and (now - self._last_draw >= 0.1 or self.count >= self.total):  # <= 10 redraws/s
      self._last_draw = now
      self._write("\r" + self._line(), end="")

  def _line(self):
    elapsed = time.time() - self._start
    rate = (self.count - self._start_count) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - self.count) / rate if rate > 0 else 0.0
    line = (f"{self.desc}: {self.count}/{self.total} [{_fmt_time(elapsed)}<{_fmt_time(eta)}, "
            f"{rate:.1f} {self.unit}/s]")
    return line + (f" {self.postfix}" if self.postfix else "")

  def _write(self, text, end="\n"):
    self.stream.write(text + end)
    self.stream.flush()

  def close(self):
    if self.enabled:
      self._write("\r" + self._line())
